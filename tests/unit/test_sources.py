"""Guide workflows as one line each: data_from bundles, key styles, whole-file values."""

from __future__ import annotations

import json

import pytest
import yaml

from syncd.config import load_config, style_key
from syncd.engine import Engine
from syncd.envfile import parse_env
from tests.conftest import new_value, run


@pytest.mark.parametrize(
    ("key", "style", "expected"),
    [
        ("OPENAI_API_KEY", "kebab", "openai-api-key"),
        ("openai_api_key", "upper", "OPENAI_API_KEY"),
        ("openai-api-key", "snake", "openai_api_key"),
        ("Mixed.Key-name", "as-is", "Mixed.Key-name"),
    ],
)
def test_key_styles(key, style, expected):
    assert style_key(key, style) == expected


def test_data_from_env_file_like_kubectl_from_env_file(write_config, tmp_path):
    """``kubectl create secret generic pmoves-secrets --from-env-file=.env`` as one line."""
    o, a = new_value(), new_value()
    (tmp_path / ".env").write_text(f"OPENAI_API_KEY={o}\nANTHROPIC_API_KEY={a}\n")
    path = write_config(
        secrets=[
            {"name": "pmoves-secrets", "data_from": {"provider": "dotenv"}, "key_style": "kebab"}
        ],
    )
    doc = yaml.safe_load(path.read_text())
    doc["providers"] = {"dotenv": {"type": "file", "path": ".env"}}
    path.write_text(yaml.safe_dump(doc))
    engine = Engine(load_config(path))
    result = engine.run_cycle()
    assert result.ok, result.items
    assert result.items[0].changed_keys == ["anthropic-api-key", "openai-api-key"]
    out = tmp_path / "out" / "pmoves-secrets"
    assert (out / "openai-api-key").read_text() == o
    assert (out / "anthropic-api-key").read_text() == a
    reads = result.calls["dotenv"]["read"]
    again = engine.run_cycle()
    assert again.target_writes == 0
    assert again.calls["dotenv"]["read"] == reads  # unchanged file: not read again
    (tmp_path / ".env").write_text(f"OPENAI_API_KEY={o}\nANTHROPIC_API_KEY={a}\nNEW_KEY=x1\n")
    added = engine.run_cycle()
    assert added.items[0].changed_keys == ["new-key"]
    engine.close()


def test_data_from_as_one_rendered_blob_for_swarm(write_config, tmp_path):
    """``cat user_keys.yaml | docker secret create pmoves-secrets -`` as one line."""
    values = {"openai_api_key": new_value(), "anthropic_api_key": new_value()}
    path = write_config(
        values=values,
        secrets=[{"name": "pmoves-secrets", "data_from": {"provider": "local"}, "format": "yaml"}],
    )
    assert run(path).ok
    assert yaml.safe_load((tmp_path / "out" / "pmoves-secrets").read_text()) == values


def test_upper_style_env_render(write_config, tmp_path):
    values = {"openai_api_key": new_value()}
    path = write_config(
        values=values,
        secrets=[
            {
                "name": "app.env",
                "data_from": {"provider": "local"},
                "format": "env",
                "key_style": "upper",
            }
        ],
    )
    assert run(path).ok
    assert parse_env((tmp_path / "out" / "app.env").read_text()) == {
        "OPENAI_API_KEY": values["openai_api_key"]
    }


def test_whole_file_reference_like_from_file(write_config, tmp_path):
    """``kubectl create secret generic pmoves-secrets --from-file=secrets.chit``."""
    packet = json.dumps({"version": "1", "namespace": "p", "points": []})
    (tmp_path / "secrets.chit").write_text(packet)
    path = write_config(
        secrets=[{"name": "pmoves", "data": {"secrets.chit": {"provider": "chit"}}}]
    )
    doc = yaml.safe_load(path.read_text())
    doc["providers"] = {"chit": {"type": "file", "path": "secrets.chit"}}
    path.write_text(yaml.safe_dump(doc))
    assert run(path).ok
    assert (tmp_path / "out" / "pmoves" / "secrets.chit").read_text() == packet


