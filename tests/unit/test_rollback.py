"""Health-gated swaps on the in-memory target: rollback, hold, a crash mid-rollback, the
rollback's retry schedule kept in the target, cut-over groups and rotation windows.

The memory target's services model both orchestrators: one that rolls itself back (Swarm's
``FailureAction: rollback``) and one that stays on the failed spec (``pause``, Kubernetes).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from syncd.config import load_config
from syncd.engine import CycleResult, Engine
from syncd.errors import ConfigError
from syncd.model import PlanItem
from syncd.swap import parse_stamp
from tests.conftest import new_value
from tests.unit.memory_target import Crash, Service, World
from tests.unit.test_engine import memory_config, rotate, world_name


def secret(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "from": {"provider": "local", "key": name}, **extra}


def engine_for(write_config, world: World, values: dict[str, str], **extra: Any) -> Engine:
    path = memory_config(write_config, world_name(world), values, **extra)
    return Engine(load_config(path))


def only(result: CycleResult, name: str) -> PlanItem:
    return next(i for i in result.items if i.name == name)


def rollout_of(world: World, obj: str) -> str | None:
    info, _ = world.objects[obj]
    return info.rollout.state if info.rollout else None


def bad_rotation(write_config, world: World, **extra: Any) -> tuple[Engine, Path]:
    """api v1 in use by web; then a value web never converges on becomes v2."""
    values = {"api": new_value()}
    engine = engine_for(write_config, world, values, **extra)
    assert engine.run_cycle().ok
    world.services["web"] = Service("web", refs={"api-v1"}, bad={"api-v2"}, native_rollback=False)
    path = engine.config.path
    rotate(path, api=new_value())
    return engine, path


def test_a_version_consumers_never_converge_on_is_rolled_back_and_never_retried(
    write_config, world
):
    engine, path = bad_rotation(write_config, world, defaults={"keep": 0})
    world.log.clear()
    result = engine.run_cycle()
    item = only(result, "api")
    assert world.log == [
        "create api-v2",
        "repoint web",
        "wait web",
        "mark api-v2 rolling-back",
        "roll back web",
        "wait rollback web",
        "mark api-v2 rolled-back",
    ]
    assert world.services["web"].refs == {"api-v1"}
    assert rollout_of(world, "api-v2") == "rolled-back"
    assert (item.outcome, item.version, item.failed_version, item.rollback_done) == (
        "rolled-back",
        1,
        2,
        True,
    )
    assert not result.ok and "rolled back to v1" in (item.error or "")
    assert "api-v1" in world.objects  # the version consumers run is never collected

    # every later cycle (any process: the mark is on the object) reports, writes nothing
    world.log.clear()
    again = Engine(load_config(path)).run_cycle()
    assert world.log == [] and again.target_writes == 0
    assert only(again, "api").outcome == "rolled-back"
    assert not only(again, "api").rollback_done

    # a new upstream value is a new attempt, and it converges
    world.services["web"].bad = set()
    rotate(path, api=new_value())
    fixed = engine.run_cycle()
    assert fixed.ok, fixed.items
    assert only(fixed, "api").version == 3 and only(fixed, "api").outcome is None
    assert world.services["web"].refs == {"api-v3"}
    # once v3 converged (keep 0) the failed v2 is collected; v1 is web's rollback spec
    assert "api-v2" not in world.objects and "api-v1" in world.objects


def test_a_native_rollback_is_detected_not_fought(write_config, world):
    """The orchestrator already moved the service back: no second update, only the mark."""
    engine, _ = bad_rotation(write_config, world)
    world.services["web"].native_rollback = True
    world.log.clear()
    result = engine.run_cycle()
    assert "roll back web" in world.log and world.services["web"].refs == {"api-v1"}
    writes = result.calls["target"]
    assert writes.get("repoint") == 1 and "rollback" not in writes  # no update back
    assert only(result, "api").outcome == "rolled-back"


def test_hold_leaves_consumers_where_they_are_and_reports(write_config, world):
    engine, _ = bad_rotation(write_config, world, defaults={"on_failure": "hold"})
    result = engine.run_cycle()
    item = only(result, "api")
    assert item.outcome == "held" and "on_failure: hold" in (item.error or "")
    assert world.services["web"].refs == {"api-v2"}
    assert rollout_of(world, "api-v2") == "held"
    world.log.clear()
    again = engine.run_cycle()
    assert world.log == [] and only(again, "api").outcome == "held"


def test_a_crash_mid_rollback_is_finished_by_the_next_run(write_config, world):
    engine, path = bad_rotation(write_config, world)
    world.crash_on = "wait rollback web"
    with pytest.raises(Crash):
        engine.run_cycle()
    assert rollout_of(world, "api-v2") == "rolling-back"
    assert world.services["web"].refs == {"api-v1"}  # the update back landed first
    world.log.clear()
    result = Engine(load_config(path)).run_cycle()
    assert world.log == ["wait rollback web", "mark api-v2 rolled-back"]
    assert only(result, "api").outcome == "rolled-back"


def test_a_crash_before_the_update_back_is_finished_too(write_config, world):
    engine, path = bad_rotation(write_config, world)
    world.crash_on = "roll back web"
    with pytest.raises(Crash):
        engine.run_cycle()
    assert world.services["web"].refs == {"api-v2"}
    result = Engine(load_config(path)).run_cycle()
    assert world.services["web"].refs == {"api-v1"}
    assert only(result, "api").outcome == "rolled-back"


def test_a_rollback_that_does_not_converge_retries_on_the_schedule_kept_in_the_target(
    write_config, world
):
    engine, path = bad_rotation(write_config, world, daemon={"backoff_min": 60, "backoff_max": 600})
    world.services["web"].bad = {"api-v1", "api-v2"}  # the old version fails now too
    first = only(engine.run_cycle(), "api")
    info, _ = world.objects["api-v2"]
    assert info.rollout is not None and info.rollout.state == "rolling-back"
    assert info.rollout.attempts == 1 and first.until == info.rollout.retry_at
    retry_at = parse_stamp(info.rollout.retry_at)
    assert retry_at is not None
    delay = (retry_at - datetime.now(UTC)).total_seconds()
    assert 40 <= delay <= 61  # backoff_min, jittered down by at most 20%

    # a restart reads the schedule from the object: nothing is tried before it is due
    restarted = Engine(load_config(path))
    world.log.clear()
    waiting = only(restarted.run_cycle(), "api")
    assert world.log == [] and waiting.outcome == "rolling-back" and waiting.until

    # once due, the next attempt runs, and its failure doubles the delay
    restarted.now = lambda: retry_at + timedelta(seconds=1)
    only(restarted.run_cycle(), "api")
    info, _ = world.objects["api-v2"]
    assert info.rollout is not None and info.rollout.attempts == 2
    world.services["web"].bad = {"api-v2"}
    restarted.now = lambda: datetime.now(UTC) + timedelta(hours=1)
    done = only(restarted.run_cycle(), "api")
    assert done.outcome == "rolled-back" and world.services["web"].refs == {"api-v1"}


# --------------------------------------------------------------------------- groups


def group_config(write_config, world: World, **extra: Any) -> Engine:
    values = {"db-user": new_value(), "db-pass": new_value()}
    return engine_for(
        write_config,
        world,
        values,
        secrets=[secret("db-user", group="db", settle="2s"), secret("db-pass", group="db")],
        defaults={"settle": "2s", **extra.pop("defaults", {})},
        **extra,
    )


def test_edits_seconds_apart_settle_into_one_update_per_consumer(write_config, world):
    engine = group_config(write_config, world)
    assert engine.run_cycle().ok
    world.services["app"] = Service("app", refs={"db-user-v1", "db-pass-v1"})
    path = engine.config.path
    waits: list[float] = []

    def password_lands_meanwhile(seconds: float) -> None:
        waits.append(seconds)
        rotate(path, **{"db-pass": new_value()})

    engine.sleep = password_lands_meanwhile
    rotate(path, **{"db-user": new_value()})  # the user first; the password 2 s later
    world.log.clear()
    result = engine.run_cycle()
    assert result.ok, result.items
    assert waits == [2.0]
    assert world.log.count("repoint app") == 1
    assert world.services["app"].refs == {"db-user-v2", "db-pass-v2"}
    assert {only(result, n).outcome for n in ("db-user", "db-pass")} == {"settled"}


def test_a_group_member_that_fails_rolls_the_whole_group_back(write_config, world):
    engine = group_config(write_config, world)
    engine.sleep = lambda s: None
    assert engine.run_cycle().ok
    world.services["app"] = Service("app", refs={"db-user-v1", "db-pass-v1"})
    world.services["auth"] = Service("auth", refs={"db-pass-v1"}, bad={"db-pass-v2"})
    world.services["auth"].native_rollback = False
    rotate(engine.config.path, **{"db-user": new_value(), "db-pass": new_value()})
    result = engine.run_cycle()
    assert only(result, "db-pass").outcome == "rolled-back"
    assert only(result, "db-user").outcome == "rolled-back"  # converged, but its pair didn't
    assert world.services["app"].refs == {"db-user-v1", "db-pass-v1"}
    assert world.services["auth"].refs == {"db-pass-v1"}


def test_a_group_waits_while_a_member_cannot_be_read(write_config, world):
    engine = group_config(write_config, world)
    engine.sleep = lambda s: None
    assert engine.run_cycle().ok
    world.services["app"] = Service("app", refs={"db-user-v1", "db-pass-v1"})
    keys = engine.config.path.parent / "keys.yaml"
    data = yaml.safe_load(keys.read_text())
    data["db-user"] = new_value()
    del data["db-pass"]  # the password's source fails this cycle
    keys.write_text(yaml.safe_dump(data))
    world.log.clear()
    result = engine.run_cycle()
    assert only(result, "db-pass").error
    assert "repoint app" not in world.log
    assert world.services["app"].refs == {"db-user-v1", "db-pass-v1"}
    assert any("group db" in n for n in only(result, "db-user").notes)


def test_a_group_is_run_whole_even_when_one_member_is_asked_for(write_config, world):
    engine = group_config(write_config, world)
    result = engine.run_cycle(names=["db-user"])
    assert {i.name for i in result.items} == {"db-user", "db-pass"}


def test_group_members_must_agree_on_how_they_swap(write_config, world):
    path = memory_config(
        write_config,
        world_name(world),
        {"a": new_value(), "b": new_value()},
        secrets=[secret("a", group="g"), secret("b", group="g", on_failure="hold")],
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    text = str(caught.value)
    assert "secrets[1].on_failure" in text and "group 'g'" in text and "'a'" in text


# --------------------------------------------------------------------------- windows


WINDOW = {"days": ["mon-fri"], "hours": "02:00-04:00", "timezone": "Europe/Berlin"}
#: a Wednesday noon in Berlin (10:00 UTC in summer): the 02:00 window is closed
NOON = datetime(2026, 7, 1, 10, 0, tzinfo=UTC)


def test_outside_the_window_the_version_is_created_and_consumers_wait(write_config, world):
    engine = engine_for(write_config, world, {"api": new_value()}, defaults={"window": WINDOW})
    engine.now = lambda: NOON
    assert engine.run_cycle().ok
    world.services["web"] = Service("web", refs={"api-v1"})
    rotate(engine.config.path, api=new_value())
    world.log.clear()
    plan = only(engine.run_cycle(dry_run=True), "api")
    assert (plan.outcome, plan.until) == ("waiting-window", "2026-07-02T00:00:00Z")
    result = engine.run_cycle()
    item = only(result, "api")
    assert result.ok and world.log == ["create api-v2"]
    assert (item.outcome, item.until) == ("waiting-window", "2026-07-02T00:00:00Z")
    assert world.services["web"].refs == {"api-v1"}

    world.log.clear()
    engine.now = lambda: datetime(2026, 7, 2, 0, 30, tzinfo=UTC)  # 02:30 in Berlin
    opened = engine.run_cycle()
    assert opened.ok and world.services["web"].refs == {"api-v2"}
    assert only(opened, "api").outcome is None


def test_ignore_window_repoints_now(write_config, world):
    engine = engine_for(write_config, world, {"api": new_value()}, defaults={"window": WINDOW})
    engine.now = lambda: NOON
    engine.run_cycle()
    world.services["web"] = Service("web", refs={"api-v1"})
    rotate(engine.config.path, api=new_value())
    assert engine.run_cycle(ignore_window=True).ok
    assert world.services["web"].refs == {"api-v2"}


def test_a_crash_during_the_forward_wait_is_rolled_back_by_the_next_run(write_config, world):
    """The process died while waiting for consumers on v2: a fresh run waits again and,
    when they fail, rolls back."""
    engine, path = bad_rotation(write_config, world)
    world.crash_on = "wait web"
    with pytest.raises(Crash):
        engine.run_cycle()
    assert world.services["web"].refs == {"api-v2"} and rollout_of(world, "api-v2") is None
    world.log.clear()
    result = only(Engine(load_config(path)).run_cycle(), "api")
    assert world.log == [
        "wait web",
        "mark api-v2 rolling-back",
        "roll back web",
        "wait rollback web",
        "mark api-v2 rolled-back",
    ]
    assert result.outcome == "rolled-back" and world.services["web"].refs == {"api-v1"}


def test_a_consumer_that_breaks_after_its_swap_converged_is_reported_not_rolled_back(
    write_config, world
):
    """This process saw v2 converge: a later failure of the consumer is not v2's."""
    engine, _ = bad_rotation(write_config, world)
    world.services["web"].bad = set()
    assert engine.run_cycle().ok
    world.services["web"].unconverged = "update paused"  # someone else's update failed
    world.log.clear()
    item = only(engine.run_cycle(), "api")
    assert world.log == [] and item.outcome is None
    assert "have not converged on v2" in (item.error or "")


