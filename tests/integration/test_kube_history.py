"""``syncd history`` on the real API server: three rotations of a secret with a real
Deployment (converged, then rolled back) and one of its versions collected, read back by a
second process with no provider reachable; another installation's Secret stays untouched."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import new_value, wait_until
from tests.integration.kube_health import deployment_settled, health_deployment
from tests.integration.kube_util import (  # noqa: F401 - ns, project: fixtures
    Project,
    ns_fixture,
    project_fixture,
    ref,
    secret_names,
)

pytestmark = pytest.mark.timeout(300)


def _old_replica_sets_gone(api: Any, ns: str) -> bool:
    """Only the current ReplicaSet is left (``revisionHistoryLimit: 0``), so no template
    references the previous version any more and it may be collected."""
    listed = api.AppsV1Api().list_namespaced_replica_set(ns, label_selector="app=web").items
    return len(listed) == 1


def test_history_after_converged_collected_and_rolled_back_rotations(
    api: Any, ns: str, project: Project
) -> None:
    values = [new_value() for _ in range(3)]
    project.values(app=values[0], **{"other-token": new_value()})
    other = project.config(
        [{"name": "other-token", "from": ref("other-token")}],
        top={"instance": "other"},
        file="other.yaml",
    )
    assert project.cycle(other).ok
    core = api.CoreV1Api()
    foreign = core.read_namespaced_secret("other-token-v1", ns).metadata.resource_version
    path = project.config([{"name": "app", "from": ref("app"), "timeout": "20s", "keep": 0}])
    assert project.cycle(path).ok
    web = health_deployment(ns, "web", "app-v1", unready_with="app-v3")
    web["spec"]["revisionHistoryLimit"] = 0
    api.AppsV1Api().create_namespaced_deployment(ns, web)
    wait_until("web on v1", lambda: deployment_settled(api, ns, "web"), timeout=60)

    project.values(app=values[1])
    assert project.cycle(path).ok  # web converges on v2
    wait_until("v1 unreferenced", lambda: _old_replica_sets_gone(api, ns), timeout=60)
    assert project.cycle(path).ok  # collects v1, unless the rotation's cycle could already
    assert "app-v1" not in secret_names(api, ns)
    project.values(app=values[2])
    assert not project.cycle(path).ok  # v3 never gets ready: rolled back to v2
    assert {n for n in secret_names(api, ns) if n.startswith("app-")} == {"app-v2", "app-v3"}

    (project.root / "keys.yaml").unlink()  # history needs no provider
    text = project.syncd("history", "app", "--config", str(path))
    assert text.returncode == 0, text.stderr
    run = project.syncd("history", "app", "--config", str(path), "-o", "json")
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    assert (doc["kind"], doc["object"], doc["held"]) == ("History", "app-v3", ["app-v2", "app-v3"])
    entries = doc["entries"]
    moved = [f"Deployment/{ns}/web"]
    assert [(e["version"], e["outcome"], e["consumers"]) for e in entries] == [
        (1, "converged", []),
        (2, "converged", moved),
        (3, "rolled-back", moved),
    ]
    assert [e["collected_at"] is not None for e in entries] == [True, False, False]
    assert all(e["source"].startswith("local:app@") for e in entries)
    assert doc["problem"] is None
    assert not any(v in text.stdout or v in run.stdout for v in values)
    lines = text.stdout.splitlines()
    assert lines[0] == "app: 3 versions (on app-v3)"
    assert [line.split()[:3:2] for line in lines[2:]] == [
        ["v1", "converged"],
        ["v2", "converged"],
        ["v3", "rolled-back"],
    ]
    assert core.read_namespaced_secret("other-token-v1", ns).metadata.resource_version == foreign
    print(f"\nsyncd history app:\n{text.stdout}")
