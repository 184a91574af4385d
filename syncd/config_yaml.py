"""Reading a config file's YAML into plain data, remembering where every value was written.

The config is hostile input like any other: it may be truncated, generated, or written by
someone who meant something else. So this reader is stricter than a YAML library's default:

- **Scalars mean what they look like, YAML 1.2 style.** ``true``/``false``, ``null``/``~``,
  decimal integers, ``0o17`` and ``0x1F``, floats with a point or an exponent and
  ``.inf``/``.nan``; everything else is a string, including digits with a leading zero.
  YAML 1.1's surprises are gone: ``0755`` stays the string ``0755``, ``12:30:45`` is not
  45045, ``on``/``yes`` are not booleans, ``2001-13-45`` is not a date (and can't crash the
  loader).
- **No explicit tags** (``!!int``, ``!!binary``, ``!custom``): a tag changes how a value is
  read, which a config never needs; the error names the line and never quotes the value.
- **Aliases are bounded.** A recursive alias is refused, and so is a document whose aliases
  expand it far beyond its written size (the "billion laughs" shape), before anything
  downstream walks the expansion. Nesting is bounded too.
- **Every error names the file and line**, including the YAML reader's own (a NUL byte).

``${VAR}`` and ``${VAR:-default}`` expand environment variables in every string (``$$`` is a
literal ``$``). ``extends: base.yaml`` merges this file over a base config.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from syncd.errors import ConfigError, ConfigIssue
from syncd.reading import read_bounded
from syncd.yaml_depth import MAX_NESTING, too_deep

Loc = tuple[str | int, ...]

#: libyaml's parser when PyYAML was built with it (50x faster on a 10,000-secret config).
_BASE_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_VAR = re.compile(r"\$(?:\$|\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\})")

#: Deepest nesting of mappings and lists a config may have.
MAX_DEPTH = 64
#: Aliases may make a document at most this many times bigger than what is written...
MAX_EXPANSION = 10
#: ...plus this many nodes, so small configs with a few shared anchors always load.
EXPANSION_ALLOWANCE = 10_000
#: Longest ``extends`` chain.
MAX_EXTENDS = 10

_TAG = "syncd:"
_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_INT = re.compile(r"^(?:[-+]?(?:0|[1-9][0-9]*)|0o[0-7]+|0x[0-9a-fA-F]+)$")
#: a float has a point or an exponent; digits with a leading zero (``0755``) stay a string
_FLOAT = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|(?:0|[1-9][0-9]*)\.[0-9]*)(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?(?:0|[1-9][0-9]*)[eE][-+]?[0-9]+"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)


class _Loader(_BASE_LOADER):  # type: ignore[valid-type,misc]
    """Composes nodes only; plain scalars get syncd's own YAML 1.2 core tags.

    The composer asks ``resolve`` only for nodes without an explicit tag, so any node whose
    tag doesn't start with ``syncd:`` carried one in the document.
    """

    def resolve(self, kind: type[yaml.Node], value: str | None, implicit: Any) -> str:
        if kind is not yaml.ScalarNode:
            return f"{_TAG}{'map' if kind is yaml.MappingNode else 'seq'}"
        if not implicit[0]:  # quoted: always a string
            return f"{_TAG}str"
        text = value or ""
        for name, pattern in (("null", _NULL), ("bool", _BOOL), ("int", _INT), ("float", _FLOAT)):
            if pattern.match(text):
                return f"{_TAG}{name}"
        return f"{_TAG}str"


def _scalar(node: yaml.ScalarNode) -> Any:
    kind = node.tag.removeprefix(_TAG)
    text = node.value
    if kind == "null":
        return None
    if kind == "bool":
        return text.lower() == "true"
    if kind == "int":
        if text.startswith(("0o", "0x")):
            return int(text[2:], 8 if text[1] == "o" else 16)
        return int(text)
    if kind == "float":
        lowered = text.lower()
        return float(lowered.replace(".", "") if lowered.lstrip("+-") in (".inf", ".nan") else text)
    return text


class Reader:
    """Builds plain data from a YAML node tree, remembering each path's line number."""

    def __init__(self, filename: str, env: dict[str, str]) -> None:
        self.filename = filename
        self.env = env
        #: where each path was written: (file, line); files differ once ``extends`` merged
        self.lines: dict[Loc, tuple[str, int]] = {}
        self.issues: list[ConfigIssue] = []
        self._visits = 0
        self._budget = 0
        self._path: set[int] = set()
        #: the text's last line: libyaml places the end of a text without a final line
        #: break (where an empty value or key is) on the line after it
        self.last_line: int | None = None

    def issue(self, loc: Loc, message: str) -> None:
        """Record a problem at ``loc`` (its line is looked up)."""
        file, line = self.where(loc)
        self.issues.append(ConfigIssue(file, format_loc(loc), message, line))

    def where(self, loc: Loc) -> tuple[str, int | None]:
        """The file and line that wrote ``loc`` (or its nearest written parent)."""
        for end in range(len(loc), -1, -1):
            if loc[:end] in self.lines:
                return self.lines[loc[:end]]
        return self.filename, None

    def mark(self, loc: Loc, node: yaml.Node) -> None:
        """Remember that ``loc`` was written at ``node``'s line."""
        line = node.start_mark.line + 1
        self.lines[loc] = (self.filename, min(line, self.last_line or line))

    def read_document(self, node: yaml.Node) -> Any:
        """The plain data of a whole document (issues recorded, never raised)."""
        self._budget = MAX_EXPANSION * _count_nodes(node) + EXPANSION_ALLOWANCE
        return self._read(node, ())

    def _read(self, node: yaml.Node, loc: Loc) -> Any:
        self.mark(loc, node)
        self._visits += 1
        if self._visits > self._budget:
            raise _Stop("aliases expand the config far beyond its written size", node)
        if not node.tag.startswith(_TAG):
            self.issue(loc, f"YAML tag {_short_tag(node.tag)} is not allowed; quote the value")
            return None
        if isinstance(node, yaml.ScalarNode):
            try:
                value = _scalar(node)
            except ValueError:  # a decimal integer longer than Python converts (4300 digits)
                self.issue(loc, "the number has too many digits")
                return None
            return self.expand(value, loc) if isinstance(value, str) else value
        if len(loc) >= MAX_DEPTH:
            raise _Stop(f"nested more than {MAX_DEPTH} levels deep", node)
        if id(node) in self._path:
            raise _Stop("a recursive alias (an anchor used inside itself)", node)
        self._path.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, loc)
            return [self._read(child, (*loc, i)) for i, child in enumerate(node.value)]
        finally:
            self._path.discard(id(node))

    def _mapping(self, node: yaml.MappingNode, loc: Loc) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or not key_node.tag.startswith(_TAG):
                where = (*loc, f"<key at line {key_node.start_mark.line + 1}>")
                self.mark(where, key_node)
                self.issue(where, "a key must be a plain string")
                continue
            key = key_node.value
            if key == "<<" and not key_node.style:
                self.mark(loc, key_node)
                self.issue(loc, "YAML merge keys (<<) are not supported; write the keys out")
                continue
            if key in result:
                self.mark((*loc, key), key_node)
                self.issue((*loc, key), "duplicate key")
                continue
            result[key] = self._read(value_node, (*loc, key))
        return result

    def expand(self, text: str, loc: Loc) -> str:
        """``${VAR}``, ``${VAR:-default}`` and ``$$`` in ``text``."""

        def substitute(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            name, default = match.group(1), match.group(2)
            if name in self.env:
                return self.env[name]
            if default is not None:
                return default
            self.issue(loc, f"environment variable {name} is not set (use ${{{name}:-default}})")
            return ""

        return _VAR.sub(substitute, text)


class _Stop(Exception):
    """The document can't be read any further (the reason names no value)."""

    def __init__(self, reason: str, node: yaml.Node) -> None:
        super().__init__(reason)
        self.line = node.start_mark.line + 1


def _short_tag(tag: str) -> str:
    return "!!" + tag.removeprefix("tag:yaml.org,2002:") if tag.startswith("tag:yaml") else tag


def _count_nodes(root: yaml.Node) -> int:
    """Distinct nodes in the composed graph (what is written, aliases counted once)."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                stack.extend((key, value))
    return len(seen)


def format_loc(loc: Loc) -> str:
    """``('secrets', 2, 'from', 'provider')`` -> ``secrets[2].from.provider``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


_LINE_BREAK = re.compile("\r\n|[\n\r\x85\u2028\u2029]")


def line_count(text: str) -> int:
    """How many lines YAML sees in ``text``."""
    return len(_LINE_BREAK.findall(text)) + 1


def yaml_position(mark: yaml.Mark, text: str) -> tuple[int, int]:
    """The 1-based (line, column) of a YAML error ``mark`` in ``text``.

    libyaml marks the end of a text that has no final line break on a line after the last
    one (``k: {`` fails "on line 2"): that is the end of the last line.
    """
    line, column = int(mark.line) + 1, int(mark.column) + 1
    lines = _LINE_BREAK.split(text)  # the breaks YAML counts
    if line > len(lines):
        return len(lines), len(lines[-1]) + 1
    return line, column


def _yaml_line(exc: yaml.YAMLError, text: str) -> int | None:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is not None:
        return yaml_position(mark, text)[0]
    position = getattr(exc, "position", None)  # the reader's errors (a NUL byte) have this
    if isinstance(position, int):
        return text.count("\n", 0, position) + 1
    return None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    reason = getattr(exc, "reason", None)  # ReaderError: never quote the character itself
    if reason:
        return f"invalid YAML: {reason}"
    return f"invalid YAML: {getattr(exc, 'problem', None) or type(exc).__name__}"


def read_yaml(path: Path, env: dict[str, str]) -> tuple[Any, Reader]:
    """Parse one file into plain data; problems are on ``reader.issues`` or raised."""
    reader = Reader(str(path), env)
    try:
        text = read_bounded(path).decode("utf-8")
    except OSError as exc:
        raise ConfigError(
            [ConfigIssue(str(path), "", f"can't read config: {exc.strerror or exc}")]
        ) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([ConfigIssue(str(path), "", "config is not UTF-8 text")]) from exc
    except ValueError as exc:  # a NUL in the path
        raise ConfigError([ConfigIssue(str(path), "", f"can't read config: {exc}")]) from exc
    deep = too_deep(text)
    if deep is not None:
        raise ConfigError(
            [ConfigIssue(str(path), "", f"refused: nested more than {MAX_NESTING} levels", deep)]
        )
    reader.last_line = line_count(text)
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise ConfigError([ConfigIssue(str(path), "", "config is empty")])
        data = reader.read_document(node)
    except yaml.YAMLError as exc:
        issue = ConfigIssue(str(path), "", _yaml_problem(exc), _yaml_line(exc, text))
        raise ConfigError([issue]) from exc
    except RecursionError as exc:  # PyYAML without libyaml composes in Python
        issue = ConfigIssue(str(path), "", f"refused: nested more than {MAX_NESTING} levels")
        raise ConfigError([issue]) from exc
    except _Stop as exc:
        line = min(exc.line, reader.last_line)
        raise ConfigError([ConfigIssue(str(path), "", f"refused: {exc}", line)]) from exc
    finally:
        loader.dispose()
    return data, reader


def load_tree(
    path: Path, env: dict[str, str], chain: tuple[Path, ...] = ()
) -> tuple[Any, Reader, tuple[Path, ...]]:
    """Read ``path``; when it says ``extends: base.yaml``, merge it over that base.

    Mappings merge key by key, ``secrets`` merge by ``name`` (an overlay entry refines the
    base entry of the same name, new names are appended), any other value is replaced.
    Errors keep pointing at the file and line where each value was written. Returns the
    data, its reader and every file read (the daemon watches them all).
    """
    data, reader = read_yaml(path, env)
    if reader.issues:
        raise ConfigError(reader.issues)
    if not isinstance(data, dict) or "extends" not in data:
        return data, reader, (path,)
    parent_name = data.pop("extends")
    if not isinstance(parent_name, str) or not parent_name or "\0" in parent_name:
        reader.issue(("extends",), "must be the path of a base config file")
        raise ConfigError(reader.issues)
    parent = (path.parent / parent_name).resolve()
    if parent in (*chain, path.resolve()) or len(chain) >= MAX_EXTENDS:
        reader.issue(
            ("extends",), f"{parent} extends itself (loop: {' -> '.join(map(str, chain))})"
        )
        raise ConfigError(reader.issues)
    base, base_reader, files = load_tree(parent, env, (*chain, path.resolve()))
    merged = Reader(str(path), env)
    merged.lines[()] = (str(path), 1)
    result = _merge(
        base, data, base_lines=base_reader.lines, over_lines=reader.lines, loc=(), into=merged
    )
    return result, merged, (path, *files)


def _moved(lines: dict[Loc, tuple[str, int]], old: Loc, new: Loc, into: Reader) -> None:
    """Copy the line of ``old`` and everything under it to ``new``."""
    size = len(old)
    for loc, where in lines.items():
        if loc[:size] == old:
            into.lines[new + loc[size:]] = where


def _merge(
    base: Any,
    over: Any,
    *,
    base_lines: dict[Loc, tuple[str, int]],
    over_lines: dict[Loc, tuple[str, int]],
    loc: Loc,
    into: Reader,
) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        into.lines[loc] = over_lines.get(loc, base_lines.get(loc, (into.filename, 1)))
        result: dict[str, Any] = {}
        for key in base.keys() | over.keys():
            sub = (*loc, key)
            if key in base and key in over:
                result[key] = _merge(
                    base[key],
                    over[key],
                    base_lines=base_lines,
                    over_lines=over_lines,
                    loc=sub,
                    into=into,
                )
            elif key in base:
                result[key] = base[key]
                _moved(base_lines, sub, sub, into)
            else:
                result[key] = over[key]
                _moved(over_lines, sub, sub, into)
        return {k: result[k] for k in [*base, *(k for k in over if k not in base)]}
    if loc == ("secrets",) and isinstance(base, list) and isinstance(over, list):
        return _merge_secrets(base, over, base_lines=base_lines, over_lines=over_lines, into=into)
    _moved(over_lines, loc, loc, into)
    return over


def _merge_secrets(
    base: list[Any],
    over: list[Any],
    *,
    base_lines: dict[Loc, tuple[str, int]],
    over_lines: dict[Loc, tuple[str, int]],
    into: Reader,
) -> list[Any]:
    into.lines[("secrets",)] = over_lines.get(("secrets",), (into.filename, 1))
    names = [s.get("name") if isinstance(s, dict) else None for s in base]
    result = list(base)
    for index in range(len(base)):
        _moved(base_lines, ("secrets", index), ("secrets", index), into)
    for index, item in enumerate(over):
        name = item.get("name") if isinstance(item, dict) else None
        if name is not None and name in names:
            at = names.index(name)
            refined = _merge(
                base[at],
                item,
                base_lines=base_lines,
                over_lines=_shifted(over_lines, index, at),
                loc=("secrets", at),
                into=into,
            )
            result[at] = refined
        else:
            _moved(over_lines, ("secrets", index), ("secrets", len(result)), into)
            result.append(item)
    return result


def _shifted(lines: dict[Loc, tuple[str, int]], old: int, new: int) -> dict[Loc, tuple[str, int]]:
    """``lines`` with ``secrets[old]`` renumbered as ``secrets[new]``."""
    prefix = ("secrets", old)
    return {("secrets", new, *loc[2:]) if loc[:2] == prefix else loc: w for loc, w in lines.items()}
