"""``template`` / ``template_file``: one value rendered from a ``data`` bundle, in a sandbox.

A template is written by the config's author, but what it renders are provider values, and a
mistake in it (a loop that never ends, a value repeated a billion times) must fail its own
secret quickly, never hang or exhaust the daemon. So templates run in Jinja2's immutable
sandbox (no access to internals), with ``StrictUndefined``, no loader (``include``,
``import`` and ``extends`` have nothing to read), no environment, a handful of filters, and
three bounds on one render:

- ``range`` may hand out at most ``MAX_ITERATIONS`` numbers in total, repeating a text or
  list (``*``) and raising to a power (``**``) are refused beyond what a config could need,
  and ``%``-formatting a text and the text methods that pad or replace are refused;
- the render stops once its output passes the target's size limit;
- the render stops after ``TIME_BUDGET`` seconds of running template code (a line-level
  trace on the template's own frames), so a loop over nested lists that never calls
  ``range`` stops too.

No error message holds a value: a syntax error quotes the template (config, not a secret)
and a render error says only what kind of problem it was, at which template line.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import FrameType, TracebackType
from typing import Any

import jinja2
from jinja2 import meta, nodes
from jinja2.exceptions import SecurityError
from jinja2.filters import do_indent
from jinja2.sandbox import ImmutableSandboxedEnvironment, safe_range

#: ``range`` numbers one render may use, over all its loops together.
MAX_ITERATIONS = 100_000
#: Seconds of template code one render may run.
TIME_BUDGET = 2.0
#: The longest text or list a ``*`` may make, and the largest ``**`` exponent.
MAX_REPEAT = 64 * 1024
MAX_EXPONENT = 64
#: ``indent`` wider than this is a mistake (and a way to make huge output from nothing).
MAX_INDENT = 256
#: The frames of template code carry this file name (what the time budget traces).
_FILENAME = "<syncd template>"


class TemplateError(ValueError):
    """A template that can't be compiled or rendered; the message names where, never a value."""


class _Exhausted(Exception):
    """A render bound was reached (the message says which)."""


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} needs text")
    return value


def _b64encode(value: object) -> str:
    return base64.b64encode(_text(value, "b64encode").encode("utf-8")).decode("ascii")


