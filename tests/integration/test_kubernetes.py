"""The kubernetes target against a real control plane (kube-apiserver, controller-manager,
scheduler, etcd) with kwok playing the kubelets, so rollouts complete for real.

Each test works in a namespace of its own and drives syncd through the CLI or the Engine.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import yaml

from syncd.config import load_config
from syncd.engine import Engine
from syncd.errors import SyncdError
from tests.conftest import new_value, wait_until
from tests.integration.kube_util import (  # noqa: F401 - ns, project: fixtures
    bind_shipped_role,
    container,
    deployment,
    ns_fixture,
    project_fixture,
    ref,
    rolled_out,
    secret_names,
    template_secret_refs,
    token_kubeconfig,
)

pytestmark = pytest.mark.timeout(300)


# ---------------------------------------------------------------------- the guide's example


def test_guide_pmoves_secrets_rotation_with_no_missing_secret_window(api, project, ns, canary):
    """``pmoves-secrets`` (made by hand, as the guide does) used by ``agent-zero`` through
    ``secretKeyRef`` and a file mount: syncd adopts it, rotates twice, and at no moment does a
    pod or pod template reference a Secret that doesn't exist."""
    core, apps = api.CoreV1Api(), api.AppsV1Api()
    core.create_namespaced_secret(
        ns,
        {
            "metadata": {"name": "pmoves-secrets"},
            "stringData": {"openai-api-key": "old", "anthropic-api-key": "old"},
        },
    )
    pod = {
        "containers": [
            container(
                env=[
                    {
                        "name": "OPENAI_API_KEY",
                        "valueFrom": {
                            "secretKeyRef": {"name": "pmoves-secrets", "key": "openai-api-key"}
                        },
                    },
                    {
                        "name": "ANTHROPIC_API_KEY",
                        "valueFrom": {
                            "secretKeyRef": {"name": "pmoves-secrets", "key": "anthropic-api-key"}
                        },
                    },
                ],
                volumeMounts=[{"name": "secrets", "mountPath": "/run/secrets", "readOnly": True}],
            )
        ],
        "volumes": [{"name": "secrets", "secret": {"secretName": "pmoves-secrets"}}],
    }
    apps.create_namespaced_deployment(ns, deployment("agent-zero", pod))
    wait_until("initial rollout", lambda: rolled_out(api, ns, "agent-zero"))

    violations: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            existing = secret_names(api, ns)
            for p in core.list_namespaced_pod(ns).items:
                missing = template_secret_refs(p) - existing
                if missing:
                    violations.append(f"pod {p.metadata.name} -> {missing}")
            for rs in apps.list_namespaced_replica_set(ns).items:
                missing = template_secret_refs(rs.spec.template) - existing
                if missing:
                    violations.append(f"replicaset {rs.metadata.name} -> {missing}")
            time.sleep(0.1)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        path = project.config(
            [
                {
                    "name": "pmoves-secrets",
                    "data": {
                        "openai-api-key": ref("openai"),
                        "anthropic-api-key": ref("anthropic"),
                    },
                    "keep": 0,
                }
            ]
        )
        for round_ in range(2):
            project.values(openai=canary + str(round_), anthropic=new_value())
            result = project.cycle(path)
            assert result.ok, result.items
            assert result.items[0].version == round_ + 1
            wait_until("rollout", lambda: rolled_out(api, ns, "agent-zero"))
    finally:
        stop.set()
        watcher.join()
    assert violations == []
    d = apps.read_namespaced_deployment("agent-zero", ns)
    assert template_secret_refs(d.spec.template) == {"pmoves-secrets-v2"}
    v2 = core.read_namespaced_secret("pmoves-secrets-v2", ns)
    assert v2.immutable is True
    assert base64.b64decode(v2.data["openai-api-key"]).decode() == canary + "1"
    assert v2.metadata.labels["app.kubernetes.io/managed-by"] == "syncd"
    assert v2.metadata.annotations["syncd.io/name"] == "pmoves-secrets"
    meta = json.dumps(v2.metadata.to_dict(), default=str)
    assert canary not in meta
    # v1 and the hand-made original are still what older ReplicaSets roll back to
    assert {"pmoves-secrets", "pmoves-secrets-v1"} <= secret_names(api, ns)


