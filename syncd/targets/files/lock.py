"""One writer per directory: an exclusive ``flock`` on ``..syncd.lock`` for a writing cycle.

Two processes swapping generations in one directory delete each other's in-progress and
current generations, and the second one's carried-over set silently drops the first one's
update. The lock serialises them. It is an advisory ``flock`` on a file in the directory, so
it works between containers sharing a volume, is released by the kernel when its holder dies
(even by SIGKILL), and taking it writes nothing once the lock file exists: a cycle with no
change stays a cycle with no write.

The holder is named from ``/proc/locks`` (Linux), so nothing has to be written to say who
holds it.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable

from syncd.errors import TargetError
from syncd.targets.files.fsdir import Dir
from syncd.targets.files.settings import LOCK_FILE

_POLL = 0.02


class DirectoryLock:
    """The held lock; ``release`` (or the process ending) gives it up."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    @classmethod
    def acquire(
        cls, root: Dir, *, timeout: float, count_create: Callable[[], None]
    ) -> DirectoryLock:
        """Take the lock, waiting at most ``timeout`` seconds for another holder.

        ``count_create`` is called before the lock file is created (the first run only).
        """
        flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(LOCK_FILE, flags, dir_fd=root.fd)
        except FileNotFoundError:
            count_create()
            fd = os.open(LOCK_FILE, flags | os.O_CREAT, 0o600, dir_fd=root.fd)
        except OSError as exc:
            raise TargetError(f"can't open {root.where(LOCK_FILE)}: {exc.strerror}") from exc
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return cls(fd)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _holder(fd)
                    os.close(fd)
                    raise TargetError(
                        f"{root.path} is being written by another syncd ({holder}) and it "
                        f"didn't finish within lock_timeout ({timeout:g}s). Only one process "
                        "may write a directory: stop the other one, or give each config its "
                        "own directory"
                    ) from None
                time.sleep(min(_POLL, max(0.0, deadline - time.monotonic())))

    def release(self) -> None:
        """Give the lock up (idempotent)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _holder(fd: int) -> str:
    """``pid 1234`` from ``/proc/locks`` for the lock on ``fd``'s file, or what is known."""
    info = os.fstat(fd)
    wanted = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as table:
            lines = table.read().splitlines()
    except OSError:
        return "its pid is unknown here"
    for line in lines:
        fields = line.split()
        if "->" in fields or len(fields) < 6 or fields[1] != "FLOCK":
            continue
        if fields[5] == wanted and fields[3] == "WRITE":
            pid = fields[4]
            return f"pid {pid}" if pid not in ("0", "-1") else "a process in another container"
    return "its pid is unknown here"
