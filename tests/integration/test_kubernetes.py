"""The kubernetes target against a real control plane (kube-apiserver, controller-manager,
scheduler, etcd) with kwok playing the kubelets, so rollouts complete for real.

Each test works in a namespace of its own and drives syncd through the CLI or the Engine.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from syncd.config import load_config
from syncd.engine import CycleResult, Engine
from tests.conftest import ROOT, new_value, wait_until

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def ns(api: Any) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:10]}"
    api.CoreV1Api().create_namespace({"metadata": {"name": name}})
    yield name
    api.CoreV1Api().delete_namespace(name)


class Project:
    """A config folder: a source file, a syncd.yaml pointing at the test cluster."""

    def __init__(self, root: Path, kubeconfig: str, namespace: str) -> None:
        self.root = root
        self.kubeconfig = kubeconfig
        self.namespace = namespace

    def values(self, **values: str) -> None:
        (self.root / "keys.yaml").write_text(yaml.safe_dump(values))

    def config(self, secrets: list[dict[str, Any]], **target: Any) -> Path:
        doc = {
            "providers": {"local": {"type": "file", "path": "keys.yaml"}},
            "target": {
                "type": "kubernetes",
                "namespace": self.namespace,
                "kubeconfig": self.kubeconfig,
                "poll_interval": 0.3,
                **target,
            },
            "defaults": {"timeout": "60s"},
            "secrets": secrets,
        }
        path = self.root / "syncd.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path

    def cycle(self, path: Path | None = None) -> CycleResult:
        engine = Engine(load_config(path or self.root / "syncd.yaml"))
        try:
            return engine.run_cycle()
        finally:
            engine.close()


@pytest.fixture
def project(tmp_path: Path, kube_env: dict[str, str], ns: str) -> Project:
    return Project(tmp_path, kube_env["KUBECONFIG"], ns)


def ref(key: str) -> dict[str, str]:
    return {"provider": "local", "key": key}


def deployment(name: str, pod_spec: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "strategy": {"rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec},
            **spec,
        },
    }


def container(**extra: Any) -> dict[str, Any]:
    return {"name": "app", "image": "example.invalid/agent-zero:1", **extra}


def rolled_out(api: Any, ns: str, name: str) -> bool:
    d = api.AppsV1Api().read_namespaced_deployment(name, ns)
    s = d.status
    return bool(
        (s.observed_generation or 0) >= d.metadata.generation
        and (s.updated_replicas or 0) == d.spec.replicas
        and (s.available_replicas or 0) == d.spec.replicas
        and (s.replicas or 0) == d.spec.replicas
    )


def secret_names(api: Any, ns: str) -> set[str]:
    return {s.metadata.name for s in api.CoreV1Api().list_namespaced_secret(ns).items}


def template_secret_refs(template: Any) -> set[str]:
    spec = template.spec
    refs = set()
    for c in spec.containers:
        for e in c.env or []:
            if e.value_from and e.value_from.secret_key_ref:
                refs.add(e.value_from.secret_key_ref.name)
        for f in c.env_from or []:
            if f.secret_ref:
                refs.add(f.secret_ref.name)
    for v in spec.volumes or []:
        if v.secret:
            refs.add(v.secret.secret_name)
        if v.projected:
            refs.update(s.secret.name for s in v.projected.sources if s.secret)
    refs.update(p.name for p in spec.image_pull_secrets or [])
    return refs


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
    assert "did not converge: timed out after 4s" in (result.items[0].error or "")
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
            {"name": "named", "from": ref("ok"), "consumers": ["Deployment/missing"]},
        ]
    )
    result = project.cycle(path)
    by_name = {i.name: i for i in result.items}
    assert "at most 1 MiB" in (by_name["too-big"].error or "")
    assert "consumer 'Deployment/missing' does not exist" in (by_name["named"].error or "")
    assert by_name["fine"].action == "create"
    assert {n for n in secret_names(api, ns) if not n.startswith("syncd")} == {"fine-v1"}


def test_config_errors_for_names_keys_and_namespaces(project, ns):
    path = project.config(
        [
            {"name": "ok", "data": {"bad key!": ref("a")}},
            {"name": "elsewhere", "from": ref("a"), "namespace": "not-allowed"},
            {"name": "tls", "type": "kubernetes.io/tls", "data": {"tls.crt": ref("a")}},
        ]
    )
    run = subprocess.run(
        [sys.executable, "-m", "syncd", "check", "--config", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 1
    assert "secrets[0]: key 'bad key!' is not a valid Secret key" in run.stderr
    assert "secrets[1]: namespace 'not-allowed' is not the target's namespace" in run.stderr
    assert "secrets[2]: type kubernetes.io/tls needs the key(s) tls.key" in run.stderr


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
    run = subprocess.run(
        [sys.executable, "-m", "syncd", "--config", str(path), "--once", "--output", "json"],
        capture_output=True,
        text=True,
        check=False,
    )
    doc = json.loads(run.stdout)
    assert doc["target_writes"] == 0
    reads = doc["target_calls"]["read"]
    assert reads.get("get_secret", 0) == 1  # the fingerprint key, once
    assert reads["list_secret"] == 1
    assert sum(reads.values()) <= 6  # key + secrets + 3 workload lists, whatever the count


# ---------------------------------------------------------------------- RBAC and leader election


def _token_kubeconfig(api: Any, kube_env: dict[str, str], ns: str, sa: str, path: Path) -> str:
    token = (
        api.CoreV1Api()
        .create_namespaced_service_account_token(sa, ns, {"spec": {"expirationSeconds": 3600}})
        .status.token
    )
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "test",
                "cluster": {
                    "server": kube_env["SYNCD_KUBE_SERVER"],
                    "certificate-authority": kube_env["SYNCD_KUBE_CA"],
                },
            }
        ],
        "users": [{"name": sa, "user": {"token": token}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": sa, "namespace": ns}}],
        "current-context": "test",
    }
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def test_shipped_role_is_enough_and_needed(api, kube_env, project, ns, tmp_path):
    core, rbac = api.CoreV1Api(), api.RbacAuthorizationV1Api()
    core.create_namespaced_service_account(ns, {"metadata": {"name": "syncd"}})
    core.create_namespaced_service_account(ns, {"metadata": {"name": "nobody"}})
    role = yaml.safe_load((ROOT / "config" / "rbac" / "role.yaml").read_text())
    rbac.create_namespaced_role(ns, role)
    rbac.create_namespaced_role_binding(
        ns,
        {
            "metadata": {"name": "syncd"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "syncd"},
            "subjects": [{"kind": "ServiceAccount", "name": "syncd", "namespace": ns}],
        },
    )
    pod = {"containers": [container(envFrom=[{"secretRef": {"name": "api-key"}}])]}
    api.AppsV1Api().create_namespaced_deployment(ns, deployment("web", pod, revisionHistoryLimit=0))
    wait_until("initial rollout", lambda: rolled_out(api, ns, "web"))
    core.create_namespaced_secret(ns, {"metadata": {"name": "api-key"}, "stringData": {"k": "v"}})
    granted = _token_kubeconfig(api, kube_env, ns, "syncd", tmp_path / "sa.kubeconfig")
    project.values(key=new_value())
    path = project.config(
        [{"name": "api-key", "from": ref("key"), "keep": 0}],
        kubeconfig=granted,
        leader_election={"enabled": True, "duration": 5},
    )
    result = project.cycle(path)
    assert result.ok, result.items  # created v1 and repointed web from the hand-made secret
    project.values(key=new_value())
    result = project.cycle(path)
    assert result.ok, result.items
    assert result.items[0].version == 2

    def collected() -> bool:
        # v1 goes once no Pod of the old ReplicaSet references it any more: with the
        # role's rights to list pods and replicasets and to delete secrets
        if "api-key-v1" not in secret_names(api, ns):
            return True
        again = project.cycle(path)
        assert again.ok, again.items
        return False

    wait_until("v1 collected with the Role's token", collected)
    denied = _token_kubeconfig(api, kube_env, ns, "nobody", tmp_path / "nobody.kubeconfig")
    path = project.config([{"name": "api-key", "from": ref("key")}], kubeconfig=denied)
    result = project.cycle(path)
    assert not result.ok
    assert "403" in (result.items[0].error or "") and "RBAC denied" in (result.items[0].error or "")


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return resp.read().decode()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_leader_election_one_writer_and_failover(api, project, ns):
    project.values(key=new_value())
    path = project.config(
        [{"name": "api-key", "from": ref("key"), "refresh": "1s"}],
        leader_election={"enabled": True, "duration": 4, "renew_every": 0.5},
    )
    ports = [_free_port(), _free_port()]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "syncd", "--config", str(path), "--listen", f"127.0.0.1:{p}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "POD_NAME": f"syncd-{i}"},
        )
        for i, p in enumerate(ports)
    ]
    try:
        leaders = wait_until(
            "a leader",
            lambda: [i for i, p in enumerate(ports) if "syncd_leader 1.0" in _safe_metrics(p)],
        )
        assert len(leaders) == 1
        time.sleep(3)
        states = ["syncd_leader 1.0" in _safe_metrics(p) for p in ports]
        assert states.count(True) == 1, "exactly one leader at a time"
        leader = leaders[0]
        follower = 1 - leader
        assert 'syncd_syncs_total{result="created",secret="api-key"}' not in _safe_metrics(
            ports[follower]
        )
        procs[leader].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        wait_until(
            "failover", lambda: "syncd_leader 1.0" in _safe_metrics(ports[follower]), timeout=15
        )
        assert time.monotonic() - killed < 4 + 3  # within the lease duration (+ a renew period)
        project.values(key=new_value())
        wait_until(
            "new leader syncs",
            lambda: 'syncd_secret_version{secret="api-key"} 2.0' in _safe_metrics(ports[follower]),
            timeout=20,
        )
    finally:
        for proc in procs:
            proc.kill()
            proc.communicate()


def _safe_metrics(port: int) -> str:
    try:
        return _metrics(port)
    except OSError:
        return ""