def _b64decode(value: object) -> str:
    try:
        return base64.b64decode(_text(value, "b64decode"), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise ValueError("b64decode needs base64 of UTF-8 text") from exc


def _urlencode(value: object) -> str:
    """Percent-encode everything but unreserved characters: a password with ``/``, ``@`` or
    ``:`` stays one URL component (Jinja's own ``urlencode`` keeps ``/``)."""
    return urllib.parse.quote(_text(value, "urlencode"), safe="")


def _tojson(value: object) -> str:
    """JSON of a value, for a ``config.json`` (Jinja's own escapes ``<>&'`` for HTML)."""
    return json.dumps(value, ensure_ascii=False)


def _indent(value: object, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
    size = width if isinstance(width, int) else len(str(width))
    if size > MAX_INDENT:
        raise _Exhausted(f"it indents wider than {MAX_INDENT}")
    return do_indent(_text(value, "indent"), width, first, blank)


#: The methods of a text a template may call.
_TEXT_METHODS = frozenset(
    {
        "capitalize",
        "casefold",
        "count",
        "endswith",
        "find",
        "index",
        "isalnum",
        "isalpha",
        "isdigit",
        "islower",
        "isspace",
        "isupper",
        "join",
        "lower",
        "lstrip",
        "partition",
        "removeprefix",
        "removesuffix",
        "rfind",
        "rindex",
        "rpartition",
        "rsplit",
        "rstrip",
        "split",
        "splitlines",
        "startswith",
        "strip",
        "swapcase",
        "title",
        "upper",
    }
)


class _Sandbox(ImmutableSandboxedEnvironment):
    """The sandbox, with the operators that make big values from small ones bounded."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        """Refuse repeats and powers beyond any config's need, and ``%`` on texts."""
        if operator == "**" and isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
            raise _Exhausted(f"it raises to a power above {MAX_EXPONENT}")
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if (
                    isinstance(seq, str | list | tuple)
                    and isinstance(times, int)
                    and len(seq) * times > MAX_REPEAT
                ):
                    raise _Exhausted(f"it repeats to more than {MAX_REPEAT}")
        if operator == "%" and isinstance(left, str):
            raise SecurityError("%-formatting a text is not allowed (use ~ and filters)")
        return super().call_binop(context, operator, left, right)

    def wrap_str_format(self, value: Any) -> None:
        """No ``str.format``: the sandbox's own version still pads to any width."""
        del value

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        """Of a text's methods only those that can't make it much longer: ``center(10**9)``,
        ``zfill``, ``expandtabs``, ``replace`` and ``format`` could build gigabytes in one
        call, before any bound is looked at."""
        if isinstance(obj, str) and attr not in _TEXT_METHODS:
            return False
        return super().is_safe_attribute(obj, attr, value)


#: The filters a template may use.
FILTERS: dict[str, Callable[..., Any]] = {
    "b64encode": _b64encode,
    "b64decode": _b64decode,
    "urlencode": _urlencode,
    "tojson": _tojson,
    "indent": _indent,
}
_BUILTIN_FILTERS = ("trim", "upper", "lower", "default")


def _environment() -> _Sandbox:
    env = _Sandbox(
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )
    builtin = env.filters
    env.filters = {**{name: builtin[name] for name in _BUILTIN_FILTERS}, **FILTERS}
    env.globals = {}  # no range/dict/lipsum/cycler/joiner/namespace: range is per render
    return env


_ENV = _environment()
#: The statements that would read another template: refused when a template is compiled.
_READS: dict[type[nodes.Node], str] = {
    nodes.Include: "include",
    nodes.Import: "import",
    nodes.FromImport: "from ... import",
    nodes.Extends: "extends",
}


@dataclass(frozen=True)
class SecretTemplate:
    """A compiled template and where it was written (for messages)."""

    #: ``/etc/syncd.yaml:12 (secrets[2].template)``, or for a file
    #: ``/etc/app.ini.j2 (secrets[2].template_file in /etc/syncd.yaml:12)``
    origin: str
    #: a digest of the template's text, a rendering setting: an edit makes a new version
    digest: str
    #: the names the template reads: each must be a key of the bundle
    variables: frozenset[str]
    compiled: jinja2.Template = field(repr=False, compare=False)


def compile_template(source: str, origin: str) -> SecretTemplate:
    """Compile ``source``; a syntax error is a ``TemplateError`` naming its line."""
    try:
        tree = _ENV.parse(source)
        code = _ENV.compile(tree, filename=_FILENAME)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"template {origin}, line {exc.lineno}: {exc.message}") from None
    for node in tree.find_all((nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends)):
        word = _READS[type(node)]
        raise TemplateError(
            f"template {origin}, line {node.lineno}: '{word}' is not allowed "
            "(a template reads only its secret's values, never files)"
        )
    # Jinja resolves a filter or test inside an ``if`` only when it runs: check them all now
    for used in tree.find_all((nodes.Filter, nodes.Test)):
        assert isinstance(used, nodes.Filter | nodes.Test)
        known = _ENV.filters if isinstance(used, nodes.Filter) else _ENV.tests
        if used.name not in known:
            kind = "filter" if isinstance(used, nodes.Filter) else "test"
            offered = ", ".join(sorted(known))
            raise TemplateError(
                f"template {origin}, line {used.lineno}: no {kind} {used.name!r} "
                f"(syncd offers: {offered})"
            )
    compiled = _ENV.template_class.from_code(_ENV, code, _ENV.make_globals(None), None)
    return SecretTemplate(
        origin=origin,
        digest=hashlib.sha256(source.encode("utf-8")).hexdigest()[:16],
        variables=frozenset(meta.find_undeclared_variables(tree)) - {"range"},
        compiled=compiled,
    )


def name_lines(source: str) -> dict[str, int]:
    """The first template line that reads each free name (for a config error)."""
    tree = _ENV.parse(source)
    free = meta.find_undeclared_variables(tree)
    lines: dict[str, int] = {}
    for node in tree.find_all(nodes.Name):
        if node.name in free and node.ctx == "load":
            lines.setdefault(node.name, node.lineno)
    return lines


class _Budget:
    """The bounds of one render: ``range`` numbers and running time."""

    def __init__(self) -> None:
        self.left = MAX_ITERATIONS
        self.deadline = time.monotonic() + TIME_BUDGET

    def range(self, *args: int) -> range:
        try:
            numbers = safe_range(*args)
        except OverflowError:
            raise _Exhausted(f"it loops over more than {MAX_ITERATIONS} numbers") from None
        self.left -= len(numbers)
        if self.left < 0:
            raise _Exhausted(f"it loops over more than {MAX_ITERATIONS} numbers")
        return numbers

    def trace(self, frame: FrameType, event: str, arg: object) -> Callable[..., Any] | None:
        """``sys.settrace``: trace the template's own frames line by line, nothing else."""
        if frame.f_code.co_filename != _FILENAME:
            return None
        return self._line

    def _line(self, frame: FrameType, event: str, arg: object) -> Callable[..., Any] | None:
        if time.monotonic() > self.deadline:
            raise _Exhausted(f"it runs longer than {TIME_BUDGET:g}s")
        return self._line


def render_template(
    template: SecretTemplate, secret: str, values: Mapping[str, bytes], *, limit: int
) -> bytes:
    """Render ``template`` over the bundle's values; at most ``limit`` bytes of output."""
    texts: dict[str, str] = {}
    for key, value in values.items():
        try:
            texts[key] = value.decode("utf-8")
        except UnicodeDecodeError:
            raise TemplateError(
                f"secret {secret!r}: template {template.origin}: key {key!r} is binary; "
                "a template needs text"
            ) from None
    budget = _Budget()
    chunks: list[bytes] = []
    size = 0
    previous = sys.gettrace()
    sys.settrace(budget.trace)
    try:
        stream: Iterator[str] = template.compiled.generate({**texts, "range": budget.range})
        for chunk in stream:
            data = chunk.encode("utf-8")
            size += len(data)
            if size > limit:
                raise _Exhausted(f"it renders more than the target's limit of {limit} bytes")
            chunks.append(data)
    except Exception as exc:  # noqa: BLE001 - every template failure is one clear error
        line = _line(exc)
        where = f"template {template.origin}" + (f", line {line}" if line is not None else "")
        raise TemplateError(f"secret {secret!r}: {where}: {_what(exc)}") from None
    finally:
        sys.settrace(previous)
    return b"".join(chunks)


def _line(exc: BaseException) -> int | None:
    """The template line the error happened at (Jinja rewrites the traceback to it)."""
    line: int | None = None
    tb: TracebackType | None = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == _FILENAME:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _what(exc: BaseException) -> str:
    """What went wrong, in words that can't hold a value (an exception's own message can:
    ``{{ {}[password] }}`` names the missing key)."""
    if isinstance(exc, _Exhausted):
        return f"stopped: {exc}"
    if isinstance(exc, jinja2.UndefinedError):
        return "reads a name, attribute or item that is not defined"
    if isinstance(exc, SecurityError):
        return "uses a construct the sandbox forbids (internals, %-formatting, big ranges)"
    if isinstance(exc, jinja2.TemplateError):
        return f"{type(exc).__name__} (a template feature syncd does not offer)"
    return f"{type(exc).__name__} while rendering (details withheld: they may hold a value)"


__all__ = [
    "FILTERS",
    "MAX_ITERATIONS",
    "TIME_BUDGET",
    "SecretTemplate",
    "TemplateError",
    "compile_template",
    "name_lines",
    "render_template",
]
