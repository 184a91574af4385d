"""``.env`` files: the parser the file provider reads them with and the writer that renders
``format: env`` bundles and the files target's ``env_file``.

Both live here so that what syncd writes, syncd reads back exactly: ``parse_env(render_env(d))
== d`` for every text value (any Unicode, control characters, quotes, ``$``, ``#``,
backslashes, surrounding spaces, empty) under every key ``render_env`` accepts.

Lines end at ``\\n`` (or ``\\r\\n``) only. ``str.splitlines`` also splits at ``\\r``, ``\\v``,
``\\f``, ``\\x1c``-``\\x1e``, ``\\x85``, ``\\u2028`` and ``\\u2029``, which would cut a value
holding one of them in two.

The writer picks, per value, the plainest form that reads back exactly:

- bare (``KEY=value``) for a non-empty value of letters, digits and ``-_./:@+=,%^``;
- single quotes (``KEY='value'``) when the value has no ``'``, ``\\``, ``\\n`` or ``\\r``:
  no escapes, and Compose expands nothing in them;
- double quotes otherwise, escaping ``\\\\``, ``\\"``, ``\\n``, ``\\r`` (python-dotenv ends a
  line at a bare ``\\r``) and ``\\$``; every other character (tab, ``\\v``, ``\\x85``,
  ``\\u2028``...) is written as itself.

Docker Compose's reader (compose-go v2.16.2, checked on generated values) reads all three
forms back exactly. python-dotenv reads them back too, except that it keeps ``\\$`` as two
characters and expands ``${NAME}`` in any value unless it is called with ``interpolate=False``.
"""

from __future__ import annotations

import re

#: A key ``parse_env`` reads (and so the only keys ``render_env`` writes).
ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")

_ASSIGNMENT = re.compile(r"\s*(?:export\s+)?(?P<key>[A-Za-z_][A-Za-z0-9_.-]*)\s*=(?P<space>\s*)")
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$"}
_BARE = frozenset("-_./:@+=,%^")
_NOT_SINGLE = frozenset("'\\\n\r")
_DOUBLE = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "$": "\\$"})


class EnvFileError(ValueError):
    """The text doesn't parse as ``.env``; ``line`` says where, the message never quotes it."""

    def __init__(self, line: int, reason: str) -> None:
        self.line = line
        self.reason = reason
        super().__init__(f"line {line}: {reason}")


def parse_env(text: str) -> dict[str, str]:
    """Parse a ``.env`` file: ``KEY=VALUE``, ``export``, quotes, comments and blank lines.

    A quoted value may span lines. In double quotes ``\\n``, ``\\t``, ``\\r``, ``\\"``,
    ``\\\\`` and ``\\$`` are escapes (any other backslash stays); single quotes take
    everything as written. An unquoted value ends at a ``#`` that follows whitespace.
    A key given twice is an error, not "the last one wins": a merge mistake in a secrets
    file should be seen, not silently resolved.

    One pass over the text: the cost grows with its size, whatever it holds (an unterminated
    quote in a large file included). Errors name the line, never its content.
    """
    result: dict[str, str] = {}
    first_line: dict[str, int] = {}
    pos, number, size = 0, 1, len(text)
    while pos < size:
        end = _line_end(text, pos)
        line = text[pos:end]
        start = number
        if not line.strip() or line.lstrip().startswith("#"):
            pos, number = end + 1, number + 1
            continue
        match = _ASSIGNMENT.match(line)
        if match is None:
            raise EnvFileError(number, "expected KEY=VALUE")
        key = match["key"]
        value_at = pos + match.end()
        quote = text[value_at] if value_at < end else ""
        if quote in ("'", '"'):
            close = _closing_quote(text, value_at + 1, quote)
            if close < 0:
                raise EnvFileError(number, f"unterminated {quote} quote")
            body = text[value_at + 1 : close]
            number += body.count("\n")
            end = _line_end(text, close)
            tail = text[close + 1 : end].strip()
            if tail and not tail.startswith("#"):
                raise EnvFileError(number, "unexpected text after the closing quote")
            value = body.replace("\r\n", "\n")
            if quote == '"':
                value = _ESCAPE.sub(lambda m: _ESCAPES.get(m[1], m[0]), value)
        else:
            value = _uncommented(line[match.start("space") :]).strip()
        if key in first_line:
            raise EnvFileError(start, f"{key} is set again (first on line {first_line[key]})")
        first_line[key] = start
        result[key] = value
        pos, number = end + 1, number + 1
    return result


def render_env(values: dict[str, str]) -> str:
    """``KEY=value`` lines, sorted by key, that ``parse_env`` (and Compose) read back exactly.

    A key ``parse_env`` couldn't read back (``ENV_KEY``) is a ``ValueError`` naming it, not a
    line that corrupts the file.
    """
    lines = []
    for key in sorted(values):
        if not ENV_KEY.fullmatch(key):
            raise ValueError(
                f"key {key!r} can't be a .env variable name "
                "(letters, digits, '_', '.' and '-', not starting with a digit)"
            )
        value = values[key]
        if value and all(c.isalnum() or c in _BARE for c in value):
            lines.append(f"{key}={value}")
        elif _NOT_SINGLE.isdisjoint(value):
            lines.append(f"{key}='{value}'")
        else:
            lines.append(f'{key}="{value.translate(_DOUBLE)}"')
    return "\n".join(lines) + "\n"


def _line_end(text: str, pos: int) -> int:
    """Where the line starting at ``pos`` ends: its ``\\n``, or the end of the text."""
    end = text.find("\n", pos)
    return len(text) if end < 0 else end


def _closing_quote(text: str, start: int, quote: str) -> int:
    """The position of the quote that closes a value opened just before ``start``, or -1.

    In double quotes a quote preceded by an odd number of backslashes is escaped. Each
    character is looked at a bounded number of times, so this is linear in the text.
    """
    pos = start
    while (pos := text.find(quote, pos)) >= 0:
        if quote == "'":
            return pos
        back = pos
        while back > start and text[back - 1] == "\\":
            back -= 1
        if (pos - back) % 2 == 0:
            return pos
        pos += 1
    return -1


def _uncommented(rest: str) -> str:
    """``rest`` up to the first ``#`` that follows whitespace (a comment); linear, no regex.

    ``rest`` starts right after the ``=``, so ``KEY= # note`` is empty and ``KEY=#x`` is ``#x``.
    """
    pos = 0
    while (pos := rest.find("#", pos)) > 0:
        if rest[pos - 1].isspace():
            return rest[:pos]
        pos += 1
    return rest
