"""The engine's side of the README's guarantees under hostile sources and edits.

Each test attacks one class of defect an outside review found: names from a source are input,
absence is not deletion, a version id (and the stored settings) must identify what is stored,
one bad thing fails only itself, and consumers are reported until they converge. The
in-memory target asserts invariant 1 after every write.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from syncd.config import load_config
from syncd.engine import Engine
from tests.conftest import new_value
from tests.unit.memory_target import WORLDS, Service, World


def name_of(world: World) -> str:
    return next(name for name, w in WORLDS.items() if w is world)


def memory(world: World, **extra: object) -> dict[str, object]:
    return {"type": "memory", "world": name_of(world), **extra}


def write_keys(path: Path, values: dict[str, str]) -> None:
    (path.parent / "keys.yaml").write_text(yaml.safe_dump(values))


def items(result) -> dict[str, object]:
    return {i.name: i for i in result.items}


# --------------------------------------------------------------------------- untrusted names

HOSTILE = ["../../../x", "a/b", "..", ".hidden", "/abs"]


@pytest.mark.parametrize("bad", HOSTILE)
def test_a_hostile_for_each_key_fails_alone_and_names_source_and_key(
    write_config, world, bad, canary
):
    good = new_value()
    path = write_config(
        values={"good": good, bad: canary},
        target=memory(world),
        secrets=[{"name": "{key}", "for_each": {"provider": "local"}}],
    )
    result = Engine(load_config(path)).run_cycle()
    by_name = items(result)
    assert by_name["good"].action == "create"
    error = by_name[bad].error or ""
    assert by_name[bad].error_kind == "input"
    assert repr(bad) in error and "local:*" in error
    assert canary not in json.dumps(result.to_json())
    assert sorted(world.objects) == ["good-v1"]


@pytest.mark.parametrize("bad", HOSTILE)
def test_a_hostile_data_from_key_fails_its_bundle_only(write_config, world, bad, canary):
    path = write_config(
        values={"A": new_value(), bad: canary},
        target=memory(world),
        secrets=[
            {"name": "bundle", "data_from": {"provider": "local"}},
            {"name": "single", "from": {"provider": "local", "key": "A"}},
        ],
    )
    result = Engine(load_config(path)).run_cycle()
    by_name = items(result)
    assert by_name["single"].action == "create"
    assert by_name["bundle"].action == "error"
    assert repr(bad) in (by_name["bundle"].error or "")
    assert canary not in json.dumps(result.to_json())
    assert sorted(world.objects) == ["single-v1"]


# --------------------------------------------------------------------------- absence


def for_each_config(write_config, world, values, **extra):
    return write_config(
        values=values,
        target=memory(world),
        secrets=[{"name": "{key}", "for_each": {"provider": "local"}, **extra}],
        prune=True,
    )


def test_an_empty_listing_is_an_error_and_prunes_nothing(write_config, world, tmp_path):
    path = for_each_config(write_config, world, {"a": new_value(), "b": new_value()})
    assert Engine(load_config(path)).run_cycle().ok
    (tmp_path / "keys.yaml").write_text("")  # a truncated file
    result = Engine(load_config(path)).run_cycle()
    assert not result.ok
    (item,) = result.items
    assert item.name == "{key}" and "lists no keys" in (item.error or "")
    assert "max_shrink: 1" in (item.error or "")
    assert sorted(world.objects) == ["a-v1", "b-v1"]
    assert result.target_writes == 0


def test_a_listing_that_lost_most_keys_is_an_error(write_config, world, tmp_path):
    values = {f"k{i}": new_value() for i in range(4)}
    path = for_each_config(write_config, world, values)
    assert Engine(load_config(path)).run_cycle().ok
    write_keys(path, {"k0": values["k0"]})  # 3 of 4 gone at once
    result = Engine(load_config(path)).run_cycle()
    assert "lost 3 of 4 keys" in (result.items[0].error or "")
    assert len(world.objects) == 4
    write_keys(path, {k: values[k] for k in ("k0", "k1", "k2")})  # 1 of 4: within half
    result = Engine(load_config(path)).run_cycle()
    assert result.ok, result.items
    assert sorted(world.objects) == ["k0-v1", "k1-v1", "k2-v1"]


def test_max_shrink_one_allows_a_source_to_empty(write_config, world, tmp_path):
    path = for_each_config(write_config, world, {"a": new_value()}, max_shrink=1)
    assert Engine(load_config(path)).run_cycle().ok
    (tmp_path / "keys.yaml").write_text("")
    result = Engine(load_config(path)).run_cycle()
    assert result.ok, result.items
    assert world.objects == {}


def test_a_shrunken_data_from_bundle_keeps_its_version(write_config, world):
    values = {f"K{i}": new_value() for i in range(3)}
    path = write_config(
        values=values,
        target=memory(world),
        secrets=[{"name": "bundle", "data_from": {"provider": "local"}}],
    )
    assert Engine(load_config(path)).run_cycle().ok
    write_keys(path, {"K0": values["K0"]})
    result = Engine(load_config(path)).run_cycle()
    assert "lost 2 of 3 keys" in (result.items[0].error or "")
    assert sorted(world.objects) == ["bundle-v1"]


def test_prune_never_touches_another_installations_secrets(write_config, world, tmp_path):
    """Two configs on one target, each its own instance, both with prune: true."""
    mine = write_config(values={"a": new_value()}, target=memory(world), prune=True)
    assert Engine(load_config(mine)).run_cycle().ok
    theirs = tmp_path / "theirs.yaml"
    doc = yaml.safe_load(mine.read_text())
    doc.update(instance="team-b", secrets=[])
    theirs.write_text(yaml.safe_dump(doc))
    result = Engine(load_config(theirs)).run_cycle()
    assert result.target_writes == 0 and not result.items
    assert sorted(world.objects) == ["a-v1"]


# --------------------------------------------------------------------------- what is compared


def test_a_key_style_edit_makes_a_new_version(write_config, world):
    path = write_config(
        values={"API_KEY": new_value()},
        target=memory(world),
        secrets=[{"name": "bundle", "data_from": {"provider": "local"}}],
    )
    assert Engine(load_config(path)).run_cycle().ok
    doc = yaml.safe_load(path.read_text())
    doc["secrets"][0]["key_style"] = "kebab"
    path.write_text(yaml.safe_dump(doc))
    result = Engine(load_config(path)).run_cycle()
    assert (result.items[0].action, result.items[0].version) == ("update", 2)
    _, data = world.objects["bundle-v2"]
    assert list(data) == ["api-key"]
    assert Engine(load_config(path)).run_cycle().target_writes == 0


def test_a_stored_setting_edit_makes_a_new_version(write_config, world):
    value = new_value()
    path = write_config(values={"a": value}, target=memory(world))
    assert Engine(load_config(path)).run_cycle().ok
    doc = yaml.safe_load(path.read_text())
    doc["target"]["settings"] = {"mode": "0440"}
    path.write_text(yaml.safe_dump(doc))
    result = Engine(load_config(path)).run_cycle()
    assert (result.items[0].action, result.items[0].version) == ("update", 2)
    assert result.items[0].changed_keys == []
    assert result.items[0].notes == ["stored with new settings: mode"]
    assert Engine(load_config(path)).run_cycle().target_writes == 0


def test_a_sibling_key_that_moved_is_not_read_again(write_config, world):
    """Two secrets read two keys of one upstream object; only one changes. Later no-change
    cycles, in new processes, read no value at all."""
    path = write_config(values={"user": new_value(), "password": new_value()}, target=memory(world))
    assert Engine(load_config(path)).run_cycle().ok
    data = yaml.safe_load((path.parent / "keys.yaml").read_text())
    data["password"] = new_value()
    write_keys(path, data)
    moved = Engine(load_config(path)).run_cycle()
    assert {i.name: i.action for i in moved.items} == {"user": "unchanged", "password": "update"}
    for _ in range(2):
        again = Engine(load_config(path)).run_cycle()
        assert again.target_writes == 0
        assert again.calls["local"] == {"stat": 1}


# --------------------------------------------------------------------------- consumers


def test_a_named_consumer_that_doesnt_exist_yet_doesnt_block_the_first_version(write_config, world):
    path = write_config(
        values={"api": new_value()},
        target=memory(world),
        secrets=[
            {"name": "api", "from": {"provider": "local", "key": "api"}, "consumers": ["web"]}
        ],
    )
    result = Engine(load_config(path)).run_cycle()
    assert result.ok
    assert result.items[0].action == "create"
    assert any("service/web" in note for note in result.items[0].notes)
    world.services["web"] = Service("web", refs={"api-v1"})  # deployed, pinned to v1
    later = Engine(load_config(path)).run_cycle()
    assert later.ok and later.items[0].notes == [] and later.target_writes == 0


def test_an_unconverged_consumer_is_reported_every_cycle(write_config, world):
    path = write_config(values={"api": new_value()}, target=memory(world))
    assert Engine(load_config(path)).run_cycle().ok
    world.services["web"] = Service(
        "web", refs={"api-v1"}, unconverged="progress deadline exceeded"
    )
    for _ in range(3):
        result = Engine(load_config(path)).run_cycle()
        assert result.items[0].error_kind == "convergence"
        assert "service/web: progress deadline exceeded" in (result.items[0].error or "")
        assert result.target_writes == 0
    world.services["web"].unconverged = None
    assert Engine(load_config(path)).run_cycle().ok


def test_a_transient_provider_failure_says_so(write_config, world, monkeypatch):
    """``transient`` (throttled, unreachable, 5xx) reaches the item and the JSON document, so
    a pipeline can tell a blip from a broken reference."""
    from providers.file import FileProvider
    from syncd.errors import ProviderError

    path = write_config(values={"a": new_value(), "b": new_value()}, target=memory(world))

    def flaky(self, refs):
        return {
            ref: ProviderError(self.name, ref.describe(), "throttled", transient=ref.key == "a")
            for ref in refs
        }

    monkeypatch.setattr(FileProvider, "versions", flaky)
    doc = Engine(load_config(path)).run_cycle().to_json()
    errors = {s["name"]: s["error"] for s in doc["secrets"]}
    assert {name: e["transient"] for name, e in errors.items()} == {"a": True, "b": False}
    assert {(e["kind"], e["provider"]) for e in errors.values()} == {("provider", "local")}
    assert {e["ref"] for e in errors.values()} == {"local:a", "local:b"}


def test_a_transient_target_failure_says_so(write_config, world, monkeypatch):
    """A target that can't be reached now (an API restarting) marks the items transient; a
    refusal for good (RBAC denied) doesn't."""
    from syncd.errors import TargetError
    from tests.unit.memory_target import MemoryTarget

    class Unreachable(TargetError):
        @property
        def transient(self) -> bool:
            return True

    path = write_config(values={"a": new_value()}, target=memory(world))
    for error, transient in ((Unreachable("API restarting"), True), (TargetError("denied"), False)):

        def listing(self, names, error=error):
            raise error

        monkeypatch.setattr(MemoryTarget, "list_versions", listing)
        doc = Engine(load_config(path)).run_cycle().to_json()
        assert [(s["error"]["kind"], s["error"]["transient"]) for s in doc["secrets"]] == [
            ("target", transient)
        ]
