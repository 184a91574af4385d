"""What a syncd Secret says about itself, and whose it is.

Every Secret syncd creates carries labels (managed-by, role, logical name, version,
installation) and annotations (logical name, keyed fingerprint, per-key fingerprints, source
reference, created-at); never a value. These are read back from objects anyone with write
access to the namespace could have made, so parsing them refuses anything malformed instead
of trusting it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from syncd.model import NewVersion, Rollout, VersionInfo
from syncd.targets.base import DEFAULT_INSTANCE

MANAGED_BY = "app.kubernetes.io/managed-by"
ROLE = "syncd.io/role"
INSTANCE = "syncd.io/instance"
LABEL_NAME = "syncd.io/secret"
LABEL_VERSION = "syncd.io/version"
A_NAME = "syncd.io/name"
A_FINGERPRINT = "syncd.io/fingerprint"
A_KEYS = "syncd.io/keys"
A_SOURCE = "syncd.io/source"
A_CREATED = "syncd.io/created-at"
A_VERSION = "syncd.io/version"
#: How a version's rollout failed (``Rollout`` as JSON); absent on healthy versions.
A_ROLLOUT = "syncd.io/rollout"
#: The secret's ledger of versions (``syncd.history``), on its newest version Secret.
A_HISTORY = "syncd.io/history"
#: When the certificates in a version's values expire, per key (``syncd.expiry``).
A_CERTIFICATES = "syncd.io/certificates-expire"
#: The same state as a label, for ``kubectl get secrets -l syncd.io/rollout-state``.
LABEL_ROLLOUT = "syncd.io/rollout-state"
#: Pod-template annotation prefix that restarts in-place consumers.
A_RESTART = "syncd.io/rev-"

ROLE_VERSION = "version"
ROLE_IN_PLACE = "in-place"
ROLE_KEY = "fingerprint-key"
#: Versions above this are not something syncd wrote.
MAX_VERSION = 10**9
_HEX = re.compile(r"^[0-9a-f]{1,128}$")


def label_value(name: str) -> str:
    """A label-safe form of a logical name (<= 63 chars; long names get a stable hash)."""
    value = re.sub(r"[^A-Za-z0-9_.-]", "-", name).strip("-_.")
    if len(value) > 63:
        value = value[:52].rstrip("-_.") + "-" + hashlib.sha256(name.encode()).hexdigest()[:10]
    return value


def restart_annotation(name: str) -> str:
    """The pod-template annotation that carries an in-place secret's version."""
    return A_RESTART + hashlib.sha256(name.encode()).hexdigest()[:12]


def labels_of(obj: Mapping[str, Any]) -> dict[str, str]:
    """An object's labels (empty when absent or malformed)."""
    labels = (obj.get("metadata") or {}).get("labels")
    return labels if isinstance(labels, dict) else {}


def annotations_of(obj: Mapping[str, Any]) -> dict[str, str]:
    """An object's annotations (empty when absent or malformed)."""
    annotations = (obj.get("metadata") or {}).get("annotations")
    return annotations if isinstance(annotations, dict) else {}


def managed(obj: Mapping[str, Any]) -> bool:
    """Whether syncd (any installation) made this object."""
    return labels_of(obj).get(MANAGED_BY) == "syncd"


def owner(obj: Mapping[str, Any]) -> str:
    """The installation a managed object belongs to; objects from before installations had
    names carry no label and belong to the default one."""
    return labels_of(obj).get(INSTANCE) or DEFAULT_INSTANCE


def where(obj: Mapping[str, Any]) -> str:
    """``namespace/name`` of an object."""
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def version_info(obj: Mapping[str, Any]) -> VersionInfo | None:
    """The version a managed Secret holds, or None when its labels don't describe one.

    In-place Secrets are reported as ``ns/name@v<N>``, so a consumer restarted for v2 counts
    as on an old version once v3 is written, exactly like a versioned reference.
    """
    labels, annotations = labels_of(obj), annotations_of(obj)
    role = labels.get(ROLE)
    if not managed(obj) or role not in (ROLE_VERSION, ROLE_IN_PLACE):
        return None
    name, raw_version = annotations.get(A_NAME), annotations.get(A_VERSION, "")
    if not isinstance(name, str) or not name or not isinstance(raw_version, str):
        return None
    if not raw_version.isdigit() or not 1 <= int(raw_version) <= MAX_VERSION:
        return None
    version = int(raw_version)
    if labels.get(LABEL_VERSION) != raw_version or labels.get(LABEL_NAME) != label_value(name):
        return None
    try:
        keys = json.loads(annotations.get(A_KEYS) or "{}")
    except ValueError:
        return None
    if not isinstance(keys, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and _HEX.match(v) for k, v in keys.items()
    ):
        return None
    object_name = where(obj)
    if role == ROLE_IN_PLACE:
        object_name = f"{object_name}@v{version}"
    return VersionInfo(
        secret=name,
        version=version,
        object_name=object_name,
        fingerprint=str(annotations.get(A_FINGERPRINT) or ""),
        keys=keys,
        source=str(annotations.get(A_SOURCE) or ""),
        created_at=str(annotations.get(A_CREATED) or ""),
        rollout=Rollout.from_label(annotations.get(A_ROLLOUT)) if role == ROLE_VERSION else None,
        history=str(annotations.get(A_HISTORY) or ""),
        certificates=str(annotations.get(A_CERTIFICATES) or ""),
    )


def split_object_name(object_name: str) -> tuple[str, str]:
    """``ns/name`` or ``ns/name@vN`` as ``(namespace, name)``."""
    namespace, _, rest = object_name.partition("/")
    return namespace, rest.partition("@v")[0]


def secret_body(
    item: NewVersion, *, name: str, role: str, instance: str, secret_type: str
) -> dict[str, Any]:
    """The Secret for a version: labels and annotations say what it is, never a value."""
    history = {A_HISTORY: item.history} if item.history else {}
    certificates = {A_CERTIFICATES: item.certificates} if item.certificates else {}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "labels": {
                MANAGED_BY: "syncd",
                ROLE: role,
                INSTANCE: instance,
                LABEL_NAME: label_value(item.secret),
                LABEL_VERSION: str(item.version),
            },
            "annotations": {
                A_NAME: item.secret,
                A_VERSION: str(item.version),
                A_FINGERPRINT: item.fingerprint,
                A_KEYS: json.dumps(item.keys, sort_keys=True),
                A_SOURCE: item.source,
                A_CREATED: item.created_at,
                **history,
                **certificates,
            },
        },
        "type": secret_type,
        "data": {k: base64.b64encode(v).decode() for k, v in sorted(item.data.items())},
    }
