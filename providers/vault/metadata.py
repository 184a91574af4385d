"""KV v2 version tokens: what identifies the value a path holds, without reading it.

A version number alone does not: a secret whose metadata is deleted (``kv metadata delete``)
and written again starts at version 1, and "version 1" is what syncd stored the last time.
The token is therefore the version number *and* that version's ``created_time``,
``<version>@<created_time>``: a re-created secret's version 1 has a new creation time. Every
path to the token gives the same string: the per-secret metadata read, the folder listing
(detailed-metadata carries the same record per secret) and the data read itself (its
``metadata`` block), so the engine never fetches because two paths disagree. A pinned version
takes its ``created_time`` from the same record, so a pin on a re-created secret moves too.

A version's ``deletion_time`` is in the past once it was deleted; a future one is the deletion
``delete_version_after`` scheduled when the version was written: the version is readable until
then, and that time is its expiry (``expiry_of``).

Everything here is server input: a record that isn't what KV v2 returns gives ``None`` (read
the value and compare fingerprints) or a ``Failure`` naming the path, never a crash.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime

from providers.vault.calls import Failure

#: RFC 3339 as Vault and OpenBao print it (up to nanoseconds); anything else is not a token.
_CREATED = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:\d\d)")
#: The same, in the parts ``datetime`` reads (it takes at most microseconds).
_PARTS = re.compile(r"(?P<second>[^.]*:\d\d)(?:\.(?P<fraction>\d{1,9}))?(?P<zone>Z|[+-]\d\d:\d\d)")


@dataclass(frozen=True)
class KvPath:
    """One secret of a KV mount; several references (keys, pins) share its calls."""

    mount: str
    path: str

    def api_path(self, kv_version: int, kind: str = "data") -> str:
        """``secret/data/app/db`` (``metadata``, ...) on KV v2, ``kv1/app/db`` on KV v1."""
        if kv_version == 1:
            return f"{self.mount}/{self.path}"
        return f"{self.mount}/{kind}/{self.path}"


@dataclass(frozen=True)
class Folder:
    """One folder of a KV v2 mount whose secrets' metadata one LIST answers."""

    mount: str
    folder: str
    names: frozenset[str]

    def api_path(self) -> str:
        """``secret/detailed-metadata/app/`` (always with the trailing slash a LIST needs)."""
        return f"{self.mount}/detailed-metadata/{self.folder}".rstrip("/") + "/"


def field(document: object, name: str) -> dict[str, object]:
    """``document[name]`` when both are JSON objects, else an empty one (server input)."""
    if isinstance(document, dict):
        value = document.get(name)
        if isinstance(value, dict):
            return value
    return {}


def version_token(version: object, created: object) -> str | None:
    """``<version>@<created_time>``, or ``None`` when either is not what KV v2 returns."""
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        return None
    if not isinstance(created, str) or not _CREATED.fullmatch(created):
        return None
    return f"{version}@{created}"


def timestamp(text: object) -> float | None:
    """An RFC 3339 time as KV v2 prints it, as Unix seconds; ``None`` for anything else."""
    if not isinstance(text, str) or not _CREATED.fullmatch(text):
        return None
    parts = _PARTS.fullmatch(text)
    if parts is None:
        return None
    fraction = (parts["fraction"] or "0")[:6]
    zone = "+00:00" if parts["zone"] == "Z" else parts["zone"]
    try:
        return datetime.fromisoformat(f"{parts['second']}.{fraction:0<6}{zone}").timestamp()
    except ValueError:  # matched the shape, not a date (month 13)
        return None


def deleted(deletion_time: object) -> bool:
    """Whether a version's ``deletion_time`` says it is deleted: set, and not a future time
    (a future one is only scheduled). One that can't be read counts as deleted, as before."""
    if not deletion_time:
        return False
    when = timestamp(deletion_time)
    return when is None or when <= time.time()


def expiry_of(record: object, pin: int | None) -> float | None:
    """The scheduled deletion (Unix seconds) of the current (or the pinned) version in a KV v2
    metadata record, or ``None``: none scheduled, or a record too odd to tell."""
    if not isinstance(record, dict):
        return None
    number = record.get("current_version") if pin is None else pin
    info = field(record, "versions").get(str(number))
    if not isinstance(info, dict):
        return None
    return timestamp(info.get("deletion_time"))


def token_of(record: object, pin: int | None, where: str) -> str | Failure | None:
    """The token of the current (or the pinned) version in a KV v2 metadata record.

    A deleted or destroyed version, or a secret with no versions, is a ``Failure``; a record
    too odd to tell is ``None`` (the engine reads the value and compares fingerprints).
    """
    if not isinstance(record, dict):
        return None
    versions = record.get("versions")
    if not isinstance(versions, dict):
        return None
    if pin is None:
        number = record.get("current_version")
        if number == 0:
            return Failure(f"{where}: the secret has no versions")
        label = f"current version {number}"
    else:
        number = pin
        label = f"version {pin}"
    if isinstance(number, bool) or not isinstance(number, int) or number < 1:
        return None
    info = versions.get(str(number))
    if info is None and pin is not None:
        return Failure(f"{where}: {label} not found")
    if not isinstance(info, dict):
        return None
    if info.get("destroyed"):
        return Failure(f"{where}: {label} is destroyed")
    if deleted(info.get("deletion_time")):
        return Failure(f"{where}: {label} is deleted")
    return version_token(number, info.get("created_time"))
