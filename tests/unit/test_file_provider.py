"""The file provider: YAML, .env and JSON sources, binary values, and clear errors."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from providers.base import ProviderContext
from providers.file import FileFormatError, FileProvider, FileProviderConfig, FileRef
from syncd.calls import CallCounter
from syncd.config import load_config
from syncd.envfile import parse_env
from syncd.errors import ConfigError, ProviderError
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
        ([{"value": "x"}], "points[0] has no string 'label'"),
        ([{"label": 5, "value": "x"}], "points[0] has no string 'label'"),
        ([{"label": "a", "value": 5}], "points[0] (a) has no string 'value'"),
        ([{"label": "a", "value": ["x"]}], "points[0] (a) has no string 'value'"),
        ([{"label": "a", "value": "1"}, {"label": "a", "value": "2"}], "label 'a' appears twice"),
        ([{"label": "a", "value": "1", "encoding": "{v}"}], "points[0] (a): unknown 'encoding'"),
    ],
)
def test_bad_chit_packets(tmp_path, points, message, canary):
    for point in points:
        point.setdefault("value", canary)
        point.update({k: canary for k, v in point.items() if v == "{v}"})
    (tmp_path / "bad.chit").write_text(chit(*points))
    result = fetch_one(provider(tmp_path / "bad.chit"), "a")
    assert isinstance(result, ProviderError)
    assert message in str(result)
    assert canary not in str(result)


def fetch_text(path: Path, key: str = "k", **options: str) -> Fetched | ProviderError:
    return fetch_one(provider(path, **options), key)


#: Plain YAML scalars a YAML 1.1 loader re-types (numbers, octal, sexagesimal, booleans,
#: dates, floats); a secrets file means the characters.
RETYPED = [
    "0755", "0123", "0x1F", "0o17", "0b101", "1_000", "12:30:45", "190:20:30.15", "-0", "+1",
    "1.50", "1e3", "6.8523015e+5", ".inf", "-.Inf", ".NaN", "on", "off", "yes", "No", "Y",
    "true", "False", "2001-12-14", "2001-12-14t21:59:43.10-05:00", "2002-13-45", "=",
]  # fmt: skip


@pytest.mark.parametrize("scalar", RETYPED)
def test_yaml_plain_scalars_are_delivered_as_written(tmp_path, scalar):
    (tmp_path / "keys.yaml").write_text(f"k: {scalar}\nother: x\n")
    assert fetch_text(tmp_path / "keys.yaml") == Fetched(
        scalar.encode(),
        fetch_text(tmp_path / "keys.yaml").token,  # type: ignore[union-attr]
    )


@pytest.mark.parametrize(
    ("written", "value"),
    [
        ("''", b""),
        ('""', b""),
        ("'null'", b"null"),
        ('"~"', b"~"),
        ("'0755'", b"0755"),
        ("|\n  line1\n  line2\n", b"line1\nline2\n"),
        (">-\n  folded\n  text\n", b"folded text"),
        ('"tab\\there \\u00e9"', "tab\there \u00e9".encode()),
        ("&anchor shared", b"shared"),
    ],
)
def test_yaml_quoted_block_and_anchored_scalars(tmp_path, written, value):
    (tmp_path / "keys.yaml").write_text(f"k: {written}\n")
    assert fetch_text(tmp_path / "keys.yaml").value == value  # type: ignore[union-attr]


def test_yaml_alias_of_a_scalar_is_that_scalar(tmp_path):
    value = new_value()
    (tmp_path / "keys.yaml").write_text(f"a: &v {value}\nk: *v\n")
    assert fetch_text(tmp_path / "keys.yaml").value == value.encode()  # type: ignore[union-attr]


@pytest.mark.parametrize("written", ["", "~", "null", "Null", "NULL"])
def test_yaml_no_value_is_an_error_for_that_key_only(tmp_path, written):
    (tmp_path / "keys.yaml").write_text(f"ok: 1\nk: {written}\n")
    result = fetch_text(tmp_path / "keys.yaml")
    assert isinstance(result, ProviderError)
    assert f"key 'k' in {tmp_path / 'keys.yaml'} (line 2) has no value" in str(result)
    assert fetch_text(tmp_path / "keys.yaml", "ok").value == b"1"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "tag", ["!!int", "!!str", "!!binary", "!!float", "!!bool", "!!null", "!custom", "!<tag:x>"]
)
def test_yaml_tags_are_refused_naming_key_and_line_never_the_value(tmp_path, tag, canary):
    (tmp_path / "keys.yaml").write_text(f"ok: 1\nk: {tag} {canary}\n")
    result = fetch_text(tmp_path / "keys.yaml")
    assert isinstance(result, ProviderError)
    assert f"key 'k' in {tmp_path / 'keys.yaml'} (line 2) has a YAML tag" in str(result)
    assert canary not in str(result)


@pytest.mark.parametrize(
    "nested", ["{a: 1}", "[1, 2]", "\n  - x\n", "\n  a: b\n", "!!set {a}", "!!omap [a: 1]"]
)
def test_yaml_nested_values_are_refused_naming_key_and_line(tmp_path, nested):
    (tmp_path / "keys.yaml").write_text(f"ok: 1\nk: {nested}\n")
    result = fetch_text(tmp_path / "keys.yaml")
    assert isinstance(result, ProviderError)
    assert f"key 'k' in {tmp_path / 'keys.yaml'} (line 2) has " in str(result)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("k: 1\nj: 2\nk: 3\n", "line 3: duplicate key 'k'"),
        ("k: 1\n'k': 2\n", "line 2: duplicate key 'k'"),
        ("base: &b {x: 1}\n<<: *b\n", "line 2: YAML merge keys (<<) are not supported"),
        ("k: 1\n!!str j: 2\n", "line 2: a key must be a string without a tag"),
        ("k: 1\n[a]: 2\n", "line 2: a key must be a string without a tag"),
        ("k: 1\n'': 2\n", "line 2: a key is empty"),
        ("!!map {k: 1}\n", "line 1: must hold a mapping of key: value (without a tag)"),
        ("k: 1\n---\nj: 2\n", "line 2, column 1: invalid YAML"),
        ("k: 1\nj: \x07\n", "line 2: invalid YAML (a control character)"),
        ("k: [" * 2000, "line 1: is nested more than 500 levels deep"),
    ],
)
def test_yaml_file_errors_fail_every_key_naming_the_line(tmp_path, content, message):
    (tmp_path / "keys.yaml").write_text(content)
    result = fetch_text(tmp_path / "keys.yaml")
    assert isinstance(result, ProviderError)
    assert f"{tmp_path / 'keys.yaml'}: line " in str(result) and message in str(result)


def test_json_numbers_and_booleans_are_delivered_as_written(tmp_path):
    written = {"a": "1.50", "b": "10000000000000000000000", "c": "1e400", "d": "-0", "e": "0.1E-2"}
    body = ", ".join(f'"{k}": {v}' for k, v in written.items())
    (tmp_path / "s.json").write_text(f'{{{body}, "t": true, "f": false, "s": "x"}}')
    p = provider(tmp_path / "s.json")
    for key, value in {**written, "t": "true", "f": "false", "s": "x"}.items():
        assert fetch_one(p, key).value == value.encode()  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("null", "has no value"),
        ("NaN", "is NaN or Infinity"),
        ("-Infinity", "is NaN or Infinity"),
        ("[1]", "has a nested value"),
        ('{"a": 1}', "has a nested value"),
        ('"\\ud800"', "is not valid Unicode"),
        ('"a\\udfffb"', "is not valid Unicode"),
    ],
)
def test_json_unusable_values_fail_that_key_only(tmp_path, value, message):
    (tmp_path / "s.json").write_text(f'{{"ok": "1", "k": {value}}}')
    result = fetch_text(tmp_path / "s.json")
    assert isinstance(result, ProviderError)
    assert f"key 'k' in {tmp_path / 's.json'} {message}" in str(result)
    assert fetch_text(tmp_path / "s.json", "ok").value == b"1"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"k": 1, "k": 2}', "duplicate key 'k'"),
        ('{"k": 1, "\\ud800": 2}', "a key is not valid Unicode"),
        ('{"": 1}', "a key is empty"),
        ("[" * 100_000, "is nested too deeply to read"),
        ('{"k": ' * 50_000, "is nested too deeply to read"),
        ('["k"]', "must hold an object"),
        ('{"k": 1}\n{"j": 2}', "line 2: invalid JSON: Extra data"),
        ("\x00", "line 1: invalid JSON: Expecting value"),
    ],
)
def test_json_file_errors_are_the_providers_own(tmp_path, content, message):
    (tmp_path / "s.json").write_text(content)
    result = fetch_text(tmp_path / "s.json")
    assert isinstance(result, ProviderError)
    assert f"{tmp_path / 's.json'}: {message}" in str(result)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"points": [{"label": "k", "label": "j", "value": "v"}]}', "points[0] has a duplicate"),
        ('{"points": [], "points": []}', "the packet has a duplicate field"),
        ('{"points": [{"label": "\\ud800", "value": "v"}]}', "the label is not valid Unicode"),
        ('{"points": [{"label": "k", "value": "\\ud800"}]}', "(k): 'value' is not valid Unicode"),
        ('{"points": ' + "[" * 100_000, "is nested too deeply to read"),
        ('{"points": {"label": "k"}}', "a CHIT packet needs a 'points' list"),
        ('{"points": [NaN]}', "points[0] is not an object"),
    ],
)
def test_hostile_chit_packets_are_the_providers_own_error(tmp_path, content, message):
    (tmp_path / "s.chit").write_text(content)
    result = fetch_text(tmp_path / "s.chit")
    assert isinstance(result, ProviderError)
    assert f"{tmp_path / 's.chit'}: " in str(result) and message in str(result)


def test_duplicate_env_keys_are_an_error(tmp_path):
    (tmp_path / ".env").write_text("K=1\nJ=2\nK=3\n")
    result = fetch_text(tmp_path / ".env", "K")
    assert f"{tmp_path / '.env'}: line 3: K is set again (first on line 1)" in str(result)


@pytest.mark.parametrize(
    ("name", "content", "line"),
    [
        ("keys.yaml", "k: 1\nj: [\n", 3),
        ("keys.json", '{"k": 1,\n\n}', 3),
        (".env", "K=1\nbroken\n", 2),
        ("keys.yaml", "k: 1\nj: \xff\n", 2),
    ],
)
def test_one_error_type_with_the_line_for_every_format(tmp_path, name, content, line):
    (tmp_path / name).write_bytes(content.encode("latin-1"))
    with pytest.raises(FileFormatError) as caught:
        provider(tmp_path / name)._parse((tmp_path / name).read_bytes())
    assert caught.value.line == line
    assert str(caught.value).startswith(f"line {line}")


@pytest.mark.parametrize("name", ["keys.yaml", "keys.json", ".env"])
def test_a_byte_order_mark_is_not_content(tmp_path, name):
    body = {"keys.yaml": "k: v\n", "keys.json": '{"k": "v"}', ".env": "k=v\n"}[name]
    (tmp_path / name).write_bytes(b"\xef\xbb\xbf" + body.encode())
    assert fetch_text(tmp_path / name).value == b"v"  # type: ignore[union-attr]


@pytest.mark.parametrize("path", ["", "keys\\0.yaml"])
def test_a_path_that_cant_be_opened_is_a_config_error(tmp_path, path):
    config = tmp_path / "syncd.yaml"
    config.write_text(
        f'providers:\n  local: {{type: file, path: "{path}"}}\n'
        "target: {type: files, directory: out}\n"
        "secrets:\n  - {name: a, from: {provider: local, key: a}}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(config, env={})
    assert f"{config}:2: providers.local.path: must be a file path" in str(caught.value)


@pytest.mark.parametrize("special", ["/dev/zero", "fifo"])
def test_a_source_that_is_a_device_or_a_pipe_fails_fast(tmp_path, special):
    import os
    import time

    path = special
    if special == "fifo":
        os.mkfifo(tmp_path / "keys.yaml")
        path = "keys.yaml"
    context = ProviderContext(name="local", base_dir=tmp_path, calls=CallCounter())
    provider = FileProvider(
        FileProviderConfig(type="file", path=path, format="yaml"), context=context
    )
    ref = FileRef(provider="local", key="a")
    start = time.monotonic()
    (result,) = provider.fetch([ref]).values()
    assert isinstance(result, ProviderError)
    assert "not a regular file" in str(result)
    assert time.monotonic() - start < 2


@pytest.mark.parametrize("text", ["k: " + "[" * 100_000, "- " * 100_000 + "x"])
def test_nesting_that_crashes_old_libyaml_is_refused_first(tmp_path, text):
    """PyYAML before 6.0.4 has no nesting limit: 100,000 '[' is a segmentation fault there."""
    (tmp_path / "keys.yaml").write_text(text)
    context = ProviderContext(name="local", base_dir=tmp_path, calls=CallCounter())
    provider = FileProvider(FileProviderConfig(type="file", path="keys.yaml"), context=context)
    (result,) = provider.fetch([FileRef(provider="local", key="k")]).values()
    assert isinstance(result, ProviderError)
    assert "line 1: is nested more than 500 levels deep" in str(result)
