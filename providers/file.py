"""The ``file`` provider: secrets from a local YAML mapping, ``.env`` file, JSON object or CHIT
packet.

This is what the guide's Compose workflows already have on disk (``user_keys.yaml``,
``.env``), and the built-in example runs on it with no server. Change detection is a
``stat``: the file's size, mtime and inode are its version id, so a cycle with no change
never reads the file at all.

A secrets file is text, and it is input syncd doesn't control, so every format is read the
same strict way:

- **A value is delivered exactly as written.** YAML's ``0755``, ``0x1F``, ``1_000``,
  ``12:30:45``, ``on`` and ``1.50`` stay those characters (no YAML 1.1 typing); JSON numbers
  stay as written and ``true``/``false`` are those words.
- **No value is an error for that key**: an empty YAML value, ``~``, ``null`` (any case) or
  JSON ``null``. A quoted empty string (``k: ''``, ``"k": ""``) is an empty value.
- **Only flat values.** A nested mapping or list, a YAML tag (``!!int``, ``!!binary``,
  ``!custom``), JSON's ``NaN``/``Infinity`` or a lone surrogate escape (``"\\ud800"``) is an
  error for that key, naming the file, the key and (YAML) the line.
- **The file as a whole must be sound.** A syntax error, a duplicate key, a key that isn't a
  non-empty plain string, a YAML merge key (``<<``) or nesting too deep to read fails every
  key, with one ``FileFormatError`` naming the line where it is known.

No message ever quotes a value: keys are names and may be named, values never.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import yaml
from pydantic import Field, field_validator

from providers.base import Provider, ProviderConfig, ProviderContext, Ref
from syncd.config_yaml import line_count, yaml_position
from syncd.envfile import EnvFileError, parse_env
from syncd.errors import ProviderError
from syncd.model import Fetched
from syncd.reading import read_bounded
from syncd.yaml_depth import MAX_NESTING, too_deep

FileFormat = Literal["yaml", "env", "json", "chit"]
#: libyaml's parser when PyYAML was built with it; only its node composer is used.
_YAML_BASE: type[yaml.BaseLoader] = getattr(yaml, "CBaseLoader", yaml.BaseLoader)
_BY_SUFFIX: dict[str, FileFormat] = {
    ".yaml": "yaml",
    ".yml": "yaml",
    ".env": "env",
    ".json": "json",
    ".chit": "chit",
}
#: Tags this reader gives nodes written without one; any other tag was written explicitly.
_PLAIN, _QUOTED, _MAP, _SEQ = "file:plain", "file:quoted", "file:map", "file:seq"
_NULLS = frozenset({"", "~", "null", "Null", "NULL"})


class FileProviderConfig(ProviderConfig):
    """``{type: file, path: user_keys.yaml}``."""

    type: Literal["file"]
    path: str = Field(description="File to read, relative to the config file.")
    format: FileFormat | None = Field(
        None,
        description="yaml, env, json or chit; by default taken from the file's extension.",
    )
    encoding: Literal["utf-8", "base64"] = Field(
        "utf-8", description="base64: every value in the file is base64 (binary secrets)."
    )

    @field_validator("path")
    @classmethod
    def _a_path(cls, value: str) -> str:
        """Refused here, with the place in the config, rather than when the file is opened."""
        if not value or "\0" in value:
            raise ValueError("must be a file path (not empty, no NUL character)")
        return value


class FileRef(Ref):
    """``{provider: local, key: openai_api_key}``; without ``key``, the whole file."""

    key: str | None = Field(
        None, min_length=1, description="The key in the file (none: the whole file's bytes)."
    )

    def describe(self) -> str:
        """``local:openai_api_key`` (``local:*`` for the whole file)."""
        return f"{self.provider}:{self.key or '*'}"


class FileFormatError(ValueError):
    """The source file doesn't parse. ``line`` is where, when known; never quotes content."""

    def __init__(self, reason: str, *, line: int | None = None, column: int | None = None) -> None:
        self.reason = reason
        self.line = line
        where = f"line {line}" if line is not None else ""
        if where and column is not None:
            where += f", column {column}"
        super().__init__(f"{where}: {reason}" if where else reason)


@dataclass(frozen=True)
class Unusable:
    """A key whose value can't be delivered: why (a predicate, ``has no value``) and where.

    Kept per key instead of failing the file, so one bad entry fails only the secrets that
    use it.
    """

    reason: str
    line: int | None = None


