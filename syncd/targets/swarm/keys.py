"""The installation's fingerprint key: reading it, writing it once, and what to do when it's
broken.

The key can't live in a Swarm secret (unreadable), so it is a Swarm config or a key file.
A key file is written so that no reader ever finds it half-written: a first run that is
interrupted leaves either no key file or a whole one, never an empty file that would break
every later cycle. A key that is broken anyway (empty, not hex, a wrong length) is refused
with what to delete and what happens then; the message never shows the key's content.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
from pathlib import Path

from syncd.errors import TargetError

#: HMAC-SHA256 keys shorter than this are weak; syncd writes 32 bytes.
MIN_KEY_BYTES = 16
#: Longer than one SHA-256 block: not a key anyone meant to write.
MAX_KEY_BYTES = 64
#: A temporary key file older than this is a leftover of a killed run (a live writer links
#: or removes its own within milliseconds).
STALE_TEMP_SECONDS = 60.0
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})+")
_AFTERWARDS = (
    "run syncd again: it makes a new key, and every secret gets one new version that its "
    "consumers are repointed to"
)


def file_fix(path: Path) -> str:
    """How to repair a broken key file."""
    return f"delete {path} (or write a new key into it: openssl rand -hex 32) and {_AFTERWARDS}"


def config_fix(name: str) -> str:
    """How to repair a broken key config."""
    return f"remove it (docker config rm {name}) and {_AFTERWARDS}"


def parse_key(raw: bytes, *, where: str, fix: str) -> bytes:
    """The key stored as hex text in ``raw``; a broken one is a ``TargetError`` saying ``fix``."""
    try:
        text = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise TargetError(f"{where} is not a syncd key (it isn't hex text); {fix}") from None
    if not text:
        raise TargetError(f"{where} is empty (a first run interrupted while writing it?); {fix}")
    if not _HEX.fullmatch(text):
        raise TargetError(f"{where} does not hold a hex-encoded key; {fix}")
    key = bytes.fromhex(text)
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise TargetError(
            f"{where} holds a {len(key)}-byte key; syncd needs {MIN_KEY_BYTES} to "
            f"{MAX_KEY_BYTES} bytes; {fix}"
        )
    return key


def key_text(key: bytes) -> bytes:
    """How a key is stored: hex and a newline."""
    return key.hex().encode("ascii") + b"\n"


def read_key_file(path: Path) -> bytes | None:
    """The key in ``path``, or ``None`` when there is no such file."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise TargetError(f"can't read the fingerprint key file {path}: {exc}") from exc
    return parse_key(raw, where=f"fingerprint key file {path}", fix=file_fix(path))


def _temp_pattern(path: Path) -> str:
    return f".{path.name}.tmp-*"


def write_key_file(path: Path, key: bytes) -> None:
    """Create ``path`` holding ``key``, whole or not at all; an existing file wins.

    The key goes into a temporary file in the same folder, is fsynced, and is then
    hard-linked to its name. Unlike a rename, a link fails when the name exists, which keeps
    ``O_EXCL``'s meaning: when another instance stored its key meanwhile, that key stays.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(_temp_pattern(path).replace("*", secrets.token_hex(4)))
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise TargetError(f"can't create the fingerprint key file {path}: {exc}") from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(key_text(key))
            handle.flush()
            os.fsync(handle.fileno())
        os.link(temp, path)
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    except FileExistsError as exc:
        raise TargetError(
            f"fingerprint key file {path} appeared meanwhile; the next cycle uses it"
        ) from exc
    except OSError as exc:
        raise TargetError(f"can't create the fingerprint key file {path}: {exc}") from exc
    finally:
        temp.unlink(missing_ok=True)


def remove_stale_temps(path: Path) -> list[Path]:
    """Remove temporary key files that a killed run left next to ``path``; returns them."""
    removed = []
    cutoff = time.time() - STALE_TEMP_SECONDS
    for temp in path.parent.glob(_temp_pattern(path)):
        with contextlib.suppress(FileNotFoundError):
            if temp.stat().st_mtime < cutoff:
                temp.unlink()
                removed.append(temp)
    return removed