def test_every_reference_kind_is_repointed(api, project, ns):
    apps = api.AppsV1Api()
    project.values(
        token=new_value(), cfg=json.dumps({"auths": {"registry.invalid": {"auth": "eA=="}}})
    )
    path = project.config(
        [
            {"name": "app-token", "from": ref("token")},
            {
                "name": "pull",
                "type": "kubernetes.io/dockerconfigjson",
                "data": {".dockerconfigjson": ref("cfg")},
            },
        ]
    )
    assert project.cycle(path).ok
    pod = {
        "containers": [
            container(
                env=[
                    {
                        "name": "T",
                        "valueFrom": {"secretKeyRef": {"name": "app-token-v1", "key": "app-token"}},
                    }
                ],
                envFrom=[{"secretRef": {"name": "app-token-v1"}}],
            )
        ],
        "initContainers": [
            container(name="init", envFrom=[{"secretRef": {"name": "app-token-v1"}}])
        ],
        "volumes": [
            {"name": "a", "secret": {"secretName": "app-token-v1"}},
            {"name": "b", "projected": {"sources": [{"secret": {"name": "app-token-v1"}}]}},
        ],
        "imagePullSecrets": [{"name": "pull-v1"}],
    }
    apps.create_namespaced_deployment(ns, deployment("web", pod))
    wait_until("initial rollout", lambda: rolled_out(api, ns, "web"))
    project.values(
        token=new_value(), cfg=json.dumps({"auths": {"registry.invalid": {"auth": "eQ=="}}})
    )
    result = project.cycle(path)
    assert result.ok, result.items
    assert [i.consumers for i in result.items] == [[f"Deployment/{ns}/web"]] * 2
    template = apps.read_namespaced_deployment("web", ns).spec.template
    assert template_secret_refs(template) == {"app-token-v2", "pull-v2"}
    raw = json.dumps(template.to_dict(), default=str)
    assert "app-token-v1" not in raw and "pull-v1" not in raw
    assert rolled_out(api, ns, "web")
    # one update for both secrets: a single new ReplicaSet
    assert len(apps.list_namespaced_replica_set(ns).items) == 2


def test_statefulset_and_daemonset_consumers_converge(api, project, ns):
    apps = api.AppsV1Api()
    project.values(key=new_value())
    path = project.config([{"name": "shared", "from": ref("key")}])
    assert project.cycle(path).ok
    volume = {"volumes": [{"name": "s", "secret": {"secretName": "shared-v1"}}]}
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
                    "spec": {"containers": [container()], **volume},
                },
            },
        },
    )
    apps.create_namespaced_daemon_set(
        ns,
        {
            "metadata": {"name": "agent"},
            "spec": {
                "selector": {"matchLabels": {"app": "agent"}},
                "template": {
                    "metadata": {"labels": {"app": "agent"}},
                    "spec": {"containers": [container()], **volume},
                },
            },
        },
    )
    project.values(key=new_value())
    result = project.cycle(path)
    assert result.ok, result.items
    assert result.items[0].consumers == [f"DaemonSet/{ns}/agent", f"StatefulSet/{ns}/db"]
    sts = apps.read_namespaced_stateful_set("db", ns)
    assert sts.status.update_revision == sts.status.current_revision
    assert sts.status.ready_replicas == 2
    ds = apps.read_namespaced_daemon_set("agent", ns)
    assert ds.status.updated_number_scheduled == ds.status.desired_number_scheduled > 0
    # the ControllerRevisions still reference v1: it is a rollback target
    assert "shared-v1" in secret_names(api, ns)


# ---------------------------------------------------------------------- GC and failures