def test_an_old_version_whose_consumer_breaks_is_reported_not_rolled_back(write_config, world):
    """Long after v2's swap (a fresh process: nothing remembered), a stuck consumer is
    reported; only a rollout younger than twice the timeout is resumed."""
    engine, path = bad_rotation(write_config, world)
    world.services["web"].bad = set()
    assert engine.run_cycle().ok
    world.services["web"].unconverged = "update paused"
    later = Engine(load_config(path))
    later.now = lambda: datetime.now(UTC) + timedelta(hours=1)
    world.log.clear()
    item = only(later.run_cycle(), "api")
    assert world.log == [] and item.outcome is None and item.error


# --------------------------------------------------------------------------- reporting


def test_the_daemon_counts_rollbacks_flags_failed_versions_and_says_so_in_readyz(
    write_config, world
):
    from prometheus_client import generate_latest

    from syncd.daemon import Daemon

    _, path = bad_rotation(write_config, world, daemon={"listen": "127.0.0.1:0"})
    daemon = Daemon(path)
    daemon.scheduler.start(paused=True)
    try:
        daemon.run_group(None, ["api"])
        text = generate_latest(daemon.metrics.registry).decode()
        assert 'syncd_rollbacks_total{secret="api"} 1.0' in text
        assert 'syncd_failed_versions{secret="api"} 1.0' in text
        assert daemon.health.outcome_lines() == ["api: rolled-back"]
        assert daemon.scheduler.get_job("retry:api") is None  # final: nothing to retry
        daemon.run_group(None, ["api"])  # reported again, not counted again
        text = generate_latest(daemon.metrics.registry).decode()
        assert 'syncd_rollbacks_total{secret="api"} 1.0' in text
    finally:
        daemon.scheduler.shutdown(wait=False)
        daemon.engine.close()