Entry = str | bytes | Unusable

_NO_VALUE = "has no value (write '' for an empty string)"
_NESTED = "has a nested value, not a flat one"
_NOT_UNICODE = "is not valid Unicode (a lone surrogate \\u escape)"


class FileProvider(Provider[FileProviderConfig, FileRef]):
    """Reads one local file; every reference is a key in it."""

    type_name: ClassVar[str] = "file"
    config_model: ClassVar[type[ProviderConfig]] = FileProviderConfig
    ref_model: ClassVar[type[Ref]] = FileRef

    def __init__(self, config: FileProviderConfig, *, context: ProviderContext) -> None:
        super().__init__(config, context=context)
        self.path = (context.base_dir / os.path.expanduser(config.path)).resolve()
        self.format: FileFormat | None = config.format or _BY_SUFFIX.get(self.path.suffix.lower())
        if self.format is None and self.path.name.startswith(".env"):
            self.format = "env"
        self._listed: tuple[str, list[str]] | None = None

    def _token(self) -> str:
        self.count("stat")
        st = self.path.stat()
        return f"{st.st_mtime_ns}-{st.st_size}-{st.st_ino}"

    def versions(self, refs: Sequence[FileRef]) -> Mapping[FileRef, str | ProviderError | None]:
        """One ``stat`` answers for every key in the file."""
        try:
            token: str | ProviderError | None = self._token()
        except OSError as exc:
            token = self._read_error(refs[0], exc) if refs else None
        return dict.fromkeys(refs, token)

    def fetch(self, refs: Sequence[FileRef]) -> Mapping[FileRef, Fetched | ProviderError]:
        """Read and parse the file once for all references."""
        if not refs:
            return {}
        try:
            token = self._token()
            self.count("read")
            raw = read_bounded(self.path)
        except OSError as exc:
            return {ref: self._read_error(ref, exc) for ref in refs}
        results: dict[FileRef, Fetched | ProviderError] = {}
        keyed = [ref for ref in refs if ref.key is not None]
        for ref in refs:
            if ref.key is None:
                results[ref] = self._decoded(ref, raw, token)
        if keyed:
            try:
                entries = self._parse(raw)
            except FileFormatError as exc:
                return {**results, **{ref: self.error(ref, f"{self.path}: {exc}") for ref in keyed}}
            results.update({ref: self._value(ref, entries, token) for ref in keyed})
        return results

    def check(self, refs: Sequence[FileRef]) -> Mapping[FileRef, ProviderError | None]:
        """The file is there and readable, and each key is in it (the listing parses the file
        here; no value leaves this method)."""
        try:
            self._token()
        except OSError as exc:
            return {ref: self._read_error(ref, exc) for ref in refs}
        found: dict[FileRef, ProviderError | None] = dict.fromkeys(refs)
        keyed = [ref for ref in refs if ref.key is not None]
        listed = self.list_keys(keyed[0]) if keyed else {}
        for ref in keyed:
            if isinstance(listed, ProviderError):
                found[ref] = self.error(ref, listed.reason)
            elif ref.key not in listed:
                found[ref] = self.error(ref, f"key {ref.key!r} not found in {self.path}")
        return found

    def list_keys(self, ref: FileRef) -> Mapping[str, Ref] | ProviderError:
        """Every key in the file; parsed only when the file changed since the last listing."""
        try:
            token = self._token()
            if self._listed is None or self._listed[0] != token:
                self.count("read")
                self._listed = (token, list(self._parse(read_bounded(self.path))))
        except OSError as exc:
            return self._read_error(ref, exc)
        except FileFormatError as exc:
            return self.error(ref, f"{self.path}: {exc}")
        return {key: ref.model_copy(update={"key": key}) for key in self._listed[1]}

    def _parse(self, raw: bytes) -> Mapping[str, Entry]:
        """The file's keys and entries, in this provider's format; ``FileFormatError`` else."""
        try:
            text = raw.decode("utf-8-sig")  # an editor's byte order mark is not content
        except UnicodeDecodeError as exc:
            raise FileFormatError(
                "is not UTF-8 text (use encoding: base64 for binary)",
                line=raw.count(b"\n", 0, exc.start) + 1,
            ) from None
        if self.format == "env":
            try:
                return parse_env(text)
            except EnvFileError as exc:
                raise FileFormatError(exc.reason, line=exc.line) from None
        if self.format == "chit":
            return parse_chit(text)
        if self.format == "json":
            return parse_json(text)
        return parse_yaml(text)

    def _read_error(self, ref: FileRef, exc: OSError) -> ProviderError:
        reason = "file not found" if isinstance(exc, FileNotFoundError) else exc.strerror
        return self.error(ref, f"{self.path}: {reason}")

    def _value(
        self, ref: FileRef, entries: Mapping[str, Entry], token: str
    ) -> Fetched | ProviderError:
        key = ref.key
        if key is None or key not in entries:
            return self.error(ref, f"key {key!r} not found in {self.path}")
        entry = entries[key]
        if isinstance(entry, Unusable):
            where = f" (line {entry.line})" if entry.line is not None else ""
            return self.error(ref, f"key {key!r} in {self.path}{where} {entry.reason}")
        data = entry if isinstance(entry, bytes) else entry.encode("utf-8")
        if self.config.encoding == "base64":
            try:
                data = base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError):
                return self.error(ref, f"key {key!r} in {self.path} is not valid base64")
        return self._decoded(ref, data, token)

    def _decoded(self, ref: FileRef, data: bytes, token: str) -> Fetched | ProviderError:
        try:
            return Fetched(ref.decoded(data), token)
        except ProviderError as exc:
            return exc


