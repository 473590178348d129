"""Carrying the list's state between machines through any git remote, encrypted.

The state lives on a branch of its own (default ``newsletter-state``), never on the code's
branch. ``push`` writes the database as chunks (``store.dump_chunks``: JSON lines, one chunk
per table, or per hour for the tables that grow), each compressed and then encrypted with
AES-SIV (RFC 5297, ``cryptography``'s ``AESSIV``, a 512-bit key from NEWSLETTER_STATE_KEY,
the chunk's name as associated data). AES-SIV is deterministic: an unchanged chunk encrypts
to the same bytes, so git stores a past hour's chunk once and a run that changed nothing
makes no commit. What the branch shows without the key: the chunks' names (table names and
the hours rows were written), their sizes, and which chunks changed in each commit; never a
row's content.

``pull`` fetches the branch, decrypts it and merges it into the local database
(``store.merge_state``); ``push`` does the same with whatever the remote has now, prunes,
and commits only if a chunk changed, with a message saying what ("3 sent, 1 unsubscribed").
A push that loses a race fetches again and merges again.

Blob format: ``NLS1`` + AES-SIV(zlib(JSON lines)). Key format: ``nlstate1:`` + the 64 key
bytes in URL-safe base64 (``newsletter state keygen`` makes one).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from newsletter import store
from newsletter.errors import ConfigError, NewsletterError

KEY_PREFIX = "nlstate1:"
MAGIC = b"NLS1"
STATE_DIR = "state/"
DEFAULT_BRANCH = "newsletter-state"
README = """This branch holds the encrypted state of an AcademicHub newsletter (subscribers,
deliveries, papers). Every file under state/ is NLS1 + AES-SIV(zlib(JSON lines)), encrypted
with the key in the NEWSLETTER_STATE_KEY secret. Read it with:
    NEWSLETTER_STATE_KEY=... newsletter state pull --remote <this repository>
