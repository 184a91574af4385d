"""Config loading: the minimal config, defaults, ${VAR}, and errors that name file and place."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from syncd import registry
from syncd.config import json_schema, load_config
from syncd.duration import parse_duration
from syncd.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]

MINIMAL = """\
providers:
  local: {type: file, path: user_keys.yaml}
target: {type: files, directory: ./out}
secrets:
  - name: openai_api_key
    from: {provider: local, key: openai_api_key}
"""


def errors_of(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    path = tmp_path / "syncd.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env=env or {})
    return [str(i) for i in info.value.issues]


def test_minimal_config_loads_with_defaults(tmp_path):
    path = tmp_path / "syncd.yaml"
    path.write_text(MINIMAL)
    config = load_config(path)
    (secret,) = config.secrets
    assert secret.name == "openai_api_key"
    assert (secret.refresh, secret.keep, secret.timeout) == (300.0, 3, 300.0)
    assert config.base_dir == tmp_path


def test_defaults_apply_and_can_be_overridden(tmp_path):
    path = tmp_path / "syncd.yaml"
    path.write_text(
        MINIMAL.replace("secrets:", "defaults: {refresh: 1m, keep: 5}\nsecrets:")
        + "  - name: other\n    from: {provider: local, key: x}\n    refresh: 1h30m\n    keep: 0\n"
    )
    first, second = load_config(path).secrets
    assert (first.refresh, first.keep) == (60.0, 5)
    assert (second.refresh, second.keep) == (5400.0, 0)


def test_unknown_key_names_file_line_and_path(tmp_path):
    (error,) = errors_of(tmp_path, MINIMAL.replace("key: openai_api_key}", "key: k, colour: red}"))
    assert error == f"{tmp_path / 'syncd.yaml'}:6: secrets[0].from.colour: unknown key"


def test_unknown_provider_name_is_named(tmp_path):
    (error,) = errors_of(tmp_path, MINIMAL.replace("{provider: local", "{provider: locl"))
    assert "secrets[0].from.provider: unknown provider 'locl' (known: local)" in error
    assert ":6:" in error


def test_wrong_types_and_duplicates_are_all_reported(tmp_path):
    text = MINIMAL.replace("directory: ./out}", "directory: ./out, history: many}") + (
        "  - name: openai_api_key\n    from: {provider: local, key: other}\n"
    )
    errors = errors_of(tmp_path, text)
    assert any("target.history:" in e and "integer" in e for e in errors)
    assert any("secrets[1].name: duplicate secret name 'openai_api_key'" in e for e in errors)


def test_unknown_provider_type_lists_known(tmp_path):
    (error,) = errors_of(tmp_path, MINIMAL.replace("type: file,", "type: fiel,"))
    assert "providers.local.type: unknown provider type 'fiel'" in error
    assert "file" in error


def test_from_and_data_are_exclusive(tmp_path):
    text = MINIMAL + "    data: {A: {provider: local, key: a}}\n"
    (error,) = errors_of(tmp_path, text)
    assert "secrets[0]: give exactly one of 'from'" in error


def test_name_target_cannot_hold_is_refused(tmp_path):
    (error,) = errors_of(tmp_path, MINIMAL.replace("name: openai_api_key", "name: ../evil"))
    assert "secrets[0]: name '../evil' can't be a file name" in error


def test_duplicate_yaml_key_is_refused(tmp_path):
    (error,) = errors_of(tmp_path, MINIMAL.replace("secrets:", "target: {type: files}\nsecrets:"))
    assert "target: duplicate key" in error


def test_invalid_yaml_names_the_line(tmp_path):
    (error,) = errors_of(tmp_path, MINIMAL + "  - name: [unclosed\n")
    assert "invalid YAML" in error and ":8" in error


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="can't read config"):
        load_config(tmp_path / "nope.yaml")


def test_env_vars_expand_with_defaults_and_escapes(tmp_path):
    path = tmp_path / "syncd.yaml"
    path.write_text(
        MINIMAL.replace("./out", '"${OUT_DIR}"').replace("user_keys.yaml", '"${KEYS:-keys.yaml}"')
        + "  - name: price\n    from: {provider: local, key: 'cost$$'}\n"
    )
    config = load_config(path, env={"OUT_DIR": "/tmp/x"})
    assert config.target[1].directory == "/tmp/x"  # type: ignore[attr-defined]
    assert config.providers["local"][1].path == "keys.yaml"  # type: ignore[attr-defined]
    assert config.secrets[1].refs["price"].key == "cost$"  # type: ignore[attr-defined]


def test_missing_env_var_is_an_error_at_its_place(tmp_path):
    (error,) = errors_of(tmp_path, MINIMAL.replace("./out", '"${OUT_DIR}"'))
    assert ":3: target.directory: environment variable OUT_DIR is not set" in error


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("5m", 300), ("1h30m", 5400), (45, 45), ("250ms", 0.25)]
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "bad",
    ["5x", "m5", "", "5m junk", True, float("nan"), float("inf"), -5, "-5s", 10**400, "400d"],
)
def test_bad_durations(bad):
    with pytest.raises(ValueError, match=r"duration|NaN"):
        parse_duration(bad)


HEAD = """\
providers:
  local: {type: file, path: user_keys.yaml}
