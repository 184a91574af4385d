"""Waiting for repointed services the way ``docker service update --detach=false`` does.

Per poll: the service's ``UpdateStatus`` (``paused`` and any ``rollback_*`` state fail the
swap: the orchestrator is putting the old version back); then the newest up-to-date task of
every slot (or node, for global services) must be running, and stay so for the service's
monitor window. ``completed`` before that means the orchestrator already saw the window
through. Always bounded by the secret's timeout: ``start-first`` with a host-mode port can
stay ``updating`` forever.

A poll that gets no answer (dockerd restarting, a manager electing a leader, a timeout, a
5xx) doesn't end the wait: the rollout goes on in the swarm whether syncd looks or not, so
failing the swap over one lost poll would report a rollout that converged as one that
didn't. syncd polls again until the deadline and sees the monitor window through afresh.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from syncd.errors import ConvergenceError
from syncd.model import Consumer
from syncd.progress import WaitProgress
from syncd.targets.swarm.api import DockerApi, Unavailable

log = logging.getLogger("syncd.targets.swarm")

#: How often convergence is polled (the docker CLI polls every 200 ms).
POLL_SECONDS = 0.25
#: The monitor window Swarm uses when a service's UpdateConfig sets none.
DEFAULT_MONITOR_SECONDS = 5.0

#: Task states in lifecycle order, as the docker CLI ranks them for its progress display.
TASK_ORDER = {
    s: i
    for i, s in enumerate(
        (
            "new",
            "allocated",
            "pending",
            "assigned",
            "accepted",
            "preparing",
            "ready",
            "starting",
            "running",
            "complete",
            "shutdown",
            "failed",
            "rejected",
        ),
        start=1,
    )
}


@dataclass
class _Watch:
    """Convergence state of one consumer while waiting, as the docker CLI keeps it."""

    consumer: Consumer
    converged_at: float | None = None
    detail: str = "no update status yet"


def wait_converged(
    api: DockerApi,
    consumers: Sequence[Consumer],
    *,
    service_id: Callable[[Consumer], str],
    timeout: float,
    rollback: bool = False,
) -> dict[str, ConvergenceError | None]:
    """Wait for all ``consumers`` at once; the result is keyed by ``Consumer.label``.

    ``rollback``: the consumers are going back to a version they ran before, by syncd's
    update or by their own ``FailureAction: rollback``: ``rollback_started`` is progress and
    ``rollback_completed`` is done (once the tasks are running, as for any update).
    """
    deadline = time.monotonic() + timeout
    pending = {c.label: _Watch(c) for c in consumers}
    results: dict[str, ConvergenceError | None] = {}
    failing = False
    progress = WaitProgress(timeout, what="waiting for rollback of" if rollback else "waiting for")
    while pending:
        try:
            nodes = _active_nodes(api)
            for label, watch in list(pending.items()):
                done, error = _poll(
                    api, watch, service_id(watch.consumer), nodes, rollback=rollback
                )
                if done:
                    results[label] = error
                    del pending[label]
                else:
                    progress.note(label, watch.detail)
        except Unavailable as exc:
            # the rollout goes on without us (a manager restarting, a slow answer): look
            # again until the deadline, and see the monitor window through from the start
            if not failing:
                log.warning("can't poll the rollout (%s); polling again until the timeout", exc)
            failing = True
            for watch in pending.values():
                watch.converged_at = None
                watch.detail = f"the last poll failed: {exc}"
        else:
            if failing:
                log.info("polling the rollout works again")
            failing = False
        if not pending:
            break
        if time.monotonic() >= deadline:
            for label, watch in pending.items():
                results[label] = ConvergenceError(
                    f"{label} did not converge within {timeout:g}s ({watch.detail})"
                )
            break
        time.sleep(POLL_SECONDS)
    return results


def _active_nodes(api: DockerApi) -> set[str]:
    nodes = api.call("list-nodes", lambda c: c.nodes())
    return {n["ID"] for n in nodes if ((n.get("Status") or {}).get("State")) != "down"}


def _poll(
    api: DockerApi, watch: _Watch, service_id: str, nodes: set[str], *, rollback: bool = False
) -> tuple[bool, ConvergenceError | None]:
    """One look at one consumer: ``(finished, error)``."""
    consumer = watch.consumer
    service = api.call("inspect-service", lambda c: c.inspect_service(service_id))
    spec = service.get("Spec") or {}
    monitor_ns = (spec.get("UpdateConfig") or {}).get("Monitor") or 0
    monitor = monitor_ns / 1e9 if monitor_ns else DEFAULT_MONITOR_SECONDS
    status = service.get("UpdateStatus") or {}
    state = status.get("State")
    message = status.get("Message") or ""
    restoring = rollback and state in ("rollback_started", "rollback_completed")
    if state == "paused" or ((state or "").startswith("rollback") and not restoring):
        return True, ConvergenceError(
            f"{consumer.label}: update {state}" + (f": {message}" if message else "")
        )
    if state in ("completed", "rollback_completed") and watch.converged_at is None:
        return True, None
    now = time.monotonic()
    if watch.converged_at is not None and now - watch.converged_at >= monitor:
        return True, None
    mode = spec.get("Mode") or {}
    if "ReplicatedJob" in mode or "GlobalJob" in mode:
        return True, None  # a job has no steady state; its next run uses the new spec
    tasks = api.call(
        "list-tasks",
        lambda c: c.tasks(filters={"service": service["ID"], "_up-to-date": "true"}),
    )
    if "Global" in mode:
        latest = _latest_tasks(tasks, key="NodeID", nodes=nodes)
        wanted = len(latest)
        ready = wanted > 0
    else:
        latest = _latest_tasks(tasks, key="Slot", nodes=nodes)
        wanted = int(((mode.get("Replicated") or {}).get("Replicas")) or 0)
        ready = True
    running = sum(
        1
        for t in latest.values()
        if TASK_ORDER.get(t.get("DesiredState", ""), 99) <= TASK_ORDER["running"]
        and (t.get("Status") or {}).get("State") == "running"
    )
    watch.detail = f"{running}/{wanted} up-to-date tasks running, update {state or 'pending'}"
    if ready and running == wanted:
        if watch.converged_at is None:
            watch.converged_at = now
    else:
        watch.converged_at = None
    return False, None


def _latest_tasks(
    tasks: Sequence[Mapping[str, Any]], *, key: str, nodes: set[str]
) -> dict[Any, Mapping[str, Any]]:
    """The task that speaks for each slot (or node): lowest desired state, then least far along.

    Tasks on nodes that are down don't count, as in the docker CLI.
    """
    chosen: dict[Any, Mapping[str, Any]] = {}
    for task in tasks:
        desired = TASK_ORDER.get(task.get("DesiredState", ""), 0)
        observed = TASK_ORDER.get((task.get("Status") or {}).get("State", ""), 0)
        if not desired or not observed:
            continue
        node = task.get("NodeID")
        if node and node not in nodes:
            continue
        slot = task.get(key)
        current = chosen.get(slot)
        if current is not None:
            cur_desired = TASK_ORDER.get(current.get("DesiredState", ""), 0)
            cur_observed = TASK_ORDER.get((current.get("Status") or {}).get("State", ""), 0)
            if cur_desired < desired or (cur_desired == desired and cur_observed <= observed):
                continue
        chosen[slot] = task
    return chosen