def test_gc_keeps_keep_versions_and_spares_rollback_targets(api, project, ns):
    apps = api.AppsV1Api()
    project.values(key=new_value())
    path = project.config([{"name": "api-key", "from": ref("key"), "keep": 1}])
    assert project.cycle(path).ok
    pod = {"containers": [container(envFrom=[{"secretRef": {"name": "api-key-v1"}}])]}
    apps.create_namespaced_deployment(ns, deployment("web", pod, revisionHistoryLimit=1))
    wait_until("initial rollout", lambda: rolled_out(api, ns, "web"))
    for _ in range(3):
        project.values(key=new_value())
        assert project.cycle(path).ok
    # v4 current; v3 is kept by keep=1 (and the last old ReplicaSet references it);
    # v1 and v2 were collected once no ReplicaSet referenced them
    wait_until("history trimmed", lambda: len(apps.list_namespaced_replica_set(ns).items) == 2)
    project.values(key=new_value())
    assert project.cycle(path).ok
    names = {n for n in secret_names(api, ns) if n.startswith("api-key")}
    assert "api-key-v5" in names and "api-key-v4" in names
    assert not {"api-key-v1", "api-key-v2"} & names
    # with keep 0, v4 is still spared: the old ReplicaSet (rollback target) references it
    path = project.config([{"name": "api-key", "from": ref("key"), "keep": 0}])
    assert project.cycle(path).ok
    assert "api-key-v4" in secret_names(api, ns)
    apps.patch_namespaced_deployment("web", ns, {"spec": {"revisionHistoryLimit": 0}})
    wait_until("history dropped", lambda: len(apps.list_namespaced_replica_set(ns).items) == 1)
    assert project.cycle(path).ok
    assert "api-key-v4" not in secret_names(api, ns)


def test_failed_rollout_keeps_old_version_and_reports(api, project, ns):
    apps = api.AppsV1Api()
    project.values(key=new_value())
    path = project.config([{"name": "api-key", "from": ref("key"), "keep": 0, "timeout": "4s"}])
    assert project.cycle(path).ok
    pod = {"containers": [container(envFrom=[{"secretRef": {"name": "api-key-v1"}}])]}
    apps.create_namespaced_deployment(ns, deployment("web", pod))
    wait_until("initial rollout", lambda: rolled_out(api, ns, "web"))
    # new pods can't be scheduled anywhere: the rollout can't finish
    apps.patch_namespaced_deployment(
        "web", ns, {"spec": {"template": {"spec": {"nodeSelector": {"nowhere": "true"}}}}}
    )
    project.values(key=new_value())
    result = project.cycle(path)
    assert not result.ok
    (item,) = result.items
    # rolled back to v1, whose pods can't be scheduled either: the rollback is retried later
    assert item.outcome == "rolling-back" and "timed out after 4s" in (item.error or ""), item
    assert {"api-key-v1", "api-key-v2"} <= secret_names(api, ns)


def test_in_place_strategy_restarts_only_on_real_change(api, project, ns):
    apps, core = api.AppsV1Api(), api.CoreV1Api()
    project.values(key=new_value())
    path = project.config([{"name": "chart-secret", "from": ref("key"), "strategy": "in-place"}])
    assert project.cycle(path).ok
    pod = {"containers": [container(envFrom=[{"secretRef": {"name": "chart-secret"}}])]}
    apps.create_namespaced_deployment(ns, deployment("chart", pod))
    wait_until("initial rollout", lambda: rolled_out(api, ns, "chart"))
    first = project.cycle(path)  # adopts the consumer: one restart annotation
    assert first.ok and first.items[0].action == "repoint"
    wait_until("rollout", lambda: rolled_out(api, ns, "chart"))
    revisions = len(apps.list_namespaced_replica_set(ns).items)
    assert project.cycle(path).target_writes == 0  # no change, no restart
    project.values(key=new_value())
    result = project.cycle(path)
    assert result.ok and result.items[0].version == 2
    secret = core.read_namespaced_secret("chart-secret", ns)
    assert not secret.immutable and secret.metadata.annotations["syncd.io/version"] == "2"
    assert len(apps.list_namespaced_replica_set(ns).items) == revisions + 1
    assert sorted(n for n in secret_names(api, ns) if n.startswith("chart")) == ["chart-secret"]


