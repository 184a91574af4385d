"""The engine's invariants (DESIGN.md), each with a test that fails without it.

The in-memory target models consumers, rollback specs, convergence and "in use" deletes, and
asserts invariant 1 after every write.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from syncd.config import load_config
from syncd.engine import Engine
from tests.conftest import new_value
from tests.unit.memory_target import Crash, Service, World


def memory_config(write_config, world_name: str, values: dict[str, str], **extra):
    return write_config(
        values=values,
        target={"type": "memory", "world": world_name},
        **extra,
    )


def world_name(world: World) -> str:
    from tests.unit.memory_target import WORLDS

    return next(name for name, w in WORLDS.items() if w is world)


def rotate(path: Path, **values: str) -> None:
    keys = path.parent / "keys.yaml"
    data = yaml.safe_load(keys.read_text())
    data.update(values)
    keys.write_text(yaml.safe_dump(data))


def test_first_cycle_creates_version_one_and_stores_key(write_config, world):
    path = memory_config(write_config, world_name(world), {"api": new_value()})
    result = Engine(load_config(path)).run_cycle()
    assert result.ok
    assert [(i.name, i.action, i.version) for i in result.items] == [("api", "create", 1)]
    assert "api-v1" in world.objects
    assert world.key is not None


def test_rotation_creates_before_repoint_and_collects_after_convergence(write_config, world):
    """Invariants 1 and 2: create N+1, repoint, wait, and only then delete beyond keep."""
    path = memory_config(
        write_config, world_name(world), {"api": new_value()}, defaults={"keep": 0}
    )
    engine = Engine(load_config(path))
    engine.run_cycle()
    world.services["web"] = Service("web", refs={"api-v1"}, keeps_previous=False)
    rotate(path, api=new_value())
    world.log.clear()
    result = engine.run_cycle()
    assert result.ok, result.items
    assert world.log == ["create api-v2", "repoint web", "wait web", "delete api-v1"]
    assert world.services["web"].refs == {"api-v2"}
    assert result.items[0].deleted == ["api-v1"]


def test_failed_convergence_keeps_old_version_and_reports(write_config, world):
    """Invariant 2: a rolled-back swap is a failure; the version in use is never collected."""
    path = memory_config(
        write_config, world_name(world), {"api": new_value()}, defaults={"keep": 0}
    )
    engine = Engine(load_config(path))
    engine.run_cycle()
    world.services["web"] = Service("web", refs={"api-v1"}, converge=False)
    rotate(path, api=new_value())
    result = engine.run_cycle()
    assert not result.ok
    assert "did not converge" in (result.items[0].error or "")
    assert "api-v1" in world.objects
    assert world.services["web"].refs == {"api-v1"}


def test_keep_versions_survive_and_rollback_targets_are_spared(write_config, world):
    """Invariant 2: ``keep`` old versions stay; a version in a previous spec is never deleted."""
    path = memory_config(
        write_config, world_name(world), {"api": new_value()}, defaults={"keep": 1}
    )
    engine = Engine(load_config(path))
    engine.run_cycle()
    world.services["web"] = Service("web", refs={"api-v1"})
    for _ in range(3):
        rotate(path, api=new_value())
        assert engine.run_cycle().ok
    # v4 current, v3 kept by keep=1 and as web's previous spec, v1 and v2 collected
    assert sorted(world.objects) == ["api-v3", "api-v4"]
    world.services["other"] = Service("other", refs=set(), previous={"api-v3"})
    world.services["web"].previous = set()
    rotate(path, api=new_value())
    assert engine.run_cycle().ok
    assert "api-v3" in world.objects  # beyond keep, but a rollback target


def test_in_use_delete_is_not_an_error(write_config, world):
    path = memory_config(
        write_config, world_name(world), {"api": new_value()}, defaults={"keep": 0}
    )
    engine = Engine(load_config(path))
    engine.run_cycle()
    world.in_use.add("api-v1")
    rotate(path, api=new_value())
    result = engine.run_cycle()
    assert result.ok
    assert "api-v1" in world.objects
    world.in_use.clear()
    assert engine.run_cycle().items[0].deleted == ["api-v1"]  # collected once free


def test_no_change_cycle_writes_nothing(write_config, world):
    """Invariant 3."""
    path = memory_config(write_config, world_name(world), {"a": new_value(), "b": new_value()})
    engine = Engine(load_config(path))
    engine.run_cycle()
    again = Engine(load_config(path)).run_cycle()  # a fresh process reads state from labels
    assert again.target_writes == 0
    assert {i.action for i in again.items} == {"unchanged"}
    assert again.calls["local"] == {"stat": 1}  # no value was read


def test_touched_but_equal_source_makes_no_version_and_is_recorded_once(write_config, world):
    """A new upstream version id with the same value: no new version, and the new id is stored
    (metadata only) so that no later cycle, in any process, reads the value again."""
    path = memory_config(write_config, world_name(world), {"a": "same-value-123"})
    Engine(load_config(path)).run_cycle()
    rotate(path, a="same-value-123")
    result = Engine(load_config(path)).run_cycle()
    assert result.items[0].action == "unchanged"
    assert sorted(world.objects) == ["a-v1"]
    assert result.calls["target"] == {"update_source": 1}
    again = Engine(load_config(path)).run_cycle()
    assert again.target_writes == 0
    assert again.calls["local"] == {"stat": 1}  # no value read


def test_provider_error_deletes_and_downgrades_nothing(write_config, world, tmp_path):
    """Invariant 4: the source disappears; every version stays, even with prune on."""
    path = memory_config(
        write_config, world_name(world), {"api": new_value()}, defaults={"keep": 0}, prune=True
    )
    engine = Engine(load_config(path))
    engine.run_cycle()
    world.services["web"] = Service("web", refs={"api-v1"})
    (tmp_path / "keys.yaml").unlink()
    result = engine.run_cycle()
    assert not result.ok
    assert "file not found" in (result.items[0].error or "")
    assert result.target_writes == 0
    assert list(world.objects) == ["api-v1"]
    assert world.services["web"].refs == {"api-v1"}


def test_prune_deletes_only_by_policy(write_config, world):
    path = memory_config(write_config, world_name(world), {"a": new_value(), "b": new_value()})
    Engine(load_config(path)).run_cycle()
    cfg = yaml.safe_load(path.read_text())
    cfg["secrets"] = cfg["secrets"][:1]
    path.write_text(yaml.safe_dump(cfg))
    Engine(load_config(path)).run_cycle()
    assert "b-v1" in world.objects  # removed from config, no policy: kept
    cfg["prune"] = True
    path.write_text(yaml.safe_dump(cfg))
    result = Engine(load_config(path)).run_cycle()
    assert "b-v1" not in world.objects
    assert ("b", "delete") in [(i.name, i.action) for i in result.items]


@pytest.mark.parametrize("crash_on", ["repoint web", "delete api-v1", "create api-v2"])
def test_crash_at_any_step_is_repaired_by_next_cycle(write_config, world, crash_on):
    """Invariant 6: the process dies mid-swap; a new process finishes the job."""
    path = memory_config(
        write_config, world_name(world), {"api": new_value()}, defaults={"keep": 0}
    )
    Engine(load_config(path)).run_cycle()
    world.services["web"] = Service("web", refs={"api-v1"}, keeps_previous=False)
    rotate(path, api=new_value())
    world.crash_on = crash_on
    with pytest.raises(Crash):
        Engine(load_config(path)).run_cycle()
    result = Engine(load_config(path)).run_cycle()
    assert result.ok, result.items
    assert world.services["web"].refs == {"api-v2"}
    assert sorted(world.objects) == ["api-v2"]
    assert Engine(load_config(path)).run_cycle().target_writes == 0


def test_reverted_consumer_is_repointed(write_config, world, caplog):
    """A consumer put back on an old version (e.g. by stack deploy) is noticed and fixed."""
    path = memory_config(
        write_config, world_name(world), {"api": new_value()}, defaults={"keep": 2}
    )
    engine = Engine(load_config(path))
    engine.run_cycle()
    world.services["web"] = Service("web", refs={"api-v1"})
    rotate(path, api=new_value())
    engine.run_cycle()
    world.services["web"].refs = {"api-v1"}
    result = engine.run_cycle()
    assert result.items[0].action == "repoint"
    assert result.items[0].consumers == ["service/web"]
    assert world.services["web"].refs == {"api-v2"}
    assert "service/web references an old version of api" in caplog.text


def test_one_failing_secret_does_not_stop_the_others(write_config, world):
    path = write_config(
        values={"good": new_value()},
        target={"type": "memory", "world": world_name(world)},
        secrets=[
            {"name": "good", "from": {"provider": "local", "key": "good"}},
            {"name": "bad", "from": {"provider": "local", "key": "missing"}},
        ],
    )
    result = Engine(load_config(path)).run_cycle()
    by_name = {i.name: i for i in result.items}
    assert by_name["good"].action == "create"
    assert by_name["bad"].action == "error"
    assert "key 'missing' not found" in (by_name["bad"].error or "")
    assert "good-v1" in world.objects and not any(o.startswith("bad") for o in world.objects)


def test_dry_run_writes_nothing_and_names_changed_keys(write_config, world):
    path = write_config(
        values={"a": new_value(), "b": new_value()},
        target={"type": "memory", "world": world_name(world)},
        secrets=[
            {
                "name": "bundle",
                "data": {
                    "A": {"provider": "local", "key": "a"},
                    "B": {"provider": "local", "key": "b"},
                },
            }
        ],
    )
    plan = Engine(load_config(path)).run_cycle(dry_run=True)
    assert plan.items[0].action == "create"
    assert world.objects == {} and world.key is None
    Engine(load_config(path)).run_cycle()
    rotate(path, b=new_value())
    plan = Engine(load_config(path)).run_cycle(dry_run=True)
    assert (plan.items[0].action, plan.items[0].changed_keys) == ("update", ["B"])
    assert plan.target_writes == 0
    assert sorted(world.objects) == ["bundle-v1"]


def test_fingerprint_is_keyed_not_a_bare_hash(write_config, world):
    import hashlib

    value = new_value()
    path = memory_config(write_config, world_name(world), {"api": value})
    Engine(load_config(path)).run_cycle()
    info, _ = world.objects["api-v1"]
    assert info.fingerprint != hashlib.sha256(value.encode()).hexdigest()
    assert value not in info.fingerprint + info.source + str(info.keys)


def test_lost_key_means_one_new_version_not_a_crash(write_config, world, caplog):
    path = memory_config(write_config, world_name(world), {"api": new_value()})
    Engine(load_config(path)).run_cycle()
    world.key = None
    rotate(path, api=new_value())
    result = Engine(load_config(path)).run_cycle()
    assert result.ok and result.items[0].version == 2
    assert "fingerprint key is missing" in caplog.text


def test_a_repoint_that_never_landed_is_not_held_back_like_a_failed_swap(
    write_config, world, monkeypatch
):
    """The API was away for the update: the next cycle repoints at once; only consumers that
    took the update and failed to converge wait for the swap schedule."""
    from syncd.errors import TargetError
    from tests.unit.memory_target import MemoryTarget

    path = memory_config(write_config, world_name(world), {"api": new_value()})
    engine = Engine(load_config(path))
    engine.run_cycle()
    world.services["web"] = Service("web", refs={"api-v1"})
    rotate(path, api=new_value())

    def unreachable(self, consumer, swaps):
        raise TargetError("Kubernetes API unreachable")

    with monkeypatch.context() as patch:
        patch.setattr(MemoryTarget, "repoint", unreachable)
        failed = engine.run_cycle()
    assert "can't repoint service/web" in (failed.items[0].error or "")
    again = engine.run_cycle()
    assert again.ok, again.items
    assert world.services["web"].refs == {"api-v2"}
