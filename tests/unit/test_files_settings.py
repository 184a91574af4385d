"""The files target's settings: modes and owners checked at load, stored settings that take
effect, env_file/yaml_file collisions, the fingerprint key, installations, source updates."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import yaml

from syncd.cli import main
from syncd.config import load_config
from syncd.engine import Engine
from syncd.errors import ConfigError
from tests.conftest import new_value, run

CONFIG = """\
providers:
  local: {type: file, path: keys.yaml}
target:
  type: files
  directory: out
TARGET
secrets:
  - {name: api, from: {provider: local, key: api}}
"""


def write(tmp_path: Path, target: str = "", *, secrets: str | None = None, top: str = "") -> Path:
    """A config whose target block gets the raw YAML lines ``target`` (as a user types them)."""
    if not (tmp_path / "keys.yaml").exists():
        (tmp_path / "keys.yaml").write_text(yaml.safe_dump({"api": new_value()}))
    text = top + CONFIG.replace("TARGET\n", "".join(f"  {line}\n" for line in target.splitlines()))
    if secrets is not None:
        text = text.split("secrets:\n")[0] + "secrets:\n" + secrets
    path = tmp_path / "syncd.yaml"
    path.write_text(text)
    return path


def problems(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return str(caught.value)


# --------------------------------------------------------------------------- mode


@pytest.mark.parametrize("written", ["400", "256", "440", "0o400", "0x100", "644"])
def test_an_unquoted_integer_mode_is_refused_with_the_fix(tmp_path, written):
    message = problems(write(tmp_path, f"mode: {written}"))
    assert "quote it: mode: '0" in message and "syncd.yaml:6:" in message


@pytest.mark.parametrize(
    ("written", "mode"), [("0400", 0o400), ("'0440'", 0o440), ('"400"', 0o400), ("0640", 0o640)]
)
def test_octal_text_modes_are_read_as_octal(tmp_path, written, mode):
    path = write(tmp_path, f"mode: {written}")
    assert run(path).ok
    assert stat.S_IMODE(os.stat(tmp_path / "out" / "api").st_mode) == mode


@pytest.mark.parametrize("written", ["'0660'", "'0602'", "'0622'", "'0777'", "'0420'"])
def test_group_or_other_write_bits_need_the_explicit_setting(tmp_path, written):
    assert "allow_writable_mode: true" in problems(write(tmp_path, f"mode: {written}"))
    path = write(tmp_path, f"mode: {written}\nallow_writable_mode: true")
    assert run(path).ok


@pytest.mark.parametrize("written", ["'0800'", "'rw-r--r--'", "'04000'", "'0000'", "''"])
def test_a_mode_that_isnt_three_octal_digits_is_refused(tmp_path, written):
    assert "mode" in problems(write(tmp_path, f"mode: {written}"))


# --------------------------------------------------------------------------- owner / group


@pytest.mark.parametrize("command", [[], ["--once"], ["names"], ["import"], ["check"]])
def test_an_unknown_user_is_a_config_error_for_every_command(tmp_path, capsys, command):
    path = write(tmp_path, "owner: nosuchuser-syncd")
    args = (
        [*command[:1], "--config", str(path)]
        if command[:1] in (["names"], ["import"], ["check"])
        else ["--config", str(path), *command]
    )
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "unknown user 'nosuchuser-syncd'" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_an_unknown_group_is_a_config_error(tmp_path):
    assert "unknown group 'nosuchgroup-syncd'" in problems(
        write(tmp_path, "group: nosuchgroup-syncd")
    )


def test_names_resolve_and_numeric_ids_stay_as_given(tmp_path):
    import grp
    import pwd

    root_user, root_group = pwd.getpwuid(0).pw_name, grp.getgrgid(0).gr_name
    config = load_config(write(tmp_path, f"owner: {root_user}\ngroup: {root_group}"))
    assert (config.target[1].owner, config.target[1].group) == (0, 0)
    config = load_config(write(tmp_path, "owner: 48213\ngroup: '48214'"))  # no such user: fine
    assert (config.target[1].owner, config.target[1].group) == (48213, 48214)


# --------------------------------------------------------------------------- stored settings


def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("this test changes file owners and runs as root (as CI does)")


@pytest.mark.parametrize(
    ("setting", "check"),
    [
        ("mode: '0440'", lambda out: stat.S_IMODE(os.stat(out / "api").st_mode) == 0o440),
        ("owner: 4242", lambda out: os.stat(out / "api").st_uid == 4242),
        ("group: 4343", lambda out: os.stat(out / "api").st_gid == 4343),
        ("env_file: .env", lambda out: (out / ".env").exists()),
        ("yaml_file: all.yaml", lambda out: (out / "all.yaml").exists()),
    ],
)
def test_editing_how_a_secret_is_stored_writes_a_new_version(tmp_path, setting, check):
    """Without stored_settings the edit waited for the upstream value to change."""
    needs_root()
    path = write(tmp_path)
    assert run(path).ok
    out = tmp_path / "out"
    value = (out / "api").read_text()
    path = write(tmp_path, setting)
    result = run(path)
    assert [(i.action, i.version) for i in result.items] == [("update", 2)]
    assert check(out)
    assert (out / "api").read_text() == value
    assert run(path).target_writes == 0
    path = write(tmp_path)  # and back to the defaults: one more version
    assert [(i.action, i.version) for i in run(path).items] == [("update", 3)]
    assert not check(out)


def test_default_settings_store_nothing_extra(tmp_path):
    """A release that learns a setting doesn't re-version every secret stored with defaults."""
    engine = Engine(load_config(write(tmp_path, "history: 3\nmax_bytes: 100\nlock_timeout: 1s")))
    try:
        assert engine.target.stored_settings(engine.config.secrets[0].spec) == {}
    finally:
        engine.close()