def test_bad_inputs_fail_alone(api, project, ns):
    project.values(big="x" * (1024 * 1024 + 1), ok=new_value())
    path = project.config(
        [
            {"name": "too-big", "from": ref("big")},
            {"name": "fine", "from": ref("ok")},
        ]
    )
    result = project.cycle(path)
    by_name = {i.name: i for i in result.items}
    assert "at most 1 MiB" in (by_name["too-big"].error or "")
    assert by_name["fine"].action == "create"
    assert {n for n in secret_names(api, ns) if not n.startswith("syncd")} == {"fine-v1"}


@pytest.mark.parametrize("named", ["Deployment/web", "web", "app=web"])
def test_named_consumer_that_does_not_exist_yet_does_not_block_the_first_version(
    api, project, ns, named
):
    """Stack users create secrets before they deploy: a named consumer that doesn't exist is
    a note, v1 is created, and the consumer is repointed once it exists."""
    project.values(key=new_value())
    path = project.config([{"name": "api-key", "from": ref("key"), "consumers": [named]}])
    first = project.cycle(path)
    assert first.ok, first.items
    (item,) = first.items
    assert (item.action, item.version) == ("create", 1)
    assert any("doesn't exist yet" in note for note in item.notes), item.notes
    assert "api-key-v1" in secret_names(api, ns)
    pod = {"containers": [container(envFrom=[{"secretRef": {"name": "api-key-v1"}}])]}
    api.AppsV1Api().create_namespaced_deployment(ns, deployment("web", pod))
    wait_until("initial rollout", lambda: rolled_out(api, ns, "web"))
    project.values(key=new_value())
    second = project.cycle(path)
    assert second.ok, second.items
    assert second.items[0].consumers == [f"Deployment/{ns}/web"]
    template = api.AppsV1Api().read_namespaced_deployment("web", ns).spec.template
    assert template_secret_refs(template) == {"api-key-v2"}


def test_config_errors_for_names_keys_and_namespaces(project, ns):
    path = project.config(
        [
            {"name": "ok", "data": {"bad key!": ref("a"), "..x": ref("a")}},
            {"name": "elsewhere", "from": ref("a"), "namespace": "not-allowed"},
            {"name": "tls", "type": "kubernetes.io/tls", "data": {"tls.crt": ref("a")}},
            {"name": "bad/name", "from": ref("a")},
            {"name": "token", "type": "kubernetes.io/service-account-token", "from": ref("a")},
            # the key Kubernetes stores is the renamed one, and a template's is the name
            {"name": "renamed", "data": {"good": ref("a")}, "rename": {"good": "bad key?"}},
            {
                "name": "cert",
                "type": "kubernetes.io/tls",
                "data": {"crt": ref("a"), "key": ref("a")},
                "template": "{{ crt }}{{ key }}",
            },
        ]
    )
    run = project.syncd("check", "--config", str(path))
    assert run.returncode == 1
    assert "secrets[0]: key 'bad key!' is not a valid Secret key" in run.stderr
    assert "secrets[0]: key '..x' is not a valid Secret key" in run.stderr
    assert "secrets[1]: namespace 'not-allowed' is not the target's namespace" in run.stderr
    assert "secrets[2]: type kubernetes.io/tls needs the key(s) tls.key" in run.stderr
    assert "secrets[3]: name 'bad/name' can't be a Kubernetes Secret name" in run.stderr
    assert "secrets[4]: type kubernetes.io/service-account-token is managed by Kubernetes" in (
        run.stderr
    )
    assert "secrets[5]: key 'bad key?' is not a valid Secret key" in run.stderr
    assert "secrets[6]: type kubernetes.io/tls needs the key(s) tls.crt, tls.key" in run.stderr


