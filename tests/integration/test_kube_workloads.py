"""Consumers beyond Deployments: CronJobs, Jobs, paused Deployments and a CRD-based workload
shaped like an Argo Rollout, and rollouts that stay stuck, against the real control plane.

What must hold: whatever holds a pod template referencing a version keeps that version alive,
every kind that can be repointed is, and a consumer that hasn't converged is reported every
cycle, not only in the cycle that moved it.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from syncd.config import load_config
from syncd.doctor import diagnose
from tests.conftest import new_value, wait_until
from tests.integration.kube_util import (  # noqa: F401 - ns, project: fixtures
    container,
    deployment,
    ns_fixture,
    project_fixture,
    ref,
    rolled_out,
    secret_names,
)

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def rollout_crd(api: Any) -> Iterator[tuple[str, str]]:
    """A namespaced CRD ``Rollout`` carrying a pod template at ``spec.template`` and a status
    subresource, in a group of its own; yields (group, plural)."""
    group = f"t{uuid.uuid4().hex[:8]}.syncd.test"
    ext = api.ApiextensionsV1Api()
    ext.create_custom_resource_definition(
        {
            "metadata": {"name": f"rollouts.{group}"},
            "spec": {
                "group": group,
                "scope": "Namespaced",
                "names": {"plural": "rollouts", "singular": "rollout", "kind": "Rollout"},
                "versions": [
                    {
                        "name": "v1alpha1",
                        "served": True,
                        "storage": True,
                        "subresources": {"status": {}},
                        "schema": {
                            "openAPIV3Schema": {
                                "type": "object",
                                "x-kubernetes-preserve-unknown-fields": True,
                            }
                        },
                    }
                ],
            },
        }
    )

    def established() -> bool:
        crd = ext.read_custom_resource_definition(f"rollouts.{group}")
        return any(
            c.type == "Established" and c.status == "True" for c in crd.status.conditions or []
        )

    wait_until("the CRD to be served", established)
    yield group, "rollouts"
    ext.delete_custom_resource_definition(f"rollouts.{group}")


class RolloutController:
    """Plays Argo's controller for the test CRD: a Rollout whose generation moved becomes
    ``Healthy`` for that generation (Argo writes observedGeneration as a string), one second
    after the change, so a caller that doesn't wait sees the old status."""

    DELAY = 1.0

    def __init__(self, api: Any, ns: str, group: str) -> None:
        self.custom = api.CustomObjectsApi()
        self.ns, self.group = ns, group
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.seen: dict[tuple[str, str], float] = {}

    def _run(self) -> None:
        while not self.stop.is_set():
            for obj in self.custom.list_namespaced_custom_object(
                self.group, "v1alpha1", self.ns, "rollouts"
            )["items"]:
                generation = str(obj["metadata"]["generation"])
                key = (obj["metadata"]["name"], generation)
                first = self.seen.setdefault(key, time.monotonic())
                if time.monotonic() - first < self.DELAY:
                    continue
                if (obj.get("status") or {}).get("observedGeneration") != generation:
                    self.custom.patch_namespaced_custom_object_status(
                        self.group,
                        "v1alpha1",
                        self.ns,
                        "rollouts",
                        obj["metadata"]["name"],
                        {"status": {"observedGeneration": generation, "phase": "Healthy"}},
                    )
            time.sleep(0.2)

    def __enter__(self) -> RolloutController:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def _pod(secret: str) -> dict[str, Any]:
    return {
        "restartPolicy": "Never",
        "containers": [container(envFrom=[{"secretRef": {"name": secret}}])],
    }


