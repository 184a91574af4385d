"""The files target's labels: ``..data/..syncd.json``, one entry per secret, and whose it is.

The state file lives inside the generation it describes, so the labels and the files swap in
the same ``rename``. It records the installation (``instance``) that wrote it: a directory
another installation writes is refused by name, and one from before installations had names
(no ``instance``) belongs to the default installation.

Reading never writes, and tolerates a concurrent writer: if the generation ``..data`` named
vanished before it was opened, the link is read again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from syncd.errors import TargetError
from syncd.model import VersionInfo
from syncd.targets.base import DEFAULT_INSTANCE
from syncd.targets.files.fsdir import Dir, UnsafeName, check_name
from syncd.targets.files.settings import DATA_LINK, GENERATION, STATE_FILE, shown

_ATTEMPTS = 5
_FIELDS = ("version", "fingerprint")


@dataclass
class State:
    """The current generation's name (None: no set yet) and its labels."""

    generation: str | None
    instance: str = DEFAULT_INSTANCE
    secrets: dict[str, dict[str, Any]] = field(default_factory=dict)

    def versions(self) -> dict[str, list[VersionInfo]]:
        """One version per secret: the one in the current generation."""
        return {
            name: [
                VersionInfo(
                    secret=name,
                    version=int(entry["version"]),
                    object_name=f"{name}-v{entry['version']}",
                    fingerprint=str(entry["fingerprint"]),
                    keys={str(k): str(v) for k, v in entry.get("keys", {}).items()},
                    source=str(entry.get("source", "")),
                    created_at=str(entry.get("created_at", "")),
                    history=str(entry.get("history") or ""),
                    certificates=str(entry.get("certificates") or ""),
                )
            ]
            for name, entry in self.secrets.items()
        }

    def encode(self, instance: str) -> bytes:
        """The state file's bytes, recording ``instance`` as the writer."""
        doc = {"instance": instance, "secrets": self.secrets}
        return json.dumps(doc, indent=2, sort_keys=True).encode("utf-8")

    def check_owner(self, root: Dir, instance: str) -> None:
        """Refuse a directory another installation writes, naming it (an empty one is free)."""
        if self.generation is None or self.instance == instance:
            return
        legacy = " (it was written before installations had names)" * (
            self.instance == DEFAULT_INSTANCE
        )
        raise TargetError(
            f"{root.path} holds the secrets of syncd instance {self.instance!r}{legacy}, not "
            f"{instance!r}; nothing is changed. Give this config its own directory, or set "
            f"instance: {self.instance} if it is the same installation"
        )


def read_state(root: Dir) -> State:
    """The current generation and its labels; ``TargetError`` naming the file if damaged."""
    for _ in range(_ATTEMPTS):
        generation = root.readlink(DATA_LINK, reserved=True)
        if generation is None:
            return State(None)
        if not GENERATION.fullmatch(generation):
            raise TargetError(
                f"{root.where(DATA_LINK)} points at {shown(generation)}, which is not a generation "
                "syncd wrote; move the directory's contents away"
            )
        try:
            with root.sub(generation, reserved=True) as folder:
                raw = folder.read(STATE_FILE, reserved=True)
        except FileNotFoundError:
            if root.readlink(DATA_LINK, reserved=True) != generation:
                continue  # a writer swapped meanwhile: read the new one
            raise TargetError(
                f"{root.where(DATA_LINK)} points at {generation}, which is missing or has no "
                f"{STATE_FILE}; the next writing run repairs it"
            ) from None
        return parse_state(
            raw, where=f"{root.where(generation)}/{STATE_FILE}", generation=generation
        )
    raise TargetError(f"{root.where(DATA_LINK)} keeps changing; another process is writing")


def parse_state(raw: bytes, *, where: str, generation: str) -> State:
    """Decode and check a state file: every entry must be a secret syncd could have written."""
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise TargetError(
            f"{where} is damaged (not JSON); restore it or remove the directory"
        ) from None
    secrets = doc.get("secrets") if isinstance(doc, dict) else None
    instance = doc.get("instance", DEFAULT_INSTANCE) if isinstance(doc, dict) else None
    if not isinstance(secrets, dict) or not isinstance(instance, str):
        raise TargetError(f"{where} is damaged (no 'secrets' mapping); restore it")
    for name, entry in secrets.items():
        try:
            check_name(name)
        except UnsafeName as exc:
            raise TargetError(f"{where} is damaged: {exc}") from None
        if not isinstance(entry, dict) or any(key not in entry for key in _FIELDS):
            raise TargetError(f"{where} is damaged: entry {shown(name)} lacks version/fingerprint")
        if not isinstance(entry["version"], int) or not isinstance(entry.get("keys", {}), dict):
            raise TargetError(f"{where} is damaged: entry {shown(name)} has a bad version or keys")
    return State(generation, instance, secrets)
