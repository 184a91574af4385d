"""Reading a local file that someone else controls: a config, a ``keys.yaml`` source.

A path can name a device or a FIFO (``extends: /dev/zero``, a source that is a pipe) that
would block or read forever; a file can be far larger than any config or secrets file. Both
are refused with an ``OSError`` whose message says which.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

#: Largest file read (a 10,000-secret config is about 1 MiB).
MAX_BYTES = 32 * 1024 * 1024


def read_bounded(path: Path, limit: int = MAX_BYTES) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes."""
    # O_NONBLOCK: opening a FIFO must not wait for a writer; a regular file ignores the flag
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit // (1024 * 1024)} MiB")
    return data
