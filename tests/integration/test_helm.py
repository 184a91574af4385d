"""The Helm chart: lint, template, schema, validation by the real API server, install, and a
real sync with the chart's own ServiceAccount token (RBAC proven, not assumed)."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from syncd.config import load_config
from tests.conftest import new_value, run
from tests.integration.kube_util import CHART, helm, token_kubeconfig

pytestmark = pytest.mark.timeout(300)


def values_file(tmp_path: Path, **values: Any) -> Path:
    keys = tmp_path / "keys.yaml"
    if not keys.exists():
        keys.write_text(yaml.safe_dump({"api_key": new_value()}))
    doc = {
        "config": {
            "providers": {"local": {"type": "file", "path": str(keys)}},
            "secrets": [{"name": "api-key", "from": {"provider": "local", "key": "api_key"}}],
        },
        **values,
    }
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture
def namespaces(api: Any) -> Iterator[list[str]]:
    names = [f"h-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    for name in names:
        api.CoreV1Api().create_namespace({"metadata": {"name": name}})
    yield names
    for name in names:
        api.CoreV1Api().delete_namespace(name)


def test_lint_is_clean(kube_env, tmp_path):
    run = helm(kube_env, "lint", "--strict", str(CHART), "-f", str(values_file(tmp_path)))
    assert "1 chart(s) linted, 0 chart(s) failed" in run.stdout


def test_values_breaking_the_schema_are_refused(kube_env, tmp_path):
    for bad, message in (
        ({"replicaCount": 0}, "replicaCount"),
        ({"colour": "red"}, "colour"),
        ({"metrics": {"port": 80}}, "port"),
    ):
        run = helm(
            kube_env,
            "template",
            "x",
            str(CHART),
            "-f",
            str(values_file(tmp_path, **bad)),
            check=False,
        )
        assert run.returncode != 0
        assert "values don't meet the specifications of the schema" in run.stderr
        assert message in run.stderr


def rendered(
    kube_env: dict[str, str], tmp_path: Path, namespace: str, **values: Any
) -> list[dict[str, Any]]:
    run = helm(
        kube_env,
        "template",
        "rel",
        str(CHART),
        "-n",
        namespace,
        "-f",
        str(values_file(tmp_path, **values)),
    )
    return [doc for doc in yaml.safe_load_all(run.stdout) if doc]


def test_template_security_and_probes(kube_env, tmp_path):
    docs = rendered(kube_env, tmp_path, "apps")
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == [
        "ConfigMap",
        "Deployment",
        "Pod",  # the `helm test` hook
        "PodDisruptionBudget",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
    ]
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    config = yaml.safe_load(next(d for d in docs if d["kind"] == "ConfigMap")["data"]["syncd.yaml"])
    assert config["instance"] == "rel"
    assert config["target"] == {
        "type": "kubernetes",
        "namespace": "apps",
        "custom_workloads": ["rollouts.argoproj.io"],
        # always on: a rolling update runs the old and the new pod side by side
        "leader_election": {"enabled": True, "namespace": "apps", "lease": "syncd-leader-rel"},
    }
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    # the default 5m convergence timeout plus the margin: SIGTERM lets a swap finish
    assert pod["terminationGracePeriodSeconds"] == 330
    role = next(d for d in docs if d["kind"] == "Role")
    lease_rules = [
        r for r in role["rules"] if r["resources"] == ["leases"] and "update" in r["verbs"]
    ]
    assert lease_rules == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["syncd-leader-rel"],
            "verbs": ["get", "update"],
        }
    ]
    assert config["daemon"]["listen"] == "0.0.0.0:9102"
    many = rendered(kube_env, tmp_path, "apps", replicaCount=2, namespaces=["dev", "prod"])
    config = yaml.safe_load(next(d for d in many if d["kind"] == "ConfigMap")["data"]["syncd.yaml"])
    assert config["target"]["leader_election"]["enabled"] is True
    assert config["target"]["namespaces"] == ["dev", "prod"]
    assert [d["kind"] for d in many].count("ClusterRole") == 1
    bindings = sorted(d["metadata"]["namespace"] for d in many if d["kind"] == "RoleBinding")
    assert bindings == ["apps", "dev", "prod"]
    assert not [d for d in many if d["kind"] == "ClusterRoleBinding"]


@pytest.mark.parametrize(
    ("timeouts", "grace"),
    [({"defaults": {"timeout": "10m"}}, 630), ({"secrets_timeout": "1h30m"}, 5430), ({}, 330)],
)
def test_grace_period_covers_the_longest_convergence_wait(kube_env, tmp_path, timeouts, grace):
    values = values_file(tmp_path)
    doc = yaml.safe_load(values.read_text())
    if "defaults" in timeouts:
        doc["config"]["defaults"] = timeouts["defaults"]
    if "secrets_timeout" in timeouts:
        doc["config"]["secrets"][0]["timeout"] = timeouts["secrets_timeout"]
    values.write_text(yaml.safe_dump(doc))
    run = helm(kube_env, "template", "rel", str(CHART), "-n", "apps", "-f", str(values))
    deployment = next(d for d in yaml.safe_load_all(run.stdout) if d and d["kind"] == "Deployment")
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == grace


def test_two_releases_in_one_namespace_are_two_installations(kube_env, tmp_path):
    """Distinct instances and Leases, and each release's RBAC reaches only its own Lease."""
    configs, leases = [], []
    for release in ("team-a", "team-b"):
        docs = [
            d
            for d in yaml.safe_load_all(
                helm(
                    kube_env,
                    "template",
                    release,
                    str(CHART),
                    "-n",
                    "shared",
                    "-f",
                    str(values_file(tmp_path)),
                ).stdout
            )
            if d
        ]
        config = yaml.safe_load(
            next(d for d in docs if d["kind"] == "ConfigMap")["data"]["syncd.yaml"]
        )
        configs.append((config["instance"], config["target"]["leader_election"]["lease"]))
        role = next(d for d in docs if d["kind"] == "Role")
        leases += [r.get("resourceNames") for r in role["rules"] if "resourceNames" in r]
    assert configs == [("team-a", "syncd-leader-team-a"), ("team-b", "syncd-leader-team-b")]
    assert leases == [["syncd-leader-team-a"], ["syncd-leader-team-b"]]


