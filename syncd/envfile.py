"""``.env`` files: the parser the file provider reads them with and the writer that renders
``format: env`` bundles and the files target's ``env_file``.

Both live here so that what syncd writes, syncd (and Compose, and a shell) reads back exactly:
``parse_env(render_env(d)) == d`` for any text values.
"""

from __future__ import annotations

import re


class EnvFileError(ValueError):
    """The file doesn't parse; the message names the line when it can, never its content."""


_ENV_LINE = re.compile(r"^\s*(?:export\s+)?(?P<key>[A-Za-z_][A-Za-z0-9_.-]*)\s*=\s*(?P<rest>.*)$")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$"}


def parse_env(text: str) -> dict[str, str]:
    """Parse a ``.env`` file: ``KEY=VALUE``, ``export``, quotes, comments and blank lines.

    Errors name the line (never its content, which may be a secret).
    """
    result: dict[str, str] = {}
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        number = index + 1
        index += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _ENV_LINE.match(line)
        if match is None:
            raise EnvFileError(f"line {number}: expected KEY=VALUE")
        key, rest = match["key"], match["rest"]
        if rest.startswith(("'", '"')):
            quote = rest[0]
            body = rest[1:]
            # a quoted value may span lines until its closing quote
            while _closing_quote(body, quote) < 0 and index < len(lines):
                body += "\n" + lines[index]
                index += 1
            end = _closing_quote(body, quote)
            if end < 0:
                raise EnvFileError(f"line {number}: unterminated {quote} quote")
            tail = body[end + 1 :].strip()
            if tail and not tail.startswith("#"):
                raise EnvFileError(f"line {number}: unexpected text after the closing quote")
            value = body[:end]
            if quote == '"':
                value = re.sub(r"\\(.)", lambda m: _ESCAPES.get(m[1], "\\" + m[1]), value)
        else:
            value = re.split(r"\s+#", rest, maxsplit=1)[0].strip()
        result[key] = value
    return result


def render_env(values: dict[str, str]) -> str:
    """``KEY=value`` lines; values with spaces, quotes or newlines are double-quoted."""
    lines = []
    for key in sorted(values):
        value = values[key]
        if value and all(c.isalnum() or c in "-_./:@+=,%^~" for c in value):
            lines.append(f"{key}={value}")
        else:
            escaped = (
                value.replace("\\", "\\\\")
                .replace('"', '\\"')
                .replace("\n", "\\n")
                .replace("$", "\\$")
            )
            lines.append(f'{key}="{escaped}"')
    return "\n".join(lines) + "\n"


def _closing_quote(body: str, quote: str) -> int:
    escaped = False
    for pos, char in enumerate(body):
        if escaped:
            escaped = False
        elif char == "\\" and quote == '"':
            escaped = True
        elif char == quote:
            return pos
    return -1
