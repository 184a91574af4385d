"""Fuzzing every parser of hostile input: the file provider's four formats, ``.env`` and the
config loader.

Each parser must, for any input: parse it or fail with its own error naming the file (the
provider's ``ProviderError``, ``EnvFileError``, ``ConfigError``), never another exception;
answer well under a second for anything under 100 KB; and never put a value in an error.

Runs are reproducible (``derandomize``: a fixed seed per test, no example database). For a
longer hunt raise the examples per test, e.g. ``SYNCD_FUZZ_EXAMPLES=5000``; the default keeps
this file around a minute on a loaded two-core machine.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from providers.base import ProviderContext
from providers.file import FileFormat, FileProvider, FileProviderConfig, FileRef
from syncd.calls import CallCounter
from syncd.config import load_config
from syncd.envfile import ENV_KEY, EnvFileError, parse_env, render_env
from syncd.errors import ConfigError, ProviderError
from syncd.model import Fetched
from tests.conftest import CANARY_PREFIX, ROOT

EXAMPLES = int(os.environ.get("SYNCD_FUZZ_EXAMPLES", "100"))
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=timedelta(seconds=1),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
#: Inputs stay under this many characters ("a small input parses in well under a second").
MAX_SIZE = 100_000
#: Long runs stop here: a quadratic parser still takes seconds on them (so the deadline
#: fails it), not hours (so the run ends). 100 KB runs are in test_envfile.py.
LONG_RUN_SIZE = 20_000
#: One per run: a value that must never show in an error.
CANARY = CANARY_PREFIX + secrets.token_hex(16)
EXAMPLE_CONFIGS = sorted((ROOT / "config" / "examples").glob("**/*.yaml"))

# --------------------------------------------------------------------------- strategies

LINE_BREAKS = list("\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029")
HOSTILE_CHARS = [*LINE_BREAKS, "\t", " ", '"', "'", "\\", "$", "#", "=", "`", "\x00", "\ufeff"]
TOKENS: dict[str, list[str]] = {
    "yaml": [
        ": ", "- ", "\n", "  ", "{", "}", "[", "]", ", ", "? ", "|", ">-", "'", '"', "# ",
        "---\n", "...\n", "&a ", "*a", "<<: *a", "!!int ", "!!binary ", "!!python/object ",
        "!x ", "! ", "~", "null", "0755", "0x1F", "1_000", "12:30:45", "on", ".inf",
        "%YAML 1.1\n", "%TAG ! tag:x,2000:\n", "\t", "\\u", "\\ud800", "\x00", "\x07", "\ufeff",
        "k", "key", CANARY,
    ],
    "env": [
        "=", "export ", "'", '"', "\\", "\\\\", '\\"', "#", " #", " ", "\n", "\r", "\r\n", "$",
        "${X}", "A", "_", "1", "K=", "k.b-c=", "\x85", "\u2028", "\v", "\x00", "\ufeff",
        CANARY,
    ],
    "json": [
        "{", "}", "[", "]", ":", ",", '"', "\\", "\\u", "d800", "\\ud800", "null", "true",
        "false", "1e999", "-0", "1.50", "NaN", "-Infinity", "0", " ", "\n", '"k"', '"k": ',
        "\x00", CANARY,
    ],
}  # fmt: skip
TOKENS["chit"] = [
    *TOKENS["json"],
    '"points"',
    '"label"',
    '"value"',
    '"encoding"',
    '"hex"',
    '"cleartext"',
    "00ff",
    "zz",
]


def valid_sources(fmt: FileFormat) -> list[str]:
    """Well-formed files of each format, for the mutations to start from."""
    values = {"k": "plain", "spaced": " a b ", "quote": 'it\'s "q"', "multi": "l1\nl2\r\n"}
    points = [
        {"label": "k", "value": "v", "encoding": "cleartext"},
        {"label": "bin", "value": "00ff10", "encoding": "hex"},
    ]
    chit = {"version": "1", "namespace": "n", "points": points}
    sources = {
        "yaml": [
            yaml.safe_dump(values),
            'a: plain\nb: \'single\'\nc: "dq \\" \\n"\nd: |\n  block\ne: 0755\nf: &x anchor\n'
            "g: *x\n# comment\nh: {n: 1}\ni: [1]\nj: ~\nk: !!str tagged\n",
            *(p.read_text() for p in EXAMPLE_CONFIGS if p.name == "user_keys.yaml"),
        ],
        "env": [
            render_env({k.upper(): v for k, v in values.items()}),
            '# c\nexport A=1\nB = \'x y\'\nC="m\nn"\nD=v # c\nE=\nF="\\$\\\\\\""\n',
        ],
        "json": [json.dumps(values), '{"a": 1.50, "b": true, "c": null, "d": [1], "e": {"f": 2}}'],
        "chit": [json.dumps(chit), json.dumps(chit, indent=2)],
    }
    return sources[fmt]


def pieces(tokens: list[str]) -> st.SearchStrategy[str]:
    return st.sampled_from(tokens) | st.text(max_size=4)


def soup(tokens: list[str], *, min_size: int = 0, max_size: int = 40) -> st.SearchStrategy[str]:
    """Token soup: the format's own syntax in random order, with a little random text."""
    return st.lists(pieces(tokens), min_size=min_size, max_size=max_size).map("".join)