@pytest.mark.parametrize(
    ("first", "second", "collide"),
    [
        ({"name": "a_b"}, {"name": "a-b"}, True),  # one DNS name for two logical names
        ({"name": "API_KEY"}, {"name": "api-key"}, True),  # case folds too
        ({"name": "a_b", "strategy": "in-place"}, {"name": "a-b", "strategy": "in-place"}, True),
        ({"name": "token-v1", "strategy": "in-place"}, {"name": "token"}, True),
        ({"name": "token-v12", "strategy": "in-place"}, {"name": "token"}, True),
        ({"name": "a_b", "namespace": "other"}, {"name": "a-b"}, False),  # two namespaces
        ({"name": "token-v0", "strategy": "in-place"}, {"name": "token"}, False),  # no v0
        ({"name": "token-v1"}, {"name": "token"}, False),  # token-v1-vN is never token-vN
        ({"name": "a_b", "strategy": "in-place"}, {"name": "a-b"}, False),
    ],
)
def test_secrets_that_can_land_on_one_secret_name_are_refused_at_load(
    project, first, second, collide
):
    path = project.config(
        [{**first, "from": ref("a")}, {**second, "from": ref("b")}], namespaces=["other"]
    )
    run = project.syncd("check", "--config", str(path))
    if not collide:
        assert run.returncode == 0, run.stderr
        return
    assert run.returncode == 1, run.stdout
    assert "secrets[1]:" in run.stderr and "can land on the same Secret name" in run.stderr
    assert f"{first['name']!r}" in run.stderr


def test_names_a_source_supplies_are_checked_per_item_at_run_time(api, project, ns, canary):
    """for_each keys are input: one that can't be a Secret name, and two that would land on
    one Secret name, fail alone; the good key syncs. No value shows in any error."""
    project.values(**{"ok": new_value(), "a_b": canary, "a-b": new_value(), "bad key": canary})
    path = project.config([{"name": "{key}", "for_each": {"provider": "local"}}])
    result = project.cycle(path)
    by_name = {i.name: i for i in result.items}
    assert by_name["ok"].action == "create"
    assert "can't be a Kubernetes Secret name" in (by_name["bad key"].error or "")
    collided = [by_name[n].error or "" for n in ("a_b", "a-b")]
    assert sum("can land on the same Secret name" in e for e in collided) == 1, collided
    assert all(canary not in (i.error or "") for i in result.items)
    assert {n for n in secret_names(api, ns) if n != "syncd-fingerprint-key"} <= {
        "ok-v1",
        "a-b-v1",
    }


