"""The swarm target under faults: Docker API errors at a chosen request, and dockerd restarted
in the middle of a swap.

syncd reaches the swarm through a proxy on a unix socket that answers the chosen request
itself (500), drops it (before or after dockerd saw it), hangs it, stops listening, or holds
it while the test restarts dockerd. Throughout, a watch thread checks every service's spec
and previous spec against the secrets that exist, and both services' tasks read the secret
file every 100 ms: no consumer may ever reference a missing secret, and no read may fail.
After each fault the next cycle must finish the swap writing only what is left, and a cycle
after that must write nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import pytest

from syncd.engine import CycleResult
from tests.conftest import new_value, wait_until
from tests.integration.docker_proxy import ProxyAction
from tests.integration.swarm_util import (  # noqa: F401 - swarm: fixture
    ReferenceWatch,
    SwapRig,
    Swarm,
    assert_reads_ok,
    new_project,
    restart_dockerd,
    swap_rig,
    swarm_fixture,
    writes,
)

pytestmark = pytest.mark.backend("swarm")

SERVICE_UPDATE = r"/services/[^/]+/update"
#: ``api_timeout`` of the config a hanging request is tried with
SHORT_TIMEOUT = "2s"
#: ``api_timeout`` of every other config: longer than a restart of dockerd on a busy machine
RESTART_TIMEOUT = "90s"
#: a new version's history records the outcome: the write that ends every swap
HISTORY = {"update-secret": 1}
FULL_SWAP = {"create-secret": 1, "update-service": 2, "remove-secret": 1, **HISTORY}


@dataclass(frozen=True)
class Fault:
    """The request the proxy interferes with, what the test does once it arrived, what the
    faulted cycle reports (``None``: success, else a piece of its error) and what the next
    cycle then writes."""

    method: str
    path: str
    action: ProxyAction
    nth: int
    error: str | None
    repair: dict[str, int] = field(default_factory=dict)
    then: Literal["nothing", "restart", "listen"] = "nothing"
    short_timeout: bool = False


FAULTS = {
    "create answered 500": Fault(
        "POST", "/secrets/create", "fail", 1, "can't create version", FULL_SWAP
    ),
    "create landed, answer lost": Fault(
        "POST",
        "/secrets/create",
        "drop-after",
        1,
        "is not reachable",
        {"update-service": 2, "remove-secret": 1, **HISTORY},
    ),
    "second repoint answered 500": Fault(
        "POST",
        SERVICE_UPDATE,
        "fail",
        2,
        "can't repoint service/",
        {"update-service": 1, "remove-secret": 1, **HISTORY},
    ),
    "first repoint landed, answer lost": Fault(
        "POST",
        SERVICE_UPDATE,
        "drop-after",
        1,
        "can't repoint service/",
        {"remove-secret": 1, **HISTORY},
    ),
    "connections refused from the second repoint on": Fault(
        "POST",
        SERVICE_UPDATE,
        "refuse",
        2,
        "can't repoint service/",
        {"update-service": 1, "remove-secret": 1, **HISTORY},
        then="listen",
    ),
    "a convergence poll hangs": Fault("GET", "/tasks", "hang", 1, None, short_timeout=True),
    "a convergence poll answered 500": Fault("GET", "/services/[^/]+", "fail", 3, None),
    "service listing answered 500": Fault(
        "GET", "/services", "fail", 1, "can't list consumers", FULL_SWAP
    ),
    "collection dropped": Fault(
        "DELETE", "/secrets/[^/]+", "drop", 1, None, {"remove-secret": 1, **HISTORY}
    ),
    "secret listing hangs": Fault(
        "GET", "/secrets", "hang", 1, "timed out", FULL_SWAP, short_timeout=True
    ),
    "dockerd restarted after the create": Fault(
        "POST", SERVICE_UPDATE, "hold", 1, None, then="restart"
    ),
    "dockerd restarted between the repoints": Fault(
        "POST", SERVICE_UPDATE, "hold", 2, None, then="restart"
    ),
    "dockerd restarted during the convergence wait": Fault(
        "GET", "/tasks", "watch", 1, None, then="restart"
    ),
}


@pytest.fixture(scope="module")
def rig(swarm: Swarm) -> Iterator[SwapRig]:
    # dockerd 20.10 keeps a network sandbox of every container that ran since it started
    # and removes them all at its next start (about 0.2 s each): one restart now, so the
    # restarts in the middle of a swap cost seconds, not a minute after the other tests
    restart_dockerd(swarm)
    # a request held while dockerd restarts waits that long for its answer
    with swap_rig(swarm, keep=0, api_timeout=RESTART_TIMEOUT) as made:
        yield made
        made.watch.assert_clean()
        assert_reads_ok(made.logs, set(made.values))


def in_background(run: Callable[[], CycleResult]) -> tuple[threading.Thread, list[CycleResult]]:
    box: list[CycleResult] = []
    thread = threading.Thread(target=lambda: box.append(run()), daemon=True)
    thread.start()
    return thread, box


@pytest.mark.parametrize("name", list(FAULTS))
def test_a_fault_fails_at_most_its_swap_and_the_next_cycle_finishes_it(
    rig: SwapRig, name: str
) -> None:
    fault = FAULTS[name]
    rig.settle()  # a case that failed before this one can't make it fail too
    before = rig.newest()
    rig.rotate()
    config = (
        rig.variant("short.yaml", api_timeout=SHORT_TIMEOUT) if fault.short_timeout else rig.config
    )
    rule = rig.proxy.add(fault.method, fault.path, fault.action, fault.nth)
    started = time.monotonic()
    thread, box = in_background(lambda: rig.project.cycle(config))
    try:
        rule.wait()
        if fault.then == "restart":
            restart_dockerd(rig.swarm)  # a held request goes on as soon as dockerd answers
        elif fault.then == "listen":
            time.sleep(1.0)
            rig.proxy.listen()
        if fault.action == "hold":
            rule.release(forward=True)
        thread.join(timeout=120)
    finally:
        rig.proxy.clear()
        rig.proxy.listen()
    assert not thread.is_alive(), "the faulted cycle did not end"
    elapsed = time.monotonic() - started

    (entry,) = box[0].items
    if fault.error is None:
        assert entry.error is None, entry
    else:
        assert fault.error in (entry.error or ""), entry
        assert rig.secret in entry.name
    if fault.short_timeout:
        assert elapsed < 20, f"the cycle took {elapsed:.1f}s"

    follow = rig.cycle()
    assert follow.ok, follow.items
    assert writes(follow) == fault.repair
    assert rig.assert_converged(keep=0) == before + 1
    quiet = rig.cycle()
    assert quiet.ok and quiet.target_writes == 0, quiet.items
    rig.watch.assert_clean()


def test_the_watch_sees_a_previous_spec_whose_secret_is_gone(swarm: Swarm) -> None:
    """The invariant check above can fail: a rollback target removed by hand is reported."""
    project = new_project(swarm)
    try:
        first, second = (
            swarm.api.create_secret(project.name(n), new_value().encode()) for n in ("one", "two")
        )
        service = project.service("watched", secrets=[(project.name("one"), "token")])
        with ReferenceWatch(swarm, project.services) as watch:
            swarm.cli(
                "service",
                "update",
                "--detach",
                "--secret-rm",
                project.name("one"),
                "--secret-add",
                f"source={project.name('two')},target=token",
                service,
            )
            swarm.api.remove_secret(first["ID"])  # Swarm allows it: only the old spec uses it
            wait_until("the watch to see it", lambda: watch.problems)
        assert watch.problems == [
            f"{service} PreviousSpec references {project.name('one')} ({first['ID']}), "
            "which doesn't exist"
        ]
        assert second["ID"] in {r["SecretID"] for r in swarm.service_secrets(service)}
    finally:
        project.cleanup()