# --------------------------------------------------------------------------- YAML


class _Loader(_YAML_BASE):  # type: ignore[valid-type,misc]
    """Composes nodes only. The composer asks ``resolve`` for the tag of every node written
    without one, so a node whose tag isn't one of ours carried a tag in the file."""

    def resolve(self, kind: type[yaml.Node], value: str | None, implicit: Any) -> str:
        if kind is yaml.ScalarNode:
            return _PLAIN if implicit[0] else _QUOTED
        return _MAP if kind is yaml.MappingNode else _SEQ


def parse_yaml(text: str) -> dict[str, Entry]:
    """A YAML mapping of ``key: value``, every value the text it is written as."""
    deep = too_deep(text)
    if deep is not None:
        raise FileFormatError(f"is nested more than {MAX_NESTING} levels deep", line=deep)
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
    except yaml.YAMLError as exc:
        raise _yaml_problem(exc, text) from None
    except RecursionError:  # libyaml stops at 1000 levels; PyYAML's own composer recurses
        raise FileFormatError("is nested too deeply to read") from None
    finally:
        loader.dispose()
    if root is None:
        return {}
    last = line_count(text)
    if root.tag != _MAP:
        raise FileFormatError(
            "must hold a mapping of key: value (without a tag) at the top level",
            line=_line(root, last),
        )
    entries: dict[str, Entry] = {}
    for key_node, value_node in root.value:
        line = _line(key_node, last)
        if key_node.tag not in (_PLAIN, _QUOTED):
            raise FileFormatError("a key must be a string without a tag", line=line)
        key = key_node.value
        if key == "<<" and key_node.tag == _PLAIN:
            raise FileFormatError("YAML merge keys (<<) are not supported", line=line)
        _check_key(key, entries, line)
        entries[key] = _yaml_entry(value_node, line)
    return entries


def _yaml_entry(node: yaml.Node, line: int) -> Entry:
    if node.tag in (_MAP, _SEQ):
        return Unusable(_NESTED, line)
    if node.tag not in (_PLAIN, _QUOTED):
        return Unusable("has a YAML tag; write the value without one", line)
    if node.tag == _PLAIN and node.value in _NULLS:
        return Unusable(_NO_VALUE, line)
    return node.value if _is_unicode(node.value) else Unusable(_NOT_UNICODE, line)


def _line(node: yaml.Node, last: int) -> int:
    """The node's line; libyaml places what is empty at the end of a text without a final
    line break (``---`` alone, a key ``?`` alone) on the line after ``last``."""
    return min(int(node.start_mark.line) + 1, last)


def _yaml_problem(exc: yaml.YAMLError, text: str) -> FileFormatError:
    """Where the YAML is broken, never what: the library's own message may quote the text."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is not None:
        line, column = yaml_position(mark, text)
        return FileFormatError("invalid YAML", line=line, column=column)
    position = getattr(exc, "position", None)  # the reader's own errors: a control character
    if isinstance(position, int):
        line = text.count("\n", 0, position) + 1
        return FileFormatError("invalid YAML (a control character)", line=line)
    return FileFormatError("invalid YAML")


# --------------------------------------------------------------------------- JSON and CHIT


class _Number(str):
    """A JSON number, kept as written (``1.50`` stays ``1.50``), told apart from a string."""

    __slots__ = ()


class _Object(list[tuple[str, Any]]):
    """A JSON object's members in order; duplicates are judged by whoever reads it."""

    __slots__ = ()


