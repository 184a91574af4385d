"""Fuzzing the parsers of hostile input: the strategies every fuzz test shares, and the
file provider's properties.

Each parser must, for any input: parse it or fail with its own error naming the place (the
provider's ``FileFormatError``/``ProviderError`` with the file, ``EnvFileError``,
``ConfigError``), never another exception; answer well under a second for anything under
100 KB; and never put a value in an error. The five big targets (YAML, ``.env``, JSON and
CHIT text in ``test_fuzz_parsers.py``, the config loader in ``test_fuzz_config.py``) run
``EXAMPLES`` inputs each, 10,000 by default; the properties here and beside them run a
fiftieth of that (200).

Runs are reproducible (``derandomize``: a fixed seed per test, no example database). For a
longer hunt raise the count, e.g. ``SYNCD_FUZZ_EXAMPLES=100000``.

An input is cheap to make: most strategies draw one byte string and read it as a program
(which token, where to edit, how often to repeat), one draw where a composite strategy
would make dozens; Hypothesis still shrinks a failure, by shrinking the bytes.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Sequence
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
from syncd.envfile import ENV_KEY, parse_env, render_env
from syncd.errors import ProviderError
from syncd.model import Fetched
from tests.conftest import CANARY_PREFIX, ROOT

#: Inputs per big fuzz target.
EXAMPLES = int(os.environ.get("SYNCD_FUZZ_EXAMPLES", "10000"))
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=timedelta(seconds=1),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
#: The properties: a fiftieth as many inputs, at least 100.
PROPERTY = settings(FUZZ, max_examples=max(100, EXAMPLES // 50))
#: Inputs stay under this many characters ("a small input parses in well under a second").
MAX_SIZE = 100_000
#: Long runs stop here: a quadratic parser still takes seconds on them (so the deadline
#: fails it), not hours (so the run ends). 100 KB runs are in test_envfile.py.
LONG_RUN_SIZE = 20_000
#: One per run: a value that must never show in an error.
CANARY = CANARY_PREFIX + secrets.token_hex(16)
EXAMPLE_CONFIGS = sorted((ROOT / "config" / "examples").glob("**/*.yaml"))

# --------------------------------------------------------------------------- tokens

LINE_BREAKS = list("\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029")
HOSTILE_CHARS = [*LINE_BREAKS, "\t", " ", '"', "'", "\\", "$", "#", "=", "`", "\x00", "\ufeff"]
#: Characters from far away in Unicode: accents, other digits, astral, zero-width.
WIDE_CHARS = ["é", "\u0665", "\U0001d518", "\u200b", "\x7f", "\x07"]
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
    *('"points"', '"label"', '"value"', '"encoding"', '"hex"', '"cleartext"', "00ff", "zz"),
]


def palette(tokens: Sequence[str]) -> list[str]:
    """What one byte of a program can stand for: a token, a hostile or far-away character."""
    return list(dict.fromkeys([*tokens, *HOSTILE_CHARS, *WIDE_CHARS]))


PALETTES = {fmt: palette(tokens) for fmt, tokens in TOKENS.items()}

# --------------------------------------------------------------------------- byte programs


def spelled(program: bytes, tokens: Sequence[str]) -> str:
    """Each byte is a token."""
    return "".join(tokens[b % len(tokens)] for b in program)


def soup(tokens: Sequence[str], *, max_size: int = 40) -> st.SearchStrategy[str]:
    """Token soup: the format's own syntax in random order, with hostile characters."""
    return st.binary(max_size=max_size).map(lambda program: spelled(program, tokens))


def characters(program: bytes) -> str:
    """Any characters: a byte below 0xC0 is itself (ASCII, controls, Latin-1 with NEL and
    NBSP); one above picks, with the next byte, a character anywhere in the BMP (or, where
    a surrogate would be, in the astral plane above it)."""
    out, at = [], 0
    while at < len(program):
        byte = program[at]
        at += 1
        if byte < 0xC0 or at == len(program):
            out.append(chr(byte))
            continue
        code = (byte - 0xC0) << 10 | program[at] << 2
        at += 1
        out.append(chr(code + 0x10000 if 0xD800 <= code < 0xE000 else code))
    return "".join(out)


