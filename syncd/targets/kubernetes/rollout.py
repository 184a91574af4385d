"""Whether a consumer runs its current spec, judged from its status as ``kubectl rollout
status`` does, so the rollout wait and the every-cycle report agree.

``rollout_status`` answers ``(done, message)``; a message starting with ``failed:`` can't
get better by waiting (a progress deadline passed, a paused rollout, a degraded Rollout).
A CronJob is done as soon as its template is stored: its next Job uses it, and waiting for
a run would wait for the schedule.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

FAILED = "failed: "
_BUILTIN = ("Deployment", "StatefulSet", "DaemonSet")


def _int(value: Any) -> int:
    """A status counter (custom resources sometimes write numbers as strings)."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return 0


def rollout_status(obj: Mapping[str, Any], expected_generation: int = 0) -> tuple[bool, str]:
    """``(done, message)`` for any consumer kind; ``failed: ...`` ends a wait."""
    kind = obj.get("kind")
    if kind == "CronJob":
        return True, "the next Job uses the new template"
    meta = obj.get("metadata") or {}
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    generation = max(_int(meta.get("generation")), expected_generation)
    # a custom resource whose controller never reports observedGeneration can't be judged by it
    tracked = kind in _BUILTIN or "observedGeneration" in status
    if tracked and _int(status.get("observedGeneration")) < generation:
        if kind == "Deployment" and spec.get("paused"):
            return False, f"{FAILED}paused before the controller saw the update"
        return False, "waiting for the controller to observe the update"
    if kind == "Deployment":
        return _deployment(spec, status)
    if kind == "StatefulSet":
        return _statefulset(spec, status)
    if kind == "DaemonSet":
        return _daemonset(status)
    return _custom(status)


def unconverged(obj: Mapping[str, Any]) -> str | None:
    """Why ``obj`` hasn't converged on the spec it holds now, or None when it has."""
    done, message = rollout_status(obj)
    return None if done else message.removeprefix(FAILED)


def _deployment(spec: Mapping[str, Any], status: Mapping[str, Any]) -> tuple[bool, str]:
    for condition in status.get("conditions") or []:
        if (
            isinstance(condition, dict)
            and condition.get("type") == "Progressing"
            and condition.get("reason") == "ProgressDeadlineExceeded"
        ):
            return False, f"{FAILED}progress deadline exceeded"
    replicas = _int(spec.get("replicas", 1))
    updated = _int(status.get("updatedReplicas"))
    paused = (
        " (the Deployment is paused: kubectl rollout resume rolls it out)"
        if spec.get("paused")
        else ""
    )
    if updated < replicas:
        message = f"{updated} of {replicas} updated replicas{paused}"
        return False, (FAILED + message) if paused else message
    if _int(status.get("replicas")) > updated:
        return False, f"{_int(status.get('replicas')) - updated} old replicas pending termination"
    available = _int(status.get("availableReplicas"))
    if available < updated:
        return False, f"{available} of {updated} updated replicas available"
    return True, "rolled out"


def _statefulset(spec: Mapping[str, Any], status: Mapping[str, Any]) -> tuple[bool, str]:
    strategy = spec.get("updateStrategy") or {}
    if strategy.get("type", "RollingUpdate") != "RollingUpdate":
        return True, "OnDelete: pods pick the new version when they are deleted"
    replicas = _int(spec.get("replicas", 1))
    ready = _int(status.get("readyReplicas"))
    if ready < replicas:
        return False, f"{ready} of {replicas} pods ready"
    partition = _int((strategy.get("rollingUpdate") or {}).get("partition", 0))
    if partition:
        if _int(status.get("updatedReplicas")) < replicas - partition:
            return False, "partitioned roll out not done"
        return True, "partitioned roll out done"
    if status.get("updateRevision") != status.get("currentRevision"):
        return False, f"{_int(status.get('updatedReplicas'))} of {replicas} pods updated"
    return True, "rolled out"


def _daemonset(status: Mapping[str, Any]) -> tuple[bool, str]:
    desired = _int(status.get("desiredNumberScheduled"))
    updated = _int(status.get("updatedNumberScheduled"))
    if updated < desired:
        return False, f"{updated} of {desired} updated pods"
    available = _int(status.get("numberAvailable"))
    if available < desired:
        return False, f"{available} of {desired} updated pods available"
    return True, "rolled out"


def _custom(status: Mapping[str, Any]) -> tuple[bool, str]:
    """A custom workload: Argo Rollouts' ``phase``, else the usual conditions.

    ``observedGeneration`` was already checked; a resource that reports nothing more is done
    once its controller has seen the update.
    """
    phase = status.get("phase")
    if phase == "Healthy":
        return True, "healthy"
    if phase == "Degraded":
        return False, f"{FAILED}degraded: {str(status.get('message') or '')[:200]}".rstrip(": ")
    if phase == "Paused":
        return False, f"{FAILED}paused (resume or promote the rollout)"
    if isinstance(phase, str) and phase:
        return False, f"phase {phase[:40]}"
    for condition in status.get("conditions") or []:
        if (
            isinstance(condition, dict)
            and condition.get("type") in ("Available", "Ready")
            and condition.get("status") == "False"
        ):
            return False, f"{condition['type']} is False"
    return True, "observed"
