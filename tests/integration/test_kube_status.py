"""``syncd status`` on the real API server: what a cluster operator sees after a rollout
failed and was rolled back, read from the Secrets' labels and annotations and the workload's
template alone (a second process, no provider reachable)."""

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
)

pytestmark = pytest.mark.timeout(300)


def test_status_after_a_rolled_back_rotation(api: Any, ns: str, project: Project) -> None:
    project.values(app=new_value(), other=new_value())
    path = project.config(
        [
            {"name": "app", "from": ref("app"), "timeout": "20s"},
            {"name": "other", "from": ref("other")},
        ]
    )
    assert project.cycle(path).ok
    api.AppsV1Api().create_namespaced_deployment(
        ns, health_deployment(ns, "web", "app-v1", unready_with="app-v2")
    )
    wait_until("web on v1", lambda: deployment_settled(api, ns, "web"), timeout=60)
    project.values(app=new_value(), other=new_value())
    result = project.cycle(path)
    assert not result.ok  # app's v2 never got ready: rolled back

    (project.root / "keys.yaml").unlink()  # status needs no provider
    text = project.syncd("status", "--config", str(path))
    assert text.returncode == 0, text.stderr
    print(f"\nsyncd status:\n{text.stdout}")
    run = project.syncd("status", "--config", str(path), "-o", "json")
    assert run.returncode == 0, run.stderr
    found = {s["name"]: s for s in json.loads(run.stdout)["secrets"]}
    app, other = found["app"], found["other"]
    assert (app["version"], app["object"], app["state"]) == (1, "app-v1", "failed")
    assert [(f["version"], f["state"]) for f in app["failed_versions"]] == [(2, "rolled-back")]
    assert [c["consumer"] for c in app["consumers"]] == [f"Deployment/{ns}/web"]
    assert app["consumers"][0]["versions"] == [1] and app["consumers"][0]["current"]
    assert [v["version"] for v in app["versions"]] == [1, 2]
    assert app["source"]["app"].startswith("local:app@")
    assert (other["version"], other["state"], other["consumers"]) == (2, "in sync", [])
    assert f"Deployment/{ns}/web: v1" in text.stdout and "v2 rolled-back at" in text.stdout
