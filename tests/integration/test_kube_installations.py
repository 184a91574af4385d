"""Several syncd installations in one namespace, against the real control plane.

Each installation (top-level ``instance:``) sees only the objects that carry its name: it
rotates, repoints, collects and prunes its own, never the other's, and says so clearly when
both want one Secret name. Objects from before installations had names belong to the default
installation, which labels them once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import new_value, wait_until
from tests.integration.kube_util import (  # noqa: F401 - ns: a fixture
    Project,
    container,
    deployment,
    ns_fixture,
    ref,
    rolled_out,
    secret_names,
    template_secret_refs,
)

pytestmark = pytest.mark.timeout(300)


def _project(root: Path, kube_env: dict[str, str], namespace: str) -> Project:
    root.mkdir()
    return Project(root, kube_env["KUBECONFIG"], namespace)


def _config(project: Project, instance: str | None, names: list[str], **target: Any) -> Path:
    top: dict[str, Any] = {"prune": True}
    if instance is not None:
        top["instance"] = instance
    return project.config(
        [{"name": n, "from": ref(n.replace("-", "_")), "keep": 0} for n in names],
        top=top,
        **target,
    )


def _web(api: Any, namespace: str, name: str, secret: str) -> None:
    pod = {"containers": [container(envFrom=[{"secretRef": {"name": secret}}])]}
    api.AppsV1Api().create_namespaced_deployment(
        namespace, deployment(name, pod, revisionHistoryLimit=0)
    )
    wait_until(f"{name} rolled out", lambda: rolled_out(api, namespace, name))


def _refs(api: Any, namespace: str, name: str) -> set[str]:
    return template_secret_refs(
        api.AppsV1Api().read_namespaced_deployment(name, namespace).spec.template
    )


def test_two_installations_side_by_side_touch_only_their_own(api, kube_env, ns, tmp_path):
    green = _project(tmp_path / "green", kube_env, ns)
    blue = _project(tmp_path / "blue", kube_env, ns)
    names = ["api-key", "extra"]
    green_path = _config(green, None, names)
    blue_path = _config(blue, "blue", names, naming="{name}-blue-v{version}")
    for project in (green, blue):
        project.values(api_key=new_value(), extra=new_value())
        result = project.cycle()
        assert result.ok, result.items
    assert {"api-key-v1", "extra-v1", "api-key-blue-v1", "extra-blue-v1"} <= secret_names(api, ns)
    assert {"syncd-fingerprint-key", "syncd-fingerprint-key-blue"} <= secret_names(api, ns)
    _web(api, ns, "web-green", "api-key-v1")
    _web(api, ns, "web-blue", "api-key-blue-v1")
    for _ in range(2):
        for project, mine in ((green, "web-green"), (blue, "web-blue")):
            project.values(api_key=new_value(), extra=new_value())
            result = project.cycle()
            assert result.ok, result.items
            assert result.items[0].consumers == [f"Deployment/{ns}/{mine}"]
    assert _refs(api, ns, "web-green") == {"api-key-v3"}
    assert _refs(api, ns, "web-blue") == {"api-key-blue-v3"}

    def collected() -> bool:
        assert green.cycle().ok and blue.cycle().ok
        old = {"api-key-v1", "api-key-blue-v1", "extra-v2", "extra-blue-v2"}
        return not old & secret_names(api, ns)

    wait_until("old versions collected, each by its own installation", collected)
    # green drops "extra" from its config: prune deletes green's, never blue's
    green_path = _config(green, None, ["api-key"])
    result = green.cycle(green_path)
    assert result.ok, result.items
    assert [(i.name, i.action, i.deleted) for i in result.items] == [
        ("api-key", "unchanged", []),
        ("extra", "delete", [f"{ns}/extra-v3"]),
    ]
    assert "extra-blue-v3" in secret_names(api, ns)
    for project, path, expected in (
        (green, green_path, {"api-key": "api-key-v3"}),
        (blue, blue_path, {"api-key": "api-key-blue-v3", "extra": "extra-blue-v3"}),
    ):
        assert project.cycle(path).target_writes == 0
        doctor = project.syncd("doctor", "--config", str(path), "--output", "json")
        problems = json.loads(doctor.stdout)["problems"]
        # blue's "extra" has no consumer: the only finding, and it's blue's own
        assert [p["subject"] for p in problems] == (["secret/extra"] if project is blue else []), (
            problems
        )
        run = project.syncd("names", "--config", str(path), "-o", "json")
        assert json.loads(run.stdout)["names"] == expected


def test_two_installations_wanting_one_secret_name_get_a_clear_error(api, kube_env, ns, tmp_path):
    green = _project(tmp_path / "green", kube_env, ns)
    red = _project(tmp_path / "red", kube_env, ns)
    green.values(api_key=new_value())
    red.values(api_key=new_value())
    _config(green, None, ["api-key"])
    red_path = _config(red, "red", ["api-key"])  # the same default naming: api-key-v<N>
    assert green.cycle().ok
    before = api.CoreV1Api().read_namespaced_secret("api-key-v1", ns).metadata.resource_version
    result = red.cycle(red_path)
    assert not result.ok
    error = result.items[0].error or ""
    assert f"Secret {ns}/api-key-v1 belongs to syncd installation 'default'" in error, error
    assert "change 'naming'" in error
    after = api.CoreV1Api().read_namespaced_secret("api-key-v1", ns).metadata.resource_version
    assert after == before


def test_objects_from_before_installations_belong_to_default_which_labels_them_once(
    api, kube_env, ns, tmp_path
):
    core = api.CoreV1Api()
    green = _project(tmp_path / "green", kube_env, ns)
    green.values(api_key=new_value())
    path = _config(green, None, ["api-key"])
    assert green.cycle(path).ok
    # what an earlier release left: the same objects without the installation label
    for name in ("api-key-v1", "syncd-fingerprint-key"):
        core.patch_namespaced_secret(
            name, ns, {"metadata": {"labels": {"syncd.io/instance": None}}}
        )
    blue = _project(tmp_path / "blue", kube_env, ns)
    blue.values(api_key=new_value())
    blue_path = _config(blue, "blue", ["api-key"], naming="{name}-blue-v{version}")
    plan = blue.cycle(blue_path, dry_run=True)
    assert [(i.action, i.version) for i in plan.items] == [("create", 1)]  # not blue's
    plan = green.cycle(path, dry_run=True)
    assert [(i.action, i.version) for i in plan.items] == [("unchanged", 1)]
    assert plan.target_writes == 0
    result = green.cycle(path)
    assert result.ok and result.items[0].action == "unchanged"
    assert result.calls["target"] == {"patch_secret": 2}  # the labels, nothing else
    for name in ("api-key-v1", "syncd-fingerprint-key"):
        labels = core.read_namespaced_secret(name, ns).metadata.labels
        assert labels["syncd.io/instance"] == "default"
    assert green.cycle(path).target_writes == 0