# --------------------------------------------------------------------------- collisions


def test_env_file_names_that_collide_are_a_config_error_naming_both(tmp_path):
    (tmp_path / "keys.yaml").write_text(yaml.safe_dump({"x": "1", "y": "2"}))
    path = write(
        tmp_path,
        "env_file: .env",
        secrets="  - {name: a-b, from: {provider: local, key: x}}\n"
        "  - {name: a_b, from: {provider: local, key: y}}\n"
        "  - {name: fine, from: {provider: local, key: y}}\n",
    )
    message = problems(path)
    assert "'a-b'" in message and "'a_b'" in message and "'A_B'" in message
    assert "secrets[0]" in message and "secrets[1]" in message and "secrets[2]" not in message


@pytest.mark.parametrize(
    ("target", "secrets", "clash"),
    [
        (
            "yaml_file: all.yaml",
            "  - {name: x, from: {provider: local, key: x}}\n"
            "  - {name: bundle, data: {x: {provider: local, key: y}}}\n",
            "'x'",
        ),
        (
            "env_file: .env",
            "  - name: bundle\n"
            "    data: {a.b: {provider: local, key: x}, a-b: {provider: local, key: y}}\n",
            "'A_B'",
        ),
        (
            "env_file: .env",
            "  - {name: 1password, from: {provider: local, key: x}}\n",
            "can't start with a digit",
        ),
    ],
)
def test_output_collisions_are_config_errors(tmp_path, target, secrets, clash):
    (tmp_path / "keys.yaml").write_text(yaml.safe_dump({"x": "1", "y": "2"}))
    message = problems(write(tmp_path, target, secrets=secrets))
    assert clash in message


@pytest.mark.parametrize("output", ["env_file: .env", "yaml_file: all.yaml"])
def test_generated_names_that_collide_fail_both_and_the_rest_sync(tmp_path, output):
    """for_each and data_from keys come at run time: the clashing secrets fail, naming both;
    everything else (and the output file) is written."""
    source = {k: new_value() for k in ("a-b", "a_b", "A-B", "solo")}
    bundle = {"solo": new_value(), "other": new_value()}
    api = new_value()
    (tmp_path / "gen.json").write_text(json.dumps(source))
    (tmp_path / "bundle.json").write_text(json.dumps(bundle))
    (tmp_path / "keys.yaml").write_text(yaml.safe_dump({"api": api}))
    text = (
        write(tmp_path, output)
        .read_text()
        .replace(
            "providers:\n",
            "providers:\n  gen: {type: file, path: gen.json}\n"
            "  bundle: {type: file, path: bundle.json}\n",
        )
    )
    text += (
        "  - {name: '{key}', for_each: {provider: gen}}\n"
        "  - {name: bun, data_from: {provider: bundle}}\n"
    )
    path = tmp_path / "syncd.yaml"
    path.write_text(text)
    result = run(path)
    errors = {i.name: i.error or "" for i in result.items if i.error}
    out = tmp_path / "out"
    written = (out / output.split(": ")[1]).read_text()
    if output.startswith("env_file"):
        assert sorted(errors) == ["A-B", "a-b", "a_b", "bun", "solo"]
        for name in ("A-B", "a-b", "a_b"):
            assert all(f"'{other}'" in errors[name] for other in ("A-B", "a-b", "a_b", "A_B"))
    else:
        assert sorted(errors) == ["bun", "solo"]
        assert all(source[k] in written for k in ("a-b", "a_b", "A-B"))
    assert "'solo'" in errors["bun"] and "'solo'" in errors["solo"]
    assert "'bun'" in errors["solo"]
    assert (out / "api").read_text() == api
    assert api in written
    assert source["solo"] not in written and bundle["solo"] not in written
    assert bundle["other"] not in written  # its bundle failed as a whole
    for text in errors.values():
        assert all(v not in text for v in (*source.values(), *bundle.values(), api))


# --------------------------------------------------------------------------- the key


def test_a_damaged_key_says_how_to_repair_it(tmp_path):
    path = write(tmp_path)
    assert run(path).ok
    key = tmp_path / "out" / "..syncd-key"
    os.chmod(key, 0o600)
    key.write_bytes(b"short")
    result = run(path)
    message = result.items[0].error or ""
    assert not result.ok and result.target_writes == 0
    assert "..syncd-key is 5 bytes, not 32" in message and "remove it" in message
    assert "new version" in message
    assert key.read_bytes() == b"short"  # never silently replaced


