"""Which secret references one repoint swaps.

A repoint is one service update that swaps each reference to an old version for the new
one and leaves its target file alone. The old references are the ones the plan saw; but
another run of the same installation (two processes at once, one of them slower) may have
moved the service meanwhile to a version created after this run's listing. Those are
swapped too, found by name and checked on the object's labels, so a run never leaves a
service on a version older than the one it made; a reference to a *newer* one stays.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from syncd.model import VersionInfo
from syncd.targets.swarm.api import DockerApi
from syncd.targets.swarm.labels import LABEL_NAME, LABEL_VERSION, labels_of, owner
from syncd.targets.swarm.names import object_name

_DIGITS = re.compile(r"[0-9]+")


def swap_refs(
    refs: Sequence[Mapping[str, Any]],
    swaps: Mapping[str, VersionInfo],
    new_ids: Mapping[str, str],
) -> tuple[list[dict[str, Any]], bool]:
    """The secret references with each swapped one renamed; ``File`` is left untouched.

    A service caught mid-way (referencing an old and the new version at one target file)
    ends with one reference per (secret, file) pair.
    """
    updated: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    changed = False
    for ref in refs:
        entry = dict(ref)
        successor = swaps.get(entry.get("SecretName", ""))
        if successor is not None:
            entry["SecretName"] = successor.object_name
            entry["SecretID"] = new_ids[ref["SecretName"]]
            changed = True
        key = (entry.get("SecretID", ""), json.dumps(entry.get("File"), sort_keys=True))
        if key in seen:
            continue
        seen.add(key)
        updated.append(entry)
    return updated, changed


def moved_meanwhile(
    refs: Sequence[Mapping[str, Any]],
    swaps: Mapping[str, VersionInfo],
    *,
    version_of: Callable[[str, str], int | None],
) -> dict[str, VersionInfo]:
    """References to an older version of a swapped secret that ``swaps`` doesn't name,
    mapped to the successor; ``version_of(object name, secret)`` tells a version apart."""
    successors = {v.secret: v for v in swaps.values()}
    known = set(swaps) | {v.object_name for v in swaps.values()}
    found: dict[str, VersionInfo] = {}
    for ref in refs:
        name = str(ref.get("SecretName") or "")
        if not name or name in known:
            continue
        for secret, successor in successors.items():
            version = version_of(name, secret)
            if version is not None and version < successor.version:
                found[name] = successor
    return found


def version_named(
    api: DockerApi, name: str, secret: str, *, naming: str, instance: str
) -> int | None:
    """The version of ``secret`` whose object is ``name`` under ``naming``, checked on the
    object's labels (one of that name could be hand-made); ``None`` when it is none.

    Only a name that ``naming`` makes for some version costs a lookup.
    """
    for digits in _DIGITS.finditer(name):
        version = int(digits.group())
        if version < 1 or object_name(naming, secret, version) != name:
            continue
        existing = api.named("secrets", name)
        labels = labels_of(existing) if existing is not None else {}
        if (
            owner(labels) == instance
            and labels.get(LABEL_NAME) == secret
            and labels.get(LABEL_VERSION) == str(version)
        ):
            return version
        return None
    return None