"""


class StateKeyError(ConfigError):
    """No key, a malformed key, or a key that does not open the state."""


def new_key() -> str:
    """A fresh state key: 64 random bytes (AES-SIV with AES-256), printable."""
    return KEY_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(64)).decode().rstrip("=")


def _cipher(key: str) -> Any:
    from cryptography.hazmat.primitives.ciphers.aead import AESSIV

    if not key:
        raise StateKeyError("NEWSLETTER_STATE_KEY is not set, so the state cannot be read or "
                            "written - set it (make one with \"newsletter state keygen\")")
    text = key.strip()
    raw = b""
    if text.startswith(KEY_PREFIX):
        body = text[len(KEY_PREFIX):]
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except ValueError:
            raw = b""
    if len(raw) != 64:
        raise StateKeyError("NEWSLETTER_STATE_KEY is not a state key (it starts with "
                            f"{KEY_PREFIX!r}) - make one with \"newsletter state keygen\"")
    return AESSIV(raw)


def seal(cipher: Any, name: str, plain: bytes) -> bytes:
    return MAGIC + cipher.encrypt(zlib.compress(plain, 6), [name.encode()])


def unseal(cipher: Any, name: str, blob: bytes) -> bytes:
    from cryptography.exceptions import InvalidTag

    if not blob.startswith(MAGIC):
        raise NewsletterError(f"{name} on the state branch is not an encrypted chunk - is "
                              "--branch the state branch?")
    try:
        return zlib.decompress(cipher.decrypt(blob[len(MAGIC):], [name.encode()]))
    except InvalidTag as e:
        raise StateKeyError("NEWSLETTER_STATE_KEY does not open this state (a different key, "
                            "or a damaged file) - use the key it was pushed with; see README "
                            "> Losing the key") from e


# --- git -------------------------------------------------------------------------------


def _run(cmd: list[str], cwd: Path | None = None, data: bytes | None = None,
         check: bool = True) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    done = subprocess.run(cmd, cwd=cwd, input=data, capture_output=True, env=env,
                          timeout=600)
    if check and done.returncode != 0:
        err = done.stderr.decode(errors="replace").strip().splitlines()
        raise NewsletterError(f"{' '.join(cmd[:2])} {cmd[2] if len(cmd) > 2 else ''} failed: "
                              f"{err[-1] if err else 'no message'}")
    return done


@dataclass
class _Repo:
    """Where the git work happens: the code checkout when the remote is one of its remote
    names (its credentials, e.g. Actions' token, apply), else a private scratch repository."""

    git_dir: Path
    remote: str
    shallow: bool

    def git(self, *args: str, data: bytes | None = None, check: bool = True
            ) -> subprocess.CompletedProcess[bytes]:
        return _run(["git", f"--git-dir={self.git_dir}", *args], data=data, check=check)


def _is_remote_name(remote: str) -> bool:
    return re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", remote) is not None and \
        not Path(remote).exists()


@contextmanager
def _repo(remote: str, cache: Path) -> Iterator[_Repo]:
    """CACHE: the database's path; a scratch repository is kept next to it."""
    if _is_remote_name(remote):
        found = _run(["git", "rev-parse", "--absolute-git-dir"], check=False)
        if found.returncode != 0:
            raise ConfigError(f"--remote {remote} names a git remote, but this is not a git "
                              "checkout - give a URL or a path instead")
        git_dir = Path(found.stdout.decode().strip())
        shallow = _run(["git", "rev-parse", "--is-shallow-repository"]).stdout.strip()
        known = _run(["git", "remote"]).stdout.decode().split()
        if remote not in known:
            raise ConfigError(f"this checkout has no git remote {remote!r} - give its URL or "
                              "a path with --remote")
        yield _Repo(git_dir, remote, shallow == b"true")
        return
    target = remote if "://" in remote or re.match(r"^[\w.-]+@[\w.-]+:", remote) \
        else str(Path(remote).resolve())
    scratch = cache.with_name(cache.name + ".git")  # kept: the next push fetches less
    if not (scratch / "HEAD").exists():
        scratch.parent.mkdir(parents=True, exist_ok=True)
        _run(["git", "init", "--quiet", "--bare", str(scratch)])
    yield _Repo(scratch, target, True)


def _fetch(repo: _Repo, branch: str) -> str | None:
    """The remote branch's commit (fetched), or None when the branch does not exist yet."""
    depth = ["--depth=1"] if repo.shallow else []
    done = repo.git("fetch", "--quiet", "--no-tags", *depth, repo.remote,
                    f"+refs/heads/{branch}:refs/newsletter/remote-state", check=False)
    if done.returncode != 0:
        err = done.stderr.decode(errors="replace")
        if "couldn't find remote ref" in err or "could not find remote ref" in err:
            return None
        lines = err.strip().splitlines()
        raise NewsletterError(f"cannot fetch the state from {repo.remote}: "
                              f"{lines[-1] if lines else 'git fetch failed'}")
    return repo.git("rev-parse", "refs/newsletter/remote-state").stdout.decode().strip()


def _tree(repo: _Repo, commit: str) -> dict[str, str]:
    """{path: blob id} of a commit's files."""
    out = repo.git("ls-tree", "-r", "-z", commit).stdout.decode()
    files = {}
    for entry in filter(None, out.split("\0")):
        meta, path = entry.split("\t", 1)
        files[path] = meta.split()[2]
    return files


def _blobs(repo: _Repo, ids: list[str]) -> dict[str, bytes]:
    if not ids:
        return {}
    raw = repo.git("cat-file", "--batch", data="".join(f"{i}\n" for i in ids).encode()).stdout
    out: dict[str, bytes] = {}
    at = 0
    for blob_id in ids:
        end = raw.index(b"\n", at)
        size = int(raw[at:end].split()[2])
        out[blob_id] = raw[end + 1:end + 1 + size]
        at = end + 1 + size + 1
    return out


def _blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _ident(repo: _Repo) -> str:
    got = repo.git("var", "GIT_COMMITTER_IDENT", check=False)
    if got.returncode == 0:
        return got.stdout.decode().strip()
    return f"newsletter <newsletter@localhost> {int(time.time())} +0000"


def _commit(repo: _Repo, parent: str | None, files: Mapping[str, bytes | str], message: str
            ) -> str:
    """A commit of exactly FILES (contents, or the id of a blob already in the repository)
    on top of PARENT (fast-import: one process for any number of files); returns its id."""
    chunks = [f"commit refs/newsletter/new-state\ncommitter {_ident(repo)}\n".encode(),
              b"data %d\n%s\n" % (len(message.encode()), message.encode())]
    if parent:
        chunks.append(f"from {parent}\n".encode())
    chunks.append(b"deleteall\n")
    for path in sorted(files):
        data = files[path]
        if isinstance(data, str):
            chunks.append(f"M 100644 {data} {path}\n".encode())
        else:
            chunks.append(b"M 100644 inline %s\ndata %d\n%s\n" % (path.encode(), len(data),
                                                                  data))
    repo.git("fast-import", "--quiet", "--force", data=b"".join(chunks))
    return repo.git("rev-parse", "refs/newsletter/new-state").stdout.decode().strip()


# --- what changed ----------------------------------------------------------------------


def _rows(plain: bytes) -> list[dict[str, Any]]:
    lines = plain.decode().splitlines()
    if not lines:
        return []
    columns = json.loads(lines[0])
    return [dict(zip(columns, json.loads(line), strict=True)) for line in lines[1:]]


def describe(old: Mapping[str, bytes], new: Mapping[str, bytes]) -> str:
    """What differs between two sets of chunks (plain text, only the changed ones needed),
    in counts: ``3 sent, 1 unsubscribed, 12 papers, 40 papers pruned``. Never an address."""
    sent: Counter[str] = Counter()
    events: Counter[str] = Counter()
    papers = [0, 0]
    for name in sorted(set(old) | set(new)):
        if old.get(name) == new.get(name):
            continue
        table = name.split("/", 1)[0]
        before = _rows(old.get(name, b""))
        after = _rows(new.get(name, b""))
        if table == "deliveries":
            was = Counter(r["message_id"] for r in before if r["status"] == "sent")
            sent["sent"] += sum((Counter(r["message_id"] for r in after
                                         if r["status"] == "sent") - was).values())
        elif table == "subscriber_events":
            def key(r: dict[str, Any]) -> tuple[Any, ...]:
                return (r["event"], r["origin"], r["created"], r["detail"])
            added = Counter(map(key, after)) - Counter(map(key, before))
            for (event, *_), n in added.items():
                events[event] += n
        elif table == "papers":
            ids_before = {r["id"] for r in before}
            ids_after = {r["id"] for r in after}
            papers[0] += len(ids_after - ids_before)
            papers[1] += len(ids_before - ids_after)
    parts = [f"{n} {what}" for what, n in (*sent.items(), *sorted(events.items())) if n]
    if papers[0]:
        parts.append(f"{papers[0]} paper{'s' * (papers[0] != 1)}")
    if papers[1]:
        parts.append(f"{papers[1]} paper{'s' * (papers[1] != 1)} pruned")
    return ", ".join(parts) or "state updated"


# --- pull and push ---------------------------------------------------------------------


def _state_files(repo: _Repo, commit: str) -> dict[str, str]:
    return {p[len(STATE_DIR):]: b for p, b in _tree(repo, commit).items()
            if p.startswith(STATE_DIR)}


def _restore(repo: _Repo, cipher: Any, commit: str, into: Path) -> dict[str, bytes]:
    """Decrypt the state at COMMIT into a new database file INTO; returns its chunks."""
    files = _state_files(repo, commit)
    blobs = _blobs(repo, sorted(set(files.values())))
    chunks = {name: unseal(cipher, name, blobs[b]) for name, b in files.items()}
    db = store.open_db(into)
    try:
        store.restore_chunks(db, chunks)
    finally:
        db.close()
    return chunks


def _sync_mark(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".state")


def _read_mark(db_path: Path, remote: str, branch: str, key: str) -> dict[str, Any]:
    """What the last pull or push left next to the database: the remote commit it holds
    everything of, and {chunk: [sha256 of its plain text, blob id]} for the chunks it
    wrote (so a push encrypts only the chunks that changed). Only for this remote, branch
    and key (the key is recorded as an HMAC, never itself)."""
    try:
        mark = json.loads(_sync_mark(db_path).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(mark, dict) or [mark.get("remote"), mark.get("branch"),
                                      mark.get("key")] != [remote, branch, _key_id(key)]:
        return {}
    return mark


def _key_id(key: str) -> str:
    import hmac

    return hmac.new(key.encode(), b"newsletter state cache", hashlib.sha256).hexdigest()[:16]


def _mark(db_path: Path, remote: str, branch: str, key: str, head: str,
          chunks: Mapping[str, list[str]] | None = None) -> None:
    old = _read_mark(db_path, remote, branch, key).get("chunks", {})
    _sync_mark(db_path).write_text(json.dumps(
        {"remote": remote, "branch": branch, "key": _key_id(key), "head": head,
         "chunks": old if chunks is None else chunks}) + "\n")


def _merge_remote(repo: _Repo, cipher: Any, head: str, db_path: Path) -> dict[str, int]:
    with tempfile.TemporaryDirectory() as tmp:
        theirs = Path(tmp) / "remote.db"
        _restore(repo, cipher, head, theirs)
        other = store.open_db(theirs)
        local = store.open_db(db_path)
        try:
            return store.merge_state(local, other)
        finally:
            other.close()
            local.close()


def pull(db_path: str, remote: str, branch: str, key: str) -> str:
    """Fetch the state and merge it into the local database (made if missing)."""
    cipher = _cipher(key)
    db = Path(db_path).resolve()
    with _repo(remote, db) as repo:
        head = _fetch(repo, branch)
        if head is None:
            return (f"no state on {remote} branch {branch} yet - the local database is "
                    "unchanged; the first \"state push\" makes the branch")
        if not db.exists():
            db.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=db.parent) as tmp:
                _restore(repo, cipher, head, Path(tmp) / "new.db")
                store.checkpoint(Path(tmp) / "new.db")
                shutil.move(str(Path(tmp) / "new.db"), db)
            _mark(db, remote, branch, key, head)
            return f"pulled the state from {remote} branch {branch} into {db_path}"
        counts = _merge_remote(repo, cipher, head, db)
        _mark(db, remote, branch, key, head)
    changed = {k: v for k, v in counts.items() if v}
    what = ", ".join(f"{v} {k}" for k, v in changed.items()) or "nothing new"
    return f"pulled the state from {remote} branch {branch} and merged it: {what}"


def push(db_path: str, remote: str, branch: str, key: str, *, message: str = "",
         retention_days: int = 0, now: datetime | None = None, new_history: bool = False,
         attempts: int = 5) -> str:
    """Merge whatever the remote has into the local database, prune, and push the state if
    any chunk changed. ``new_history`` replaces the branch by one commit (after a key
    rotation; the old key's commits are no longer reachable from it)."""
    cipher = _cipher(key)
    db = Path(db_path).resolve()
    if not db.exists():
        raise NewsletterError(f"no database at {db_path} - nothing to push (run \"newsletter "
                              "state pull\" first, or add subscribers)")
    with _repo(remote, db) as repo:
        for attempt in range(1, attempts + 1):
            head = None if new_history else _fetch(repo, branch)
            mark = _read_mark(db, remote, branch, key)
            if head and head != mark.get("head"):
                _merge_remote(repo, cipher, head, db)
            local = store.open_db(db)
            try:
                if retention_days:
                    store.prune(local, retention_days, now or store.utcnow())
                chunks = store.dump_chunks(local)
            finally:
                local.close()
            before = _state_files(repo, head) if head else {}
            cache = mark.get("chunks", {})
            after: dict[str, str] = {}
            sealed: dict[str, bytes] = {}
            written: dict[str, list[str]] = {}
            for name, plain in chunks.items():
                digest = hashlib.sha256(plain).hexdigest()
                hit = cache.get(name)
                if hit and hit[0] == digest and before.get(name) == hit[1]:
                    after[name] = hit[1]  # unchanged: the blob is already on the branch
                else:
                    sealed[name] = seal(cipher, name, plain)
                    after[name] = _blob_id(sealed[name])
                written[name] = [digest, after[name]]
            if head and before == after:
                _mark(db, remote, branch, key, head, written)
                return f"nothing changed: no commit to {remote} branch {branch}"
            changed = [n for n in after if before.get(n) != after[n]]
            gone = [n for n in before if n not in after]
            old_blobs = _blobs(repo, sorted({before[n] for n in changed + gone if n in before}))
            old = {n: unseal(cipher, n, old_blobs[before[n]])
                   for n in changed + gone if n in before}
            summary = describe(old, {n: chunks[n] for n in changed})
            text = f"{message}: {summary}" if message else summary
            files: dict[str, bytes | str] = {STATE_DIR + n: sealed.get(n) or after[n]
                                             for n in after}
            files["README.txt"] = README.encode()
            commit = _commit(repo, head, files, text)
            force = ["--force"] if new_history else []
            done = repo.git("push", "--quiet", *force, repo.remote,
                            f"{commit}:refs/heads/{branch}", check=False)
            if done.returncode == 0:
                _mark(db, remote, branch, key, commit, written)
                return f"pushed to {remote} branch {branch}: {text}"
            if attempt == attempts:
                err = done.stderr.decode(errors="replace").strip().splitlines()
                raise NewsletterError(f"could not push the state to {remote}: "
                                      f"{err[-1] if err else 'rejected'}")
    raise NewsletterError("unreachable")  # pragma: no cover


__all__ = ["DEFAULT_BRANCH", "StateKeyError", "describe", "new_key", "pull", "push", "seal",
           "unseal"]


def _marker(db_path: Path) -> tuple[int, int]:
    db = store.open_db(db_path)
    try:
        return store.change_marker(db)
    finally:
        db.close()


def watch(db_path: str, remote: str, branch: str, key: str, *, say: Callable[[str], None],
          interval: float = 5.0, pull_every: float = 300.0, retention_days: int = 0,
          stop: Callable[[], bool] = lambda: False) -> None:
    """For the machine where ``newsletter serve`` runs: pull now and every ``pull_every``
    seconds (new subscribers reach the endpoint), and push within ``interval`` seconds of
    any change the endpoint makes (an unsubscribe reaches the next scheduled run, which
    pulls first). A failed pull or push is reported and tried again."""
    _cipher(key)  # a missing or malformed key stops here, once
    db = Path(db_path).resolve()
    last_pull = -pull_every
    marker = None
    while not stop():
        try:
            now = time.monotonic()
            seen = _marker(db) if db.exists() else None  # before: a change meanwhile counts
            if marker is None or now - last_pull >= pull_every:
                say(pull(db_path, remote, branch, key))
                last_pull = now
                marker = seen or _marker(db)
            elif seen != marker:
                say(push(db_path, remote, branch, key, message="web changes",
                         retention_days=retention_days))
                marker = seen
        except StateKeyError:
            raise
        except NewsletterError as e:
            say(f"state watch: {e} - trying again")
        time.sleep(interval)


__all__ += ["watch"]