def _times(a: int, b: int, most: int) -> int:
    """2**n repeats, n up to ``most``: the smaller of two picks, so small counts are common
    and the largest rare."""
    return int(2 ** min(a % (most + 1), b % (most + 1)))


def edited(text: str, program: bytes, tokens: Sequence[str]) -> str:
    """``text`` after the edits ``program`` spells, four bytes each: what (insert, delete,
    replace, duplicate, cut, repeat up to 8192 times), where, how long, which token."""
    for at in range(0, len(program) - 3, 4):
        op, high, low, arg = program[at : at + 4]
        start = ((high << 8) | low) % (len(text) + 1)
        end = min(len(text), start + arg % 41)
        token = tokens[arg % len(tokens)]
        kind = op % 6
        if kind == 0:
            text = text[:start] + token + text[start:]
        elif kind == 1:
            text = text[:start] + text[end:]
        elif kind == 2:
            text = text[:start] + token + text[end:]
        elif kind == 3:
            text = text[:end] + text[start:end] + text[end:]
        elif kind == 4:
            text = text[:start]
        else:
            text = text[:end] + text[start:end] * _times(op // 6, arg, 13) + text[end:]
        text = text[:MAX_SIZE]
    return text


def repeating(program: bytes, tokens: Sequence[str]) -> str:
    """A prefix and a short unit repeated 1 to 2**16 times, cut at ``MAX_SIZE``: what finds
    quadratic parsers."""
    if len(program) < 2:
        return spelled(program, tokens)
    unit = spelled(program[10:14], tokens) or tokens[0]
    times = min(_times(program[0], program[1], 16), MAX_SIZE // len(unit) + 1)
    return (spelled(program[2:10], tokens) + unit * times)[:MAX_SIZE]


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
ENV_LINES = ["", "# c", "  "]
JSON_KEYS = ['"k"', '"j"', '""', '"\\ud800"', "k", "1"]
JSON_VALUES = [
    '"s"', "1.50", "-0", "1e400", "10000000000000000000000", "true", "false", "null", "NaN",
    "Infinity", "-Infinity", '"\\ud800"', '"a\\udfffb"', '"\\u0000"', "[1]", '{"a": 1}', "[]",
    "{}", '"open', "01", "+1", ".5", '"\\x"', "'single'", '"\\ud83d\\ude00"',
]
JSON_ENDS = ["}", "", "} x"]
CHIT_FIELDS = ["label", "value", "encoding", "x"]
CHIT_VALUES = [
    '"k"', '"j"', '"00ff"', '"zz"', '"hex"', '"cleartext"', '"rot13"', "5", '""', *JSON_VALUES,
]
# fmt: on


def _pick(options: Sequence[str], byte: int) -> str:
    return options[byte % len(options)]


def _pairs(program: bytes) -> list[tuple[int, int]]:
    return list(zip(program[::2], program[1::2], strict=False))


def assembled(fmt: FileFormat, program: bytes) -> str:
    """A document of the format's own pieces, in the hostile combination ``program`` picks."""
    if fmt == "yaml":
        lines = [
            f"{_pick(YAML_KEYS, a)}: {_pick(YAML_TAGS, b)}{_pick(YAML_SCALARS, b // 16 + a)}"
            for a, b in _pairs(program)
        ]
        return "\n".join(lines)
    if fmt == "env":
        lines = [
            f"{_pick(ENV_KEYS, a)}={_pick(ENV_SNIPPETS, b)}" if a % 8 else _pick(ENV_LINES, b)
            for a, b in _pairs(program)
        ]
        return ("\r\n" if program[:1] == b"\0" else "\n").join(lines)
    if fmt == "json":
        members = [f"{_pick(JSON_KEYS, a)}: {_pick(JSON_VALUES, b)}" for a, b in _pairs(program)]
        return "{" + ", ".join(members) + _pick(JSON_ENDS, sum(program))
    points, point = [], []
    for a, b in _pairs(program):
        point.append(f'"{_pick(CHIT_FIELDS, a)}": {_pick(CHIT_VALUES, b)}')
        if a % 4 == 0:
            points.append("{" + ", ".join(point) + "}")
            point = []
    return '{"version": "1", "points": [' + ", ".join(points) + "]}"


def texts(fmt: FileFormat) -> st.SearchStrategy[str]:
    """Any text a ``fmt`` file may hold, from one byte string: its first byte picks random
    characters, token soup, a repeated unit, an edited valid file or an assembled one."""
    tokens, seeds = PALETTES[fmt], valid_sources(fmt)

    def text(program: bytes) -> str:
        kind, rest = program[0] % 5, program[1:]
        if kind == 0:
            return characters(rest)
        if kind == 1:
            return spelled(rest, tokens)
        if kind == 2:
            return repeating(rest, tokens)
        if kind == 3:
            return edited(seeds[rest[0] % len(seeds)] if rest else seeds[0], rest[1:], tokens)
        return assembled(fmt, rest)

    return st.binary(min_size=1, max_size=64).map(text)


def source_bytes(fmt: FileFormat) -> st.SearchStrategy[bytes]:
    """The bytes of a file claiming to be in ``fmt``; one in eight is not UTF-8 throughout."""

    def spoiled(text: str, program: bytes) -> bytes:
        raw = text.encode("utf-8")
        if len(program) < 3 or program[0] % 8:
            return raw
        at = program[1] * len(raw) // 256
        return raw[:at] + program[2:] + raw[at:]

    return st.builds(spoiled, texts(fmt), st.binary(max_size=6))


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
@PROPERTY
@given(data=st.data())
def test_file_provider_reads_or_names_the_file_for_any_bytes(fuzz_dir, fmt, data):
    """The provider around the parsers: decoding (not UTF-8, a byte order mark), listing,
    per-key errors, each naming the file."""
    path = fuzz_dir / f"source.{fmt}"
    path.write_bytes(data.draw(source_bytes(fmt)))
    read_source(path, fmt)


LONG_RUN_CASES = [(fmt, prefix, unit) for fmt, runs in LONG_RUNS.items() for prefix, unit in runs]


@pytest.mark.parametrize(("fmt", "prefix", "unit"), LONG_RUN_CASES)
@settings(FUZZ, max_examples=max(5, EXAMPLES // 2000))
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


@PROPERTY
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


@PROPERTY
@given(scalar=PLAIN_LOOKALIKES)
def test_yaml_plain_scalars_arrive_as_written(fuzz_dir, scalar):
    text = f"k: {scalar}\n"
    assume(untyped_yaml(text) == {"k": scalar})
    path = fuzz_dir / "plain.yaml"
    path.write_text(text)
    delivered = read_source(path, "yaml")[FileRef(provider="fuzz", key="k")]
    assert isinstance(delivered, Fetched) and delivered.value == scalar.encode()


JSON_NUMBER = r"-?(0|[1-9][0-9]{0,40})(\.[0-9]{1,20})?([eE][-+]?[0-9]{1,4})?"


@PROPERTY
@given(number=st.from_regex(JSON_NUMBER, fullmatch=True))
def test_json_numbers_arrive_as_written(fuzz_dir, number):
    path = fuzz_dir / "numbers.json"
    path.write_text(f'{{"k": {number}}}')
    delivered = read_source(path, "json")[FileRef(provider="fuzz", key="k")]
    assert isinstance(delivered, Fetched) and delivered.value == number.encode()


# --------------------------------------------------------------------------- .env


ENV_VALUES = st.text(alphabet=st.sampled_from(HOSTILE_CHARS) | st.characters(), max_size=40)


@PROPERTY
@given(values=st.dictionaries(st.from_regex(ENV_KEY, fullmatch=True), ENV_VALUES, max_size=8))
@example(values={"A": "a\rb", "B": "\u2028\x85\v\f\x1c\x1d\x1e", "C": "\\", "D": ""})
def test_env_round_trip_for_any_text(values):
    assert parse_env(render_env(values)) == values


# --------------------------------------------------------------------------- shared checks


def yaml_lines(text: str) -> int:
    """How many lines YAML sees in ``text`` (it also breaks lines at ``\\r``, NEL, LS, PS)."""
    breaks = sum(text.count(c) for c in "\n\r\x85\u2028\u2029") - text.count("\r\n")
    return breaks + 1
