"""One morning job per database: an exclusive lock on the database file itself.

The lock is a BSD ``flock`` on the database file, so it belongs to the file (its device and
inode), not to the path: a symlink or a hard link to the same database meets the same lock.
SQLite locks with POSIX ``fcntl`` locks, which on Linux are independent of ``flock``. Because
closing any descriptor of a file drops the process's POSIX locks on it (SQLite's among them),
the descriptor opened here is kept open for the life of the process and only unlocked.
Who holds the lock is written, for the message only, to ``<database>.lock`` next to the
database's real path.
"""

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


# (device, inode) -> descriptors not in use; never closed (see above). Each run_lock takes
# its own descriptor, so two locks in one process also exclude each other.
_IDLE: dict[tuple[int, int], list[int]] = {}


def _descriptor(db_path: str) -> tuple[int, tuple[int, int], Path]:
    real = Path(os.path.realpath(db_path))
    real.parent.mkdir(parents=True, exist_ok=True)
    st = os.stat(real) if real.exists() else None
    key = (st.st_dev, st.st_ino) if st else None
    if key and _IDLE.get(key):
        return _IDLE[key].pop(), key, real
    fd = os.open(real, os.O_RDONLY | os.O_CREAT, 0o644)
    st = os.fstat(fd)
    return fd, (st.st_dev, st.st_ino), real


@contextmanager
def run_lock(db_path: str, wait: float = 0.0) -> Iterator[None]:
    """Hold the database's run lock for the block; wait up to ``wait`` seconds for another
    run to end."""
    if db_path == ":memory:":
        yield
        return
    try:
        fd, key, real = _descriptor(db_path)
    except OSError as e:
        raise NewsletterError(f"cannot open the database {db_path} ({e.strerror}) - check "
                              "the path and its permissions (NEWSLETTER_DB)") from None
    info = Path(f"{real}.lock")
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                try:
                    holder = info.read_text().strip() or "another process"
                except OSError:
                    holder = "another process"
                _IDLE.setdefault(key, []).append(fd)
                raise RunInProgress(
                    f"another run is in progress ({holder}) on the database {real}; wait "
                    "for it to finish or use --wait SECONDS") from None
            time.sleep(0.2)
    try:
        try:
            info.write_text(f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        except OSError:
            pass  # informational only
        yield
    finally:
        try:
            info.write_text("")
        except OSError:
            pass
        fcntl.flock(fd, fcntl.LOCK_UN)
        _IDLE.setdefault(key, []).append(fd)
