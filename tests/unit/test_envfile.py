"""The ``.env`` parser and writer: exact round trips, lines split only at ``\\n``, linear cost.

The round trip over generated values is a property test in ``test_fuzz_inputs.py``; these
are the classes of input behind each defect, spelled out.
"""

from __future__ import annotations

import contextlib
import sys
import time

import pytest

from syncd.envfile import EnvFileError, parse_env, render_env
from tests.conftest import new_value

#: Every character ``str.splitlines`` ends a line at: the parser must end lines only at \n.
LINE_BREAKS = [chr(c) for c in range(sys.maxunicode + 1) if len(f"a{chr(c)}b".splitlines()) > 1]


@pytest.mark.parametrize("char", LINE_BREAKS, ids=[f"U+{ord(c):04X}" for c in LINE_BREAKS])
def test_every_line_break_character_round_trips(char):
    values = {
        "INSIDE": f"a{char}b",
        "ALONE": char,
        "AT_ENDS": f"{char}{new_value()}{char}",
        "WITH_QUOTE": f"it's{char}",
        "WITH_CRLF": f"x\r\n{char}y",
    }
    assert parse_env(render_env(values)) == values


@pytest.mark.parametrize("char", sorted(set(LINE_BREAKS) - {"\n", "\r"}))
def test_a_hand_written_line_ends_only_at_newline(char):
    assert parse_env(f"A=a{char}b\nB=2\n") == {"A": f"a{char}b", "B": "2"}


def test_crlf_files_read_like_lf_files():
    text = "A=1\r\nB='two'\r\nC=\"multi\r\nline\"\r\n# note\r\n\r\nD=4 # c\r\n"
    assert parse_env(text) == {"A": "1", "B": "two", "C": "multi\nline", "D": "4"}


@pytest.mark.parametrize(
    ("values", "line"),
    [
        ({"A": "abc-1.2_x/y:z@w+v=u,t%s^r"}, "A=abc-1.2_x/y:z@w+v=u,t%s^r"),
        ({"A": ""}, "A=''"),
        ({"A": " padded "}, "A=' padded '"),
        ({"A": '$HOME #not a comment "q"'}, "A='$HOME #not a comment \"q\"'"),
        ({"A": "it's"}, 'A="it\'s"'),
        ({"A": "a\\b"}, 'A="a\\\\b"'),
        ({"A": 'a\nb\rc$d"e'}, 'A="a\\nb\\rc\\$d\\"e"'),
        ({"A": "tab\tand\x85raw'"}, 'A="tab\tand\x85raw\'"'),
    ],
)
def test_render_picks_the_plainest_form_a_dotenv_reader_takes_literally(values, line):
    text = render_env(values)
    assert text == line + "\n"
    assert parse_env(text) == values


@pytest.mark.parametrize("key", ["", "1A", "A B", "A=B", "A\nB", "A'", "é", "-A", "A$"])
def test_render_refuses_a_key_it_cant_read_back(key):
    with pytest.raises(ValueError, match=r"can't be a \.env variable name"):
        render_env({key: "v"})


@pytest.mark.parametrize("key", ["A", "_a", "a.b-c_1", "export", "Z9"])
def test_render_accepts_every_key_the_parser_reads(key):
    assert parse_env(render_env({key: "v v"})) == {key: "v v"}


def test_comment_rules():
    text = "A= # only a comment\nB=#not-a-comment\nC=v#w # c\nD='x' # c\nE=\"y\"#c\n"
    assert parse_env(text) == {"A": "", "B": "#not-a-comment", "C": "v#w", "D": "x", "E": "y"}


def test_a_key_given_twice_is_an_error_naming_both_lines():
    with pytest.raises(EnvFileError, match=r"^line 3: A is set again \(first on line 1\)$"):
        parse_env("A=1\nB=2\nA=3\n")


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("A={v}\n{v}\n", "line 2: expected KEY=VALUE"),
        ('A="{v}\n', 'line 1: unterminated " quote'),
        ("A='{v}\n\n", "line 1: unterminated ' quote"),
        ('A="{v}" {v}\n', "line 1: unexpected text after the closing quote"),
        ('A="x\n{v}\n" {v}\n', "line 3: unexpected text after the closing quote"),
        ("A={v}\nA={v}\n", "line 2: A is set again (first on line 1)"),
    ],
)
def test_errors_name_the_line_never_the_content(template, message, canary):
    with pytest.raises(EnvFileError) as caught:
        parse_env(template.format(v=canary))
    assert str(caught.value) == message
    assert canary not in str(caught.value)


BIG = 100_000


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    "text",
    [
        'A="' + "x\n" * (BIG // 2),  # an unterminated quote over many lines (was quadratic)
        "A='" + "x\n" * (BIG // 2),
        'A="' + "\\" * BIG,  # one long run of backslashes, no closing quote
        'A="' + '\\"' * (BIG // 2),  # every quote escaped
        "A=x" + " " * BIG + "y",  # whitespace that a `\s+#` search rescans
        "A=x" + " #" * (BIG // 2),
        "A=" + "a" * BIG,
        "A=1\n" * (BIG // 4),  # duplicates: found on the second line
        "\n".join(f"K{i}='{i}'" for i in range(BIG // 8)),
        " " * BIG,
        "export " * (BIG // 7),
    ],
    ids=lambda t: f"{t[:6]!r}*{len(t)}",
)
def test_any_100k_input_parses_well_under_a_second(text):
    started = time.perf_counter()
    with contextlib.suppress(EnvFileError):
        parse_env(text)
    assert time.perf_counter() - started < 1.0
