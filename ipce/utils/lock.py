"""One writer per output file: an exclusive lock on `<path>.lock` that the operating system
releases when its holder exits, however it exits (fcntl.flock: a kill -9 leaves nothing behind).

`hold_lock(path, what)` takes the lock without waiting or raises IpceError in one line naming
the holder (its pid, host and start time, which the holder writes into the lock file). Where
fcntl does not exist (Windows) the lock is skipped with a debug message.
"""
from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from pathlib import Path
from typing import Iterator

from ipce.errors import IpceError

log = logging.getLogger(__name__)


def lock_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".lock")


def _holder(path: Path) -> str:
    """What the lock file says about its holder, or a plain phrase while it is still being written."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError:
        text = ""
    return text or "another process (it has not written its pid yet)"


def _acquire(path: Path, fcntl) -> int | None:
    """The locked descriptor of `path`, or None when another process holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:  # the holder before us may have removed the file after we opened it: lock the file that is there now
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


@contextlib.contextmanager
def hold_lock(path: str | Path, what: str) -> Iterator[Path | None]:
    """Hold the lock of `path` for the body; `what` names the thing locked in the refusal
    (e.g. "--out predictions.csv"). Yields the lock file (None where locks are unavailable)."""
    try:
        import fcntl
    except ImportError:  # not a POSIX system
        log.debug("no fcntl here: %s is not locked against a second writer", path)
        yield None
        return
    lock = lock_path(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = _acquire(lock, fcntl)
    if fd is None:
        raise IpceError(f"{what}: in use by {_holder(lock)}; wait for it to finish (or stop it), "
                        "or write to another file")
    try:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, started {stamp}\n".encode())
        yield lock
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)  # while still held: a process that opened it sees a removed file and retries
        os.close(fd)