target: {type: files, directory: ./out}
secrets:
  - name: a
    from: {provider: local, key: a}
"""


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("defaults: {refresh: -5}", "", "defaults.refresh: a duration can't be negative"),
        ("defaults: {refresh: .nan}", "", "defaults.refresh: NaN is not a duration"),
        ("defaults: {refresh: .inf}", "", "defaults.refresh: a duration can be at most a year"),
        ("defaults: {refresh: 0}", "", "defaults.refresh: Input should be greater than or equal"),
        ("defaults: {timeout: 0s}", "", "defaults.timeout: Input should be greater than 0"),
        ("defaults: {refresh: 99999d}", "", "a duration can be at most a year"),
        ("defaults: {max_shrink: 1.5}", "", "defaults.max_shrink: Input should be less than"),
        ("daemon: {listen: nope}", "", "daemon.listen: listen 'nope' is not host:port"),
        ("daemon: {listen: 'h:99999'}", "", "is not host:port"),
        ("daemon: {backoff_min: 20m, backoff_max: 1m}", "", "backoff_min (1200s) is longer"),
        ("daemon: {jitter: .nan}", "", "daemon.jitter"),
        ("instance: Team_A", "", "instance: instance 'Team_A' must be lowercase letters"),
    ],
)
def test_impossible_settings_are_refused_with_their_place(tmp_path, field, value, message):
    del value
    (problem,) = errors_of(tmp_path, HEAD + field + "\n")
    assert problem.startswith(f"{tmp_path / 'syncd.yaml'}:7: ")
    assert message in problem


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("defaults: {refresh: !!int 5}", "defaults.refresh: YAML tag !!int is not allowed"),
        ("defaults: {keep: !!float 1}", "YAML tag !!float is not allowed"),
        ("defaults: {refresh: !!timestamp 2001-01-01}", "YAML tag !!timestamp"),
        ("defaults: {refresh: 2001-13-45}", "defaults.refresh: not a duration"),
        ("defaults: {refresh: !custom x}", "YAML tag !custom is not allowed"),
        ("<<: {prune: true}", "merge keys (<<) are not supported"),
    ],
)
def test_tags_dates_and_merge_keys_are_refused_not_crashes(tmp_path, text, message):
    problems = errors_of(tmp_path, HEAD + text + "\n")
    assert any(message in p and ":7:" in p for p in problems), problems


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        ("a: &x [*x]\n", "recursive alias", 1),
        ('a: "\x00"\n', "control characters are not allowed", 1),
        ("a: " + "[" * 70 + "]" * 70 + "\n", "nested more than", 1),
        # PyYAML < 6.0.4 segfaults on this; the depth bound refuses it before libyaml runs
        ("a: 1\nb: " + "[" * 100_000 + "\n", "nested more than 500 levels", 2),
        ("- " * 100_000 + "x\n", "nested more than 500 levels", 1),
        ('extends: "a\\0b"\n', "extends: must be the path of a base config file", 1),
    ],
)
def test_hostile_yaml_ends_in_a_config_error_with_a_line(tmp_path, text, message, line):
    (problem,) = errors_of(tmp_path, text)
    assert message in problem and f"syncd.yaml:{line}:" in problem


def test_an_alias_bomb_is_refused_fast(tmp_path):
    """331 bytes that expand to billions of nodes kept ``check`` busy for 98 s."""
    import time

    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    text = "\n".join(lines) + "\nproviders: {}\ntarget: {type: files, directory: o}\nsecrets: *i\n"
    start = time.monotonic()
    (problem,) = errors_of(tmp_path, text)
    assert "aliases expand the config far beyond its written size" in problem
    assert time.monotonic() - start < 2


@pytest.mark.parametrize(
    ("written", "read_as"),
    [("0755", "0755"), ("12:30:45", "12:30:45"), ("on", "on"), ("1_000", "1_000"), ("0o17", 15)],
)
def test_scalars_mean_what_they_look_like(tmp_path, written, read_as):
    """YAML 1.1's surprises don't apply: the value reaches the model as written."""
    from syncd.config_yaml import read_yaml

    path = tmp_path / "x.yaml"
    path.write_text(f"v: {written}\n")
    data, _ = read_yaml(path, {})
    assert data == {"v": read_as}


def test_every_time_setting_takes_a_duration():
    """One duration type: 30s is accepted wherever a time is set (core and plugins)."""
    from syncd.duration import Duration

    pattern = Duration.__metadata__[1].json_schema["anyOf"][1]["pattern"]
    schema = json_schema()
    timeish = {
        f"{path}/{key}": prop
        for path, props in _properties(schema)
        for key, prop in props.items()
        if any(w in key for w in ("timeout", "interval", "duration", "refresh", "every", "backoff"))
        and not key.endswith("_factor")
    }
    needle = json.dumps(pattern)[1:-1]
    missing = sorted(p for p, prop in timeish.items() if needle not in json.dumps(prop))
    assert not missing, f"time settings that don't take a duration: {missing}"


def _properties(node, path=""):
    if isinstance(node, dict):
        if isinstance(node.get("properties"), dict):
            yield path + "/properties", node["properties"]
        for key, value in node.items():
            yield from _properties(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _properties(value, f"{path}/{i}")


def test_checked_in_schema_is_current(monkeypatch):
    """``config/schema.json`` is generated by ``syncd schema``; regenerate it when models change."""
    monkeypatch.delitem(registry.BUILTIN_TARGETS, "memory")  # the test-only target
    on_disk = json.loads((ROOT / "config" / "schema.json").read_text())
    assert on_disk == json.loads(json.dumps(json_schema(), sort_keys=True))


def test_schema_validates_the_examples():
    import jsonschema
    import yaml

    schema = json_schema()
    examples = ROOT / "config" / "examples"
    validated = set()
    for example in sorted(examples.rglob("*.yaml")):
        for doc in yaml.safe_load_all(example.read_text()):
            if isinstance(doc, dict) and "secrets" in doc and "extends" not in doc:
                jsonschema.validate(doc, schema)
                validated.add(str(example.relative_to(examples)))
    assert {
        "local/syncd.yaml",
        "swarm-agent-zero.yaml",
        "compose-dev/syncd.yaml",
        "kubernetes/base.yaml",
        "ci-oneshot.yaml",
        "vault.yaml",
        "aws.yaml",
        "azure.yaml",
        "templates/syncd.yaml",
    } <= validated


def test_help_is_fast_and_imports_no_sdk():
    code = (
        "import sys, syncd.cli as c\n"
        "try:\n    c.main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('hvac','boto3','docker','kubernetes','azure','pydantic') "
        "if m in sys.modules]\nprint(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_third_party_plugins_register_through_entry_points(monkeypatch, tmp_path):
    from importlib.metadata import EntryPoint

    plugin = EntryPoint(
        name="acme-memory", value="tests.unit.memory_target:MemoryTarget", group="syncd.targets"
    )
    # the registry imports entry_points when it looks beyond the built-ins
    monkeypatch.setattr(
        "importlib.metadata.entry_points",
        lambda group: [plugin] if group == "syncd.targets" else [],
    )
    path = tmp_path / "syncd.yaml"
    path.write_text(MINIMAL.replace("{type: files, directory: ./out}", "{type: acme-memory}"))
    errors = errors_of(tmp_path, path.read_text())
    # the plugin was found, and refused: a class answers only to its own type_name (its
    # config model wants type: memory); tests/unit/test_plugins.py loads a working one
    assert any(
        "target.type" in e and "registered as 'acme-memory' but its type_name is 'memory'" in e
        for e in errors
    )
    with pytest.raises(registry.PluginError, match=r"known: .*acme-memory"):
        registry.target_class("nope")


@pytest.mark.parametrize("special", ["/dev/zero", "fifo"])
def test_extends_never_reads_a_device_or_a_pipe(tmp_path, special):
    """``extends: /dev/zero`` would read forever; a FIFO would block until a writer came."""
    import os
    import time

    if special == "fifo":
        os.mkfifo(tmp_path / "fifo.yaml")
        special = "fifo.yaml"
    start = time.monotonic()
    (problem,) = errors_of(tmp_path, f"extends: {special}\nproviders: {{}}\n")
    assert "can't read config: not a regular file" in problem
    assert time.monotonic() - start < 2
