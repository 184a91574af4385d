"""Swarm services whose tasks fail their healthcheck on a secret value of the test's choosing,
so a swap to a bad value fails the way it does in production: the new task never turns
healthy, and the UpdateConfig's FailureAction (``pause`` or ``rollback``) stops the rollout.

:func:`health_gated_service` runs :data:`HEALTH_READER` (``READER``, logging every read of the
secret file, that exits 1 on SIGTERM while its file holds :data:`BAD_MARKER`) with a
healthcheck ``! grep -qF BAD_MARKER <secret file>``, ``start-first`` updates of one task at a
time and ``MaxFailureRatio`` 0. Values from :func:`good_value` never hold the marker, values
from :func:`bad_value` always do.

What the test swarm does (measured on Docker 20.10.24, one node, 2 replicas, the timings
below, UpdateStatus polled every 0.25 s; seconds from the update call):

* A task whose healthcheck fails stays ``starting`` (never ``running``) until Docker declares
  it unhealthy, 1.4-1.6 s after it started; the task then ends ``failed`` with
  ``task: non-zero exit (1): dockerexec: unhealthy container`` (with plain ``READER``,
  which exits 0 on SIGTERM, it ends ``complete`` without an error; the updater counts that
  as a failure all the same). A healthy task turns ``running`` ~0.8 s after ``starting``.
* A healthy update goes ``updating`` (0.02-0.3 s; the first poll may still show no status,
  as any service update clears it) then ``completed`` after 5.15-5.6 s with a 3 s monitor.
* FailureAction ``pause``: ``updating`` -> ``paused`` after 1.8-2.2 s (10 runs; the monitor doesn't
  matter: a task that never ran counts as failed whatever its age). Message ``update paused
  due to failure or early termination of task <task id>``; ``Spec`` references the bad
  secret, ``PreviousSpec`` the one before. The old tasks of *every* slot keep running (and
  reading the good value): ``start-first`` never stopped them. While paused, the restart
  policy keeps starting a new bad task in the failed slot, one every ~1.9 s, forever.
* Repointing a paused service at the previous good secret starts a new update: ``updating``
  then ``completed`` after the monitor + 0.1 s (3.07-3.15 s; 5.15 s with a 5 s monitor). No task
  is replaced: the old good tasks were never stopped and match the spec again; the cycling
  bad task is shut down. ``PreviousSpec`` then references the *bad* secret. Repointed at a
  third good secret, it rolls both slots as a healthy update does (completed at 5.2 s).
* FailureAction ``rollback``: ``updating`` -> ``rollback_started`` after 1.8-2.2 s (or
  3.6-4.5 s, see below) -> ``rollback_completed`` one rollback monitor later (+2.85-3.1 s
  with 3 s, +5.15 s with 5 s). From ``rollback_started`` on, ``Spec`` references the old good
  secret again and ``PreviousSpec`` is *null* (Swarm moves the previous spec back, leaving
  none): nothing references the bad secret. Message ``update rolled back due to failure or
  early termination of task <task id>``, then ``rollback completed``. The old tasks kept
  running throughout. A service update repeating the good spec then replaces no task but is
  no no-op: the version moves, ``UpdateStatus`` is cleared (stays absent) and
  ``PreviousSpec`` becomes a copy of ``Spec``.
* The number of bad tasks started before the failure action isn't fixed: with parallelism 1
  the updater may hand the next slot to its worker before it sees the first failure (a
  Go ``select`` between two ready channels), so in 5 of 13 rollback runs (none of the 10
  pause runs) both slots got a bad task and the action came at 3.6-4.5 s. Count bad tasks
  as "at least one".
* A service update during ``rollback_started`` is accepted and ends the rollback: one to a
  third good secret became a new update (``updating``, ``PreviousSpec`` the rolled-back
  spec, the rollback's pending tasks shut down) and ``completed`` 5.5 s later; one repeating
  the rolled-back spec left ``UpdateStatus`` absent, never ``rollback_completed``.
* The swarm keeps 2 old tasks per slot (``--task-history-limit 2``), so the bad tasks of a
  paused service soon vanish from the task list; their ``READER`` logs (one file per task
  id) stay, which is what :func:`unhealthy_tasks` reads.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import docker.types
import pytest

from tests.conftest import new_value
from tests.integration.swarm_util import READER, SECOND, Project, Read, Swarm, reads

#: What makes a value bad: the healthcheck fails while the secret file holds it. ``%`` is no
#: character of ``secrets.token_urlsafe`` (what :func:`new_value` appends), so a good value
#: can't hold it by chance, and it means nothing to ``grep -F``, sh inside quotes or YAML.
BAD_MARKER = "%BAD%"
#: The secret's file name under /run/secrets, and its path (``SECRET_FILE`` of the reader).
SECRET_TARGET = "token"
SECRET_PATH = f"/run/secrets/{SECRET_TARGET}"

#: Healthcheck timings, in seconds. A bad task is declared unhealthy after ``RETRIES``
#: failed probes ``INTERVAL`` apart (1.4-1.6 s after it started, measured); a good one is
#: healthy at its first probe. The timeout is generous: a probe that times out on a busy
#: 2-core machine would count as a failure and restart a good task.
HEALTH_INTERVAL = 0.5
HEALTH_TIMEOUT = 3.0
HEALTH_RETRIES = 2
HEALTH_START_PERIOD = 0.0
#: The default UpdateConfig/RollbackConfig monitor window, in seconds: how long after its
#: last task an update (or rollback) still counts failures before it completes.
MONITOR_SECONDS = 3.0
#: How often :func:`watch_update` polls (the docker CLI polls every 200 ms; syncd 250 ms).
POLL_SECONDS = 0.25

FailureAction = Literal["pause", "rollback"]

_CLEAN_EXIT = "trap 'exit 0' TERM; "
if not READER.startswith(_CLEAN_EXIT):  # pragma: no cover - a guard for whoever edits READER
    raise RuntimeError("READER no longer starts with its SIGTERM trap; update HEALTH_READER")
#: ``READER`` that exits 1 on SIGTERM while its file holds the bad value, as an application
#: stopped for failing its healthcheck does: the task ends ``failed`` with the unhealthy
#: error instead of ``complete``. A good task still exits 0, so rollouts stay quick.
HEALTH_READER = (
    f'trap \'grep -qF "{BAD_MARKER}" "$SECRET_FILE" && exit 1; exit 0\' TERM; '
    + READER.removeprefix(_CLEAN_EXIT)
)


def good_value(prefix: str = "good-") -> str:
    """A generated value the healthcheck passes on (a leak canary, as ``new_value``'s)."""
    value = new_value(prefix)
    assert BAD_MARKER not in value
    return value


def bad_value(prefix: str = "bad-") -> str:
    """A generated value the healthcheck fails on: it holds :data:`BAD_MARKER`."""
    return new_value(f"{prefix}{BAD_MARKER}-")


def is_bad(value: str) -> bool:
    return BAD_MARKER in value


def healthcheck(path: str = SECRET_PATH) -> Any:
    """Unhealthy while the file at ``path`` holds :data:`BAD_MARKER` (busybox grep; a
    missing file counts as healthy, so the path is spelled out rather than taken from the
    environment, where a typo would pass silently)."""
    return docker.types.Healthcheck(
        test=["CMD-SHELL", f"! grep -qF '{BAD_MARKER}' {path}"],
        interval=int(HEALTH_INTERVAL * SECOND),
        timeout=int(HEALTH_TIMEOUT * SECOND),
        retries=HEALTH_RETRIES,
        start_period=int(HEALTH_START_PERIOD * SECOND),
    )


def health_gated_service(
    project: Project,
    base: str,
    *,
    secret: str,
    failure_action: FailureAction,
    log_dir: Path,
    monitor: float = MONITOR_SECONDS,
    replicas: int = 2,
    command: str = HEALTH_READER,
    wait: bool = True,
) -> str:
    """Create service ``base`` (prefixed; removed by ``project.cleanup()``) of ``replicas``
    :data:`HEALTH_READER` tasks reading secret ``secret`` at :data:`SECRET_PATH`, gated by
    :func:`healthcheck`; returns its name.

    Updates and rollbacks go ``start-first``, one task at a time, no delay, watching each for
    ``monitor`` seconds, with ``MaxFailureRatio`` 0: the first task that fails (a bad value)
    triggers ``failure_action``. A rollback that fails itself pauses. ``wait`` returns once
    every replica is ``running``, which for a healthchecked task means healthy (so creating it
    on a bad secret needs ``wait=False``).
    """
    name = project.name(base)
    api = project.swarm.api
    ref = docker.types.SecretReference(
        api.inspect_secret(secret)["ID"],
        secret,
        filename=SECRET_TARGET,
        uid="0",
        gid="0",
        mode=0o440,
    )
    spec = docker.types.ContainerSpec(
        project.swarm.image,
        ["sh", "-c", command],
        env=["SLOT={{.Task.Slot}}", "TASK={{.Task.ID}}", f"SECRET_FILE={SECRET_PATH}"],
        secrets=[ref],
        mounts=[docker.types.Mount("/log", str(log_dir), type="bind")],
        stop_grace_period=2 * SECOND,
        healthcheck=healthcheck(),
    )
    template = docker.types.TaskTemplate(
        spec, restart_policy=docker.types.RestartPolicy(condition="any", delay=SECOND // 5)
    )
    window = int(monitor * SECOND)
    api.create_service(
        template,
        name=name,
        mode=docker.types.ServiceMode("replicated", replicas=replicas),
        update_config=docker.types.UpdateConfig(
            parallelism=1,
            delay=0,
            failure_action=failure_action,
            monitor=window,
            max_failure_ratio=0,
            order="start-first",
        ),
        rollback_config=docker.types.RollbackConfig(
            parallelism=1,
            delay=0,
            failure_action="pause",
            monitor=window,
            max_failure_ratio=0,
            order="start-first",
        ),
        labels={"test.owner": project.prefix},
    )
    project.services.append(name)
    if wait:
        wait_running_on(project.swarm, name, secret, replicas)
    return name


def running_on(swarm: Swarm, service: str, secret: str) -> int:
    """How many tasks of ``service`` meant to run are ``running`` (so healthy) on ``secret``;
    0 as well while any task meant to run is on another secret or not running yet."""
    tasks = swarm.api.tasks(filters={"service": service, "desired-state": "running"})
    on = [
        t
        for t in tasks
        if t["Status"]["State"] == "running"
        and [r["SecretName"] for r in t["Spec"]["ContainerSpec"].get("Secrets") or []] == [secret]
    ]
    return len(on) if len(on) == len(tasks) else 0


def wait_running_on(
    swarm: Swarm, service: str, secret: str, replicas: int, timeout: float = 60.0
) -> None:
    """Wait until exactly ``replicas`` tasks of ``service`` run healthy on ``secret``."""
    deadline = time.monotonic() + timeout
    while (found := running_on(swarm, service, secret)) != replicas:
        if time.monotonic() > deadline:
            pytest.fail(f"{service}: {found} of {replicas} tasks running on {secret}")
        time.sleep(POLL_SECONDS)


def repoint(swarm: Swarm, service: str, secret: str) -> None:
    """Point every secret reference of ``service`` at ``secret``, as an operator or syncd
    would: the whole current spec from inspect with SecretID/SecretName swapped, posted with
    the version index it was read at (a rollback or pause in between makes it fail)."""
    api = swarm.api
    current = api.inspect_service(service)
    spec = copy.deepcopy(current["Spec"])
    secret_id = api.inspect_secret(secret)["ID"]
    for ref in spec["TaskTemplate"]["ContainerSpec"]["Secrets"]:
        ref["SecretID"], ref["SecretName"] = secret_id, secret
    url = api._url("/services/{0}/update", current["ID"])
    response = api._post_json(url, data=spec, params={"version": current["Version"]["Index"]})
    api._raise_for_status(response)


@dataclass(frozen=True)
class Observation:
    """One poll of a service that differed from the one before: when (seconds since the
    watch began), its ``UpdateStatus`` and the secrets its spec and previous spec reference
    (``None``: no previous spec)."""

    at: float
    state: str | None
    message: str | None
    spec: tuple[str, ...]
    previous: tuple[str, ...] | None
    version: int


def _refs(spec: dict[str, Any] | None) -> tuple[str, ...] | None:
    if not spec:
        return None
    refs = spec.get("TaskTemplate", {}).get("ContainerSpec", {}).get("Secrets") or []
    return tuple(r["SecretName"] for r in refs)


def observe(swarm: Swarm, service: str, at: float = 0.0) -> Observation:
    """The service's update state and references now."""
    found = swarm.api.inspect_service(service)
    status = found.get("UpdateStatus") or {}
    return Observation(
        at=at,
        state=status.get("State"),
        message=status.get("Message"),
        spec=_refs(found["Spec"]) or (),
        previous=_refs(found.get("PreviousSpec")),
        version=found["Version"]["Index"],
    )


def watch_update(
    swarm: Swarm,
    service: str,
    until: Collection[str],
    *,
    started: float | None = None,
    timeout: float = 60.0,
) -> list[Observation]:
    """Poll ``service`` every :data:`POLL_SECONDS` until its ``UpdateStatus.State`` is one of
    ``until``; return every change seen (the version alone moving doesn't count), timed
    from ``started`` (a ``time.monotonic()`` taken before the update call; default: now).

    Call it right after the update: the first poll may still show the state from before it
    (or none: an update clears the status until the orchestrator picks it up).
    """
    start = time.monotonic() if started is None else started
    seen: list[Observation] = []
    while True:
        now = time.monotonic()
        found = observe(swarm, service, round(now - start, 2))
        last = seen[-1] if seen else None
        if last is None or (found.state, found.message, found.spec, found.previous) != (
            last.state,
            last.message,
            last.spec,
            last.previous,
        ):
            seen.append(found)
        if found.state in until:
            return seen
        if now - start > timeout:
            pytest.fail(f"{service} not {sorted(until)} after {timeout:g}s: {seen}")
        time.sleep(POLL_SECONDS)


def states(seen: Sequence[Observation]) -> list[str | None]:
    """The sequence of states in ``seen``, repeats collapsed (``None``: no status)."""
    found: list[str | None] = []
    for observation in seen:
        if not found or found[-1] != observation.state:
            found.append(observation.state)
    return found


def first_at(seen: Sequence[Observation], state: str) -> float:
    """When ``state`` was first seen."""
    return next(o.at for o in seen if o.state == state)


def unhealthy_tasks(log_dir: Path) -> set[str]:
    """The ids of tasks that read the bad value: they never passed their healthcheck (a
    task's secret file never changes, so such a task read nothing else)."""
    return {r.task for r in reads(log_dir) if is_bad(r.value)}


def split_reads(log_dir: Path, good: Collection[str]) -> tuple[list[Read], list[Read]]:
    """The reads of healthy tasks and those of unhealthy ones, checking on the way that no
    read failed, every task read one value its whole life, healthy tasks only values of
    ``good`` and the others only bad ones: a healthy task that ever saw the bad value, or a
    task whose file changed under it, fails the test."""
    seen = reads(log_dir)
    failed = [r for r in seen if not r.ok]
    assert not failed, f"{len(failed)} failed reads, first: {failed[0]}"
    values: dict[str, set[str]] = {}
    for read in seen:
        values.setdefault(read.task, set()).add(read.value)
    mixed = {task: len(v) for task, v in values.items() if len(v) > 1}
    assert not mixed, f"tasks that read more than one value: {mixed}"
    strange = [r for r in seen if not is_bad(r.value) and r.value not in good]
    assert not strange, f"a read saw a value that was never written: task {strange[0].task}"
    healthy = [r for r in seen if not is_bad(r.value)]
    unhealthy = [r for r in seen if is_bad(r.value)]
    return healthy, unhealthy
