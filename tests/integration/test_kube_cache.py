"""The daemon's watch-fed cache against the real API server.

A cycle with nothing to do makes no request once the cache is warm; what others change is
seen without listing again; a watch that expires (410 Gone, as an HTTP answer or as an
``ERROR`` event) lists again and misses nothing; RBAC without ``watch`` falls back to listing
every cycle; version Secrets are listed as metadata only; closing ends every watch.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from syncd.config import load_config
from syncd.engine import CycleResult, Engine
from syncd.targets.kubernetes.cache import Informer
from syncd.targets.kubernetes.target import KubernetesTarget
from tests.conftest import new_value, wait_until
from tests.integration.kube_util import (  # noqa: F401 - ns, project, proxy: fixtures
    Hold,
    Project,
    Proxy,
    Rule,
    bind_shipped_role,
    container,
    deployment,
    ns_fixture,
    project_fixture,
    proxy_fixture,
    ref,
    rolled_out,
    token_kubeconfig,
)

pytestmark = pytest.mark.timeout(300)

SECRETS = 12


def _watching(path: Path) -> Engine:
    """An engine whose target keeps the cache, as the daemon builds it."""
    engine = Engine(load_config(path))
    engine.build()
    engine.target.watch()
    return engine


def _target(engine: Engine) -> KubernetesTarget:
    target = engine.target
    assert isinstance(target, KubernetesTarget)
    return target


def _informers(engine: Engine) -> list[Informer[Any]]:
    cache = _target(engine).cache
    assert cache is not None, "the target keeps no cache"
    return cache.informers()


def _cycle(engine: Engine) -> tuple[CycleResult, dict[str, int], dict[str, int]]:
    """One cycle, and the target requests it made: ``(result, reads, writes)``."""
    before = engine.calls.snapshot()
    result = engine.run_cycle()
    after = result.calls

    def made(component: str) -> dict[str, int]:
        old = before.get(component, {})
        return {
            k: n - old.get(k, 0) for k, n in after.get(component, {}).items() if n > old.get(k, 0)
        }

    return result, made("target-read"), made("target")


def _secrets(project: Project, **extra: Any) -> Path:
    project.values(**{f"k{i}": new_value() for i in range(SECRETS)})
    return project.config(
        [{"name": f"s{i}", "from": ref(f"k{i}")} for i in range(SECRETS)], **extra
    )


def _change(project: Project, key: str) -> None:
    values = yaml.safe_load((project.root / "keys.yaml").read_text())
    values[key] = new_value()
    project.values(**values)


def test_no_change_cycle_makes_no_request_and_sees_others_changes(api, project, ns):
    """Cold sync, then no-change cycles with zero requests; a Deployment someone creates
    later is found as a consumer without a request; a rotation writes, and the cycle after
    it (which must see its own writes) is again free and finds nothing to do."""
    pod = {"containers": [container(envFrom=[{"secretRef": {"name": "s0"}}])]}
    api.AppsV1Api().create_namespaced_deployment(ns, deployment("web", pod))
    wait_until("web rolled out", lambda: rolled_out(api, ns, "web"))
    engine = _watching(_secrets(project))
    try:
        result, _, writes = _cycle(engine)
        assert result.ok, [i.error for i in result.items if i.error]
        assert writes.get("create_secret") == SECRETS + 1  # and the key
        assert result.items[0].consumers == [f"Deployment/{ns}/web"]
        result, reads, writes = _cycle(engine)
        assert result.ok and {i.action for i in result.items} == {"unchanged"}
        assert (reads, writes) == ({}, {}), "a no-change cycle made requests"

        # someone deploys an app using s1 by its plain name: found without a request
        other = {"containers": [container(envFrom=[{"secretRef": {"name": "s1"}}])]}
        api.AppsV1Api().create_namespaced_deployment(ns, deployment("other", other))
        wait_until("other rolled out", lambda: rolled_out(api, ns, "other"))
        result, reads, writes = _cycle(engine)
        assert result.ok, [i.error for i in result.items if i.error]
        # the repoint reads what it rewrites and polls the rollout; nothing was listed
        assert not [op for op in reads if op.startswith("list_")], reads
        assert writes.get("update_deployment") == 1
        by_name = {i.name: i for i in result.items}
        assert by_name["s1"].consumers == [f"Deployment/{ns}/other"]

        _change(project, "k0")
        result, _, writes = _cycle(engine)
        assert result.ok, [i.error for i in result.items if i.error]
        assert {i.name: i.version for i in result.items if i.action != "unchanged"} == {"s0": 2}
        assert writes.get("create_secret") == 1 and writes.get("update_deployment") == 1
        result, reads, writes = _cycle(engine)
        assert (reads, writes) == ({}, {}), "the cycle after a swap made requests"
        by_name = {i.name: i for i in result.items}
        assert by_name["s0"].action == "unchanged" and by_name["s0"].version == 2
        assert all(i.stats["lists"] == 1 and i.stats["expired"] == 0 for i in _informers(engine))
    finally:
        engine.close()


def _expiry_rules(how: str) -> Rule:
    """The first watch of Secrets is held, then answered with a 410 Gone."""
    event = {
        "type": "ERROR",
        "object": {"kind": "Status", "status": "Failure", "reason": "Expired", "code": 410},
    }
    return Rule(
        "GET",
        r"/secrets\?.*watch=true",
        before=Hold(),
        status=410 if how == "status" else 200,
        body=None if how == "status" else json.dumps(event).encode() + b"\n",
    )


@pytest.mark.parametrize("how", ["status", "event"])
def test_expired_watch_lists_again_and_misses_nothing(proxy: Proxy, project, ns, how):
    """The Secret watch is held while a cycle creates every version (the stream shows none of
    them), then expires: the informer lists again, and the next cycle sees every version
    without a request, instead of creating them a second time."""
    rule = proxy.script(_expiry_rules(how))
    path = _secrets(project, kubeconfig=proxy.kubeconfig(project.root / "proxy.kubeconfig"))
    engine = _watching(path)
    try:
        assert isinstance(rule.before, Hold)
        rule.before.wait()
        result, _, writes = _cycle(engine)
        assert result.ok and writes.get("create_secret") == SECRETS + 1  # and the key
        rule.before.release()
        secrets = next(i for i in _informers(engine) if i.resource.kind == "Secret")
        wait_until("a second listing", lambda: secrets.stats["lists"] == 2)
        assert secrets.stats["expired"] == 1
        result, reads, writes = _cycle(engine)
        assert {i.action for i in result.items} == {"unchanged"}, result.items
        assert (reads, writes) == ({}, {})
    finally:
        engine.close()


@pytest.mark.parametrize("watch", [True, False], ids=["shipped-role", "no-watch-verb"])
def test_rbac_with_and_without_watch(api, kube_env, project, ns, tmp_path, caplog, watch):
    """The shipped Role lets the cache watch (a no-change cycle is free); a Role from before
    the cache (no ``watch``) still syncs, listing every cycle, and says why once per kind."""
    caplog.set_level(logging.WARNING, logger="syncd.targets.kubernetes")
    bind_shipped_role(api, ns, drop=() if watch else ("watch",))
    granted = token_kubeconfig(api, kube_env, ns, "syncd", tmp_path / "sa.kubeconfig")
    engine = _watching(_secrets(project, kubeconfig=granted))
    try:
        result, _, _ = _cycle(engine)
        assert result.ok, [i.error for i in result.items if i.error]
        result, reads, writes = _cycle(engine)
        assert result.ok and {i.action for i in result.items} == {"unchanged"}
        assert writes == {}
        if watch:
            assert reads == {}
            assert all(i.down is None for i in _informers(engine))
        else:
            assert reads.get("list_secret") == 1 and reads.get("list_deployment") == 1
            assert all(i.down and "403" in i.down for i in _informers(engine))
            warned = {r.getMessage().split(" (")[0] for r in caplog.records if "watch" in r.msg}
            assert warned == {f"can't watch {i.label}" for i in _informers(engine)}
    finally:
        engine.close()


def test_version_secrets_are_listed_as_metadata_only(api, project, ns, canary):
    """The listing a cycle falls back to carries no Secret data: the canary value is in the
    Secret, and not in anything the target read."""
    project.values(key=canary)
    path = project.config([{"name": "app", "from": ref("key")}])
    assert project.cycle(path).ok
    engine = Engine(load_config(path))
    try:
        engine.build()
        target = _target(engine)
        stored = api.CoreV1Api().read_namespaced_secret("app-v1", ns).data
        assert [base64.b64decode(v).decode() for v in stored.values()] == [canary]
        listed = list(
            target.client.list(
                "Secret", ns, selector="app.kubernetes.io/managed-by=syncd", metadata_only=True
            )
        )
        assert {s["metadata"]["name"] for s in listed} >= {"app-v1"}
        assert all("data" not in s for s in listed)
        assert canary not in json.dumps(listed)
        assert canary not in json.dumps(target.list_versions(["app"]), default=str)
    finally:
        engine.close()


def test_close_ends_every_watch(project, ns):
    """A reloaded config closes the old target: its watch threads end at once, not when the
    server would have closed their streams minutes later."""
    engine = _watching(_secrets(project))
    informers = _informers(engine)
    wait_until("every informer listed", lambda: all(i.stats["lists"] for i in informers))
    assert all(i.alive for i in informers)
    started = time.monotonic()
    engine.close()
    assert not [i.label for i in informers if i.alive]
    assert time.monotonic() - started < 5