def test_missing_namespace_and_api_down(api, project, tmp_path):
    project.values(a=new_value())
    path = project.config([{"name": "a", "from": ref("a")}])
    doc = yaml.safe_load(path.read_text())
    doc["target"]["namespace"] = "does-not-exist-" + uuid.uuid4().hex[:6]
    path.write_text(yaml.safe_dump(doc))
    result = project.cycle(path)
    assert not result.ok and "404" in (result.items[0].error or "")
    kubeconfig = yaml.safe_load(Path(project.kubeconfig).read_text())
    kubeconfig["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:1"
    down = tmp_path / "down.kubeconfig"
    down.write_text(yaml.safe_dump(kubeconfig))
    doc["target"]["kubeconfig"] = str(down)
    path.write_text(yaml.safe_dump(doc))
    result = project.cycle(path)
    assert not result.ok and "target unavailable" in (result.items[0].error or "")


def test_no_change_cycle_is_constant_list_requests(project):
    values = {f"k{i}": new_value() for i in range(30)}
    project.values(**values)
    path = project.config([{"name": f"s-{k}", "from": ref(k)} for k in values])
    assert project.cycle(path).ok
    run = project.syncd("--config", str(path), "--once", "--output", "json")
    doc = json.loads(run.stdout)
    assert doc["target_writes"] == 0
    # whatever the number of secrets: the key (one GET), the versions (one list), the
    # default installation's one-off check for unlabelled objects (one list), one list per
    # consumer kind, and one discovery request for the custom workloads (Argo Rollouts)
    assert doc["target_calls"]["read"] == {
        "get_secret": 1,
        "list_secret": 2,
        "list_deployment": 1,
        "list_statefulset": 1,
        "list_daemonset": 1,
        "list_cronjob": 1,
        "discover": 1,
    }


def test_syncd_names_prints_the_name_a_manifest_uses(project):
    project.values(a=new_value(), b=new_value())
    path = project.config(
        [
            {"name": "api_key", "from": ref("a")},
            {"name": "chart-secret", "from": ref("b"), "strategy": "in-place"},
        ]
    )
    assert project.cycle(path).ok
    run = project.syncd("names", "--config", str(path), "-o", "json")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["names"] == {
        "api_key": "api-key-v1",
        "chart-secret": "chart-secret",
    }


# ---------------------------------------------------------------------- stored metadata


def test_a_type_edit_makes_a_new_version(api, project, ns):
    project.values(crt=new_value(), key=new_value())
    secret = {"name": "web-tls", "data": {"tls.crt": ref("crt"), "tls.key": ref("key")}}
    path = project.config([secret])
    assert project.cycle(path).items[0].version == 1
    assert project.cycle(path).target_writes == 0  # no-change: the default type is no setting
    path = project.config([{**secret, "type": "kubernetes.io/tls"}])
    result = project.cycle(path)
    assert result.ok, result.items
    assert (result.items[0].action, result.items[0].version) == ("update", 2)
    assert api.CoreV1Api().read_namespaced_secret("web-tls-v2", ns).type == "kubernetes.io/tls"
    assert project.cycle(path).target_writes == 0


def test_a_moved_source_is_recorded_so_later_cycles_read_nothing(api, project, ns):
    """Two secrets read two keys of one file; one key changes. The other's version stays,
    and its stored source reference moves with the file (a metadata patch), so the
    following no-change runs - each a new process - read no value at all."""
    project.values(a=new_value(), b=new_value())
    path = project.config(
        [{"name": "first", "from": ref("a")}, {"name": "second", "from": ref("b")}]
    )
    assert project.cycle(path).ok
    before = api.CoreV1Api().read_namespaced_secret("second-v1", ns).metadata.annotations
    values = yaml.safe_load((project.root / "keys.yaml").read_text())
    project.values(a=new_value(), b=values["b"])
    result = project.cycle(path)
    assert [(i.name, i.action) for i in result.items] == [
        ("first", "update"),
        ("second", "unchanged"),
    ]
    after = api.CoreV1Api().read_namespaced_secret("second-v1", ns).metadata.annotations
    assert after["syncd.io/source"] != before["syncd.io/source"]
    assert result.calls["target"].get("patch_secret") == 1
    for _ in range(2):
        run = project.syncd("--config", str(path), "--once", "--output", "json")
        doc = json.loads(run.stdout)
        assert doc["target_writes"] == 0, doc
        assert doc["provider_calls"]["local"].get("read", 0) == 0, doc["provider_calls"]


@pytest.mark.parametrize(
    "stored",
    [
        "",  # empty
        base64.b64encode(b"k").decode(),  # 1 byte
        base64.b64encode(b"k" * 31).decode(),
        base64.b64encode(b"k" * 33).decode(),
        base64.b64encode(b"k" * 64).decode(),
        None,  # no key field at all
    ],
)
def test_a_damaged_fingerprint_key_is_refused_with_how_to_repair(api, project, ns, stored):
    data = {} if stored is None else {"key": stored}
    api.CoreV1Api().create_namespaced_secret(
        ns,
        {
            "metadata": {
                "name": "syncd-fingerprint-key",
                "labels": {"app.kubernetes.io/managed-by": "syncd"},
            },
            "data": data,
        },
    )
    project.values(a=new_value())
    path = project.config([{"name": "a", "from": ref("a")}])
    run = project.syncd("--config", str(path), "--once")
    assert run.returncode == 1
    assert f"Secret {ns}/syncd-fingerprint-key holds no valid fingerprint key" in run.stderr
    assert f"kubectl -n {ns} delete secret syncd-fingerprint-key" in run.stderr
    assert "every secret gets one new version" in run.stderr
    assert not any(n.startswith("a-") for n in secret_names(api, ns))  # nothing written


# ---------------------------------------------------------------------- in-place


def test_in_place_keeps_what_syncd_does_not_own(api, project, ns):
    """A chart's Secret, synced in place: its labels, annotations, owner reference and
    finalizer-free metadata survive every write; only data and syncd's own keys change."""
    core = api.CoreV1Api()
    owner_map = core.create_namespaced_config_map(ns, {"metadata": {"name": "release"}})
    core.create_namespaced_secret(
        ns,
        {
            "metadata": {
                "name": "chart-secret",
                "labels": {"app": "chart", "helm.sh/chart": "chart-1.0"},
                "annotations": {"meta.helm.sh/release-name": "release"},
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "name": "release",
                        "uid": owner_map.metadata.uid,
                    }
                ],
            },
            "stringData": {"chart-secret": "by-hand", "extra": "by-hand"},
        },
    )
    path = project.config([{"name": "chart-secret", "from": ref("key"), "strategy": "in-place"}])
    for version in (1, 2):
        project.values(key=new_value())
        result = project.cycle(path)
        assert result.ok, result.items
        assert result.items[0].version == version
        secret = core.read_namespaced_secret("chart-secret", ns)
        assert secret.metadata.labels["app"] == "chart"
        assert secret.metadata.labels["helm.sh/chart"] == "chart-1.0"
        assert secret.metadata.labels["app.kubernetes.io/managed-by"] == "syncd"
        assert secret.metadata.annotations["meta.helm.sh/release-name"] == "release"
        assert secret.metadata.annotations["syncd.io/version"] == str(version)
        assert [o.uid for o in secret.metadata.owner_references] == [owner_map.metadata.uid]
        assert sorted(secret.data) == ["chart-secret"]


