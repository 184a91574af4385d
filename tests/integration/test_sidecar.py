"""The Kubernetes sidecar example: its manifests pass the real API server's validation, and
its syncd config syncs from OpenBao with Vault's kubernetes auth checked by that same real
API server (TokenReview), into files swapped atomically."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hvac
import pytest
import yaml

from syncd.envfile import parse_env
from tests.conftest import ROOT, backend_env, new_value

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
