"""Health-gated swaps on the real API server: a value whose new pods never become Ready
(kwok holds pods that reference the Secret named in their ``syncd-test/unready-with``
annotation) is rolled back, the workload is healthy on the previous version, the failed
version is labelled and never tried again, and a new value is.

A StatefulSet needs more than reverting its template: with ``OrderedReady`` the controller
waits forever for the stuck pod, so syncd deletes it (the forced rollback the Kubernetes
docs describe); the test proves the StatefulSet ends rolled out on the previous version.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from syncd.config import load_config
from syncd.engine import Engine
from tests.conftest import new_value, wait_until
from tests.integration.kube_health import (
    deployment_settled,
    health_deployment,
    health_statefulset,
    statefulset_rolled_out,
    web_unready_on_v2,
)
from tests.integration.kube_util import (  # noqa: F401 - ns, project: fixtures
    Project,
    ns_fixture,
    project_fixture,
    ref,
    template_secret_refs,
)

pytestmark = pytest.mark.timeout(300)


def only(result: Any, name: str) -> Any:
    return next(i for i in result.items if i.name == name)


def rollout_state(api: Any, ns: str, name: str) -> str | None:
    secret = api.CoreV1Api().read_namespaced_secret(name, ns)
    return (secret.metadata.labels or {}).get("syncd.io/rollout-state")


def template_refs(api: Any, ns: str, kind: str, name: str) -> set[str]:
    apps = api.AppsV1Api()
    read = (
        apps.read_namespaced_deployment
        if kind == "Deployment"
        else (apps.read_namespaced_stateful_set)
    )
    return template_secret_refs(read(name, ns).spec.template)


WORKLOADS = {
    "Deployment": (
        lambda ns: health_deployment(ns, "web", "app-v1", unready_with="app-v2"),
        "create_namespaced_deployment",
        deployment_settled,
    ),
    "StatefulSet": (
        lambda ns: health_statefulset(ns, "web", "app-v1", unready_with="app-v2"),
        "create_namespaced_stateful_set",
        statefulset_rolled_out,
    ),
}


@pytest.mark.parametrize("kind", sorted(WORKLOADS))
def test_a_version_whose_pods_never_get_ready_is_rolled_back(
    api: Any, ns: str, project: Project, kind: str
) -> None:
    manifest, create, healthy = WORKLOADS[kind]
    project.values(app=new_value())
    # StatefulSets have no progress deadline: syncd's timeout is the health gate
    path = project.config([{"name": "app", "from": ref("app"), "timeout": "20s"}])
    assert project.cycle(path).ok
    getattr(api.AppsV1Api(), create)(ns, manifest(ns))
    wait_until(f"{kind} on v1", lambda: healthy(api, ns, "web"), timeout=60)

    project.values(app=new_value())
    started = time.monotonic()
    result = project.cycle(path)
    took = time.monotonic() - started
    item = only(result, "app")
    assert not result.ok and item.outcome == "rolled-back", item
    assert (item.version, item.failed_version, item.rollback_done) == (1, 2, True)
    assert template_refs(api, ns, kind, "web") == {"app-v1"}
    wait_until(f"{kind} healthy on v1 again", lambda: healthy(api, ns, "web"), timeout=60)
    assert rollout_state(api, ns, "app-v2") == "rolled-back"
    print(f"{kind}: failed rollout detected and rolled back in {took:.1f}s ({item.error})")

    # the next cycles don't try v2 again (the label is read by any process)
    again = project.cycle(path)
    assert again.target_writes == 0 and only(again, "app").outcome == "rolled-back"

    # a new upstream value is a new attempt: v3 has no unready annotation, it converges
    project.values(app=new_value())
    fixed = project.cycle(path)
    assert fixed.ok, fixed.items
    assert only(fixed, "app").version == 3
    assert template_refs(api, ns, kind, "web") == {"app-v3"}
    wait_until(f"{kind} on v3", lambda: healthy(api, ns, "web"), timeout=60)


def test_hold_leaves_the_workload_on_the_failed_version_and_reports(
    api: Any, ns: str, project: Project
) -> None:
    project.values(app=new_value())
    path = project.config(
        [{"name": "app", "from": ref("app"), "timeout": "20s", "on_failure": "hold"}]
    )
    assert project.cycle(path).ok
    web_unready_on_v2(api, ns)
    project.values(app=new_value())
    item = only(project.cycle(path), "app")
    assert item.outcome == "held", item
    assert template_refs(api, ns, "Deployment", "web") == {"app-v2"}
    assert rollout_state(api, ns, "app-v2") == "held"
    plan = project.syncd("--config", str(path), "--once", "--dry-run")
    assert "# app: v2 held" in plan.stdout, plan.stdout


@pytest.mark.parametrize("crash_in", ["wait_converged", "repoint"])
def test_a_restart_in_the_middle_of_a_rollback_is_finished_by_the_next_run(
    api: Any, ns: str, project: Project, crash_in: str
) -> None:
    """``wait_converged``: the process dies while waiting for the new version's rollout;
    ``repoint``: after marking the version rolling-back, before the update back."""
    project.values(app=new_value())
    path = project.config([{"name": "app", "from": ref("app"), "timeout": "20s"}])
    assert project.cycle(path).ok
    web_unready_on_v2(api, ns)
    project.values(app=new_value())
    engine = Engine(load_config(path))

    class Crash(BaseException):
        """The process dying: nothing in syncd may catch it."""

    real = getattr(engine.target, crash_in)

    def dying(*args: Any, rollback: bool = False, **kwargs: Any) -> Any:
        if rollback or crash_in == "wait_converged":
            raise Crash
        return real(*args, rollback=rollback, **kwargs)

    setattr(engine.target, crash_in, dying)
    with pytest.raises(Crash):
        engine.run_cycle()
    engine.close()
    expected = "rolling-back" if crash_in == "repoint" else None
    assert rollout_state(api, ns, "app-v2") == expected
    assert template_refs(api, ns, "Deployment", "web") == {"app-v2"}  # stuck half-moved

    result = project.cycle(path)
    assert only(result, "app").outcome == "rolled-back", only(result, "app")
    assert template_refs(api, ns, "Deployment", "web") == {"app-v1"}
    wait_until("healthy on v1", lambda: deployment_settled(api, ns, "web"), timeout=60)
    assert rollout_state(api, ns, "app-v2") == "rolled-back"
