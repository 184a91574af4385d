"""The config loader on any text, ``EXAMPLES`` (10,000) inputs: the example configs with their
trees mutated, token soup, and every ``config/examples/**/*.yaml`` with its text edited.

Every input must load or raise ``ConfigError`` whose every issue names an absolute file, a
line inside it whenever it names a place, and what is wrong, in well under a second; and no
error ever quotes a value.

The loader runs on the text in memory: ``syncd.config_yaml`` reads the input's path from a
dictionary (any other file, such as an ``extends`` base, from disk), so an input costs no
file write. Everything after reading the bytes is the loader as a user runs it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import example, given
from hypothesis import strategies as st

import syncd.config_yaml
from syncd.config import ConfigFile, _LooseBlock, _LooseRef, load_config
from syncd.errors import ConfigError
from syncd.reading import read_bounded
from tests.conftest import ROOT
from tests.unit.test_fuzz_inputs import (
    CANARY,
    EXAMPLE_CONFIGS,
    FUZZ,
    HOSTILE_CHARS,
    PROPERTY,
    TOKENS,
    WIDE_CHARS,
    edited,
    palette,
    spelled,
    yaml_lines,
)

EXAMPLES_DIR = ROOT / "config" / "examples"
#: pydantic keeps parametrized generic models in a weak cache: without a reference the one
#: ``load_config`` validates with is rebuilt (about 25 ms) whenever the GC has collected it,
#: which is once every seven loads here.
LOOSE_MODEL = ConfigFile[_LooseRef, _LooseBlock, _LooseBlock]

# fmt: off
DURATION_GARBAGE = [
    "5x", "-1s", "1e400s", "nan", "inf", "-inf", "PT5M", "5 m", "\u0665m", "1_000s", "0x10s",
    "99999999999999999999h", "", "1m1m", "5m ", "\x005m", "1.5.5s", "0", "-0s", "5", "366d",
]
#: What an edit puts in place of a value: wrong types, extremes, garbage durations, hostile
#: text, nested shapes.
HOSTILE_VALUES: list[Any] = [
    None, True, False, 0, -1, 1, 2**63, -(2**63) - 1, 10**30, 10**400, -(10**400),
    float("nan"), float("inf"), -float("inf"), 1e-300, 0.5, -0.0,
    *DURATION_GARBAGE, *HOSTILE_CHARS, *WIDE_CHARS,
    "${X}", "${X:-d}", "$$", "$", "..", "../..", "/etc/passwd", "a/b", "-", "~", "null", "0755",
    "0x1F", "12:30:45", "on", "yes", "x" * 300, "n" * 65, "A_B", "a-b", ".hidden", "..data",
    "UPPER", "file", "files", "swarm", "kubernetes", "vault", "local", "*",
    [], {}, [None], {"x": None}, {"": 1}, [[[]]], ["a", 1, None], {"type": "file"},
    {"provider": "local", "key": "k"}, {"provider": "missing"}, {"type": "files"},
    [{"name": "x"}], {"k": {"provider": "local"}},
]
#: Keys an edit adds: the config's own words, in the wrong places, and hostile ones.
HOSTILE_KEYS = [
    "instance", "prune", "defaults", "daemon", "type", "path", "format", "encoding", "key",
    "keys", "for_each", "data_from", "name", "from", "data", "refresh", "keep", "timeout",
    "max_shrink", "extends", "mode", "owner", "group", "env_file", "yaml_file", "namespace",
    "", "x", "\x00", "é", "<<", "1", "${X}",
]
YAML_EXTRAS = [
    "!!int ", "!!binary ", "!!python/object/apply:os.system ", "!custom ", "&a ", "*a",
    "<<: *a\n", "? ", "\x00", "\x07", "\ufeff", "\\ud800", "%YAML 1.1\n", "---\n",
    "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9) if i else '1'}]\n" for i in range(9)),
    "[" * 200 + "]" * 200, "x: " + "- " * 100 + "\n", "extends: ", "extends: .\n",
    "extends: base.yaml\n", "${X}", "${X:-d}", "$$",
]
CONFIG_WORDS = [
    "providers:", "target:", "secrets:", "defaults:", "daemon:", "instance: ", "prune: ",
    "\n  ", "\n- ", "\n  - ", " type: file", " type: files", " path: keys.yaml",
    " directory: out", "- name: a", "from: {provider: local, key: k}", "data:", "for_each:",
    "refresh: ", "5m", "keep: ", "timeout: ", "mode: ", "'0400'", "local:", "{", "}",
]
# fmt: on
TEXT_TOKENS = palette([*TOKENS["yaml"], *YAML_EXTRAS, *CONFIG_WORDS])


def example_docs() -> list[dict[str, Any]]:
    """The example configs that are one YAML document with secrets (not the manifests)."""
    docs = []
    for path in EXAMPLE_CONFIGS:
        try:
            doc = yaml.safe_load(path.read_text())
        except yaml.YAMLError:
            continue  # a multi-document manifest
        if isinstance(doc, dict) and "secrets" in doc:
            docs.append(doc)
    return docs


EXAMPLE_DOCS = example_docs()


def descend(doc: Any, digits: bytes) -> tuple[Any, Any] | None:
    """The node that ``digits`` lead to, as (parent, key): each digit picks a child, and one
    divisible by eight stops above the bottom. ``None`` when the root has no child."""
    found = None
    node = doc
    for digit in digits:
        if not isinstance(node, dict | list) or not node or (found and digit % 8 == 0):
            break
        key = list(node)[digit % len(node)] if isinstance(node, dict) else digit % len(node)
        found, node = (node, key), node[key]
    return found


def restructured(doc: Any, program: bytes) -> Any:
    """``doc`` after the tree edits ``program`` spells, six bytes each: what (replace, drop,
    add a key, wrap, nest up to 128 deep once, a bad duration), with what, and four bytes
    that lead to the node (one level each)."""
    nested_once = False
    for at in range(0, len(program) - 5, 6):
        op, arg = program[at : at + 2]
        found = descend(doc, program[at + 2 : at + 6])
        if found is None:
            break
        parent, last = found
        kind = op % 6
        if kind == 0:
            parent[last] = HOSTILE_VALUES[arg % len(HOSTILE_VALUES)]
        elif kind == 1:
            del parent[last]
        elif kind == 2 and isinstance(parent, dict):
            parent[HOSTILE_KEYS[arg % len(HOSTILE_KEYS)]] = HOSTILE_VALUES[op % len(HOSTILE_VALUES)]
        elif kind == 3:
            parent[last] = [parent[last]] if arg % 2 else {"x": parent[last]}
        elif kind == 4 and not nested_once:
            nested_once = True  # deeper still is only more of the same (and PyYAML recurses)
            nested: Any = parent[last]
            for _ in range(arg % 128 + 1):
                nested = [nested]
            parent[last] = nested
        elif kind == 5:
            parent[last] = DURATION_GARBAGE[arg % len(DURATION_GARBAGE)]
    return doc


_DUMPER: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def dumped(doc: Any, style: int) -> str:
    """``doc`` as YAML: half the time JSON (flow style, every string quoted; PyYAML's
    representer costs more than loading the config), else block style, with non-ASCII
    characters escaped or as they are."""
    if style % 4 < 2:
        return json.dumps(doc)
    return yaml.dump(doc, Dumper=_DUMPER, allow_unicode=style % 4 == 3, width=10**6)


def structured(doc: dict[str, Any], tree: bytes, text: bytes) -> tuple[str, bytes]:
    """An example config with its tree edited, dumped in a style ``tree`` picks, then its
    text edited by ``text`` (often not at all)."""
    edited_doc = restructured(json.loads(json.dumps(doc)), tree[1:])
    source = dumped(edited_doc, tree[0] if tree else 0)
    return "fuzz-structured.yaml", edited(source, text, TEXT_TOKENS).encode("utf-8")


def soup_config(program: bytes) -> tuple[str, bytes]:
    return "fuzz-soup.yaml", spelled(program, TEXT_TOKENS).encode("utf-8")


ORIGINALS = {
    path.relative_to(EXAMPLES_DIR).as_posix(): path.read_text() for path in EXAMPLE_CONFIGS
}


def edited_example(name: str, program: bytes) -> tuple[str, bytes]:
    """An example config (in its place, so ``extends`` finds its base) with its text edited;
    an odd last byte adds a byte that isn't UTF-8."""
    raw = edited(ORIGINALS[name], program, TEXT_TOKENS).encode("utf-8")
    if program and program[-1] % 16 == 1:
        at = program[0] * len(raw) // 256
        raw = raw[:at] + b"\xff" + raw[at:]
    return name, raw