def test_the_plan_has_a_symbol_per_outcome(write_config, world, capsys):
    from syncd.cli import main

    _, path = bad_rotation(write_config, world)
    assert main(["--config", str(path), "--once"]) == 1
    out = capsys.readouterr().out
    assert "< api: v2 rolled-back (serving v1)" in out


def test_ignore_window_needs_once(write_config, world, capsys):
    from syncd.cli import EXIT_USAGE, main

    path = memory_config(write_config, world_name(world), {"api": new_value()})
    assert main(["--config", str(path), "--ignore-window"]) == EXIT_USAGE
    assert "--ignore-window needs --once" in capsys.readouterr().err


def test_a_group_runs_with_the_shortest_refresh_of_its_members(write_config, world):
    from syncd.daemon import Daemon

    path = memory_config(
        write_config,
        world_name(world),
        {"db-user": new_value(), "db-pass": new_value(), "other": new_value()},
        secrets=[
            secret("db-user", group="db", refresh="1h"),
            secret("db-pass", group="db", refresh="10s"),
            secret("other", refresh="1h"),
        ],
        daemon={"listen": None},
    )
    daemon = Daemon(path)
    try:
        assert daemon.groups() == {10.0: ["db-user", "db-pass"], 3600.0: ["other"]}
    finally:
        daemon.engine.close()


def test_a_rollout_an_operator_paused_is_reported_not_rolled_back(write_config, world):
    engine, _ = bad_rotation(write_config, world)
    world.services["web"].bad = set()
    world.services["web"].paused = True
    result = only(engine.run_cycle(), "api")
    assert result.outcome is None and "paused by an operator" in (result.error or "")
    assert world.services["web"].refs == {"api-v2"} and rollout_of(world, "api-v2") is None


def test_an_in_place_secret_that_fails_is_held_without_a_mark(write_config, world):
    """Its one object holds every version: there is nothing to go back to or to mark."""
    engine, _ = bad_rotation(write_config, world, secrets=[secret("api", strategy="in-place")])
    world.log.clear()
    item = only(engine.run_cycle(), "api")
    assert item.outcome == "held" and "in-place" in (item.error or "")
    assert not [step for step in world.log if step.startswith("mark")]
