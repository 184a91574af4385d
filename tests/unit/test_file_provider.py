"""The file provider: YAML, .env and JSON sources, binary values, and clear errors."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from providers.base import ProviderContext
from providers.file import FileProvider, FileProviderConfig, FileRef
from syncd.calls import CallCounter
from syncd.envfile import parse_env
from syncd.errors import ProviderError
from syncd.model import Fetched
from tests.conftest import new_value


def provider(path: Path, **options: str) -> FileProvider:
    config = FileProviderConfig(type="file", path=path.name, **options)  # type: ignore[arg-type]
    return FileProvider(config, context=ProviderContext("local", path.parent, CallCounter()))


def fetch_one(p: FileProvider, key: str, **ref: str) -> Fetched | ProviderError:
    r = FileRef(provider="local", key=key, **ref)  # type: ignore[arg-type]
    return p.fetch([r])[r]


def test_yaml_mapping_like_user_keys(tmp_path):
    value = new_value()
    (tmp_path / "user_keys.yaml").write_text(f"openai_api_key: {value}\nport: 5432\nflag: true\n")
    p = provider(tmp_path / "user_keys.yaml")
    assert fetch_one(p, "openai_api_key") == Fetched(value.encode(), fetch_one(p, "port").token)  # type: ignore[union-attr]
    assert fetch_one(p, "port").value == b"5432"  # type: ignore[union-attr]
    assert fetch_one(p, "flag").value == b"true"  # type: ignore[union-attr]


def test_env_file_syntax():
    text = (
        "# comment\n"
        "\n"
        "PLAIN=abc123\n"
        "export EXPORTED=yes\n"
        "SPACED = padded  \n"
        "INLINE=value # trailing comment\n"
        'DOUBLE="a b\\n\\"c\\""\n'
        "SINGLE='raw \\n $x'\n"
        "EMPTY=\n"
        'MULTI="line1\nline2"\n'
        "HASH=abc#def\n"
    )
    assert parse_env(text) == {
        "PLAIN": "abc123",
        "EXPORTED": "yes",
        "SPACED": "padded",
        "INLINE": "value",
        "DOUBLE": 'a b\n"c"',
        "SINGLE": "raw \\n $x",
        "EMPTY": "",
        "MULTI": "line1\nline2",
        "HASH": "abc#def",
    }


def test_env_parse_error_names_the_line_never_the_content(tmp_path, canary):
    (tmp_path / ".env").write_text(f"GOOD=1\n{canary}\n")
    result = fetch_one(provider(tmp_path / ".env"), "GOOD")
    assert isinstance(result, ProviderError)
    assert "line 2: expected KEY=VALUE" in str(result)
    assert canary not in str(result)


def test_unterminated_quote(tmp_path):
    (tmp_path / "app.env").write_text('A="open\nB=2\n')
    result = fetch_one(provider(tmp_path / "app.env"), "A")
    assert 'line 1: unterminated " quote' in str(result)


def test_json_and_explicit_format(tmp_path):
    value = new_value()
    (tmp_path / "secrets.txt").write_text(json.dumps({"token": value}))
    p = provider(tmp_path / "secrets.txt", format="json")
    assert fetch_one(p, "token").value == value.encode()  # type: ignore[union-attr]


def test_binary_values_with_base64(tmp_path):
    blob = bytes(range(256))
    (tmp_path / "bin.yaml").write_text(f"cert: {base64.b64encode(blob).decode()}\n")
    assert fetch_one(provider(tmp_path / "bin.yaml", encoding="base64"), "cert").value == blob  # type: ignore[union-attr]
    assert fetch_one(provider(tmp_path / "bin.yaml"), "cert", decode="base64").value == blob  # type: ignore[union-attr]


def test_bad_base64_is_a_clear_error(tmp_path):
    (tmp_path / "bin.yaml").write_text("cert: not*base64\n")
    result = fetch_one(provider(tmp_path / "bin.yaml"), "cert", decode="base64")
    assert isinstance(result, ProviderError) and "not valid base64" in str(result)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("other: 1\n", "key 'k' not found"),
        ("k:\n", "has no value"),
        ("k: {nested: 1}\n", "nested value"),
        ("- a\n- b\n", "must hold a mapping"),
        ("k: [unclosed\n", "invalid YAML"),
    ],
)
def test_bad_content(tmp_path, content, message):
    (tmp_path / "keys.yaml").write_text(content)
    result = fetch_one(provider(tmp_path / "keys.yaml"), "k")
    assert isinstance(result, ProviderError)
    assert message in str(result)
    assert "provider 'local', local:k" in str(result)


def test_missing_file(tmp_path):
    p = provider(tmp_path / "gone.yaml")
    ref = FileRef(provider="local", key="k")
    assert "file not found" in str(p.versions([ref])[ref])
    assert "file not found" in str(p.fetch([ref])[ref])


def test_versions_is_one_stat_and_no_read(tmp_path):
    (tmp_path / "keys.yaml").write_text("a: 1\nb: 2\n")
    p = provider(tmp_path / "keys.yaml")
    refs = [FileRef(provider="local", key=k) for k in "ab"]
    tokens = p.versions(refs)
    assert len(set(tokens.values())) == 1 and None not in tokens.values()
    assert p.context.calls.snapshot() == {"local": {"stat": 1}}
    (tmp_path / "keys.yaml").write_text("a: 1\nb: 3\n")
    assert p.versions(refs)[refs[0]] != tokens[refs[0]]


def chit(*points: dict[str, str]) -> str:
    return json.dumps({"version": "1", "namespace": "pmoves", "points": list(points)})


def test_chit_packet_cleartext_and_hex(tmp_path):
    value, binary = new_value(), bytes([0, 255, 10])
    (tmp_path / "secrets.chit").write_text(
        chit(
            {"label": "openai_api_key", "value": value, "encoding": "cleartext"},
            {"label": "blob", "value": binary.hex(), "encoding": "hex"},
            {"label": "plain", "value": "no-encoding-means-cleartext"},
        )
    )
    p = provider(tmp_path / "secrets.chit")
    assert fetch_one(p, "openai_api_key").value == value.encode()  # type: ignore[union-attr]
    assert fetch_one(p, "blob").value == binary  # type: ignore[union-attr]
    assert fetch_one(p, "plain").value == b"no-encoding-means-cleartext"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("points", "message"),
    [
        (
            [{"label": "a", "value": "zz", "encoding": "hex"}],
            "points[0] (a): 'value' is not valid hex",
        ),
        ([{"value": "x"}], "points[0] has no 'label'"),
        ([{"label": "a", "value": "1"}, {"label": "a", "value": "2"}], "label 'a' appears twice"),
        ([{"label": "a", "value": "1", "encoding": "rot13"}], "unknown encoding 'rot13'"),
    ],
)
def test_bad_chit_packets(tmp_path, points, message, canary):
    for point in points:
        point.setdefault("value", canary)
    (tmp_path / "bad.chit").write_text(chit(*points))
    result = fetch_one(provider(tmp_path / "bad.chit"), "a")
    assert isinstance(result, ProviderError)
    assert message in str(result)
    assert canary not in str(result)
