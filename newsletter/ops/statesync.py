"""Carrying the database from one scheduled run to the next, through the repository.

``push`` commits the run's database and pushes it; if someone pushed in the meantime (a
subscriber added from a laptop), it takes the newer database from the remote, merges the
run's append-only state into it (store.merge_run_state), commits that and pushes again.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from newsletter import store
from newsletter.errors import NewsletterError


def _git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if check and done.returncode != 0:
        raise NewsletterError(f"git {' '.join(args)} failed: {done.stderr.strip()[:300]}")
    return done


def push(db_path: str, message: str, remote: str = "origin", branch: str | None = None,
         attempts: int = 3) -> str:
    """Commit and push the database, merging with newer remote work. Returns what it did."""
    db = Path(db_path).resolve()
    repo = Path(_git(db.parent, "rev-parse", "--show-toplevel").stdout.strip())
    rel = str(db.relative_to(repo))
    branch = branch or _git(repo, "rev-parse", "--abbrev-ref", "HEAD").stdout.strip()
    store.checkpoint(db)
    for attempt in range(1, attempts + 1):
        merged = False
        _git(repo, "fetch", "--quiet", remote, branch)
        behind = _git(repo, "rev-list", "--count", f"HEAD..{remote}/{branch}").stdout.strip()
        if behind != "0":
            with tempfile.TemporaryDirectory() as tmp:
                ours = Path(tmp) / "ours.db"
                shutil.copy2(db, ours)
                _git(repo, "reset", "--quiet", "--hard", f"{remote}/{branch}")
                if db.exists():  # the newer database from the remote
                    target = store.open_db(db)
                    store.merge_run_state(target, store.open_db(ours))
                    target.close()
                    store.checkpoint(db)
                else:
                    shutil.copy2(ours, db)
                merged = True
        _git(repo, "add", "--force", rel)
        if _git(repo, "diff", "--cached", "--quiet", check=False).returncode != 0:
            _git(repo, "commit", "--quiet", "-m", message)
        done = _git(repo, "push", "--quiet", remote, f"HEAD:{branch}", check=False)
        if done.returncode == 0:
            return ("merged with newer work and pushed" if merged else "pushed") + \
                f" {rel} to {remote}/{branch}"
        if attempt == attempts:
            raise NewsletterError(f"could not push {rel}: {done.stderr.strip()[:300]}")
    raise NewsletterError("unreachable")  # pragma: no cover