def test_in_place_never_overwrites_another_managed_secret(api, project, ns):
    """Another config's in-place ``a_b`` owns the Secret ``a-b``; an in-place ``a-b`` in a
    config of its own would write over it: refused, the Secret untouched."""
    project.values(key=new_value(), other=new_value())
    first = project.config(
        [{"name": "a_b", "from": ref("key"), "strategy": "in-place"}], file="a.yaml"
    )
    assert project.cycle(first).ok
    before = api.CoreV1Api().read_namespaced_secret("a-b", ns)
    second = project.config(
        [{"name": "a-b", "from": ref("other"), "strategy": "in-place"}], file="b.yaml"
    )
    result = project.cycle(second)
    assert not result.ok
    assert "is another secret syncd manages ('a_b')" in (result.items[0].error or "")
    after = api.CoreV1Api().read_namespaced_secret("a-b", ns)
    assert after.metadata.resource_version == before.metadata.resource_version


# ---------------------------------------------------------------------- RBAC


def test_shipped_role_is_enough_and_needed(api, kube_env, project, ns, tmp_path):
    core = api.CoreV1Api()
    bind_shipped_role(api, ns)
    core.create_namespaced_service_account(ns, {"metadata": {"name": "nobody"}})
    pod = {"containers": [container(envFrom=[{"secretRef": {"name": "api-key"}}])]}
    api.AppsV1Api().create_namespaced_deployment(ns, deployment("web", pod, revisionHistoryLimit=0))
    api.BatchV1Api().create_namespaced_cron_job(
        ns,
        {
            "metadata": {"name": "report"},
            "spec": {
                "schedule": "0 0 1 1 *",
                "jobTemplate": {
                    "spec": {
                        "template": {"spec": {"restartPolicy": "Never", **pod}},
                    }
                },
            },
        },
    )
    wait_until("initial rollout", lambda: rolled_out(api, ns, "web"))
    core.create_namespaced_secret(ns, {"metadata": {"name": "api-key"}, "stringData": {"k": "v"}})
    # a hand-made Secret of an older release: adopted (labelled) with the Role's rights
    core.create_namespaced_secret(
        ns,
        {
            "metadata": {
                "name": "old-v1",
                "labels": {
                    "app.kubernetes.io/managed-by": "syncd",
                    "syncd.io/role": "version",
                    "syncd.io/secret": "old",
                    "syncd.io/version": "1",
                },
                "annotations": {"syncd.io/name": "old", "syncd.io/version": "1"},
            },
            "data": {"old": base64.b64encode(b"x").decode()},
        },
    )
    granted = token_kubeconfig(api, kube_env, ns, "syncd", tmp_path / "sa.kubeconfig")
    project.values(key=new_value())
    path = project.config(
        [{"name": "api-key", "from": ref("key"), "keep": 0}],
        kubeconfig=granted,
        leader_election={"enabled": True, "duration": 5},
    )
    result = project.cycle(path)
    assert result.ok, result.items  # created v1 and repointed web and report
    assert result.items[0].consumers == [f"CronJob/{ns}/report", f"Deployment/{ns}/web"]
    labels = core.read_namespaced_secret("old-v1", ns).metadata.labels
    assert labels["syncd.io/instance"] == "default"
    project.values(key=new_value())
    result = project.cycle(path)
    assert result.ok, result.items
    assert result.items[0].version == 2

    def collected() -> bool:
        # v1 goes once no Pod of the old ReplicaSet references it any more: with the
        # role's rights to list what pods can fall back to and to delete secrets
        if "api-key-v1" not in secret_names(api, ns):
            return True
        again = project.cycle(path)
        assert again.ok, again.items
        return False

    wait_until("v1 collected with the Role's token", collected)
    engine = Engine(load_config(path))
    try:
        elector = engine.target.leader_elector(identity="rbac-test", on_change=lambda _: None)
        assert elector is not None
        assert elector.try_acquire_or_renew()  # create, then get and update the Lease
        assert elector.try_acquire_or_renew()
    finally:
        engine.close()
    denied = token_kubeconfig(api, kube_env, ns, "nobody", tmp_path / "nobody.kubeconfig")
    path = project.config([{"name": "api-key", "from": ref("key")}], kubeconfig=denied)
    result = project.cycle(path)
    assert not result.ok
    assert "403" in (result.items[0].error or "") and "RBAC denied" in (result.items[0].error or "")


# ---------------------------------------------------------------------- before any request


def test_a_missing_sdk_is_reported_by_check_with_its_place(project):
    path = project.config([{"name": "a", "from": ref("a")}])
    code = (
        "import sys; sys.modules['kubernetes'] = None; from syncd.cli import main; "
        f"sys.exit(main(['check', '--config', {str(path)!r}]))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert run.returncode == 1
    assert "target.type: the kubernetes target needs kubernetes: " in run.stderr
    assert "pip install 'syncd[kubernetes]'" in run.stderr


def test_prepare_loads_credentials_without_a_request(project, tmp_path):
    path = project.config([{"name": "a", "from": ref("a")}])
    engine = Engine(load_config(path))
    try:
        engine.build()  # what a daemon reload does before switching
        assert engine.calls.snapshot() == {}
    finally:
        engine.close()
    broken = project.config(
        [{"name": "a", "from": ref("a")}], kubeconfig=str(tmp_path / "missing.kubeconfig")
    )
    engine = Engine(load_config(broken))
    try:
        with pytest.raises(SyncdError, match="can't load Kubernetes credentials"):
            engine.build()
    finally:
        engine.close()
