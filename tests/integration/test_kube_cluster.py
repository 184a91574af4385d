"""Smoke test of the Kubernetes control plane that the kubernetes target's tests run against.

The target's tests trust this cluster to behave like a real one: the controller-manager makes
ReplicaSets and keeps rollout history, kwok's fake kubelets make rollouts finish, service
accounts get tokens and RBAC says no. If any of that silently stopped working (a missing
controller, a scheduler that never binds, authorization left open), the target's tests would
prove nothing; this file catches it first. Start the cluster: ``scripts/backends up kubernetes``.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterator
from typing import Any, TypeVar

import pytest
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from tests.conftest import backend_env, wait_until

pytestmark = pytest.mark.backend("kubernetes")

T = TypeVar("T")
ROLLOUT_SECONDS = 180.0


@pytest.fixture(scope="module")
def kube_env() -> dict[str, str]:
    return backend_env("kubernetes")


@pytest.fixture(scope="module")
def api(kube_env: dict[str, str]) -> Iterator[Any]:
    client = k8s_config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=kube_env["KUBECONFIG"]
    )
    yield client
    client.close()


@pytest.fixture
def namespace(api: Any) -> Iterator[str]:
    core: Any = k8s_client.CoreV1Api(api)
    name = "syncd-smoke-" + secrets.token_hex(4)
    core.create_namespace(k8s_client.V1Namespace(metadata=k8s_client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


def deployment(name: str, replicas: int) -> Any:
    """A Deployment whose pods only kwok runs: the image is never pulled."""
    labels = {"app": name}
    container = k8s_client.V1Container(
        name="app",
        image="registry.invalid/syncd/pause:1",
        env=[k8s_client.V1EnvVar(name="GENERATION", value="1")],
    )
    return k8s_client.V1Deployment(
        metadata=k8s_client.V1ObjectMeta(name=name, labels=labels),
        spec=k8s_client.V1DeploymentSpec(
            replicas=replicas,
            selector=k8s_client.V1LabelSelector(match_labels=labels),
            template=k8s_client.V1PodTemplateSpec(
                metadata=k8s_client.V1ObjectMeta(labels=labels),
                spec=k8s_client.V1PodSpec(containers=[container]),
            ),
        ),
    )


def rolled_out(apps: Any, namespace: str, name: str) -> Any:
    """The Deployment when ``kubectl rollout status`` would call it complete, else None."""
    dep = apps.read_namespaced_deployment(name, namespace)
    status, want = dep.status, dep.spec.replicas
    done = (
        (status.observed_generation or 0) >= dep.metadata.generation
        and status.updated_replicas == want
        and status.replicas == want
        and status.available_replicas == want
    )
    return dep if done else None


def replica_sets(apps: Any, namespace: str, owner_uid: str) -> list[Any]:
    """The ReplicaSets the deployment controller made for the Deployment with ``owner_uid``."""
    items = apps.list_namespaced_replica_set(namespace).items
    return [
        rs
        for rs in items
        if any(ref.uid == owner_uid for ref in rs.metadata.owner_references or [])
    ]


def test_deployment_rolls_out_and_keeps_history(
    api: Any, kube_env: dict[str, str], namespace: str
) -> None:
    apps: Any = k8s_client.AppsV1Api(api)
    core: Any = k8s_client.CoreV1Api(api)
    created = apps.create_namespaced_deployment(namespace, deployment("web", replicas=2))
    uid = created.metadata.uid

    first = wait_until("the first ReplicaSet", lambda: replica_sets(apps, namespace, uid))
    assert len(first) == 1
    assert first[0].metadata.annotations["deployment.kubernetes.io/revision"] == "1"

    dep = wait_until("rollout of revision 1", lambda: rolled_out(apps, namespace, "web"))
    assert dep.status.updated_replicas == 2
    assert dep.status.ready_replicas == 2
    available = {c.type: c.status for c in dep.status.conditions}
    assert available["Available"] == "True"

    pods = core.list_namespaced_pod(namespace, label_selector="app=web").items
    assert len(pods) == 2
    fake_nodes = set(kube_env["SYNCD_KUBE_NODES"].split(","))
    for pod in pods:
        assert pod.spec.node_name in fake_nodes, "the scheduler binds pods to kwok's nodes"
        assert pod.status.phase == "Running"

    apps.patch_namespaced_deployment(
        "web",
        namespace,
        {
            "spec": {
                "template": {
                    "spec": {
                        "containers": [
                            {"name": "app", "env": [{"name": "GENERATION", "value": "2"}]}
                        ]
                    }
                }
            }
        },
    )

    def two_replica_sets() -> list[Any] | None:
        found = replica_sets(apps, namespace, uid)
        return found if len(found) == 2 else None

    both = wait_until("a second ReplicaSet", two_replica_sets)
    revisions = sorted(rs.metadata.annotations["deployment.kubernetes.io/revision"] for rs in both)
    assert revisions == ["1", "2"]

    dep = wait_until("rollout of revision 2", lambda: rolled_out(apps, namespace, "web"))
    assert dep.status.updated_replicas == 2
    by_revision = {
        rs.metadata.annotations["deployment.kubernetes.io/revision"]: rs
        for rs in replica_sets(apps, namespace, uid)
    }
    old, new = by_revision["1"], by_revision["2"]
    assert old.spec.replicas == 0, "the old ReplicaSet is scaled down but kept for rollback"
    assert new.spec.template.spec.containers[0].env[0].value == "2"
    assert old.spec.template.spec.containers[0].env[0].value == "1"


def test_rbac_denies_a_service_account_without_a_role(
    api: Any, kube_env: dict[str, str], namespace: str
) -> None:
    core: Any = k8s_client.CoreV1Api(api)
    rbac: Any = k8s_client.RbacAuthorizationV1Api(api)
    core.create_namespaced_service_account(
        namespace, k8s_client.V1ServiceAccount(metadata=k8s_client.V1ObjectMeta(name="reader"))
    )
    # A legacy token Secret: the controller-manager's token controller signs and fills it in.
    core.create_namespaced_secret(
        namespace,
        k8s_client.V1Secret(
            metadata=k8s_client.V1ObjectMeta(
                name="reader-token",
                annotations={"kubernetes.io/service-account.name": "reader"},
            ),
            type="kubernetes.io/service-account-token",
        ),
    )

    def filled_in() -> Any:
        found = core.read_namespaced_secret("reader-token", namespace)
        return found if found.data and "token" in found.data else None

    token_secret = wait_until("the token controller", filled_in)
    token = base64.b64decode(token_secret.data["token"]).decode()

    conf = k8s_client.Configuration(host=kube_env["SYNCD_KUBE_SERVER"])
    conf.ssl_ca_cert = kube_env["SYNCD_KUBE_CA"]
    conf.api_key = {"authorization": token}
    conf.api_key_prefix = {"authorization": "Bearer"}
    with k8s_client.ApiClient(conf) as as_reader:
        reader: Any = k8s_client.CoreV1Api(as_reader)
        with pytest.raises(ApiException) as denied:
            reader.list_namespaced_secret(namespace)
        assert denied.value.status == 403, "authenticated, then refused by RBAC"
        assert f"system:serviceaccount:{namespace}:reader" in str(denied.value.body)

        rbac.create_namespaced_role(
            namespace,
            k8s_client.V1Role(
                metadata=k8s_client.V1ObjectMeta(name="list-secrets"),
                rules=[
                    k8s_client.V1PolicyRule(api_groups=[""], resources=["secrets"], verbs=["list"])
                ],
            ),
        )
        rbac.create_namespaced_role_binding(
            namespace,
            {
                "metadata": {"name": "reader-lists-secrets"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": "list-secrets",
                },
                "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
            },
        )

        def allowed() -> list[str] | None:
            try:
                return [s.metadata.name for s in reader.list_namespaced_secret(namespace).items]
            except ApiException as exc:
                if exc.status != 403:
                    raise
                return None

        assert "reader-token" in wait_until("the RoleBinding to take effect", allowed, 30)
        with pytest.raises(ApiException) as still_denied:
            reader.list_namespaced_config_map(namespace)
        assert still_denied.value.status == 403, "the Role grants secrets only"
