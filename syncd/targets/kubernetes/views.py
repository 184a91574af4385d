"""What syncd keeps of the cluster's objects: the few fields a cycle reads, nothing else.

A cycle needs a version Secret's labels and annotations, and of a workload only its kind,
name, labels, the Secrets its pod templates reference, syncd's restart annotations and
repoint record, and whether it has converged. Keeping these instead of whole objects bounds
the watch cache's memory by what syncd uses (a Deployment's full manifest is several KiB,
its view a few hundred bytes), and computing the references once per change of a workload,
not once per secret per cycle, keeps finding consumers linear in secrets plus workloads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from syncd.targets.kubernetes.objects import A_RESTART, annotations_of, labels_of
from syncd.targets.kubernetes.podspec import pod_templates, refs
from syncd.targets.kubernetes.repointed import annotation_key
from syncd.targets.kubernetes.rollout import unconverged

#: The annotation prefix of everything syncd writes on a Secret (``objects``).
_SYNCD = "syncd.io/"


@dataclass(frozen=True)
class Workload:
    """A workload as consumer finding and the scan before deletion see it."""

    kind: str
    name: str
    labels: Mapping[str, str]
    #: Names of every Secret its pod templates reference.
    refs: frozenset[str]
    #: The pod templates' restart annotations (``syncd.io/rev-*``) of in-place secrets.
    restarts: Mapping[str, str]
    #: This installation's repoint record (``repointed``), as found: hostile input.
    record: Any
    #: Why it hasn't converged on its current spec, or None.
    unconverged: str | None
    resource_version: str


def workload(obj: dict[str, Any], instance: str) -> Workload:
    """The view of one workload object (any kind, custom ones included)."""
    meta = obj.get("metadata") or {}
    restarts: dict[str, str] = {}
    for template in pod_templates(obj):
        restarts.update(
            (k, v)
            for k, v in annotations_of(template).items()
            if k.startswith(A_RESTART) and isinstance(v, str)
        )
    return Workload(
        kind=str(obj.get("kind") or ""),
        name=str(meta.get("name") or ""),
        labels={k: v for k, v in labels_of(obj).items() if isinstance(v, str)},
        refs=frozenset(refs(obj)),
        restarts=restarts,
        record=annotations_of(obj).get(annotation_key(instance)),
        unconverged=unconverged(obj),
        resource_version=str(meta.get("resourceVersion") or ""),
    )


def secret_metadata(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A version Secret reduced to what ``objects.version_info`` reads: name, namespace,
    resourceVersion, labels and syncd's own annotations (not managedFields, not a
    ``kubectl apply`` copy of the manifest, never data)."""
    meta = obj.get("metadata") or {}
    return {
        "kind": "Secret",
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "resourceVersion": meta.get("resourceVersion"),
            "labels": dict(labels_of(obj)),
            "annotations": {
                k: v for k, v in annotations_of(obj).items() if str(k).startswith(_SYNCD)
            },
        },
    }