def _not_a_number(_: str) -> Unusable:
    return Unusable("is NaN or Infinity, which JSON doesn't allow (quote it)")


def _load_json(text: str) -> Any:
    """Any JSON document, numbers as written and objects as member lists; never raises
    anything but ``FileFormatError``."""
    try:
        return json.loads(
            text,
            parse_int=_Number,
            parse_float=_Number,
            parse_constant=_not_a_number,
            object_pairs_hook=_Object,
        )
    except json.JSONDecodeError as exc:
        raise FileFormatError(f"invalid JSON: {exc.msg}", line=exc.lineno) from None
    except RecursionError:
        raise FileFormatError("is nested too deeply to read") from None


def parse_json(text: str) -> dict[str, Entry]:
    """A JSON object of ``"key": value``: strings, numbers as written, ``true``/``false``."""
    document = _load_json(text)
    if not isinstance(document, _Object):
        raise FileFormatError('must hold an object of "key": value at the top level')
    entries: dict[str, Entry] = {}
    for key, value in document:
        _check_key(key, entries, None)
        entries[key] = _json_entry(value)
    return entries


def _json_entry(value: Any) -> Entry:
    if isinstance(value, Unusable):
        return value
    if value is None:
        return Unusable(_NO_VALUE)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):  # an array, or an object's member list
        return Unusable(_NESTED)
    return str(value) if _is_unicode(value) else Unusable(_NOT_UNICODE)


def parse_chit(text: str) -> dict[str, str | bytes]:
    """Parse a CHIT geometry packet: ``{"version", "namespace", "points": [...]}``.

    Each point is ``{"label": KEY, "value": ..., "encoding": "cleartext" | "hex"}``. CHIT is
    an encoding, not encryption: a hex value is the plain value in hex. Errors name the point
    and its label, never its value or any other field's content.
    """
    document = _load_json(text)
    packet = _members(document, "the packet") if isinstance(document, _Object) else {}
    points = packet.get("points")
    if not isinstance(points, list) or isinstance(points, _Object):
        raise FileFormatError("a CHIT packet needs a 'points' list")
    result: dict[str, str | bytes] = {}
    for index, item in enumerate(points):
        where = f"points[{index}]"
        if not isinstance(item, _Object):
            raise FileFormatError(f"{where} is not an object")
        point = _members(item, where)
        label = point.get("label")
        if type(label) is not str or not label:
            raise FileFormatError(f"{where} has no string 'label'")
        if not _is_unicode(label):
            raise FileFormatError(f"{where}: the label is not valid Unicode")
        if label in result:
            raise FileFormatError(f"{where}: label {label!r} appears twice")
        value = point.get("value")
        if type(value) is not str:
            raise FileFormatError(f"{where} ({label}) has no string 'value'")
        encoding = point.get("encoding", "cleartext")
        if encoding == "hex":
            try:
                result[label] = bytes.fromhex(value)
            except ValueError:
                raise FileFormatError(f"{where} ({label}): 'value' is not valid hex") from None
        elif encoding != "cleartext":
            raise FileFormatError(f"{where} ({label}): unknown 'encoding' (cleartext or hex)")
        elif not _is_unicode(value):
            raise FileFormatError(f"{where} ({label}): 'value' is not valid Unicode")
        else:
            result[label] = value
    return result


def _members(members: _Object, where: str) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, value in members:
        if name in result:
            raise FileFormatError(f"{where} has a duplicate field")
        result[name] = value
    return result


# --------------------------------------------------------------------------- shared


def _check_key(key: str, entries: Mapping[str, Entry], line: int | None) -> None:
    """Refuse a key that can't name a secret: empty, not Unicode, or given twice."""
    if not key:
        raise FileFormatError("a key is empty", line=line)
    if not _is_unicode(key):
        raise FileFormatError("a key is not valid Unicode (a lone surrogate \\u escape)", line=line)
    if key in entries:
        raise FileFormatError(f"duplicate key {key!r}", line=line)


def _is_unicode(text: str) -> bool:
    """Whether ``text`` can be encoded as UTF-8 (a JSON ``"\\ud800"`` escape can't)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