def test_two_keys_mapping_to_one_name_is_an_error_and_writes_nothing(write_config, tmp_path):
    (tmp_path / ".env").write_text("API_KEY=a1\napi-key=b2\n")
    path = write_config(
        secrets=[{"name": "b", "data_from": {"provider": "dotenv"}, "key_style": "snake"}]
    )
    doc = yaml.safe_load(path.read_text())
    doc["providers"] = {"dotenv": {"type": "file", "path": ".env"}}
    path.write_text(yaml.safe_dump(doc))
    result = run(path)
    assert not result.ok
    assert "keys 'API_KEY' and 'api-key' both become 'api_key'" in (result.items[0].error or "")
    assert not (tmp_path / "out").exists()


def test_env_parse_error_in_data_from_names_file_and_line(write_config, tmp_path, canary):
    (tmp_path / ".env").write_text(f"GOOD=1\nbroken {canary}\n")
    path = write_config(secrets=[{"name": "b", "data_from": {"provider": "dotenv"}}])
    doc = yaml.safe_load(path.read_text())
    doc["providers"] = {"dotenv": {"type": "file", "path": ".env"}}
    path.write_text(yaml.safe_dump(doc))
    result = run(path)
    error = result.items[0].error or ""
    assert f"{tmp_path / '.env'}: line 2: expected KEY=VALUE" in error
    assert canary not in error


def test_key_style_needs_a_bundle(write_config, tmp_path):
    from syncd.errors import ConfigError

    path = write_config(
        values={"a": "x"},
        secrets=[{"name": "a", "from": {"provider": "local", "key": "a"}, "key_style": "kebab"}],
    )
    with pytest.raises(ConfigError, match="'key_style' renames bundle keys"):
        load_config(path)


def test_for_each_makes_one_secret_per_key(write_config, tmp_path):
    """``echo ... | docker secret create <key> -`` for every key of a file, as one line."""
    (tmp_path / ".env").write_text("OPENAI_API_KEY=o1\nANTHROPIC_API_KEY=a1\n")
    path = write_config(
        secrets=[{"name": "{key}", "for_each": {"provider": "dotenv"}, "key_style": "snake"}],
        prune=True,
    )
    doc = yaml.safe_load(path.read_text())
    doc["providers"] = {"dotenv": {"type": "file", "path": ".env"}}
    path.write_text(yaml.safe_dump(doc))
    engine = Engine(load_config(path))
    result = engine.run_cycle()
    assert sorted((i.name, i.action) for i in result.items) == [
        ("anthropic_api_key", "create"),
        ("openai_api_key", "create"),
    ]
    assert (tmp_path / "out" / "openai_api_key").read_text() == "o1"
    (tmp_path / ".env").write_text("OPENAI_API_KEY=o1\nANTHROPIC_API_KEY=a1\nSUPABASE_URL=u1\n")
    grown = engine.run_cycle()
    assert [(i.name, i.action) for i in grown.items if i.action != "unchanged"] == [
        ("supabase_url", "create")
    ]
    # the source vanishes: a failed listing must not look like secrets removed upstream
    (tmp_path / ".env").unlink()
    broken = engine.run_cycle()
    assert [(i.name, i.action) for i in broken.items] == [("{key}", "error")]
    assert "file not found" in (broken.items[0].error or "")
    assert broken.target_writes == 0
    assert (tmp_path / "out" / "supabase_url").read_text() == "u1"
    engine.close()


def test_for_each_names_are_checked_and_must_not_clash(write_config, tmp_path):
    from syncd.errors import ConfigError

    (tmp_path / "keys.yaml").write_text("a: 1\nb: 2\n")
    bad = write_config(secrets=[{"name": "../{key}", "for_each": {"provider": "local"}}])
    with pytest.raises(ConfigError, match="can't be a file name"):
        load_config(bad)
    no_template = write_config(secrets=[{"name": "fixed", "for_each": {"provider": "local"}}])
    with pytest.raises(ConfigError, match=r"needs a name template with \{key\}"):
        load_config(no_template)
    clash = write_config(
        secrets=[
            {"name": "a", "from": {"provider": "local", "key": "b"}},
            {"name": "{key}", "for_each": {"provider": "local"}},
        ]
    )
    result = Engine(load_config(clash)).run_cycle()
    assert [(i.name, i.error) for i in result.items if i.error] == [
        ("a", "{key}: key 'a' from local:* makes 'a', which already exists")
    ]
    assert sorted((i.name, i.action) for i in result.items if not i.error) == [
        ("a", "create"),
        ("b", "create"),
    ]
