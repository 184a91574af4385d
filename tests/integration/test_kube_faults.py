"""The kubernetes target under API server faults and concurrent writers, on the real
control plane.

syncd talks to the API server through a scriptable proxy: a spare kube-apiserver (same etcd)
behind it is stopped and started at chosen steps of a swap, the proxy answers 429 with
``Retry-After`` and 5xx, another writer wins the race against syncd's updates of a consumer,
and two runs of one installation plan from the same state and race. Meanwhile a checker
thread watches the namespace through the first API server, in consistent snapshots: no pod
template may ever reference a Secret that doesn't exist. The next cycles must converge, with
no version lost or made twice.
"""

from __future__ import annotations

import base64
import itertools
import json
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from syncd.config import load_config
from syncd.engine import CycleResult, Engine
from tests.conftest import new_value, wait_until
from tests.integration.kube_util import (  # noqa: F401 - ns, project, proxy, spare_api: fixtures
    Hold,
    Project,
    Proxy,
    ReferenceChecker,
    Rule,
    admin_context,
    container,
    deployment,
    ns_fixture,
    once,
    project_fixture,
    proxy_fixture,
    ref,
    rolled_out,
    secret_names,
    spare_api_fixture,
    template_secret_refs,
)

pytestmark = pytest.mark.timeout(180)


def _consumer(api: Any, ns: str, name: str = "web", secret: str = "api-key-v1") -> None:
    """A Deployment using ``secret`` through an env var and a volume, rolled out."""
    pod = {
        "containers": [
            container(
                env=[
                    {
                        "name": "API_KEY",
                        "valueFrom": {"secretKeyRef": {"name": secret, "key": "api-key"}},
                    }
                ],
                volumeMounts=[{"name": "s", "mountPath": "/run/secrets/app"}],
            )
        ],
        "volumes": [{"name": "s", "secret": {"secretName": secret}}],
    }
    api.AppsV1Api().create_namespaced_deployment(ns, deployment(name, pod))
    wait_until(f"{name} rolled out", lambda: rolled_out(api, ns, name))


def _versions(api: Any, ns: str) -> set[str]:
    return {n for n in secret_names(api, ns) if n.startswith("api-key-v")}


def _refs(api: Any, ns: str, name: str = "web") -> set[str]:
    return template_secret_refs(api.AppsV1Api().read_namespaced_deployment(name, ns).spec.template)


def _prepared(api: Any, project: Project, kubeconfig: str) -> Path:
    """v1 synced and used by Deployment ``web``; then a new value, so the next cycle swaps."""
    project.values(key=new_value())
    path = project.config(
        [{"name": "api-key", "data": {"api-key": ref("key")}}], kubeconfig=kubeconfig
    )
    assert project.cycle(path).ok
    _consumer(api, project.namespace)
    project.values(key=new_value())
    return path


def _converged(api: Any, project: Project, path: Path) -> Callable[[], CycleResult | None]:
    """A probe: one more cycle (a fresh process's engine), done once it ran clean on v2 and
    the consumer rolled out on it."""

    def probe() -> CycleResult | None:
        result = project.cycle(path)
        done = (
            result.ok
            and _refs(api, project.namespace) == {"api-key-v2"}
            and rolled_out(api, project.namespace, "web")
        )
        return result if done else None

    return probe


# ---------------------------------------------------------------------- server stopped


class Background:
    """``project.cycle`` in a thread of its own, so the test's main thread can fault the
    server meanwhile (the spare server is started from the main thread: it dies with the
    thread that started it)."""

    def __init__(self, project: Project, path: Path) -> None:
        self.result: CycleResult | None = None
        self.seconds = 0.0
        self._thread = threading.Thread(target=self._run, args=(project, path), daemon=True)
        self._thread.start()

    def _run(self, project: Project, path: Path) -> None:
        started = time.monotonic()
        self.result = project.cycle(path)
        self.seconds = time.monotonic() - started

    def join(self, timeout: float = 120) -> CycleResult:
        self._thread.join(timeout)
        assert self.result is not None, f"the cycle didn't end within {timeout:.0f}s"
        return self.result


