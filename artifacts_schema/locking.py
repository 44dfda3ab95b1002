"""One writer per artifact: an advisory flock on ``NAME.zarr.lock``.

The orchestrator takes the lock before it starts the stage that writes an artifact and holds it
until the stage exits, so two runs sharing a work directory never write the same artifact at
once. The kernel drops a flock when its holder dies (even by kill -9), so a lock file left
behind is harmless and is never deleted (deleting it would let two processes lock two
different files of the same name).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from datetime import datetime, timezone
from pathlib import Path

from .errors import ArtifactError
from .files import lock_path


class ArtifactLock:
    """``with ArtifactLock(path, timeout=30): ...`` — waits up to ``timeout`` seconds (None: forever)."""

    def __init__(self, path: str | Path, timeout: float | None = None, poll: float = 0.05):
        self.path = Path(path)
        self.lock_file = lock_path(self.path)
        self.timeout = timeout
        self.poll = poll
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> ArtifactLock:
        if self._fd is not None:
            raise RuntimeError(f"lock on {self.path} is already held by this object")
        self.lock_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        start = time.monotonic()
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = time.monotonic() - start
                if self.timeout is not None and waited >= self.timeout:
                    holder = _describe_holder(fd)
                    os.close(fd)
                    raise ArtifactError(
                        self.path, f"is locked by another run ({holder}; lock file {self.lock_file.name}); "
                        f"gave up after waiting {waited:.1f} s",
                        "wait for that run to finish, or give the two runs different work directories",
                        "locked") from None
                time.sleep(self.poll)
        # Who holds it, for the message another waiter prints.
        info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                           "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, info, 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> ArtifactLock:
        return self if self.held else self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _describe_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {info['pid']} on {info['host']}, since {info['since']}"
    except (OSError, ValueError, KeyError):
        return "holder unknown"


def lock_artifact(path: str | Path, timeout: float | None = None) -> ArtifactLock:
    """Take the lock on the artifact at ``path`` (use as a context manager, or call release())."""
    return ArtifactLock(path, timeout=timeout).acquire()


def is_locked(path: str | Path) -> bool:
    """True when a process holds the lock on the artifact at ``path`` (creates no lock file)."""
    try:
        fd = os.open(lock_path(path), os.O_RDWR)
    except FileNotFoundError:
        return False  # whoever locks it creates the file first
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a lock this probe took
    return False
