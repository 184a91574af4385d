"""A real ``syncd --once`` killed (SIGKILL) after each step of a swap, and runs racing.

The Docker API proxy holds the request that starts a step, so the process is killed at
exactly that point, deterministically: before the create reaches Docker, after the create,
between the repoints of the two consumers, during the convergence wait, during collection.
Then a new run (a fresh engine: all state is read back from the swarm) must leave every
README guarantee holding (no consumer references a missing secret, the previous version
stays until converged, nothing beyond ``keep``) while writing only what the killed run left
undone, and a run after that writes nothing.

A crash "during a rollback" has no step to kill yet: syncd does not roll back by itself
(automatic rollback is a later issue); Swarm's own ``failure_action: rollback`` is Swarm's.

Two processes of one installation started together, five rounds with a new value before each,
are gated by the proxy so they list, create or repoint at the very same moment: there must be
exactly one new version per round, holding the newest value, both services on it after one
repoint each, and no failed read. Two runs that saw different values (one read the source
before it changed) must leave every service on the newer value's version, and the one that
loses a version number to the other says so.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.conftest import new_value
from tests.integration.swarm_util import (  # noqa: F401 - swarm: fixture
    SwapRig,
    Swarm,
    assert_reads_ok,
    swap_rig,
    swarm_fixture,
    writes,
)

pytestmark = pytest.mark.backend("swarm")

SERVICE_UPDATE = r"/services/[^/]+/update"

#: point -> (the request held: method, path, which one), the version each service (a, b)
#: references after the kill (0: the one before the swap, 1: the new one), and what the
#: next run must write to finish the swap (its last write: the outcome in the history)
CRASH_POINTS: dict[str, tuple[tuple[str, str, int], tuple[int, int], dict[str, int]]] = {
    "before the create reaches Docker": (
        ("POST", "/secrets/create", 1),
        (0, 0),
        {"create-secret": 1, "update-service": 2, "remove-secret": 1, "update-secret": 1},
    ),
    "after the create": (
        ("POST", SERVICE_UPDATE, 1),
        (0, 0),
        {"update-service": 2, "remove-secret": 1, "update-secret": 1},
    ),
    "between the two repoints": (
        ("POST", SERVICE_UPDATE, 2),
        (1, 0),
        {"update-service": 1, "remove-secret": 1, "update-secret": 1},
    ),
    # the second poll of the wait: the first one has seen the rollout going on
    "during the convergence wait": (
        ("GET", "/nodes", 2),
        (1, 1),
        {"remove-secret": 1, "update-secret": 1},
    ),
    "during collection": (
        ("DELETE", "/secrets/[^/]+", 1),
        (1, 1),
        {"remove-secret": 1, "update-secret": 1},
    ),
}


@pytest.fixture(scope="module")
def rig(swarm: Swarm) -> Iterator[SwapRig]:
    with swap_rig(swarm, keep=0) as made:
        yield made
        made.watch.assert_clean()
        assert_reads_ok(made.logs, set(made.values))


@pytest.mark.parametrize("point", list(CRASH_POINTS))
def test_a_run_killed_at_each_step_is_finished_by_the_next_run(rig: SwapRig, point: str) -> None:
    (method, path, nth), (ref_a, ref_b), needed = CRASH_POINTS[point]
    before = rig.newest()
    rig.rotate()
    held = rig.proxy.add(method, path, "hold", nth)
    run = rig.project.start_syncd("--config", str(rig.config), "--once")
    try:
        held.wait()
    finally:
        run.kill()
        run.communicate(timeout=30)
        held.release(forward=False)
        rig.proxy.clear()

    # where the kill left it: the step held never happened, the ones before it did
    a, b = rig.services
    assert rig.refs(a) == [rig.object(before + ref_a)]
    assert rig.refs(b) == [rig.object(before + ref_b)]
    created = {before + 1} if point != "before the create reaches Docker" else set()
    assert set(rig.versions()) == {before - 1, before} | created, "collected too early"

    repair = rig.cycle()  # a new run: a fresh engine, everything read from the swarm

    (entry,) = repair.items
    assert entry.error is None and entry.version == before + 1, entry
    assert writes(repair) == needed, point
    assert rig.assert_converged(keep=0) == before + 1
    quiet = rig.cycle()
    assert quiet.ok and quiet.target_writes == 0 and not writes(quiet), quiet.items
    rig.watch.assert_clean()


GATES = [
    ("both list the versions at once", "GET", "/secrets"),
    ("both create the version at once", "POST", "/secrets/create"),
    ("both repoint the first service at once", "POST", SERVICE_UPDATE),
]


@pytest.mark.parametrize("rounds", [5])
def test_two_runs_at_the_same_moment_make_one_version_and_one_repoint(
    rig: SwapRig, rounds: int
) -> None:
    for round_ in range(rounds):
        what, method, path = GATES[round_ % len(GATES)]
        before = rig.newest()
        value = rig.rotate()
        gate = rig.proxy.add(method, path, "gate", 2)
        runs = [
            rig.project.start_syncd("--config", str(rig.config), "--once", "--output", "json")
            for _ in range(2)
        ]
        outputs = [run.communicate(timeout=120) for run in runs]
        rig.proxy.clear()
        assert gate.hit.is_set(), f"{what}: the two runs never met at the gate"
        for run, (out, err) in zip(runs, outputs, strict=True):
            assert run.returncode == 0, f"{what}: {out} {err}"
            (entry,) = json.loads(out)["secrets"]
            assert entry["error"] is None and entry["version"] == before + 1, (what, entry)

        versions = rig.versions()
        assert max(versions) == before + 1, f"{what}: not exactly one new version"
        assert len(set(versions.values())) == len(versions), f"{what}: one value stored twice"
        for service in rig.services:
            # one effective repoint: the previous spec is the version before this round
            assert rig.refs(service, previous=True) == [rig.object(before)], (what, service)
        assert rig.assert_converged(keep=0) == before + 1
        assert rig.values[-1] == value
    rig.watch.assert_clean()


def test_racing_runs_with_two_values_leave_every_service_on_the_newer_version(
    rig: SwapRig,
) -> None:
    """Two runs see two values (one read the source before it changed): the older run makes
    v(N+1), the newer one v(N+2). The older run moves service a to v(N+1) just before the
    newer run looks at a: the newer run must still move a on to v(N+2). The older run's
    update of b comes last, after the newer run moved b: it must not take b back."""
    rig.settle()
    before = rig.newest()
    rig.rotate()
    newer = new_value("newer-")
    rig.project.set_values({rig.secret: newer}, filename="newer-keys.yaml")
    rig.values.append(newer)
    newer_config = rig.variant("newer.yaml", source="newer-keys.yaml")
    older_a = rig.proxy.add("POST", SERVICE_UPDATE, "hold", 1)
    runs = [rig.project.start_syncd("--config", str(rig.config), "--once", "--output", "json")]
    try:
        older_a.wait()  # v(N+1) exists; the older run is about to repoint a
        newer_looks = rig.proxy.add("GET", "/services/[^/]+", "hold", 1)
        runs.append(
            rig.project.start_syncd("--config", str(newer_config), "--once", "--output", "json")
        )
        newer_looks.wait()  # v(N+2) exists; the newer run is about to inspect a
        older_b = rig.proxy.add("POST", SERVICE_UPDATE, "hold", 1)
        older_a.release(forward=True)
        older_b.wait()  # a is on v(N+1); the older run is about to repoint b
        newer_looks.release(forward=True)
        newer_out, newer_err = runs[1].communicate(timeout=120)
        older_b.release(forward=True)  # out of sequence now: b moved meanwhile
        older_out, older_err = runs[0].communicate(timeout=120)
    finally:
        for run in runs:
            if run.poll() is None:
                run.kill()
                run.communicate()
        rig.proxy.clear()
    assert runs[1].returncode == 0, newer_out + newer_err
    assert runs[0].returncode == 0, older_out + older_err
    (entry,) = json.loads(newer_out)["secrets"]
    assert entry["version"] == before + 2 and entry["error"] is None, entry
    assert rig.assert_converged(keep=0) == before + 2
    assert rig.project.cycle(newer_config).target_writes == 0
    rig.watch.assert_clean()
    rig.project.set_values({rig.secret: newer})  # the rig's own source catches up


def test_the_run_that_loses_a_version_to_another_value_says_so(rig: SwapRig) -> None:
    """Both runs want v(N+1), with different values; the one that creates it second fails
    with what happened (never "remove it": it is a live version), and the next run lands
    its value as v(N+2)."""
    rig.settle()
    before = rig.newest()
    rig.rotate()
    newer = new_value("newer-")
    rig.project.set_values({rig.secret: newer}, filename="newer-keys.yaml")
    newer_config = rig.variant("newer.yaml", source="newer-keys.yaml")
    held_create = rig.proxy.add("POST", "/secrets/create", "hold", 1)
    late = rig.project.start_syncd("--config", str(newer_config), "--once", "--output", "json")
    try:
        held_create.wait()  # the newer run planned v(N+1) and is about to create it
        first = rig.cycle()  # meanwhile the older run creates v(N+1) and swaps to it
        held_create.release(forward=True)
        out, _ = late.communicate(timeout=120)
    finally:
        if late.poll() is None:
            late.kill()
            late.communicate()
        rig.proxy.clear()
    assert first.ok and first.items[0].version == before + 1, first.items
    assert late.returncode == 1
    (entry,) = json.loads(out)["secrets"]
    error = (entry["error"] or {}).get("message", "")
    assert f"version {before + 1}" in error and "meanwhile" in error, error
    assert "remove" not in error and f"version {before + 2}" in error, error
    assert rig.assert_converged(keep=0) == before + 1

    rig.values.append(newer)
    assert rig.project.cycle(newer_config).ok  # the next run lands the newer value
    assert rig.assert_converged(keep=0) == before + 2
    rig.watch.assert_clean()
    rig.project.set_values({rig.secret: newer})  # the rig's own source catches up
