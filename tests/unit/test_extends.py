"""One config per environment without copy-paste: ``extends:`` a base file."""

from __future__ import annotations

import pytest

from syncd.config import load_config
from syncd.errors import ConfigError

BASE = """\
providers:
  local: {type: file, path: keys.yaml}
target: {type: files, directory: out-base}
defaults: {keep: 2}
secrets:
  - name: openai_api_key
    from: {provider: local, key: openai_api_key}
  - name: anthropic_api_key
    from: {provider: local, key: anthropic_api_key}
"""


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_overlay_merges_mappings_and_secrets_by_name(tmp_path):
    write(tmp_path, "base.yaml", BASE)
    dev = write(
        tmp_path,
        "dev.yaml",
        "extends: base.yaml\n"
        "target: {directory: out-dev}\n"
        "providers:\n  local: {path: .env.dev}\n"
        "secrets:\n"
        "  - name: anthropic_api_key\n    keep: 0\n"
        "  - name: supabase_url\n    from: {provider: local, key: SUPABASE_URL}\n",
    )
    config = load_config(dev)
    assert config.target[1].directory == "out-dev"  # type: ignore[attr-defined]
    assert config.providers["local"][1].path == ".env.dev"  # type: ignore[attr-defined]
    assert [(s.name, s.keep) for s in config.secrets] == [
        ("openai_api_key", 2),
        ("anthropic_api_key", 0),
        ("supabase_url", 2),
    ]
    assert config.secrets[1].refs["anthropic_api_key"].key == "anthropic_api_key"  # type: ignore[attr-defined]


def test_errors_point_at_the_file_that_wrote_the_value(tmp_path):
    write(tmp_path, "base.yaml", BASE.replace("{keep: 2}", "{keep: two}"))
    dev = write(
        tmp_path,
        "dev.yaml",
        "extends: base.yaml\nsecrets:\n  - name: openai_api_key\n    colour: red\n",
    )
    with pytest.raises(ConfigError) as info:
        load_config(dev)
    messages = [str(i) for i in info.value.issues]
    assert any(m.startswith(f"{tmp_path / 'base.yaml'}:4: defaults.keep:") for m in messages)
    assert f"{tmp_path / 'dev.yaml'}:4: secrets[0].colour: unknown key" in messages


def test_extends_loop_is_refused(tmp_path):
    write(tmp_path, "a.yaml", "extends: b.yaml\n" + BASE)
    b = write(tmp_path, "b.yaml", "extends: a.yaml\n")
    with pytest.raises(ConfigError, match="extends itself"):
        load_config(b)


def test_missing_base_names_it(tmp_path):
    dev = write(tmp_path, "dev.yaml", "extends: nowhere.yaml\n")
    with pytest.raises(ConfigError, match=r"nowhere\.yaml: can.t read config"):
        load_config(dev)
