"""The file provider's four parsers on any text, ``EXAMPLES`` (10,000) inputs each.

Each input is parsed in memory, the way the provider parses a file it has read: the result
is a mapping of string keys to entries, or the parser's own error with a line inside the
text, never another exception, in well under a second. That errors name the file is the
provider's part (``test_fuzz_inputs.py`` reads real files).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import example, given

from providers.file import FileFormatError, Unusable, parse_chit, parse_json, parse_yaml
from syncd.envfile import EnvFileError, parse_env
from tests.unit.test_fuzz_inputs import FUZZ, texts, yaml_lines


def parses_or_names_the_line(parse: Callable[[str], dict[str, Any]], text: str, lines: int) -> None:
    """``parse(text)`` gives string keys and entries, or its own error on a line of the text."""
    try:
        entries = parse(text)
    except (FileFormatError, EnvFileError) as exc:
        assert exc.line is None or 1 <= exc.line <= lines, exc
    else:
        assert all(isinstance(key, str) and key for key in entries)
        assert all(isinstance(entry, str | bytes | Unusable) for entry in entries.values())


@FUZZ
@given(text=texts("yaml"))
@example(text="k: !!int " + "1" * 5000)
@example(text="k: {")  # libyaml put the end of this one-line text on line 2
@example(text="---\n#")  # and the empty document of this one on line 3
@example(text="? ")  # and its empty key on line 2
def test_yaml_parses_or_names_the_line(text):
    parses_or_names_the_line(parse_yaml, text, yaml_lines(text))


@FUZZ
@given(text=texts("env"))
def test_env_parses_or_names_the_line(text):
    parses_or_names_the_line(parse_env, text, text.count("\n") + 1)


@FUZZ
@given(text=texts("json"))
def test_json_parses_or_names_the_line(text):
    parses_or_names_the_line(parse_json, text, text.count("\n") + 1)


@FUZZ
@given(text=texts("chit"))
def test_chit_parses_or_names_the_point(text):
    parses_or_names_the_line(parse_chit, text, text.count("\n") + 1)
