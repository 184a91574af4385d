"""Directory operations that no name can escape.

Every file the files target touches is reached through an open directory descriptor
(``dir_fd=``) by one path component that is checked first: no ``/``, no NUL, never ``.`` or
``..``, at most 255 bytes, and syncd's own ``..`` names only where the caller says it means
one. Symlinks are never followed (``O_NOFOLLOW``, ``follow_symlinks=False``), except the one
the config names as the directory itself. So even a name that slipped past every rule can
neither leave the directory nor overwrite syncd's state, and a link planted by someone else
is refused rather than written through.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from pathlib import Path
from types import TracebackType

from syncd.errors import TargetError
from syncd.targets.files.settings import MAX_NAME_BYTES, RESERVED_PREFIX, shown

_NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW


class UnsafeName(TargetError):
    """A name that is not one plain entry of the directory (or takes a reserved name)."""


def check_name(name: str, *, reserved: bool = False) -> str:
    """``name`` if it is exactly one entry of a directory; ``reserved`` allows ``..`` names."""
    if not isinstance(name, str) or name in ("", ".", ".."):
        raise UnsafeName(f"{shown(str(name))} is not a file name")
    if "/" in name or "\0" in name:
        raise UnsafeName(f"{shown(name)} is not a plain file name (it holds '/' or NUL)")
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        raise UnsafeName(f"{shown(name)} is longer than {MAX_NAME_BYTES} bytes")
    if not reserved and name.startswith(RESERVED_PREFIX):
        raise UnsafeName(f"{shown(name)} starts with '..', which only syncd's own files may")
    return name


class Dir:
    """One open directory; every method takes a single checked name inside it."""

    def __init__(self, fd: int, path: str) -> None:
        self.fd = fd
        self.path = path

    @classmethod
    def open(cls, path: Path) -> Dir | None:
        """The configured directory (a symlink to it is followed), or None if it is absent."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            raise TargetError(f"{path} is not a directory") from None
        return cls(fd, str(path))

    def __enter__(self) -> Dir:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the descriptor (idempotent)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def where(self, name: str) -> str:
        """``directory/name`` for messages (an odd name quoted, so it can't forge a line)."""
        plain = name.isprintable() and name == shown(name)[1:-1]
        return f"{self.path}/{name}" if plain else f"{self.path}/{shown(name)}"

    # ------------------------------------------------------------------ reading

    def names(self) -> list[str]:
        """Every entry (sorted)."""
        return sorted(os.listdir(self.fd))

    def entries(self) -> list[os.DirEntry[str]]:
        """Every entry with its type, from one directory scan."""
        with os.scandir(self.fd) as scan:
            return sorted(scan, key=lambda e: e.name)

    def lstat(self, name: str, *, reserved: bool = False) -> os.stat_result | None:
        """The entry's own status (a link is not followed), or None if it is absent."""
        try:
            return os.stat(
                check_name(name, reserved=reserved), dir_fd=self.fd, follow_symlinks=False
            )
        except FileNotFoundError:
            return None

    def readlink(self, name: str, *, reserved: bool = False) -> str | None:
        """Where a symlink points; None if absent; ``TargetError`` if it isn't a symlink."""
        try:
            return os.readlink(check_name(name, reserved=reserved), dir_fd=self.fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise TargetError(f"{self.where(name)} is not a symlink") from None
            raise

    def read(self, name: str, *, reserved: bool = False) -> bytes:
        """A regular file's bytes; a symlink in its place is refused (``ELOOP``)."""
        fd = os.open(check_name(name, reserved=reserved), os.O_RDONLY | _NOFOLLOW, dir_fd=self.fd)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise TargetError(f"{self.where(name)} is not a regular file")
            chunks = []
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def sub(self, name: str, *, reserved: bool = False) -> Dir:
        """A sub-folder (never through a symlink)."""
        fd = os.open(check_name(name, reserved=reserved), _DIR_FLAGS, dir_fd=self.fd)
        return Dir(fd, self.where(name))

    # ------------------------------------------------------------------ writing

    def write_new(
        self,
        name: str,
        data: bytes,
        *,
        mode: int,
        owner: tuple[int, int] | None = None,
        reserved: bool = False,
    ) -> None:
        """Create ``name`` (it must not exist), write all of ``data``, set owner and mode, and
        fsync, so the file is complete before anything points at it."""
        fd = os.open(
            check_name(name, reserved=reserved),
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW,
            0o600,
            dir_fd=self.fd,
        )
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if owner is not None:
                os.fchown(fd, *owner)
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)

    def replace(self, name: str, data: bytes, *, mode: int, tmp: str) -> None:
        """Replace ``name`` atomically: write ``tmp`` completely, then rename it over."""
        self.write_new(tmp, data, mode=mode, reserved=True)
        self.rename(tmp, name, reserved=True)
        self.fsync()

    def mkdir(
        self, name: str, *, owner: tuple[int, int] | None = None, reserved: bool = False
    ) -> Dir:
        """Create a folder readers can traverse (each file inside carries its own mode) and
        return it open."""
        os.mkdir(check_name(name, reserved=reserved), 0o700, dir_fd=self.fd)
        folder = self.sub(name, reserved=reserved)
        if owner is not None:
            os.fchown(folder.fd, *owner)
        os.fchmod(folder.fd, 0o755)
        return folder

    def link_from(self, source: Dir, name: str) -> None:
        """Hard-link ``source/name`` here under the same name (never following a symlink)."""
        check_name(name)
        os.link(name, name, src_dir_fd=source.fd, dst_dir_fd=self.fd, follow_symlinks=False)

    def link_new(self, name: str, existing: str) -> bool:
        """Hard-link ``existing`` as ``name`` unless ``name`` exists (an atomic no-clobber
        publish); False if it does."""
        try:
            os.link(
                check_name(existing, reserved=True),
                check_name(name, reserved=True),
                src_dir_fd=self.fd,
                dst_dir_fd=self.fd,
                follow_symlinks=False,
            )
        except FileExistsError:
            return False
        return True

    def symlink(self, name: str, points_to: str, *, reserved: bool = False) -> None:
        """Create the symlink ``name`` -> ``points_to``."""
        os.symlink(points_to, check_name(name, reserved=reserved), dir_fd=self.fd)

    def rename(self, src: str, dst: str, *, reserved: bool = False) -> None:
        """Rename within this directory (atomically replaces ``dst``)."""
        os.rename(
            check_name(src, reserved=True),
            check_name(dst, reserved=reserved),
            src_dir_fd=self.fd,
            dst_dir_fd=self.fd,
        )

    def unlink(self, name: str, *, reserved: bool = False) -> None:
        """Remove a file or symlink (absent is fine)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(check_name(name, reserved=reserved), dir_fd=self.fd)

    def remove(self, name: str, *, reserved: bool = False) -> None:
        """Remove a file, symlink or whole folder (absent is fine); never follows a link."""
        info = self.lstat(name, reserved=reserved)
        if info is None:
            return
        if stat.S_ISDIR(info.st_mode):
            shutil.rmtree(name, dir_fd=self.fd)
        else:
            self.unlink(name, reserved=reserved)

    def fsync(self) -> None:
        """Make this directory's entries durable (a rename is only safe after it)."""
        os.fsync(self.fd)