@st.composite
def repeated(draw: st.DrawFn, tokens: list[str]) -> str:
    """A prefix and one short unit repeated up to 100 KB: what finds quadratic parsers."""
    prefix = draw(soup(tokens, max_size=8))
    unit = draw(soup(tokens, min_size=1, max_size=4))
    times = draw(st.integers(1, MAX_SIZE // max(1, len(unit))))
    return (prefix + unit * times)[:MAX_SIZE]


@st.composite
def mutated(draw: st.DrawFn, seeds: list[str], tokens: list[str]) -> str:
    """A valid seed after a few random edits: insert, delete, replace, duplicate, cut, repeat."""
    text = draw(st.sampled_from(seeds))
    for _ in range(draw(st.integers(1, 6))):
        start = draw(st.integers(0, len(text)))
        end = draw(st.integers(start, min(len(text), start + 40)))
        edit = draw(st.sampled_from(["insert", "delete", "replace", "duplicate", "cut", "repeat"]))
        if edit == "insert":
            text = text[:start] + draw(pieces(tokens)) + text[start:]
        elif edit == "delete":
            text = text[:start] + text[end:]
        elif edit == "replace":
            text = text[:start] + draw(pieces(tokens)) + text[end:]
        elif edit == "duplicate":
            text = text[:end] + text[start:end] + text[end:]
        elif edit == "cut":
            text = text[:start]
        else:
            times = draw(st.integers(2, MAX_SIZE // max(1, end - start)))
            text = text[:end] + text[start:end] * times + text[end:]
        text = text[:MAX_SIZE]
    return text


#: Pieces of each format's grammar, for documents that are nearly right: the shapes behind
#: the defects found so far (tags on values, YAML 1.1 lookalikes, lone surrogate escapes,
#: duplicates, quotes left open) are here as classes, not single examples.
# fmt: off
YAML_KEYS = [
    "k", "j", "'k'", '"k"', "? k\n", "<<", "''", "!!str k", "[a]", "0755", "~", "&a k", "*a",
]
YAML_TAGS = [
    "", "", "", "!!int ", "!!float ", "!!bool ", "!!timestamp ", "!!binary ", "!!str ", "!!null ",
    "!!set ", "!!omap ", "!!python/object/apply:os.system ", "!custom ", "! ", "!<tag:x> ",
]
YAML_SCALARS = [
    "plain", "0755", "0x1F", "1_000", "12:30:45", "on", "2002-13-45", "2001-12-14t21:59:43.1Z",
    "1e400", ".nan", "~", "", "null", "'q'", '"dq \\" \\n \\ud800 \\x00"', "|\n  block\n",
    ">-\n  folded\n", "&a anchored", "*a", "*missing", "[1, 2]", "{a: b}", "\n  - x\n",
    "\n  a: b\n", "-", "? x", "'open", '"open', "a: b: c", "\t", "#c", "[a, [b, {c: d}]]",
]
ENV_KEYS = ["K", "k", "export K", "  K", "K ", "1K", "K.b-c", "K K", "", "#K", "export"]
ENV_SNIPPETS = [
    "v", "", " v ", "'single'", '"double"', "'open", '"open', '"esc \\n \\t \\" \\\\ \\$ \\x"',
    '"multi\nline"', "'multi\nline'", "v # comment", "v#not", '"x" trailing', '"x" # c',
    "$HOME", "${X}", "\\", '"\\"', "\r", "\x85", "\u2028", "a=b",
]
JSON_KEYS = ['"k"', '"j"', '""', '"\\ud800"', "k", "1"]
JSON_VALUES = [
    '"s"', "1.50", "-0", "1e400", "10000000000000000000000", "true", "false", "null", "NaN",
    "Infinity", "-Infinity", '"\\ud800"', '"a\\udfffb"', '"\\u0000"', "[1]", '{"a": 1}', "[]",
    "{}", '"open', "01", "+1", ".5", '"\\x"', "'single'", '"\\ud83d\\ude00"',
]
CHIT_VALUES = [
    '"k"', '"j"', '"00ff"', '"zz"', '"hex"', '"cleartext"', '"rot13"', "5", '""', *JSON_VALUES,
]
# fmt: on


def joined(parts: st.SearchStrategy[str], separator: str) -> st.SearchStrategy[str]:
    return st.lists(parts, min_size=1, max_size=8).map(separator.join)


def grammar(fmt: FileFormat) -> st.SearchStrategy[str]:
    """Documents assembled from the format's own pieces, in hostile combinations."""
    if fmt == "yaml":
        tagged = st.builds(
            "{}: {}{}".format, *map(st.sampled_from, [YAML_KEYS, YAML_TAGS, YAML_SCALARS])
        )
        return joined(tagged, "\n")
    if fmt == "env":
        line = st.builds("{}={}".format, st.sampled_from(ENV_KEYS), st.sampled_from(ENV_SNIPPETS))
        lines = st.lists(line | st.sampled_from(["", "# c", "  "]), min_size=1, max_size=8)
        return st.builds(str.join, st.sampled_from(["\n", "\r\n"]), lines)
    if fmt == "json":
        member = st.builds(
            "{}: {}".format, st.sampled_from(JSON_KEYS), st.sampled_from(JSON_VALUES)
        )
        return st.builds("{{{}{}".format, joined(member, ", "), st.sampled_from(["}", "", "} x"]))
    field = st.sampled_from(["label", "value", "encoding", "x"])
    point = joined(st.builds('"{}": {}'.format, field, st.sampled_from(CHIT_VALUES)), ", ")
    return joined(point.map("{{{}}}".format), ", ").map('{{"version": "1", "points": [{}]}}'.format)


#: (prefix, unit): one unit repeated a thousand times or more. Deep nesting, a quote left open
#: over thousands of lines, long runs of backslashes or spaces: what makes a parser recurse
#: too deep or rescan its input (quadratic).
LONG_RUNS: dict[str, list[tuple[str, str]]] = {
    "yaml": [("", "["), ("", "{a: "), ("", "- "), ("k: ", "&a [*a, "), ('k: "', "x\n"),
             ("k: '", "''"), ("k: |\n", "  x\n"), ("", "k: v\n"), ("k: ", " ")],
    "env": [('K="', "x\n"), ("K='", "x\n"), ('K="', "\\"), ('K="', '\\"'), ("K=x", " "),
            ("K=x", " #"), ("", "K=1\n"), ("", "export "), ("K=", "\\\n")],
    "json": [("", "["), ("", '{"k": '), ('{"k": "', "\\u"), ('{"k": "', "\\\\"), ("[", "0,"),
             ('{"k": "', "x"), ("", " ")],
    "chit": [('{"points": ', "["), ('{"points": [', '{"label": "k", "value": "v"}, '),
             ('{"points": [{"label": "k", "value": "', "0f"), ('{"points": [{"label": ', "[")],
}  # fmt: skip


@st.composite
def long_runs(draw: st.DrawFn, fmt: FileFormat) -> str:
    prefix, unit = draw(st.sampled_from(LONG_RUNS[fmt]))
    times = draw(st.integers(1000, max(1000, LONG_RUN_SIZE // len(unit))))
    return prefix + unit * times + draw(soup(TOKENS[fmt], max_size=4))


def texts(fmt: FileFormat) -> st.SearchStrategy[str]:
    tokens = TOKENS[fmt]
    return st.one_of(
        st.text(max_size=200),
        soup(tokens),
        repeated(tokens),
        mutated(valid_sources(fmt), tokens),
        grammar(fmt),
        long_runs(fmt),
    )


@st.composite
def source_bytes(draw: st.DrawFn, fmt: FileFormat) -> bytes:
    """The bytes of a file claiming to be in ``fmt`` (now and then not even UTF-8)."""
    raw = draw(texts(fmt)).encode("utf-8")
    if draw(st.integers(0, 9)) == 0:
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.binary(min_size=1, max_size=4)) + raw[at:]
    return raw


# --------------------------------------------------------------------------- the file provider


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def read_source(path: Path, fmt: FileFormat) -> dict[FileRef, Fetched | ProviderError]:
    """Everything the engine asks the provider about one file: list it, fetch every key.

    Errors must be the provider's own and name the file; anything else raised fails the test.
    """
    config = FileProviderConfig(type="file", path=path.name, format=fmt)
    provider = FileProvider(config, context=ProviderContext("fuzz", path.parent, CallCounter()))
    whole = FileRef(provider="fuzz")
    refs = [whole, FileRef(provider="fuzz", key="k")]
    listed = provider.list_keys(whole)
    if isinstance(listed, ProviderError):
        assert str(path) in str(listed)
    else:
        refs += [ref for ref in listed.values() if isinstance(ref, FileRef)]
    results = dict(provider.fetch(refs))
    assert set(results) == set(refs)
    for result in results.values():
        assert isinstance(result, Fetched | ProviderError)
        if isinstance(result, ProviderError):
            assert str(path) in str(result), result
    return results


@pytest.mark.parametrize("fmt", ["yaml", "env", "json", "chit"])
@FUZZ
@given(data=st.data())
def test_file_provider_reads_or_names_the_file_for_any_bytes(fuzz_dir, fmt, data):
    path = fuzz_dir / f"source.{fmt}"
    path.write_bytes(data.draw(source_bytes(fmt)))
    read_source(path, fmt)


LONG_RUN_CASES = [(fmt, prefix, unit) for fmt, runs in LONG_RUNS.items() for prefix, unit in runs]


@pytest.mark.parametrize(("fmt", "prefix", "unit"), LONG_RUN_CASES)
@settings(FUZZ, max_examples=max(5, EXAMPLES // 10))
@given(times=st.integers(1000, LONG_RUN_SIZE), suffix=soup(TOKENS["yaml"], max_size=4))
def test_every_long_run_class_is_read_well_under_a_second(
    fuzz_dir, fmt, prefix, unit, times, suffix
):
    path = fuzz_dir / f"long.{fmt}"
    path.write_text(prefix + unit * max(1000, times // len(unit)) + suffix)
    read_source(path, fmt)


def yaml_quoted(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a YAML double-quoted scalar


def env_escaped(value: str) -> str:
    table = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "$": "\\$"}
    return value.translate(str.maketrans(table))


#: Files with the value (``{q}`` quoted for the format, ``{e}`` .env-escaped, ``{r}`` raw on
#: one line) in hostile surroundings. The first of each format is valid: it must deliver the
#: value exactly.
CANARY_TEMPLATES: dict[FileFormat, list[str]] = {
    "yaml": [
        "k: {q}\n", "k: !!int {q}\n", "k: !!binary {q}\n", "k: !custom {q}\n", "k: [{q}]\n",
        "k: {{a: {q}}}\n", "k: {q} trailing: x\n", "k: {q}\nk: {q}\n", "k: {q}\n\x00\n",
        "k: {q}\n  bad: {q}\n", "k: {u}", "- {q}\n", "{q}\n", "k: {q}\nj: *nope\n",
        "k: {q}\n---\nj: {q}\n", "{{k: {q}, k: {q}}}\n", "k: &a {q}\nj: {{<<: *a}}\n",
        "k: {q}\n\t{q}\n",
    ],
    "env": [
        "{env}", 'k="{e}', "k='{r}", 'k="{e}" {e}\n', 'k="{e}"\nk="{e}"\n', "{r}\n",
        'j=1\nk="{e}"x\n', "export k='{r}' # {r}\nk=1\n",
    ],
    "json": [
        '{{"k": {q}}}', '{{"k": {q}', '{{"k": {q}, "k": {q}}}', '{{"k": [{q}]}}',
        '{{"k": {q}}} {q}', "[{q}]", '{{"k": NaN, "j": {q}}}', '{{"k": {q} {q}}}',
        '{{"k": {r}}}', '{{"k": "{r}"}}', '{{"k": {s}}}', "{q}",
    ],
    "chit": [
        '{{"points": [{{"label": "k", "value": {q}}}]}}',
        '{{"points": [{{"label": "k", "value": {q}, "encoding": "hex"}}]}}',
        '{{"points": [{{"label": "k", "value": "00", "encoding": {q}}}]}}',
        '{{"points": [{{"label": "k", "value": {q}}}, {{"label": "k", "value": {q}}}]}}',
        '{{"points": [{{"label": "k", "value": [{q}]}}]}}',
        '{{"points": [{{"label": "k", "value": {q}, "value": {q}}}]}}',
        '{{"points": [{q}]}}', '{{"points": {q}}}', '{{"points": [{{"label": "k", "value": {q}}}]',
        '{{"points": [{{"label": "k", "value": {s}}}]}}', '{{"points": [], "version": {r}}}',
    ],
}  # fmt: skip


@st.composite
def canary_files(draw: st.DrawFn) -> tuple[FileFormat, int, str, str]:
    fmt: FileFormat = draw(st.sampled_from(["yaml", "env", "json", "chit"]))
    index = draw(st.integers(0, len(CANARY_TEMPLATES[fmt]) - 1))
    around = st.text(alphabet=st.sampled_from(HOSTILE_CHARS) | st.characters(), max_size=12)
    value = draw(around) + CANARY + draw(around)
    quoted = yaml_quoted(value)
    # on one line, and with no '=' so that it can't turn into a .env key
    raw = value.translate({ord(c): None for c in [*LINE_BREAKS, "="]})
    text = CANARY_TEMPLATES[fmt][index].format(
        q=quoted,
        u=quoted[:-1],
        s=quoted[:-1] + '\\ud800"',
        e=env_escaped(value),
        r=raw,
        env=render_env({"k": value}),
    )
    return fmt, index, value, text


@FUZZ
@given(case=canary_files())
def test_no_value_ever_reaches_an_error(fuzz_dir, case):
    fmt, index, value, text = case
    path = fuzz_dir / f"canary.{fmt}"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    results = read_source(path, fmt)
    for result in results.values():
        if isinstance(result, ProviderError):
            assert CANARY not in str(result)
    delivered = results[FileRef(provider="fuzz", key="k")]
    if index == 0 and isinstance(delivered, Fetched):
        assert delivered.value == value.encode()


#: YAML 1.1 typed these plain scalars (numbers, octal, sexagesimal, booleans, dates).
NUMBER_LIKE = r"[-+]?[0-9][0-9_:.xobeE+a-fA-F-]{0,15}"
DATE_LIKE = r"[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}([Tt ][0-9:.]{1,12}(Z|[-+][0-9:]{1,5})?)?"
WORDS_1_1 = ["on", "off", "yes", "no", "y", "n", "ON", "Yes", "=", ".inf", ".NaN", "-.inf"]
PLAIN_LOOKALIKES = st.one_of(
    st.from_regex(NUMBER_LIKE, fullmatch=True),
    st.from_regex(DATE_LIKE, fullmatch=True),
    st.sampled_from(WORDS_1_1),
)


def untyped_yaml(text: str) -> Any:
    """What YAML reads without resolving any type (``None`` when it isn't YAML at all)."""
    try:
        return yaml.load(text, Loader=yaml.BaseLoader)
    except yaml.YAMLError:
        return None


@FUZZ
@given(scalar=PLAIN_LOOKALIKES)
def test_yaml_plain_scalars_arrive_as_written(fuzz_dir, scalar):
    text = f"k: {scalar}\n"
    assume(untyped_yaml(text) == {"k": scalar})
    path = fuzz_dir / "plain.yaml"
    path.write_text(text)
    delivered = read_source(path, "yaml")[FileRef(provider="fuzz", key="k")]
    assert isinstance(delivered, Fetched) and delivered.value == scalar.encode()


JSON_NUMBER = r"-?(0|[1-9][0-9]{0,40})(\.[0-9]{1,20})?([eE][-+]?[0-9]{1,4})?"


@FUZZ
@given(number=st.from_regex(JSON_NUMBER, fullmatch=True))
def test_json_numbers_arrive_as_written(fuzz_dir, number):
    path = fuzz_dir / "numbers.json"
    path.write_text(f'{{"k": {number}}}')
    delivered = read_source(path, "json")[FileRef(provider="fuzz", key="k")]
    assert isinstance(delivered, Fetched) and delivered.value == number.encode()


# --------------------------------------------------------------------------- .env


ENV_VALUES = st.text(alphabet=st.sampled_from(HOSTILE_CHARS) | st.characters(), max_size=40)


@FUZZ
@given(values=st.dictionaries(st.from_regex(ENV_KEY, fullmatch=True), ENV_VALUES, max_size=8))
@example(values={"A": "a\rb", "B": "\u2028\x85\v\f\x1c\x1d\x1e", "C": "\\", "D": ""})
def test_env_round_trip_for_any_text(values):
    assert parse_env(render_env(values)) == values


@FUZZ
@given(text=texts("env"))
def test_parse_env_raises_only_its_own_error(text):
    try:
        parse_env(text)
    except EnvFileError as exc:
        assert 1 <= exc.line <= text.count("\n") + 1


# --------------------------------------------------------------------------- the config loader

DURATION_GARBAGE = [
    "5x", "-1s", "1e400s", "nan", "inf", "-inf", "PT5M", "5 m", "\u0665m", "1_000s", "0x10s",
    "99999999999999999999h", "", "1m1m", "5m ", "\x005m", "1.5.5s", "0", "-0s", "5", "366d",
]  # fmt: skip
HOSTILE_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**30), 10**30),
    st.sampled_from([10**400, -(10**400), 2**63, -(2**63) - 1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(DURATION_GARBAGE),
    st.text(alphabet=st.sampled_from(HOSTILE_CHARS) | st.characters(), max_size=20),
)
HOSTILE_VALUES = st.recursive(
    HOSTILE_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)
YAML_EXTRAS = [
    "!!int ", "!!binary ", "!!python/object/apply:os.system ", "!custom ", "&a ", "*a",
    "<<: *a\n", "? ", "\x00", "\x07", "\ufeff", "\\ud800", "%YAML 1.1\n", "---\n",
    "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9) if i else '1'}]\n" for i in range(9)),
    "[" * 200 + "]" * 200, "x: " + "- " * 100 + "\n", "extends: ", "extends: .\n", "${X}",
    "${X:-d}", "$$",
]  # fmt: skip


def config_paths(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path into a config tree (the root included)."""
    yield path
    if isinstance(node, dict):
        for key, child in node.items():
            yield from config_paths(child, (*path, key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from config_paths(child, (*path, index))


def example_docs() -> list[Any]:
    docs = []
    for path in EXAMPLE_CONFIGS:
        try:
            docs.append(yaml.safe_load(path.read_text()))
        except yaml.YAMLError:
            continue  # a multi-document manifest
    return [doc for doc in docs if isinstance(doc, dict) and "secrets" in doc]


EXAMPLE_DOCS = example_docs()


@st.composite
def structured_configs(draw: st.DrawFn) -> str:
    """A valid config with its tree mutated (types swapped, keys dropped and added, garbage
    durations, deep nesting), dumped as YAML, then spiced with YAML's own hostile syntax."""
    doc = json.loads(json.dumps(draw(st.sampled_from(EXAMPLE_DOCS))))
    for _ in range(draw(st.integers(1, 5))):
        paths = list(config_paths(doc))[1:]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = doc
        for part in path[:-1]:
            parent = parent[part]
        edit = draw(st.sampled_from(["replace", "drop", "add", "wrap", "deepen", "duration"]))
        last = path[-1]
        if edit == "replace":
            parent[last] = draw(HOSTILE_VALUES)
        elif edit == "drop":
            del parent[last]
        elif edit == "add" and isinstance(parent, dict):
            parent[draw(st.text(max_size=10))] = draw(HOSTILE_VALUES)
        elif edit == "wrap":
            parent[last] = draw(st.sampled_from([[parent[last]], {"x": parent[last]}]))
        elif edit == "deepen":
            nested: Any = parent[last]
            for _ in range(draw(st.integers(1, 120))):
                nested = [nested]
            parent[last] = nested
        elif edit == "duration":
            parent[last] = draw(st.sampled_from(DURATION_GARBAGE))
    text = yaml.safe_dump(
        doc,
        allow_unicode=draw(st.booleans()),
        default_flow_style=draw(st.sampled_from([False, None, True])),
        width=10**6,
    )
    return draw(mutated([text], YAML_EXTRAS)) if draw(st.booleans()) else text


@pytest.fixture(scope="module")
def examples_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example configs copied once, each loaded once (plugins imported before timing)."""
    root = tmp_path_factory.mktemp("examples")
    shutil.copytree(ROOT / "config" / "examples", root, dirs_exist_ok=True)
    for path in sorted(root.glob("**/*.yaml")):
        check_config(path)
    return root


def check_config(path: Path) -> None:
    """``load_config`` loads ``path`` or raises ``ConfigError`` whose every issue names a file,
    and a line whenever it names a place in it; nothing else escapes."""
    try:
        load_config(path, env={})
    except ConfigError as exc:
        assert exc.issues
        for issue in exc.issues:
            assert Path(issue.file).is_absolute(), issue
            assert issue.message, issue
            assert issue.line is None or issue.line >= 1, issue
            if issue.location:
                assert issue.line is not None, issue


@FUZZ
@given(text=structured_configs())
@example(text="defaults:\n  keep: " + "1" * 4301 + "\n")  # was a ValueError from int()
def test_structured_configs_load_or_name_the_file(examples_copy, text):
    path = examples_copy / "fuzz-structured.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    check_config(path)


@FUZZ
@given(data=st.data(), which=st.sampled_from(EXAMPLE_CONFIGS))
def test_mutated_example_configs_load_or_name_the_file(examples_copy, data, which):
    original = which.read_text()
    path = examples_copy / which.relative_to(ROOT / "config" / "examples")
    path.write_text(data.draw(mutated([original], [*TOKENS["yaml"], *YAML_EXTRAS])))
    try:
        check_config(path)
    finally:
        path.write_text(original)


CONFIG_CANARY_TEMPLATES: list[Callable[[str], str]] = [
    lambda q: f"  extra: !!int {q}\n",
    lambda q: f"  extra: !!binary {q}\n",
    lambda q: f"  extra: !custom {q}\n",
    lambda q: f"  extra: {q[:-1]}",
    lambda q: f"  extra: {q}\n\x00\n",
    lambda q: f"  extra: {q}\n\x07\n",
    lambda q: f"  extra: {q} {q}\n",
]


@FUZZ
@given(template=st.sampled_from(CONFIG_CANARY_TEMPLATES), around=st.text(max_size=8))
def test_the_config_reader_never_quotes_a_value(examples_copy, template, around):
    path = examples_copy / "fuzz-canary.yaml"
    value = around + CANARY + around
    path.write_text(
        "providers:\n  local: {type: file, path: keys.yaml}\n"
        "target: {type: files, directory: out}\nsecrets: []\ndefaults:\n"
        + template(json.dumps(value, ensure_ascii=False)),
        encoding="utf-8",
        errors="surrogatepass",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert CANARY not in str(caught.value)