def test_cronjobs_are_repointed_and_a_jobs_version_is_protected(api, project, ns):
    """keep: 0 and three rotations. The CronJob moves to each new version at once (its next
    Job uses it); the suspended Job (its template is immutable, and resuming it starts pods
    from it) keeps v1 alive, though no ReplicaSet or Pod references v1."""
    batch = api.BatchV1Api()
    project.values(key=new_value())
    path = project.config([{"name": "batch-key", "from": ref("key"), "keep": 0}])
    assert project.cycle(path).ok
    batch.create_namespaced_cron_job(
        ns,
        {
            "metadata": {"name": "report"},
            "spec": {
                "schedule": "0 0 1 1 *",
                "jobTemplate": {"spec": {"template": {"spec": _pod("batch-key-v1")}}},
            },
        },
    )
    batch.create_namespaced_job(
        ns,
        {
            "metadata": {"name": "backfill"},
            "spec": {"suspend": True, "template": {"spec": _pod("batch-key-v1")}},
        },
    )
    for version in (2, 3, 4):
        project.values(key=new_value())
        result = project.cycle(path)
        assert result.ok, result.items
        assert result.items[0].version == version
        assert result.items[0].consumers == [f"CronJob/{ns}/report"]
    cron = batch.read_namespaced_cron_job("report", ns)
    env_from = cron.spec.job_template.spec.template.spec.containers[0].env_from
    assert [e.secret_ref.name for e in env_from] == ["batch-key-v4"]
    names = secret_names(api, ns)
    assert "batch-key-v1" in names, "the suspended Job still needs v1"
    assert not {"batch-key-v2", "batch-key-v3"} & names, "keep: 0 collects what nothing uses"
    assert not api.CoreV1Api().list_namespaced_pod(ns).items  # only the Job can protect v1
    batch.delete_namespaced_job("backfill", ns, propagation_policy="Background")
    wait_until("the Job gone", lambda: not batch.list_namespaced_job(ns).items)
    assert project.cycle(path).ok
    assert "batch-key-v1" not in secret_names(api, ns)


def test_a_custom_workload_is_repointed_waited_for_and_protected(api, project, ns, rollout_crd):
    """A CRD-based workload (shaped like an Argo Rollout, found by API discovery): repointed
    through its pod template, waited for until its controller reports it healthy, and the
    version it references is kept while nothing else references it."""
    group, plural = rollout_crd
    custom = api.CustomObjectsApi()
    project.values(key=new_value(), other=new_value())
    path = project.config(
        [
            {"name": "canary-key", "from": ref("key"), "keep": 0},
            {"name": "pinned-key", "from": ref("other"), "keep": 0},
        ],
        custom_workloads=[f"{plural}.{group}"],
    )
    assert project.cycle(path).ok
    for name, secret in (("canary", "canary-key-v1"), ("pinned", "pinned-key-v1")):
        custom.create_namespaced_custom_object(
            group,
            "v1alpha1",
            ns,
            plural,
            {
                "apiVersion": f"{group}/v1alpha1",
                "kind": "Rollout",
                "metadata": {"name": name},
                "spec": {"replicas": 1, "template": {"spec": _pod(secret)}},
            },
        )
    # pinned-key names a consumer that doesn't reference it: pinned stays on v1
    path = project.config(
        [
            {"name": "canary-key", "from": ref("key"), "keep": 0},
            {"name": "pinned-key", "from": ref("other"), "keep": 0, "consumers": ["Rollout/x"]},
        ],
        custom_workloads=[f"{plural}.{group}"],
    )
    with RolloutController(api, ns, group):
        for name in ("canary", "pinned"):
            wait_until(
                f"{name} seen by its controller",
                lambda n=name: custom.get_namespaced_custom_object(
                    group, "v1alpha1", ns, plural, n
                ).get("status"),
            )
        for version in (2, 3):
            project.values(key=new_value(), other=new_value())
            result = project.cycle(path)
            assert result.ok, result.items
            assert [i.version for i in result.items] == [version, version]
            now = custom.get_namespaced_custom_object(group, "v1alpha1", ns, plural, "canary")
            assert now["status"]["observedGeneration"] == str(now["metadata"]["generation"])
    assert result.items[0].consumers == [f"Rollout/{ns}/canary"]
    canary = custom.get_namespaced_custom_object(group, "v1alpha1", ns, plural, "canary")
    pod = canary["spec"]["template"]["spec"]
    assert pod["containers"][0]["envFrom"] == [{"secretRef": {"name": "canary-key-v3"}}]
    assert canary["status"]["phase"] == "Healthy"
    names = secret_names(api, ns)
    assert "canary-key-v2" not in names
    assert "pinned-key-v1" in names, "the Rollout named nowhere still references v1"
    assert "pinned-key-v2" not in names