#: (the config's file name, its bytes)
CONFIGS = st.one_of(
    st.builds(
        structured,
        st.sampled_from(EXAMPLE_DOCS),
        st.binary(min_size=7, max_size=31),
        st.binary(max_size=8),
    ),
    st.binary(max_size=48).map(soup_config),
    st.builds(edited_example, st.sampled_from(sorted(ORIGINALS)), st.binary(max_size=24)),
)


class InMemory:
    """Serves ``syncd.config_yaml`` the bytes of one path; any other path from disk."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path: Path | None = None
        self.data = b""

    def serve(self, name: str, data: bytes) -> Path:
        self.path, self.data = (self.root / name).absolute(), data
        return self.path

    def read(self, path: Path) -> bytes:
        return self.data if Path(path) == self.path else read_bounded(path)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InMemory]:
    """The example configs copied once (their bases, sources and folders), each loaded once
    (plugins imported before timing), and the loader reading inputs from memory."""
    root = tmp_path_factory.mktemp("examples")
    shutil.copytree(EXAMPLES_DIR, root, dirs_exist_ok=True)
    memory = InMemory(root)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(syncd.config_yaml, "read_bounded", memory.read)
        for name, text in ORIGINALS.items():
            check_config(memory.serve(name, text.encode()), text)
        yield memory


def check_config(path: Path, text: str | bytes) -> None:
    """``load_config`` loads ``path`` or raises ``ConfigError`` whose every issue names a
    file, and a line in it whenever it names a place; nothing else escapes."""
    try:
        load_config(path, env={})
    except ConfigError as exc:
        assert exc.issues
        lines = yaml_lines(text.decode("utf-8", "replace") if isinstance(text, bytes) else text)
        for issue in exc.issues:
            assert Path(issue.file).is_absolute(), issue
            assert issue.message, issue
            assert issue.line is None or issue.line >= 1, issue
            if issue.file == str(path):
                assert issue.line is None or issue.line <= lines, issue
            if issue.location:
                assert issue.line is not None, issue


@FUZZ
@given(case=CONFIGS)
@example(case=("fuzz-structured.yaml", b"defaults:\n  keep: " + b"1" * 4301 + b"\n"))
@example(case=("fuzz-soup.yaml", b"providers: {"))  # was "line 2" of a one-line file
@example(case=("fuzz-soup.yaml", b"? "))  # an empty key, also placed after the last line
def test_any_config_loads_or_names_the_file_and_line(served, case):
    name, data = case
    check_config(served.serve(name, data), data)


CONFIG_CANARY_TEMPLATES: list[Callable[[str], str]] = [
    lambda q: f"  extra: !!int {q}\n",
    lambda q: f"  extra: !!binary {q}\n",
    lambda q: f"  extra: !custom {q}\n",
    lambda q: f"  extra: {q[:-1]}",
    lambda q: f"  extra: {q}\n\x00\n",
    lambda q: f"  extra: {q}\n\x07\n",
    lambda q: f"  extra: {q} {q}\n",
]


@PROPERTY
@given(template=st.sampled_from(CONFIG_CANARY_TEMPLATES), around=st.text(max_size=8))
def test_the_config_reader_never_quotes_a_value(served, template, around):
    value = around + CANARY + around
    text = (
        "providers:\n  local: {type: file, path: keys.yaml}\n"
        "target: {type: files, directory: out}\nsecrets: []\ndefaults:\n"
        + template(json.dumps(value, ensure_ascii=False))
    )
    path = served.serve("fuzz-canary.yaml", text.encode("utf-8", "surrogatepass"))
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert CANARY not in str(caught.value)
