"""``syncd retry``: a failed version's mark is cleared and the next cycle rolls it out again;
dry runs, JSON, unknown names, nothing to clear, and another installation's objects."""

from __future__ import annotations

import json

import pytest
import yaml

from syncd.cli import main
from syncd.config import load_config
from syncd.engine import Engine
from tests.conftest import new_value
from tests.unit.memory_target import World
from tests.unit.test_rollback import bad_rotation, only, rollout_of


def retry(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["retry", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    ("on_failure", "state", "moves"),
    [
        ("rollback", "rolled-back", ["repoint web", "wait web"]),
        ("hold", "held", []),  # web was left on v2: nothing to repoint, v2 is current again
    ],
)
def test_a_cleared_mark_makes_the_next_cycle_roll_the_version_out_again(
    write_config, world: World, capsys, on_failure, state, moves
):
    engine, path = bad_rotation(write_config, world, defaults={"on_failure": on_failure})
    assert not engine.run_cycle().ok
    assert rollout_of(world, "api-v2") == state
    again = engine.run_cycle()  # marked: never tried again by itself
    assert again.target_writes == 0 and only(again, "api").failed_version == 2

    world.log.clear()
    code, out, err = retry(capsys, "-c", str(path), "api", "--dry-run")
    assert (code, err) == (0, "")
    assert out == f"api: would clear v2 ({state})\n"
    assert world.log == [] and rollout_of(world, "api-v2") == state

    code, out, _ = retry(capsys, "-c", str(path), "api", "-o", "json")
    assert code == 0
    assert json.loads(out) == {
        "apiVersion": "syncd.io/v1",
        "kind": "RetryResult",
        "secrets": [{"name": "api", "version": 2, "state": state, "cleared": True, "error": None}],
        "dry_run": False,
    }
    assert world.log == ["mark api-v2 ok"] and rollout_of(world, "api-v2") is None

    world.services["web"].bad = set()  # the cause was fixed
    world.log.clear()
    fixed = Engine(load_config(path)).run_cycle()
    assert fixed.ok, fixed.items
    assert [step for step in world.log if step.endswith(" web")] == moves
    assert (only(fixed, "api").version, only(fixed, "api").failed_version) == (2, None)
    assert world.services["web"].refs == {"api-v2"}


def test_a_retry_that_fails_again_is_marked_again(write_config, world: World, capsys):
    engine, path = bad_rotation(write_config, world)
    assert not engine.run_cycle().ok
    code, out, _ = retry(capsys, "-c", str(path), "api")
    assert code == 0
    assert out == "api: v2 was rolled-back; cleared, the next cycle rolls it out again\n"
    world.log.clear()
    result = Engine(load_config(path)).run_cycle()
    assert "repoint web" in world.log and "mark api-v2 rolled-back" in world.log
    assert only(result, "api").outcome == "rolled-back"
    assert world.services["web"].refs == {"api-v1"}


def test_unknown_names_and_nothing_to_clear_are_errors_naming_them(
    write_config, world: World, capsys
):
    engine, path = bad_rotation(write_config, world)
    assert not engine.run_cycle().ok
    config = yaml.safe_load(path.read_text())
    config["secrets"].append({"name": "later", "from": {"provider": "local", "key": "api"}})
    config["secrets"].append({"name": "fine", "from": {"provider": "local", "key": "api"}})
    path.write_text(yaml.safe_dump(config))
    assert Engine(load_config(path)).run_cycle(names=["fine"]).ok  # "later" has no version
    world.log.clear()
    code, out, err = retry(capsys, "-c", str(path), "nope", "fine", "api", "later", "-o", "json")
    assert code == 1
    by_name = {s["name"]: s for s in json.loads(out)["secrets"]}
    assert by_name["nope"]["error"] == f"no secret named 'nope' in {path}, nor in the target"
    assert by_name["fine"]["error"] == "v1 is not marked failed (nothing to clear)"
    assert by_name["later"]["error"] == "has no version in the target yet"
    assert by_name["api"]["cleared"] is True  # the others' errors don't stop it
    assert err.splitlines() == [
        f"error: nope: no secret named 'nope' in {path}, nor in the target",
        "error: fine: v1 is not marked failed (nothing to clear)",
        "error: later: has no version in the target yet",
    ]
    assert world.log == ["mark api-v2 ok"]


def test_another_installations_failed_version_is_not_touched(write_config, world: World, capsys):
    engine, path = bad_rotation(write_config, world)
    assert not engine.run_cycle().ok
    config = yaml.safe_load(path.read_text())
    config["instance"] = "other-team"
    path.write_text(yaml.safe_dump(config))
    world.log.clear()
    code, _, err = retry(capsys, "-c", str(path), "api")
    assert code == 1
    assert "api: has no version in the target yet" in err
    assert world.log == [] and rollout_of(world, "api-v2") == "rolled-back"


def test_the_files_target_has_nothing_to_clear(write_config, capsys):
    path = write_config(values={"a": new_value()})
    assert main(["-c", str(path), "--once"]) == 0
    capsys.readouterr()
    code, out, err = retry(capsys, "-c", str(path), "a")
    assert (code, out) == (1, "")
    assert err == "error: a: v1 is not marked failed (nothing to clear)\n"


def test_retry_takes_names_and_dry_run_from_the_environment(
    write_config, world: World, capsys, monkeypatch
):
    assert main(["retry"]) == 64
    assert "NAME" in capsys.readouterr().err
    engine, path = bad_rotation(write_config, world)
    assert not engine.run_cycle().ok
    monkeypatch.setenv("SYNCD_DRY_RUN", "true")
    code, out, _ = retry(capsys, "-c", str(path), "api")
    assert (code, out) == (0, "api: would clear v2 (rolled-back)\n")
    assert rollout_of(world, "api-v2") == "rolled-back"
