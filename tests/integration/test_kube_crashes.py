"""A real ``syncd --once`` SIGKILLed after each step of a swap, on the real control plane.

The process talks to the API server through the scriptable proxy, which holds the request
of the chosen step (or its answer, once the server has applied it); the test kills the
process while it waits, so every crash lands exactly where it is meant to. Then a new run
must restore every guarantee of the README, writing only what the crash left undone (writes
counted by the proxy), and a run after it must write nothing.

Crash points: after the create (the Secret exists, the process never heard so), between the
repoints of two consumers, during the convergence wait, and during collection (one of two
deletions applied). Rollback has no crash point yet: automatic rollback is a later issue.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import new_value, wait_until
from tests.integration.kube_util import (  # noqa: F401 - ns, project, proxy: fixtures
    Hold,
    Project,
    Proxy,
    ReferenceChecker,
    Rule,
    container,
    deployment,
    ns_fixture,
    once,
    once_result,
    project_fixture,
    proxy_fixture,
    ref,
    rolled_out,
    secret_names,
    template_secret_refs,
)

pytestmark = pytest.mark.timeout(180)

#: What the API server sees of a write: method and the object's path, namespace stripped.
Write = tuple[str, str]


def _writes(proxy: Proxy, since: float) -> list[Write]:
    return [
        (method, re.sub(r"^.*/namespaces/[^/]+/", "", path))
        for _, method, path in proxy.writes(since)
    ]


def _consumer(api: Any, ns: str, name: str) -> None:
    pod = {"containers": [container(envFrom=[{"secretRef": {"name": "api-key-v1"}}])]}
    api.AppsV1Api().create_namespaced_deployment(ns, deployment(name, pod))


def _refs(api: Any, ns: str, name: str) -> set[str]:
    return template_secret_refs(api.AppsV1Api().read_namespaced_deployment(name, ns).spec.template)


def _kill_at(config: Path, hold: Hold) -> None:
    """Run ``syncd --once``, SIGKILL it while the proxy holds its request, and drop that
    request (or its answer): nothing of a dead process may reach the server afterwards."""
    proc = once(config)
    try:
        hold.wait()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        hold.release(go_on=False)
    assert proc.returncode == -signal.SIGKILL


def _held_poll(proxy: Proxy, hold: Hold) -> Callable[[], bool]:
    """An ``after`` hook for the last repoint: from then on, hold the first rollout poll."""

    def hook() -> bool:
        proxy.script(Rule("GET", r"/deployments/[ab]$", before=hold))
        return True

    return hook


#: step -> (the rule that holds it, the writes the next run must make, and only those)
SWAP_POINTS: dict[str, tuple[Callable[[Proxy, Hold], Rule], list[Write]]] = {
    "after-create": (
        lambda proxy, hold: Rule("POST", r"/secrets$", after=hold),
        [("PUT", "deployments/a"), ("PUT", "deployments/b")],
    ),
    "between-repoints": (
        lambda proxy, hold: Rule("PUT", r"/deployments/b$", before=hold),
        [("PUT", "deployments/b")],
    ),
    "during-convergence-wait": (
        lambda proxy, hold: Rule("PUT", r"/deployments/b$", after=_held_poll(proxy, hold)),
        [],
    ),
}


def test_a_swap_killed_at_each_step_is_finished_by_the_next_run(api, project, ns, proxy, tmp_path):
    """Two consumers on the current version; a new value; the run is killed at a step; the
    next run finishes the swap with exactly the missing writes, and a run after it writes
    nothing. Then the same from there for the next step (one namespace, to spare the setup).
    Every version stays although ``keep`` is 0: the old ReplicaSets can roll back to them.
    No pod template ever names a missing Secret."""
    project.values(key=new_value())
    config = project.config(
        [{"name": "api-key", "data": {"api-key": ref("key")}, "keep": 0}],
        kubeconfig=proxy.kubeconfig(tmp_path / "proxy.kubeconfig"),
    )
    with ReferenceChecker(api, ns) as checker:
        assert once_result(config)["exit"] == 0
        for name in ("a", "b"):
            _consumer(api, ns, name)
        for version, (step, (rule, expected)) in enumerate(SWAP_POINTS.items(), start=2):
            for name in ("a", "b"):
                wait_until(f"{name} rolled out", lambda name=name: rolled_out(api, ns, name))
            project.values(key=new_value())
            hold = Hold()
            proxy.script(rule(proxy, hold))
            _kill_at(config, hold)
            made = {f"api-key-v{n}" for n in range(1, version + 1)}
            left = {n for n in secret_names(api, ns) if n.startswith("api-key-")}
            assert left == made, step  # the crash lost nothing and made nothing twice
            for name in ("a", "b"):
                wait_until(f"{name} rolled out", lambda name=name: rolled_out(api, ns, name))
            rerun = time.monotonic()
            repaired = once_result(config)
            assert repaired["exit"] == 0, (step, repaired)
            # and, once the consumers converged, the outcome in the new version's history
            made_now = [*expected, ("PATCH", f"secrets/api-key-v{version}")]
            assert (_writes(proxy, rerun), repaired["target_writes"]) == (made_now, len(made_now))
            for name in ("a", "b"):
                assert _refs(api, ns, name) == {f"api-key-v{version}"}, step
                wait_until(f"{name} rolled out", lambda name=name: rolled_out(api, ns, name))
            quiet = time.monotonic()
            again = once_result(config)
            assert (again["exit"], again["target_writes"], _writes(proxy, quiet)) == (0, 0, [])
            assert {n for n in secret_names(api, ns) if n.startswith("api-key-")} == made
    checker.assert_clean(min_snapshots=10)


def test_a_collection_killed_halfway_is_finished_by_the_next_run(api, project, ns, proxy, tmp_path):
    """Two secrets without consumers, ``keep: 1``, on their third version: the run that makes
    v3 deletes both v1s; it is killed once the first deletion is applied, before it hears so.
    The next run deletes the other one, only that, and a run after it writes nothing."""
    config = project.config(
        [{"name": name, "data": {"k": ref(name)}, "keep": 1} for name in ("token-a", "token-b")],
        kubeconfig=proxy.kubeconfig(tmp_path / "proxy.kubeconfig"),
    )
    for _ in range(2):
        project.values(**{"token-a": new_value(), "token-b": new_value()})
        assert once_result(config)["exit"] == 0
    project.values(**{"token-a": new_value(), "token-b": new_value()})
    hold = Hold()
    first = proxy.script(Rule("DELETE", r"/secrets/token-[ab]-v1$", after=hold))
    _kill_at(config, hold)
    ((_, deleted),) = first.hits
    survivor = "token-b-v1" if deleted.endswith("token-a-v1") else "token-a-v1"
    names = {n for n in secret_names(api, ns) if n.startswith("token-")}
    assert names == {survivor, "token-a-v2", "token-b-v2", "token-a-v3", "token-b-v3"}
    rerun = time.monotonic()
    repaired = once_result(config)
    assert repaired["exit"] == 0, repaired
    newest = survivor.replace("-v1", "-v3")  # its history records the collection
    assert _writes(proxy, rerun) == [
        ("DELETE", f"secrets/{survivor}"),
        ("PATCH", f"secrets/{newest}"),
    ]
    quiet = time.monotonic()
    again = once_result(config)
    assert (again["exit"], again["target_writes"], _writes(proxy, quiet)) == (0, 0, [])
    assert {n for n in secret_names(api, ns) if n.startswith("token-")} == {
        "token-a-v2",
        "token-b-v2",
        "token-a-v3",
        "token-b-v3",
    }