def test_a_paused_deployment_is_repointed_and_reported_at_once(api, project, ns):
    """A paused Deployment gets the new template but can't roll it out: the swap fails at
    once (not after the timeout), every later cycle reports it, and the version its pods
    run stays."""
    apps = api.AppsV1Api()
    project.values(key=new_value())
    path = project.config([{"name": "frozen-key", "from": ref("key"), "keep": 0, "timeout": "60s"}])
    assert project.cycle(path).ok
    apps.create_namespaced_deployment(
        ns, deployment("frozen", _pod("frozen-key-v1") | {"restartPolicy": "Always"})
    )
    wait_until("initial rollout", lambda: rolled_out(api, ns, "frozen"))
    apps.patch_namespaced_deployment("frozen", ns, {"spec": {"paused": True}})
    project.values(key=new_value())
    started = time.monotonic()
    result = project.cycle(path)
    assert time.monotonic() - started < 20, "a paused rollout can't finish: no 60s wait"
    assert not result.ok
    assert "paused" in (result.items[0].error or ""), result.items
    template = apps.read_namespaced_deployment("frozen", ns).spec.template
    assert template.spec.containers[0].env_from[0].secret_ref.name == "frozen-key-v2"
    for _ in range(3):
        again = project.cycle(path)
        (item,) = again.items
        assert item.error_kind == "convergence", item
        assert f"Deployment/{ns}/frozen" in (item.error or "") and "paused" in (item.error or "")
    assert {"frozen-key-v1", "frozen-key-v2"} <= secret_names(api, ns)


def test_a_stuck_rollout_is_rolled_back_and_the_rollback_retried(api, project, ns):
    """New pods that can never be scheduled (the Deployment broke by itself): the swap times
    out and syncd rolls the Deployment back to v1; that rollout can't finish either, so v2
    stays rolling-back, each following cycle says when it is retried and writes nothing,
    and doctor still says the Deployment hasn't converged."""
    apps = api.AppsV1Api()
    project.values(key=new_value())
    path = project.config([{"name": "api-key", "from": ref("key"), "timeout": "3s"}])
    assert project.cycle(path).ok
    pod = {"containers": [container(envFrom=[{"secretRef": {"name": "api-key-v1"}}])]}
    apps.create_namespaced_deployment(ns, deployment("web", pod, progressDeadlineSeconds=3))
    wait_until("initial rollout", lambda: rolled_out(api, ns, "web"))
    apps.patch_namespaced_deployment(
        "web", ns, {"spec": {"template": {"spec": {"nodeSelector": {"nowhere": "true"}}}}}
    )
    project.values(key=new_value())
    result = project.cycle(path)
    (item,) = result.items
    assert not result.ok and item.outcome == "rolling-back", item
    assert "did not converge" in (item.error or "") and item.until
    template = apps.read_namespaced_deployment("web", ns).spec.template
    assert template.spec.containers[0].env_from[0].secret_ref.name == "api-key-v1"
    for _ in range(3):
        again = project.cycle(path)
        (item,) = again.items
        assert (item.error_kind, item.outcome, item.version) == ("convergence", "rolling-back", 1)
        assert again.target_writes == 0 and "retrying at" in (item.error or "")
    findings = diagnose(load_config(path))
    assert any(
        f.subject == f"Deployment/{ns}/web" and "has not converged" in f.problem for f in findings
    ), findings


def test_a_stuck_statefulset_is_reported_every_cycle(api, project, ns):
    apps = api.AppsV1Api()
    project.values(key=new_value())
    path = project.config([{"name": "db-key", "from": ref("key")}])
    assert project.cycle(path).ok
    labels = {"app": "db"}
    apps.create_namespaced_stateful_set(
        ns,
        {
            "metadata": {"name": "db"},
            "spec": {
                "replicas": 2,
                "serviceName": "db",
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "containers": [container(envFrom=[{"secretRef": {"name": "db-key-v1"}}])]
                    },
                },
            },
        },
    )
    wait_until(
        "db ready",
        lambda: (apps.read_namespaced_stateful_set("db", ns).status.ready_replicas or 0) == 2,
    )
    assert project.cycle(path).ok  # converged: nothing to report
    apps.patch_namespaced_stateful_set(
        "db", ns, {"spec": {"template": {"spec": {"nodeSelector": {"nowhere": "true"}}}}}
    )
    wait_until(
        "a pod replaced by one that can't run",
        lambda: (apps.read_namespaced_stateful_set("db", ns).status.ready_replicas or 0) < 2,
    )
    for _ in range(3):
        (item,) = project.cycle(path).items
        assert item.error_kind == "convergence", item
        assert f"StatefulSet/{ns}/db" in (item.error or "") and "pods ready" in (item.error or "")