def test_rendered_config_is_a_valid_syncd_config(kube_env, tmp_path):
    docs = rendered(kube_env, tmp_path, "apps")
    text = next(d for d in docs if d["kind"] == "ConfigMap")["data"]["syncd.yaml"]
    path = tmp_path / "syncd.yaml"
    path.write_text(text)
    config = load_config(path)
    assert [s.name for s in config.secrets] == ["api-key"]


def test_manifests_pass_server_side_validation(kube_env, api, tmp_path, namespaces):
    from kubernetes.dynamic import DynamicClient

    dyn = DynamicClient(api.ApiClient())
    ns = namespaces[0]
    docs = rendered(kube_env, tmp_path, ns, replicaCount=2, namespaces=[namespaces[1]])
    # the `helm test` Pod is admitted only once its ServiceAccount exists: create that for real
    (account,) = [d for d in docs if d["kind"] == "ServiceAccount"]
    api.CoreV1Api().create_namespaced_service_account(ns, account)
    docs.remove(account)
    assert "Pod" in {d["kind"] for d in docs}
    for doc in docs:
        resource = dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
        target_ns = doc["metadata"].get("namespace", ns) if resource.namespaced else None
        resource.create(body=doc, namespace=target_ns, dry_run="All")


def test_install_and_sync_with_the_charts_service_account(kube_env, api, tmp_path, namespaces):
    ns, other, forbidden = namespaces
    values = values_file(tmp_path, namespaces=[other])
    doc = yaml.safe_load(values.read_text())
    doc["config"]["secrets"].append(
        {"name": "elsewhere", "namespace": other, "from": {"provider": "local", "key": "api_key"}}
    )
    values.write_text(yaml.safe_dump(doc))
    helm(kube_env, "install", "rel", str(CHART), "-n", ns, "-f", str(values))
    try:
        core = api.CoreV1Api()
        configmap = core.read_namespaced_config_map("rel-syncd", ns)
        config = yaml.safe_load(configmap.data["syncd.yaml"])
        config["target"]["kubeconfig"] = str(
            token_kubeconfig(api, kube_env, ns, "rel-syncd", tmp_path / "sa.kubeconfig")
        )
        path = tmp_path / "syncd.yaml"
        path.write_text(yaml.safe_dump(config))
        result = run(path)
        assert result.ok, result.items
        assert core.read_namespaced_secret("api-key-v1", ns).immutable is True
        created = core.read_namespaced_secret("elsewhere-v1", other)
        assert (
            base64.b64decode(created.data["elsewhere"])
            == yaml.safe_load((tmp_path / "keys.yaml").read_text())["api_key"].encode()
        )
        # the same token has no rights in a namespace the chart was not given
        config["target"]["namespaces"] = [other, forbidden]
        config["secrets"][1]["namespace"] = forbidden
        path.write_text(yaml.safe_dump(config))
        denied = run(path)
        assert "RBAC denied" in (denied.items[0].error or "")
    finally:
        helm(kube_env, "uninstall", "rel", "-n", ns)


def test_an_upgraded_release_can_keep_the_default_installation(kube_env, tmp_path):
    """A release from before installations had names keeps its unlabelled objects with
    config.instance: default, and its Lease keeps the old name."""
    values = values_file(tmp_path)
    doc = yaml.safe_load(values.read_text())
    doc["config"]["instance"] = "default"
    values.write_text(yaml.safe_dump(doc))
    run = helm(kube_env, "template", "old-release", str(CHART), "-n", "apps", "-f", str(values))
    docs = [d for d in yaml.safe_load_all(run.stdout) if d]
    config = yaml.safe_load(next(d for d in docs if d["kind"] == "ConfigMap")["data"]["syncd.yaml"])
    assert config["instance"] == "default"
    assert config["target"]["leader_election"]["lease"] == "syncd-leader"
    role = next(d for d in docs if d["kind"] == "Role")
    assert [r["resourceNames"] for r in role["rules"] if "resourceNames" in r] == [["syncd-leader"]]
