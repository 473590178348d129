"""One morning job at a time: an exclusive lock on a file next to the database."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from newsletter.errors import NewsletterError


class RunInProgress(NewsletterError):
    pass


@contextmanager
def run_lock(db_path: str, wait: float = 0.0) -> Iterator[None]:
    """Hold the lock for the block; wait up to ``wait`` seconds for another run to end."""
    path = Path(f"{db_path}.lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    f.seek(0)
                    holder = f.read().strip() or "another process"
                    raise RunInProgress(
                        f"another run is in progress ({holder}) - it holds {path}; wait for "
                        "it to finish or use --wait SECONDS") from None
                time.sleep(0.2)
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        f.flush()
        try:
            yield
        finally:
            f.truncate(0)
            fcntl.flock(f, fcntl.LOCK_UN)
