"""Health-gated swaps on the real Swarm: a value whose tasks fail their health checks is
rolled back (``FailureAction: pause`` and ``rollback``), never tried again, and a new value
is; two grouped secrets edited 2 s apart reach consumers in one update; a closed rotation
window creates the version and repoints nothing until it opens.

Readers log every read; the zero-downtime guarantee is that no read ever fails and no
healthy task ever sees the bad value.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from syncd.config import load_config
from syncd.engine import Engine
from tests.conftest import new_value, wait_until
from tests.integration.swarm_health import (
    bad_value,
    good_value,
    health_gated_service,
    split_reads,
    wait_running_on,
)
from tests.integration.swarm_util import (  # noqa: F401 - swarm, project: fixtures
    Project,
    Swarm,
    item,
    labels_of,
    project_fixture,
    refs,
    swarm_fixture,
)

pytestmark = pytest.mark.timeout(300)


def rollout_label(swarm: Swarm, secret: str) -> dict[str, Any] | None:
    text = labels_of(swarm, secret).get("syncd.rollout")
    return json.loads(text) if text else None


@dataclass
class Gated:
    """A secret whose v1 a health-gated service runs, and a bad value written upstream."""

    name: str
    config: Path
    service: str
    logs: Path
    first: str


def gated(project: Project, tmp_path: Path, failure_action: str) -> Gated:
    name = project.name("token")
    first = good_value()
    project.set_values({name: first})
    config = project.config(
        [{"name": name, "from": {"provider": "local", "key": name}}], timeout="40s"
    )
    assert project.cycle(config).ok
    logs = tmp_path / "logs"
    logs.mkdir()
    service = health_gated_service(
        project, "api", secret=f"{name}-v1", failure_action=failure_action, log_dir=logs
    )
    project.set_values({name: bad_value()})
    return Gated(name, config, service, logs, first)


@pytest.mark.parametrize("failure_action", ["pause", "rollback"])
def test_a_value_that_fails_health_checks_is_rolled_back_and_reads_never_fail(
    swarm: Swarm, project: Project, tmp_path: Path, failure_action: str
) -> None:
    rig = gated(project, tmp_path, failure_action)
    name, config, service, logs = rig.name, rig.config, rig.service, rig.logs
    started = time.monotonic()
    result = project.cycle(config)
    took = time.monotonic() - started
    got = item(result, name)
    assert not result.ok and got.outcome == "rolled-back", got
    assert (got.version, got.failed_version, got.rollback_done) == (1, 2, True)
    assert refs(swarm, service) == [f"{name}-v1"]
    wait_running_on(swarm, service, f"{name}-v1", 2)
    label = rollout_label(swarm, f"{name}-v2")
    assert label is not None and label["state"] == "rolled-back"
    print(f"{failure_action}: detected and rolled back in {took:.1f}s ({got.error})")

    # never tried again: the next cycle (a new process would read the same label) writes nothing
    again = project.cycle(config)
    assert again.target_writes == 0 and item(again, name).outcome == "rolled-back"

    # a new value is a new attempt, and it converges
    fixed = good_value()
    project.set_values({name: fixed})
    result = project.cycle(config)
    assert result.ok, result.items
    assert item(result, name).version == 3 and refs(swarm, service) == [f"{name}-v3"]
    wait_running_on(swarm, service, f"{name}-v3", 2)
    healthy, unhealthy = split_reads(logs, {rig.first, fixed})
    assert len(healthy) > 20 and unhealthy, (len(healthy), len(unhealthy))


def test_a_crash_during_the_rollback_is_finished_by_the_next_run(
    swarm: Swarm, project: Project, tmp_path: Path
) -> None:
    rig = gated(project, tmp_path, "pause")
    name, config, service = rig.name, rig.config, rig.service
    engine = Engine(load_config(config))
    real_wait = engine.target.wait_converged

    class Crash(BaseException):
        """The process dying: nothing in syncd may catch it."""

    def dying(consumers: Any, *, timeout: float, rollback: bool = False) -> Any:
        if rollback:
            raise Crash
        return real_wait(consumers, timeout=timeout, rollback=rollback)

    engine.target.wait_converged = dying  # type: ignore[method-assign]
    with pytest.raises(Crash):
        engine.run_cycle()
    engine.close()
    assert rollout_label(swarm, f"{name}-v2")["state"] == "rolling-back"  # type: ignore[index]
    result = project.cycle(config)
    assert item(result, name).outcome == "rolled-back", item(result, name)
    assert rollout_label(swarm, f"{name}-v2")["state"] == "rolled-back"  # type: ignore[index]
    wait_running_on(swarm, service, f"{name}-v1", 2)


PAIR_READER = (
    "trap 'exit 0' TERM; while true; do "
    'u=$(cat /run/secrets/user) && p=$(cat /run/secrets/pass) && echo "$u $p" '
    '>> "/log/$TASK.log"; sleep 0.05; done'
)


def test_two_grouped_secrets_edited_2s_apart_reach_consumers_in_one_update(
    swarm: Swarm, project: Project, tmp_path: Path
) -> None:
    user, password = project.name("db-user"), project.name("db-pass")

    def pair(generation: int) -> dict[str, str]:
        return {
            user: f"user{generation}-{new_value()}",
            password: f"pass{generation}-{new_value()}",
        }

    values = pair(1)
    project.set_values(values)
    specs = [
        {"name": n, "from": {"provider": "local", "key": n}, "group": "db", "settle": "5s"}
        for n in (user, password)
    ]
    config = project.config(specs, timeout="40s")
    assert project.cycle(config).ok
    logs = tmp_path / "logs"
    logs.mkdir()
    service = project.service(
        "app",
        secrets=[(f"{user}-v1", "user"), (f"{password}-v1", "pass")],
        command=PAIR_READER,
        replicas=2,
        log_dir=logs,
    )
    second = pair(2)

    def password_later() -> None:
        time.sleep(2)
        project.set_values({**values, **second})

    project.set_values({**values, user: second[user]})  # the user first
    editor = threading.Thread(target=password_later)
    editor.start()
    result = project.cycle(config)
    editor.join()
    assert result.ok, result.items
    assert sorted(refs(swarm, service)) == sorted([f"{user}-v2", f"{password}-v2"])
    previous = sorted(r["SecretName"] for r in swarm.service_secrets(service, previous=True))
    assert previous == sorted([f"{user}-v1", f"{password}-v1"])  # one update, from v1 to v2
    assert {item(result, n).outcome for n in (user, password)} == {"settled"}
    time.sleep(1)
    lines = [line for f in logs.glob("*.log") for line in f.read_text().splitlines()]
    generations = [re.findall(r"(?:user|pass)(\d)-", line) for line in lines]
    mixed = [line for line, g in zip(lines, generations, strict=True) if len(set(g)) != 1]
    assert len(lines) > 20 and not mixed, mixed[:3]
    assert any(g == ["2", "2"] for g in generations)


def test_a_closed_window_creates_the_version_and_waits_to_repoint(
    swarm: Swarm, project: Project
) -> None:
    name = project.name("token")
    project.set_values({name: new_value()})
    now = datetime.now(UTC)
    start = (now + timedelta(hours=2)).strftime("%H:00")
    end = (now + timedelta(hours=3)).strftime("%H:00")
    window = {"hours": f"{start}-{end}", "timezone": "UTC"}
    config = project.config(
        [{"name": name, "from": {"provider": "local", "key": name}, "window": window}]
    )
    assert project.cycle(config).ok
    service = project.service("app", secrets=[(f"{name}-v1", "token")])
    project.set_values({name: new_value()})

    plan = project.syncd("--config", str(config), "--once", "--dry-run", "--output", "json")
    entry = next(s for s in json.loads(plan.stdout)["secrets"] if s["name"] == name)
    assert entry["outcome"] == "waiting-window" and entry["until"], entry
    result = project.cycle(config)
    got = item(result, name)
    assert result.ok and got.outcome == "waiting-window" and got.until == entry["until"]
    assert f"{name}-v2" in swarm.secret_names(project.prefix)
    assert refs(swarm, service) == [f"{name}-v1"]
    text = project.syncd("--config", str(config), "--once", "--dry-run")
    assert f"waiting for window until {entry['until']}" in text.stdout

    engine = Engine(load_config(config))
    opens = datetime.strptime(entry["until"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    engine.now = lambda: opens + timedelta(minutes=1)
    try:
        opened = engine.run_cycle()
    finally:
        engine.close()
    assert opened.ok and item(opened, name).outcome is None
    wait_until("the repoint", lambda: refs(swarm, service) == [f"{name}-v2"])
