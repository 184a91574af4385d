"""The Kubernetes sidecar example: its manifests pass the real API server's validation, its
syncd config syncs from OpenBao with Vault's kubernetes auth checked by that same real API
server (TokenReview), into files swapped atomically, and its probes keep the app Ready
through a provider outage.

kwok runs the Pod but evaluates no probe, so the probes the API server stored for the Pod are
evaluated here as a kubelet would, against the example's config running in a real daemon."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import hvac
import pytest
import yaml

from syncd.envfile import parse_env
from tests.conftest import ROOT, backend_env, new_value, wait_until

EXAMPLE = ROOT / "config" / "examples" / "sidecar" / "kubernetes-pod.yaml"
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def vault() -> dict[str, str]:
    return backend_env("vault")


@pytest.fixture
def namespace(kube: tuple[dict[str, str], Any]) -> Iterator[str]:
    _, client = kube
    name = f"side-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api().create_namespace({"metadata": {"name": name}})
    yield name
    client.CoreV1Api().delete_namespace(name)


def test_manifests_are_valid_for_the_api_server(kube, namespace):
    from kubernetes.dynamic import DynamicClient

    _, client = kube
    dyn = DynamicClient(client.ApiClient())
    docs = [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d]
    for doc in docs:
        resource = dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
        resource.create(body=doc, namespace=namespace, dry_run="All")
    pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "secrets")
    assert volume["emptyDir"]["medium"] == "Memory"
    app_mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "secrets")
    assert app_mount["readOnly"] is True


def _kubernetes_auth(kube_env: dict[str, str], client: Any, bao: hvac.Client, ns: str) -> str:
    """Mount Vault's kubernetes auth against the real API server; a role for agent-zero."""
    core, rbac = client.CoreV1Api(), client.RbacAuthorizationV1Api()
    core.create_namespaced_service_account(ns, {"metadata": {"name": "vault-reviewer"}})
    core.create_namespaced_service_account(ns, {"metadata": {"name": "agent-zero"}})
    rbac.create_cluster_role_binding(
        {
            "metadata": {"name": f"{ns}-vault-reviewer"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:auth-delegator",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "vault-reviewer", "namespace": ns}],
        }
    )
    reviewer = core.create_namespaced_service_account_token(
        "vault-reviewer", ns, {"spec": {"expirationSeconds": 3600}}
    ).status.token
    mount = f"k8s-{ns}"
    bao.sys.enable_auth_method("kubernetes", path=mount)
    bao.auth.kubernetes.configure(
        kubernetes_host=kube_env["SYNCD_KUBE_SERVER"],
        kubernetes_ca_cert=Path(kube_env["SYNCD_KUBE_CA"]).read_text(),
        token_reviewer_jwt=reviewer,
        disable_local_ca_jwt=True,
        mount_point=mount,
    )
    bao.sys.create_or_update_policy(
        f"{ns}-read",
        'path "secret/data/pmoves/*" { capabilities = ["read"] }\n'
        'path "secret/metadata/pmoves/*" { capabilities = ["read", "list"] }\n'
        'path "secret/metadata/pmoves" { capabilities = ["list"] }',
    )
    bao.auth.kubernetes.create_role(
        "agent-zero",
        bound_service_account_names=["agent-zero"],
        bound_service_account_namespaces=[ns],
        policies=[f"{ns}-read"],
        audience="vault",
        mount_point=mount,
    )
    return mount


def test_sidecar_config_syncs_with_vault_kubernetes_auth(kube, vault, namespace, tmp_path, canary):
    kube_env, client = kube
    bao = hvac.Client(url=vault["VAULT_ADDR"], token=vault["VAULT_TOKEN"])
    mount = _kubernetes_auth(kube_env, client, bao, namespace)
    openai, anthropic = canary, new_value()
    bao.secrets.kv.v2.create_or_update_secret("pmoves/openai", secret={"api_key": openai})
    bao.secrets.kv.v2.create_or_update_secret("pmoves/anthropic", secret={"api_key": anthropic})
    token = (
        client.CoreV1Api()
        .create_namespaced_service_account_token(
            "agent-zero", namespace, {"spec": {"audiences": ["vault"], "expirationSeconds": 600}}
        )
        .status.token
    )
    jwt = tmp_path / "vault-jwt"
    jwt.write_text(token)
    config = next(d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d["kind"] == "ConfigMap")
    path = tmp_path / "syncd.yaml"
    path.write_text(config["data"]["syncd.yaml"])
    out = tmp_path / "app"
    env = {
        **os.environ,
        "VAULT_ADDR": vault["VAULT_ADDR"],
        "VAULT_JWT_FILE": str(jwt),
        "VAULT_K8S_MOUNT": mount,
        "SYNCD_OUT": str(out),
    }
    env.pop("VAULT_TOKEN", None)
    run = subprocess.run(
        [sys.executable, "-m", "syncd", "--config", str(path), "--once"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert (out / "openai_api_key").read_text() == openai
    assert parse_env((out / ".env").read_text()) == {
        "OPENAI_API_KEY": openai,
        "ANTHROPIC_API_KEY": anthropic,
    }
    assert canary not in run.stdout + run.stderr
    # a token for another service account is refused by the real TokenReview
    other = (
        client.CoreV1Api()
        .create_namespaced_service_account_token(
            "vault-reviewer",
            namespace,
            {"spec": {"audiences": ["vault"], "expirationSeconds": 600}},
        )
        .status.token
    )
    jwt.write_text(other)
    denied = subprocess.run(
        [sys.executable, "-m", "syncd", "--config", str(path), "--once"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert denied.returncode == 1
    assert "kubernetes" in denied.stderr and "login" in denied.stderr.lower()
    assert (out / "openai_api_key").read_text() == openai  # untouched
    client.RbacAuthorizationV1Api().delete_cluster_role_binding(f"{namespace}-vault-reviewer")


class Forwarder:
    """A TCP relay in front of Vault that the test can pull: closed, nothing answers."""

    def __init__(self, upstream: str) -> None:
        parsed = urlparse(upstream)
        self.upstream = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            self.conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            dst.close()

    def close(self) -> None:
        self.listener.close()
        for conn in self.conns:
            conn.close()


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return 200 <= resp.status < 400
    except urllib.error.HTTPError as exc:
        return 200 <= exc.code < 400
    except OSError:
        return False


def _probe_passes(probe: dict[str, Any], container: dict[str, Any], port: int) -> bool:
    """A kubelet's httpGet probe against the locally running sidecar (whose metrics port,
    9102 in the manifest, listens on ``port`` here)."""
    target = probe["httpGet"]["port"]
    ports = {p.get("name"): p["containerPort"] for p in container.get("ports") or []}
    assert ports.get(target, target) == 9102, "only syncd's port can be probed here"
    return _http_ok(f"http://127.0.0.1:{port}{probe['httpGet'].get('path', '/')}")


def test_sidecar_probes_keep_the_app_ready_through_a_provider_outage(
    kube, vault, namespace, tmp_path
):
    """The example runs for real: its Deployment in the API server, its syncd config in a
    real daemon, Vault reached through a relay. The relay is pulled and syncd's /readyz
    fails after ready_grace, but every probe the Pod declares still passes (a kubelet
    would keep the Pod Ready) and the app's files keep their last good values."""
    kube_env, client = kube
    bao = hvac.Client(url=vault["VAULT_ADDR"], token=vault["VAULT_TOKEN"])
    mount = _kubernetes_auth(kube_env, client, bao, namespace)
    openai = new_value()
    bao.secrets.kv.v2.create_or_update_secret("pmoves/openai", secret={"api_key": openai})
    bao.secrets.kv.v2.create_or_update_secret("pmoves/anthropic", secret={"api_key": new_value()})
    token = (
        client.CoreV1Api()
        .create_namespaced_service_account_token(
            "agent-zero", namespace, {"spec": {"audiences": ["vault"], "expirationSeconds": 600}}
        )
        .status.token
    )
    (tmp_path / "vault-jwt").write_text(token)
    docs = [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d]
    for doc in docs:
        if doc["kind"] == "ConfigMap":
            client.CoreV1Api().create_namespaced_config_map(namespace, doc)
        else:
            client.AppsV1Api().create_namespaced_deployment(namespace, doc)
    config = yaml.safe_load(next(d for d in docs if d["kind"] == "ConfigMap")["data"]["syncd.yaml"])
    port = _free_port()
    config["defaults"]["refresh"] = "1s"
    config["daemon"].update(listen=f"127.0.0.1:{port}", ready_grace="2s", backoff_min="1s")
    config["daemon"]["backoff_max"] = "2s"
    path = tmp_path / "syncd.yaml"
    path.write_text(yaml.safe_dump(config))
    relay = Forwarder(vault["VAULT_ADDR"])
    out = tmp_path / "app"
    env = {
        **os.environ,
        "VAULT_ADDR": f"http://127.0.0.1:{relay.port}",
        "VAULT_JWT_FILE": str(tmp_path / "vault-jwt"),
        "VAULT_K8S_MOUNT": mount,
        "SYNCD_OUT": str(out),
    }
    env.pop("VAULT_TOKEN", None)
    daemon = subprocess.Popen(
        [sys.executable, "-m", "syncd", "--config", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        wait_until("the first sync", (out / "openai_api_key").exists)
        wait_until("ready", lambda: _http_ok(f"http://127.0.0.1:{port}/readyz"))

        def pod() -> dict[str, Any] | None:
            pods = client.CoreV1Api().list_namespaced_pod(namespace).items
            ready = [
                p
                for p in pods
                if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
            ]
            return client.ApiClient().sanitize_for_serialization(ready[0]) if ready else None

        spec = wait_until("the example's pod Ready", pod)["spec"]
        relay.close()
        wait_until("/readyz failing", lambda: not _http_ok(f"http://127.0.0.1:{port}/readyz"))
        time.sleep(2)  # several failed cycles later
        sidecars = [c for c in spec.get("initContainers") or [] if c.get("restartPolicy")]
        for container in [*spec["containers"], *sidecars]:
            for kind in ("readinessProbe", "livenessProbe"):
                probe = container.get(kind)
                if probe and "httpGet" in probe:
                    assert _probe_passes(probe, container, port), f"{container['name']} {kind}"
        assert (out / "openai_api_key").read_text() == openai
        assert daemon.poll() is None
    finally:
        relay.close()
        daemon.kill()
        daemon.wait()
        client.RbacAuthorizationV1Api().delete_cluster_role_binding(f"{namespace}-vault-reviewer")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