def test_a_symlinked_key_is_refused(tmp_path):
    path = write(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "elsewhere").write_bytes(os.urandom(32))
    (tmp_path / "out" / "..syncd-key").symlink_to(tmp_path / "elsewhere")
    result = run(path)
    assert not result.ok and "..syncd-key is a symlink" in (result.items[0].error or "")
    assert not (tmp_path / "out" / "api").exists()


# --------------------------------------------------------------------------- installations


def state_of(out: Path) -> dict:
    return json.loads((out / "..data" / "..syncd.json").read_text())


def test_a_directory_of_another_instance_is_refused_by_name(tmp_path):
    path = write(tmp_path, top="instance: team-a\n")
    assert run(path).ok
    out = tmp_path / "out"
    assert state_of(out)["instance"] == "team-a"
    before = {p: p.lstat().st_mtime_ns for p in out.rglob("*")}
    (tmp_path / "keys.yaml").write_text(yaml.safe_dump({"api": new_value()}))
    for top in ("instance: team-b\n", ""):
        result = run(write(tmp_path, top=top))
        message = result.items[0].error or ""
        assert "instance 'team-a'" in message and "own directory" in message
        assert {p: p.lstat().st_mtime_ns for p in out.rglob("*")} == before


def test_a_directory_from_before_instances_is_the_default_instances(tmp_path):
    path = write(tmp_path)
    assert run(path).ok
    out = tmp_path / "out"
    current = out / os.readlink(out / "..data") / "..syncd.json"
    legacy = state_of(out)
    del legacy["instance"]
    os.chmod(current, 0o644)
    current.write_text(json.dumps(legacy))
    result = run(path)
    assert result.ok and result.target_writes == 0  # adopted as is
    message = run(write(tmp_path, top="instance: other\n")).items[0].error or ""
    assert "instance 'default'" in message and "before installations had names" in message
    (tmp_path / "keys.yaml").write_text(yaml.safe_dump({"api": new_value()}))
    assert run(write(tmp_path)).ok
    assert state_of(out)["instance"] == "default"


# --------------------------------------------------------------------------- update_source


def test_update_source_rewrites_the_state_without_a_new_generation(tmp_path):
    path = write(tmp_path)
    engine = Engine(load_config(path))
    try:
        assert engine.run_cycle().ok
        out = tmp_path / "out"
        generation = os.readlink(out / "..data")
        inode = (out / "api").stat().st_ino
        (version,) = engine.target.list_versions(["api"])["api"]
        with engine.target.exclusive():
            assert engine.target.update_source(version, "in-a-cycle") is True
        assert state_of(out)["secrets"]["api"]["source"] == "in-a-cycle"
        assert engine.target.update_source(version, "alone") is True
        assert os.readlink(out / "..data") == generation
        assert (out / "api").stat().st_ino == inode
        assert state_of(out)["secrets"]["api"]["source"] == "alone"
        assert engine.target.list_versions(["api"])["api"][0].source == "alone"
        assert [n for n in os.listdir(out / generation) if n.startswith("..tmp")] == []
        stale = version.__class__(**{**version.__dict__, "version": 9})
        assert engine.target.update_source(stale, "x") is False
        assert state_of(out)["secrets"]["api"]["source"] == "alone"
    finally:
        engine.close()


def test_a_moved_token_with_the_same_values_is_recorded_once(tmp_path):
    """Rewriting the source file with the same values moves every secret's token: one state
    rewrite for all of them (not one per secret), then no further read of the file."""
    names = [f"s{i}" for i in range(20)]
    (tmp_path / "keys.yaml").write_text(yaml.safe_dump({n: new_value() for n in names}))
    secrets = "".join(f"  - {{name: {n}, from: {{provider: local, key: {n}}}}}\n" for n in names)
    path = write(tmp_path, secrets=secrets)
    assert run(path).ok
    keys = tmp_path / "keys.yaml"
    text = keys.read_text()
    keys.unlink()
    keys.write_text(text)  # same values, new inode and mtime
    first = run(path)
    assert first.ok and first.calls["target"] == {"update_source": 1}
    second = run(path)
    assert second.target_writes == 0 and second.calls["local"].get("read", 0) == 0


def test_moved_tokens_ride_along_with_a_swap(tmp_path):
    """When the cycle swaps anyway, the new references go into that generation's state."""
    names = [f"s{i}" for i in range(5)]
    values = {n: new_value() for n in names}
    (tmp_path / "keys.yaml").write_text(yaml.safe_dump(values))
    secrets = "".join(f"  - {{name: {n}, from: {{provider: local, key: {n}}}}}\n" for n in names)
    path = write(tmp_path, secrets=secrets)
    assert run(path).ok
    values["s0"] = new_value()
    (tmp_path / "keys.yaml").write_text(yaml.safe_dump(values))
    result = run(path)
    assert result.ok and "update_source" not in result.calls["target"]
    assert result.calls["target"]["swap"] == 1
    again = run(path)
    assert again.target_writes == 0 and again.calls["local"].get("read", 0) == 0