@pytest.mark.parametrize(
    ("step", "method", "path", "sig", "answered"),
    [
        # the Secret is created, then the server goes away before the repoint
        ("after-create", "POST", r"/secrets$", signal.SIGTERM, True),
        # the repoint is applied, the server crashes before its answer leaves
        ("during-repoint", "PUT", r"/deployments/web$", signal.SIGKILL, False),
        # the repoint is answered, the server restarts while syncd waits for the rollout
        ("during-rollout-wait", "PUT", r"/deployments/web$", signal.SIGTERM, True),
    ],
)
def test_api_server_stopped_and_started_mid_swap(
    api, kube_env, project, ns, spare_api, tmp_path, step, method, path, sig, answered
):
    proxy = Proxy(spare_api.url, admin_context(kube_env))
    proxy.start()
    try:
        config = _prepared(api, project, proxy.kubeconfig(tmp_path / "proxy.kubeconfig"))
        hold = Hold()
        proxy.script(Rule(method, path, after=hold))
        with ReferenceChecker(api, ns) as checker:
            swap = Background(project, config)
            hold.wait()
            spare_api.stop(sig)
            hold.release(go_on=answered)
            time.sleep(1.0)  # down for a while: syncd's requests meanwhile find no server
            restart = spare_api.start()
            (item,) = swap.join().items
            assert _versions(api, ns) == {"api-key-v1", "api-key-v2"}
            final = wait_until("a cycle converged on v2", _converged(api, project, config), 60)
        print(
            f"\n{step}: the swap cycle took {swap.seconds:.1f}s (server back after "
            f"{restart:.1f}s) and ended {item.action}: {item.error or 'ok'}; then "
            f"{final.items[0].action}"
        )
        if step == "during-rollout-wait":
            assert item.error is None, item.error  # the wait polled through the restart
        else:
            assert item.error is not None and "can't repoint" in item.error, item.error
        checker.assert_clean()
        assert _versions(api, ns) == {"api-key-v1", "api-key-v2"}  # none lost, none twice
        assert len(proxy.rules[0].hits) == 1
    finally:
        proxy.stop()
        if not spare_api.ready():
            spare_api.start()


# ---------------------------------------------------------------------- conflicts


#: How many of syncd's updates in a row the other writer beats (the old limit was 5).
LOST_RACES = 12


def test_a_storm_of_conflicts_does_not_stop_a_repoint(api, project, ns, proxy, tmp_path):
    """Another writer updates the consumer in a loop, and wins the race against each of
    syncd's first ``LOST_RACES`` updates (the proxy lets it write just before each one
    reaches the server): every one of them is a 409. syncd reads again and goes round until
    its update lands, without undoing the other writer's change, and the same cycle sees the
    rollout through."""
    config = _prepared(api, project, proxy.kubeconfig(tmp_path / "proxy.kubeconfig"))
    apps = api.AppsV1Api()
    storm: list[int] = []

    def other_writer() -> bool:
        storm.append(len(storm))
        apps.patch_namespaced_deployment(
            "web", ns, {"metadata": {"annotations": {"storm": str(storm[-1])}}}
        )
        return True

    proxy.script(Rule("PUT", r"/deployments/web$", times=LOST_RACES, before=other_writer))
    with ReferenceChecker(api, ns) as checker:
        started = time.monotonic()
        result = project.cycle(config)
        seconds = time.monotonic() - started
    updates = result.calls["target"]["update_deployment"]
    print(f"\n409 storm: {updates} updates to land one, the cycle took {seconds:.1f}s")
    assert result.ok, result.items
    assert updates == LOST_RACES + 1
    checker.assert_clean()
    assert _refs(api, ns) == {"api-key-v2"} and rolled_out(api, ns, "web")
    annotations = apps.read_namespaced_deployment("web", ns).metadata.annotations
    assert annotations["storm"] == str(LOST_RACES - 1)  # the other writer's last word stands


# ---------------------------------------------------------------------- throttling, 5xx


def _engine(path: Path) -> tuple[Engine, list[str]]:
    """An engine whose write guard records every write attempt, as a leader's would check it."""
    engine = Engine(load_config(path))
    guarded: list[str] = []
    engine.target.write_guard = lambda: guarded.append("write")
    return engine, guarded


def test_throttling_and_5xx_are_retried_as_the_server_says(api, project, ns, proxy, tmp_path):
    """429 with ``Retry-After`` (API priority and fairness), 5xx with ``Retry-After`` and a
    bare 503 are retried on reads and writes alike, each wait as long as the server asked,
    every attempt through the write guard; the swap completes in the same cycle."""
    config = _prepared(api, project, proxy.kubeconfig(tmp_path / "proxy.kubeconfig"))
    throttled = {"Retry-After": "1"}
    rules = [
        proxy.script(Rule("POST", r"/secrets$", status=429, headers=throttled)),
        proxy.script(Rule("GET", r"/deployments\?", status=429, headers=throttled)),
        proxy.script(Rule("PUT", r"/deployments/web$", status=503)),
        proxy.script(Rule("GET", r"/deployments/web$", status=500, headers=throttled)),
    ]
    engine, guarded = _engine(config)
    with ReferenceChecker(api, ns) as checker:
        started = time.monotonic()
        try:
            result = engine.run_cycle()
        finally:
            engine.close()
        seconds = time.monotonic() - started
    hits = [len(r.hits) for r in rules]
    posts = [
        r
        for r in proxy.requests
        if r[0] >= started and r[1] == "POST" and r[2].endswith("/secrets")
    ]
    gaps = [round(b[0] - a[0], 2) for a, b in itertools.pairwise(posts)]
    print(
        f"\nthrottled cycle: {seconds:.1f}s; injected answers {hits}; create retried after {gaps}"
    )
    assert result.ok, result.items
    assert hits == [1, 1, 1, 1]
    assert len(posts) == 2 and all(gap >= 1.0 for gap in gaps)
    checker.assert_clean(min_snapshots=1)
    assert _refs(api, ns) == {"api-key-v2"}
    # two creates (one refused), two repoints (one refused) and the outcome in the new
    # version's history: each passed the guard
    assert len(guarded) == 2 + 2 + 1


