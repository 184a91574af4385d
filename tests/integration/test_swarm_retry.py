"""``syncd retry`` on the real Swarm: a version rolled back because its tasks failed their
health checks is rolled out again once the cause is fixed and its mark cleared; another
installation's marked version is left alone."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import pytest

from syncd.cli import main
from tests.integration.swarm_health import POLL_SECONDS, wait_running_on
from tests.integration.swarm_util import (  # noqa: F401 - swarm, project: fixtures
    Project,
    Swarm,
    item,
    project_fixture,
    refs,
    swarm_fixture,
)
from tests.integration.test_swarm_rollback import gated, rollout_label

pytestmark = pytest.mark.timeout(300)

#: A health check every value passes: the cause of the failure, fixed.
ALWAYS_HEALTHY = ["CMD-SHELL", "true"]


def fix_health_check(swarm: Swarm, service: str) -> None:
    """Give ``service`` a health check its tasks pass on any value, and wait until both of
    its tasks run with it (the update keeps the secret it references)."""
    api = swarm.api
    current = api.inspect_service(service)
    spec = copy.deepcopy(current["Spec"])
    spec["TaskTemplate"]["ContainerSpec"]["Healthcheck"]["Test"] = ALWAYS_HEALTHY
    url = api._url("/services/{0}/update", current["ID"])
    response = api._post_json(url, data=spec, params={"version": current["Version"]["Index"]})
    api._raise_for_status(response)
    deadline = time.monotonic() + 60
    while True:
        tasks = api.tasks(filters={"service": service, "desired-state": "running"})
        fixed = [
            t
            for t in tasks
            if t["Status"]["State"] == "running"
            and t["Spec"]["ContainerSpec"]["Healthcheck"]["Test"] == ALWAYS_HEALTHY
        ]
        if len(fixed) == len(tasks) == 2:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"{service}: the fixed health check didn't roll out: {tasks}")
        time.sleep(POLL_SECONDS)


def test_a_rolled_back_version_is_rolled_out_again_after_retry(
    swarm: Swarm, project: Project, tmp_path: Path, capsys: Any
) -> None:
    rig = gated(project, tmp_path, "pause")
    name, config, service = rig.name, rig.config, rig.service
    failed = project.cycle(config)
    assert item(failed, name).outcome == "rolled-back", item(failed, name)
    wait_running_on(swarm, service, f"{name}-v1", 2)
    fix_health_check(swarm, service)
    assert project.cycle(config).target_writes == 0  # still marked: not tried by itself

    assert main(["retry", "-c", str(config), name, "--dry-run"]) == 0
    assert capsys.readouterr().out == f"{name}: would clear v2 (rolled-back)\n"
    assert rollout_label(swarm, f"{name}-v2")["state"] == "rolled-back"  # type: ignore[index]
    assert main(["retry", "-c", str(config), name, "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["secrets"][0]["cleared"] is True
    assert rollout_label(swarm, f"{name}-v2") is None

    again = project.cycle(config)
    assert again.ok, again.items
    assert (item(again, name).version, item(again, name).failed_version) == (2, None)
    assert refs(swarm, service) == [f"{name}-v2"]
    wait_running_on(swarm, service, f"{name}-v2", 2)


def test_retry_never_touches_another_installations_version(
    swarm: Swarm, project: Project, tmp_path: Path, capsys: Any
) -> None:
    rig = gated(project, tmp_path, "pause")
    assert item(project.cycle(rig.config), rig.name).outcome == "rolled-back"
    ours = project.config(
        [{"name": rig.name, "from": {"provider": "local", "key": rig.name}}],
        instance=project.instance("ours"),
        filename="ours.yaml",
    )
    assert main(["retry", "-c", str(ours), rig.name]) == 1
    assert f"error: {rig.name}: has no version in the target yet" in capsys.readouterr().err
    assert rollout_label(swarm, f"{rig.name}-v2")["state"] == "rolled-back"  # type: ignore[index]
