"""``syncd retry`` on the real API server: a version rolled back because its pods never got
Ready is tried again once its mark is cleared and the cause fixed, and converges; another
installation's marked version beside it is left alone."""

from __future__ import annotations

import json
from typing import Any

import pytest

from syncd.cli import main
from tests.conftest import new_value, wait_until
from tests.integration.kube_health import (
    UNREADY_WITH,
    deployment_settled,
    web_unready_on_v2,
)
from tests.integration.kube_util import (  # noqa: F401 - ns, project: fixtures
    Project,
    ns_fixture,
    project_fixture,
    ref,
)
from tests.integration.test_kube_rollback import only, rollout_state, template_refs

pytestmark = pytest.mark.timeout(300)


def test_a_rolled_back_version_is_rolled_out_again_after_retry(
    api: Any, ns: str, project: Project, capsys: Any
) -> None:
    project.values(app=new_value())
    path = project.config([{"name": "app", "from": ref("app"), "timeout": "20s"}])
    assert project.cycle(path).ok
    web_unready_on_v2(api, ns)
    project.values(app=new_value())
    failed = project.cycle(path)
    assert only(failed, "app").outcome == "rolled-back", only(failed, "app")
    assert rollout_state(api, ns, "app-v2") == "rolled-back"

    # the cause is fixed: the pods no longer refuse app-v2
    api.AppsV1Api().patch_namespaced_deployment(
        "web", ns, {"spec": {"template": {"metadata": {"annotations": {UNREADY_WITH: "none"}}}}}
    )
    wait_until("web settled on v1", lambda: deployment_settled(api, ns, "web"), timeout=60)
    assert project.cycle(path).target_writes == 0  # still marked: not tried by itself

    assert main(["retry", "-c", str(path), "app", "--dry-run"]) == 0
    assert capsys.readouterr().out == "app: would clear v2 (rolled-back)\n"
    assert rollout_state(api, ns, "app-v2") == "rolled-back"
    assert main(["retry", "-c", str(path), "app", "-o", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["secrets"] == [
        {"name": "app", "version": 2, "state": "rolled-back", "cleared": True, "error": None}
    ]
    secret = api.CoreV1Api().read_namespaced_secret("app-v2", ns)
    assert "syncd.io/rollout" not in (secret.metadata.annotations or {})
    assert rollout_state(api, ns, "app-v2") is None

    again = project.cycle(path)
    assert again.ok, again.items
    assert (only(again, "app").version, only(again, "app").failed_version) == (2, None)
    assert template_refs(api, ns, "Deployment", "web") == {"app-v2"}
    wait_until("web on v2", lambda: deployment_settled(api, ns, "web"), timeout=60)
    events = api.CoreV1Api().list_namespaced_event(ns, field_selector="reason=RetryRequested")
    assert [e.involved_object.name for e in events.items] == ["app-v2"]


def test_retry_never_touches_another_installations_version(
    api: Any, ns: str, project: Project, capsys: Any
) -> None:
    project.values(app=new_value())
    theirs = project.config(
        [{"name": "app", "from": ref("app"), "timeout": "20s"}],
        top={"instance": "other-team"},
        file="theirs.yaml",
    )
    assert project.cycle(theirs).ok
    web_unready_on_v2(api, ns)
    project.values(app=new_value())
    assert only(project.cycle(theirs), "app").outcome == "rolled-back"

    ours = project.config([{"name": "app", "from": ref("app")}], top={"instance": "ours"})
    assert main(["retry", "-c", str(ours), "app"]) == 1
    assert "error: app: has no version in the target yet" in capsys.readouterr().err
    assert rollout_state(api, ns, "app-v2") == "rolled-back"