@pytest.mark.parametrize(
    ("status", "headers", "attempts"),
    [
        (429, {"Retry-After": "1"}, 5),  # throttled for good: five attempts, then it says so
        (500, {}, 1),  # an internal error is not retried: it isn't passing
        (403, {"Retry-After": "1"}, 1),  # a refusal never is, whatever it says
    ],
)
def test_a_refusal_that_lasts_fails_the_secret_alone(
    api, project, ns, proxy, tmp_path, status, headers, attempts
):
    """A create that keeps being refused fails its secret with the server's status (not "can't
    reach"), after a bounded number of attempts; nothing is deleted, the consumer stays on v1,
    and the next cycle converges."""
    config = _prepared(api, project, proxy.kubeconfig(tmp_path / "proxy.kubeconfig"))
    rule = proxy.script(Rule("POST", r"/secrets$", times=None, status=status, headers=headers))
    started = time.monotonic()
    result = project.cycle(config)
    seconds = time.monotonic() - started
    (item,) = result.items
    assert item.error is not None and f"Kubernetes API {status}" in item.error, item.error
    assert len(rule.hits) == attempts
    assert seconds < 1 + (attempts - 1) * 1.5
    assert _versions(api, ns) == {"api-key-v1"} and _refs(api, ns) == {"api-key-v1"}
    proxy.rules.clear()
    wait_until("a cycle converged on v2", _converged(api, project, config), 60)


# ---------------------------------------------------------------------- two runs at once


def _meet(parties: int) -> Callable[[], bool]:
    """A ``before`` hook that holds each request until ``parties`` of them have arrived."""
    barrier = threading.Barrier(parties, timeout=60)

    def hook() -> bool:
        barrier.wait()
        return True

    return hook


def _race(proxy: Proxy, config: Path) -> tuple[list[dict[str, Any]], list[tuple[float, str, str]]]:
    """Two ``syncd --once`` of ``config`` at once: the proxy holds both runs' version
    listings until both have asked, so both plan from the same state. Their JSON reports,
    and the writes they sent."""
    together = proxy.script(Rule("GET", r"/secrets\?.*syncd\.io/role", times=2, before=_meet(2)))
    since = time.monotonic()
    runs = [once(config), once(config)]
    reports = [json.loads(run.communicate(timeout=120)[0]) for run in runs]
    for run, report in zip(runs, reports, strict=True):
        report["exit"] = run.returncode
    assert len(together.hits) == 2
    return reports, proxy.writes(since)


def test_two_runs_of_one_installation_at_once_never_duplicate_lose_or_regress(
    api, project, ns, proxy, tmp_path
):
    """Two ``syncd --once`` of one installation (no leader election) started together, on a
    first run and then for five rounds, a new value before each; both plan from the same
    state and race through create, repoint and collection. On the first run both make a
    fingerprint key: one stores it and syncs, the other fails without writing anything else.
    Each later round adds exactly one version holding that round's value, both runs succeed,
    and the consumer ends every round on it."""
    project.values(key=new_value())
    config = project.config(
        [{"name": "api-key", "data": {"api-key": ref("key")}}],
        kubeconfig=proxy.kubeconfig(tmp_path / "proxy.kubeconfig"),
    )
    first, writes = _race(proxy, config)
    losers = [r for r in first if r["exit"] != 0]
    assert [r["exit"] for r in first if r["exit"] == 0] == [0] and len(losers) == 1, first
    assert "appeared meanwhile" in losers[0]["secrets"][0]["error"]["message"]
    assert [w[2].rsplit("/", 1)[-1] for w in writes] == ["secrets"] * 3  # two keys, one v1
    assert _versions(api, ns) == {"api-key-v1"}
    _consumer(api, ns)
    core = api.CoreV1Api()
    outcomes = []
    with ReferenceChecker(api, ns) as checker:
        for round_ in range(5):
            value = new_value()
            project.values(key=value)
            reports, writes = _race(proxy, config)
            outcomes.append([r["exit"] for r in reports])
            creates = [w for w in writes if w[1] == "POST" and w[2].endswith("/secrets")]
            assert len(creates) == 2, "the two runs didn't race for the same version"
            version = round_ + 2
            assert _versions(api, ns) == {f"api-key-v{n}" for n in range(1, version + 1)}
            newest = core.read_namespaced_secret(f"api-key-v{version}", ns)
            assert base64.b64decode(newest.data["api-key"]).decode() == value
            assert _refs(api, ns) == {f"api-key-v{version}"}
    print(f"\ntwo runs at once, exit codes per round: {outcomes}")
    assert outcomes == [[0, 0]] * 5
    checker.assert_clean()
