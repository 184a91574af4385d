"""The labels that are syncd's state in a Swarm, and who owns a labelled object.

Every secret syncd creates says what it is (logical name, version, fingerprint, source
reference: never a value) and which installation made it (``syncd.instance``). An object
with the managed-by label but no instance label was written before installations had names
and belongs to the default installation.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from syncd.model import NewVersion, Rollout, VersionInfo
from syncd.targets.base import DEFAULT_INSTANCE

LABEL_MANAGED = "syncd.managed-by"
MANAGED_BY = "syncd"
LABEL_INSTANCE = "syncd.instance"
LABEL_NAME = "syncd.name"
LABEL_VERSION = "syncd.version"
LABEL_FINGERPRINT = "syncd.fingerprint"
LABEL_KEYS = "syncd.keys"
LABEL_SOURCE = "syncd.source"
LABEL_CREATED = "syncd.created-at"
LABEL_ROLE = "syncd.role"
#: How a version's rollout failed (``Rollout`` as JSON); absent on healthy versions.
LABEL_ROLLOUT = "syncd.rollout"
#: The secret's ledger of versions (``syncd.history``), on its newest version.
LABEL_HISTORY = "syncd.history"
#: When the certificates in a version's values expire, per key (``syncd.expiry``).
LABEL_CERTIFICATES = "syncd.certificates-expire"
#: The listing filter for every object syncd manages, of any installation.
MANAGED_FILTER = {"label": f"{LABEL_MANAGED}={MANAGED_BY}"}
_VERSION = re.compile(r"[1-9][0-9]{0,8}")


def labels_of(obj: Mapping[str, Any]) -> dict[str, str]:
    """An inspected or listed object's labels."""
    return dict((obj.get("Spec") or {}).get("Labels") or {})


def owner(labels: Mapping[str, str]) -> str | None:
    """The installation an object belongs to; ``None`` for one syncd didn't make."""
    if labels.get(LABEL_MANAGED) != MANAGED_BY:
        return None
    return labels.get(LABEL_INSTANCE) or DEFAULT_INSTANCE


def version_labels(item: NewVersion, instance: str) -> dict[str, str]:
    """The labels that make a Swarm secret ``instance``'s version ``item`` (never a value)."""
    extra = {LABEL_HISTORY: item.history} if item.history else {}
    if item.certificates:
        extra[LABEL_CERTIFICATES] = item.certificates
    return {
        LABEL_MANAGED: MANAGED_BY,
        LABEL_INSTANCE: instance,
        LABEL_NAME: item.secret,
        LABEL_VERSION: str(item.version),
        LABEL_FINGERPRINT: item.fingerprint,
        LABEL_KEYS: json.dumps(item.keys, sort_keys=True, separators=(",", ":")),
        LABEL_SOURCE: item.source,
        LABEL_CREATED: item.created_at,
        **extra,
    }


def key_labels(instance: str) -> dict[str, str]:
    """The labels of the Swarm config holding ``instance``'s fingerprint key."""
    return {LABEL_MANAGED: MANAGED_BY, LABEL_INSTANCE: instance, LABEL_ROLE: "fingerprint-key"}


def version_info(secret: Mapping[str, Any]) -> VersionInfo | None:
    """The version a managed secret's labels describe; ``None`` when they don't parse."""
    spec = secret.get("Spec") or {}
    labels = spec.get("Labels") or {}
    try:
        keys = json.loads(labels.get(LABEL_KEYS) or "{}")
        if not isinstance(keys, dict) or not _VERSION.fullmatch(labels[LABEL_VERSION]):
            return None
        return VersionInfo(
            secret=labels[LABEL_NAME],
            version=int(labels[LABEL_VERSION]),
            object_name=spec["Name"],
            fingerprint=labels[LABEL_FINGERPRINT],
            keys={str(k): str(v) for k, v in keys.items()},
            source=labels.get(LABEL_SOURCE, ""),
            created_at=labels.get(LABEL_CREATED, ""),
            rollout=Rollout.from_label(labels.get(LABEL_ROLLOUT)),
            history=str(labels.get(LABEL_HISTORY) or ""),
            certificates=str(labels.get(LABEL_CERTIFICATES) or ""),
        )
    except (KeyError, ValueError):
        return None
