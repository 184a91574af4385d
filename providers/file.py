"""The ``file`` provider: secrets from a local YAML mapping, ``.env`` file or JSON object.

This is what the guide's Compose workflows already have on disk (``user_keys.yaml``,
``.env``), and the built-in example runs on it with no server. Change detection is a
``stat``: the file's size, mtime and inode are its version id, so a cycle with no change
never reads the file at all.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import yaml
from pydantic import Field

from providers.base import Provider, ProviderConfig, ProviderContext, Ref
from syncd.envfile import EnvFileError, parse_env
from syncd.errors import ProviderError
from syncd.model import Fetched

FileFormat = Literal["yaml", "env", "json", "chit"]
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_BY_SUFFIX: dict[str, FileFormat] = {
    ".yaml": "yaml",
    ".yml": "yaml",
    ".env": "env",
    ".json": "json",
    ".chit": "chit",
}


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


class FileRef(Ref):
    """``{provider: local, key: openai_api_key}``; without ``key``, the whole file."""

    key: str | None = Field(
        None, min_length=1, description="The key in the file (none: the whole file's bytes)."
    )

    def describe(self) -> str:
        """``local:openai_api_key`` (``local:*`` for the whole file)."""
        return f"{self.provider}:{self.key or '*'}"


FileFormatError = EnvFileError


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
            raw = self.path.read_bytes()
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

    def list_keys(self, ref: FileRef) -> Mapping[str, Ref] | ProviderError:
        """Every key in the file; parsed only when the file changed since the last listing."""
        try:
            token = self._token()
            if self._listed is None or self._listed[0] != token:
                self.count("read")
                self._listed = (token, list(self._parse(self.path.read_bytes())))
        except OSError as exc:
            return self._read_error(ref, exc)
        except FileFormatError as exc:
            return self.error(ref, f"{self.path}: {exc}")
        return {key: ref.model_copy(update={"key": key}) for key in self._listed[1]}

    def _read_error(self, ref: FileRef, exc: OSError) -> ProviderError:
        reason = "file not found" if isinstance(exc, FileNotFoundError) else exc.strerror
        return self.error(ref, f"{self.path}: {reason}")

    def _value(self, ref: FileRef, entries: dict[str, Any], token: str) -> Fetched | ProviderError:
        if ref.key not in entries:
            return self.error(ref, f"key {ref.key!r} not found in {self.path}")
        value = entries[ref.key]
        if value is None or isinstance(value, dict | list):
            kind = "no value" if value is None else "a nested value, not a flat one"
            return self.error(ref, f"key {ref.key!r} in {self.path} has {kind}")
        if isinstance(value, bytes):
            data = value
        else:
            text = ("true" if value else "false") if isinstance(value, bool) else str(value)
            data = text.encode("utf-8")
        if self.config.encoding == "base64":
            try:
                data = base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError):
                return self.error(ref, f"key {ref.key!r} in {self.path} is not valid base64")
        return self._decoded(ref, data, token)

    def _decoded(self, ref: FileRef, data: bytes, token: str) -> Fetched | ProviderError:
        try:
            return Fetched(ref.decoded(data), token)
        except ProviderError as exc:
            return exc

    def _parse(self, raw: bytes) -> dict[str, Any]:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FileFormatError("is not UTF-8 text (use encoding: base64 for binary)") from exc
        if self.format == "env":
            return parse_env(text)
        if self.format == "chit":
            return parse_chit(text)
        if self.format == "json":
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise FileFormatError(f"line {exc.lineno}: invalid JSON: {exc.msg}") from exc
        else:
            try:
                data = yaml.load(text, Loader=_LOADER)  # noqa: S506 - a safe loader
            except yaml.YAMLError as exc:
                mark = getattr(exc, "problem_mark", None)
                where = f"line {mark.line + 1}: " if mark is not None else ""
                raise FileFormatError(f"{where}invalid YAML") from exc
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise FileFormatError("must hold a mapping of key: value at the top level")
        return {str(k): v for k, v in data.items()}


def parse_chit(text: str) -> dict[str, str | bytes]:
    """Parse a CHIT geometry packet: ``{"version", "namespace", "points": [...]}``.

    Each point is ``{"label": KEY, "value": ..., "encoding": "cleartext" | "hex"}``. CHIT is
    an encoding, not encryption: a hex value is the plain value in hex. Errors name the point
    (never its value).
    """
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FileFormatError(f"line {exc.lineno}: invalid JSON: {exc.msg}") from exc
    points = doc.get("points") if isinstance(doc, dict) else None
    if not isinstance(points, list):
        raise FileFormatError("a CHIT packet needs a 'points' list")
    result: dict[str, str | bytes] = {}
    for index, point in enumerate(points):
        where = f"points[{index}]"
        if not isinstance(point, dict):
            raise FileFormatError(f"{where} is not an object")
        label = point.get("label")
        if not isinstance(label, str) or not label:
            raise FileFormatError(f"{where} has no 'label'")
        if label in result:
            raise FileFormatError(f"{where}: label {label!r} appears twice")
        value = point.get("value")
        if not isinstance(value, str):
            raise FileFormatError(f"{where} ({label}) has no string 'value'")
        encoding = point.get("encoding", "cleartext")
        if encoding == "hex":
            try:
                result[label] = bytes.fromhex(value)
            except ValueError as exc:
                raise FileFormatError(f"{where} ({label}): 'value' is not valid hex") from exc
        elif encoding == "cleartext":
            result[label] = value
        else:
            raise FileFormatError(
                f"{where} ({label}): unknown encoding {encoding!r} (cleartext or hex)"
            )
    return result
