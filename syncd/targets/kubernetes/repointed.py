"""What syncd last repointed a workload to, recorded on the workload itself, so a revert can
be told from a workload that was never repointed.

A GitOps tool (Argo CD, Flux) or a ``helm upgrade`` re-applying a manifest that names an old
version puts the workload's references back; repointing it on every cycle would roll it out
back and forth. So each repoint also writes, in the same guarded update, one annotation per
installation on the workload's own metadata (not its pod template: a template annotation
would itself roll the pods)::

    syncd.io/repointed-<hash of the instance>: {"instance": "default",
        "secrets": {"app": {"to": "ns/app-v2", "reverted": ["ns/app-v1"]}}}

``to`` is the version syncd moved the workload to, ``reverted`` what it was found on after a
revert that syncd then repointed once. Manifests re-applied by server-side apply, a
three-way merge (``kubectl apply``, ``helm upgrade``) or a template-only replace keep it,
because they don't own it.

Anyone who can edit the workload can write the annotation, so it is hostile input: a value
too large, not JSON, of another installation or of the wrong shape is ignored as a whole,
an entry of the wrong shape alone; ignoring it only means the workload is treated as never
repointed (the behaviour without this record), and the next repoint writes a good one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from syncd.model import Revert
from syncd.targets.kubernetes.objects import annotations_of

PREFIX = "syncd.io/repointed-"
#: How to stop a manifest from reverting repoints (docs/kubernetes.md, GitOps).
FIX = (
    "Fix: name the current version in the manifest (syncd names), make the GitOps tool ignore "
    "the pod template's Secret references (Argo CD ignoreDifferences), or use strategy: "
    "in-place; see docs/kubernetes.md#gitops"
)
#: Far more than any real record (a few hundred bytes per secret); annotations total 256 KiB.
MAX_VALUE = 16 * 1024
#: Secrets recorded on one workload.
MAX_ENTRIES = 256
#: A logical name (a Secret name's limit; logical names are shorter).
MAX_NAME = 253
#: ``namespace/name@v<N>``: a namespace (63), a Secret name (253), an in-place version.
MAX_OBJECT = 63 + 1 + 253 + 12
#: Old references kept per secret (a pod template rarely names a Secret in many ways).
MAX_OLD = 16


def annotation_key(instance: str) -> str:
    """This installation's annotation (a hash: instance names may not fit a key's 63
    characters, and another installation's key never equals it)."""
    return PREFIX + hashlib.sha256(instance.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Move:
    """One secret's record: the version syncd moved the workload to, and the references it
    was found on after a revert that syncd repointed once (empty: no revert yet)."""

    to: str
    reverted: frozenset[str] = frozenset()

    def revert(self, found: frozenset[str]) -> Revert | None:
        """How ``found`` (the workload's references of the secret now) reverts this move:
        None when nothing syncd moved was put back; ``again`` when it was put back to what
        the recorded revert found."""
        old = found - {self.to}
        if not old:
            return None
        again = bool(self.reverted) and old == self.reverted
        return Revert(to=self.to, old=old, again=again, fix=FIX)


def _object_name(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_OBJECT and "/" in value


def _entry(value: Any) -> Move | None:
    """One secret's record, or None when it isn't shaped like one syncd writes."""
    if not isinstance(value, dict) or not _object_name(value.get("to")):
        return None
    reverted = value.get("reverted", [])
    if (
        not isinstance(reverted, list)
        or len(reverted) > MAX_OLD
        or not all(_object_name(r) for r in reverted)
    ):
        return None
    return Move(value["to"], frozenset(reverted))


def read_moves(obj: Mapping[str, Any], instance: str) -> tuple[dict[str, Move], list[str]]:
    """This installation's records on a workload, and what was wrong with the annotation
    (empty when it was absent or sound)."""
    return read_record(annotations_of(obj).get(annotation_key(instance)), instance)


def read_record(raw: Any, instance: str) -> tuple[dict[str, Move], list[str]]:
    """``read_moves`` of the annotation's value as found (any JSON value, or None)."""
    if raw is None:
        return {}, []
    if not isinstance(raw, str) or len(raw) > MAX_VALUE:
        return {}, [f"larger than {MAX_VALUE} bytes" if isinstance(raw, str) else "not text"]
    try:
        doc = json.loads(raw)
    except ValueError:
        return {}, ["not JSON"]
    if not isinstance(doc, dict) or doc.get("instance") != instance:
        return {}, [f"not a record of installation {instance!r}"]
    secrets = doc.get("secrets")
    if not isinstance(secrets, dict) or len(secrets) > MAX_ENTRIES:
        return {}, [f"'secrets' is not a mapping of at most {MAX_ENTRIES} entries"]
    moves: dict[str, Move] = {}
    malformed = 0
    for name, value in secrets.items():
        move = _entry(value) if 0 < len(name) <= MAX_NAME else None
        if move is None:
            malformed += 1  # not named: whatever a stranger wrote is not echoed into logs
        else:
            moves[name] = move
    return moves, [f"{malformed} malformed entries ignored"] if malformed else []


def write_moves(
    obj: dict[str, Any], instance: str, moves: Mapping[str, Move], *, written: Iterable[str]
) -> None:
    """Store ``moves`` as this installation's annotation on ``obj`` (a body about to be
    written); when they don't fit, only the ``written`` secrets' records are kept."""
    keep = set(written)
    for chosen in (moves, {k: v for k, v in moves.items() if k in keep}):
        value = json.dumps(
            {
                "instance": instance,
                "secrets": {
                    name: {"to": m.to, **({"reverted": sorted(m.reverted)} if m.reverted else {})}
                    for name, m in sorted(chosen.items())
                },
            },
            sort_keys=True,
            separators=(",", ":"),
        )
        if len(value) <= MAX_VALUE and len(chosen) <= MAX_ENTRIES:
            break
    metadata = obj.setdefault("metadata", {})
    annotations = metadata.get("annotations")
    if not isinstance(annotations, dict):
        annotations = metadata["annotations"] = {}
    annotations[annotation_key(instance)] = value
