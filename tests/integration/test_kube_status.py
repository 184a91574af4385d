"""``syncd status`` on the real API server: what a cluster operator sees after a rollout
failed and was rolled back, read from the Secrets' labels and annotations and the workload's
template alone (a second process, no provider reachable)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from syncd.config import load_config
from syncd.engine import Engine
from syncd.model import Consumer
from tests.conftest import new_value
from tests.integration.kube_health import web_unready_on_v2
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
    web_unready_on_v2(api, ns)
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


def events_of(api: Any, ns: str, kind: str, name: str) -> list[Any]:
    listed = api.CoreV1Api().list_namespaced_event(
        ns, field_selector=f"involvedObject.kind={kind},involvedObject.name={name}"
    )
    return [e for e in listed.items if e.source and e.source.component == "syncd"]


def test_events_say_what_syncd_did_to_the_workload_and_the_secrets(
    api: Any, ns: str, project: Project
) -> None:
    """``kubectl describe deploy web`` shows the repoint, the failed rollout and the
    rollback; the version Secrets show their creation and rollback; a repeat is one Event
    with a count, not a new one."""
    project.values(app=new_value())
    path = project.config([{"name": "app", "from": ref("app"), "timeout": "20s"}])
    assert project.cycle(path).ok
    web_unready_on_v2(api, ns)
    project.values(app=new_value())
    assert not project.cycle(path).ok  # v2 never got ready: rolled back
    web = {e.reason: e for e in events_of(api, ns, "Deployment", "web")}
    assert {"Repointed", "RolloutFailed", "RolledBack", "Converged"} <= set(web), web
    assert web["Repointed"].message == f"{ns}/app-v1 -> {ns}/app-v2"
    assert web["Repointed"].type == "Normal"
    assert web["RolledBack"].message == f"{ns}/app-v2 -> {ns}/app-v1"
    assert web["RolledBack"].type == "Warning"
    assert web["Converged"].involved_object.api_version == "apps/v1"
    created = {e.reason for e in events_of(api, ns, "Secret", "app-v2")}
    assert {"Created", "RolledBack"} <= created, created
    assert "Created" in {e.reason for e in events_of(api, ns, "Secret", "app-v1")}

    # the same thing again is counted on the same Event
    target = Engine(load_config(path)).target
    target.record(Consumer("Deployment", "web", ns), "Repointed", f"{ns}/app-v1 -> {ns}/app-v2")
    again = [e for e in events_of(api, ns, "Deployment", "web") if e.reason == "Repointed"]
    assert [e.count for e in again] == [2]
