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


@pytest.mark.parametrize("bad", ["5x", "m5", "", "5m junk", True])
def test_bad_durations(bad):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


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
    monkeypatch.setattr(
        registry, "entry_points", lambda group: [plugin] if group == "syncd.targets" else []
    )
    path = tmp_path / "syncd.yaml"
    path.write_text(MINIMAL.replace("{type: files, directory: ./out}", "{type: acme-memory}"))
    errors = errors_of(tmp_path, path.read_text())
    # the plugin was found and its own model validated the block (memory wants type: memory)
    assert any("target.type" in e and "'memory'" in e for e in errors)
    assert registry.target_class("acme-memory").__name__ == "MemoryTarget"
    with pytest.raises(registry.PluginError, match=r"known: .*acme-memory"):
        registry.target_class("nope")
