"""The one small interface every provider implements.

The engine asks a provider two batched questions per cycle:

1. ``versions(refs)``: what is the current version id of each reference? This must be cheap
   (metadata, list calls) and must not read values when the store can avoid it. ``None``
   means "can't tell without reading", and the engine then fetches.
2. ``fetch(refs)``: give me the values of these references (only those whose version changed).

A store whose metadata says when a value expires (Azure's ``expires``, a KV v2 version's
scheduled deletion) notes it with ``note_expiry`` in either call; ``expiry(refs)`` hands the
engine what was noted, without a remote call, so a cycle that reads no value still knows.

Both return one result per reference, either a value or a ``ProviderError``, so one missing
secret never fails the others. Every remote call is counted with ``self.count(operation)``.
"""

from __future__ import annotations

import base64
import binascii
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict

from syncd.calls import CallCounter
from syncd.errors import ProviderError
from syncd.model import Fetched


@dataclass(frozen=True)
class Unverified:
    """``check``'s answer for a reference it can't judge without reading its value (a
    secret its cheap call doesn't show): neither a pass nor a problem, the next cycle's
    read decides. ``syncd doctor`` reports it as a warning."""

    provider: str
    ref: str
    reason: str

    def __str__(self) -> str:
        return f"provider {self.provider!r}, {self.ref}: {self.reason}"


class ProviderConfig(BaseModel):
    """Base of a provider's settings block in ``providers:``. Unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str


class Ref(BaseModel):
    """Base of a reference to one value, as written under ``from:`` or ``data:``.

    Refs are frozen (hashable) so they can key the batched results.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: str
    decode: Literal["base64"] | None = None

    def describe(self) -> str:
        """A stable, value-free description used in labels and error messages."""
        return self.provider

    def decoded(self, value: bytes) -> bytes:
        """Apply the ``decode:`` option to a fetched value."""
        if self.decode == "base64":
            try:
                return base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ProviderError(
                    self.provider, self.describe(), "value is not valid base64 (decode: base64)"
                ) from exc
        return value


def compact_json(value: object) -> str:
    """The one JSON rendering every provider writes: compact, keys sorted, non-ASCII as is.

    One rule means the same document gives the same bytes (and fingerprint) whichever
    provider it came from, and a re-ordered upstream object is not a change.
    """
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def utf8(text: str) -> bytes:
    """``text`` as UTF-8; ``ValueError`` for text no file can hold (a lone surrogate).

    A JSON document may escape half of a surrogate pair (``"\\ud800"``); Python decodes it into
    a string that can't be encoded, and that must fail one reference, not the provider.
    """
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("the value is not valid Unicode text (a lone surrogate)") from None


def field_bytes(field: object) -> bytes:
    """A picked JSON field as bytes: a string gives its text, anything else its compact JSON."""
    if isinstance(field, str):
        return utf8(field)
    try:
        return utf8(compact_json(field))
    except RecursionError:
        raise ValueError("the JSON value is nested too deeply") from None


def json_field(text: str, key: str) -> bytes:
    """One top-level field of a JSON object, as bytes; ``ValueError`` says what is wrong.

    A string field gives its text; any other JSON value (number, bool, list, object) its
    compact JSON with sorted keys (``compact_json``), which is what a consumer reading a
    config value expects.
    """
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):  # not JSON, nested too deeply, a number too long
        raise ValueError(f"key {key!r} asked, but the value is not JSON") from None
    if not isinstance(document, dict):
        raise ValueError(f"key {key!r} asked, but the value is JSON, not a JSON object")
    if key not in document:
        raise ValueError(f"key {key!r} not found in the JSON object")
    field = document[key]
    if field is None:
        raise ValueError(f"key {key!r} is null")
    return field_bytes(field)


#: The longest wait a server's ``Retry-After`` is granted between two attempts of one call; one
#: asking for more ends the call at once (transient), so a throttling server can't hold a
#: cycle for minutes. Every provider applies it; the daemon's own backoff tries again later.
RETRY_AFTER_MAX = 10.0


@dataclass(frozen=True)
class ProviderContext:
    """What a provider gets from the process: its name, where relative paths start, counters."""

    name: str
    base_dir: Path
    calls: CallCounter


C = TypeVar("C", bound=ProviderConfig)
R = TypeVar("R", bound=Ref)


class Provider(ABC, Generic[C, R]):
    """A source of secret values. Subclasses set the three class attributes."""

    type_name: ClassVar[str]
    config_model: ClassVar[type[ProviderConfig]]
    ref_model: ClassVar[type[Ref]]

    def __init__(self, config: C, *, context: ProviderContext) -> None:
        self.config = config
        self.context = context
        self.name = context.name
        self._expiries: dict[Ref, float] = {}

    @classmethod
    def unavailable(cls) -> str | None:
        """Why this provider can't run here (a missing SDK, naming the extra to install)."""
        return None

    def count(self, operation: str, n: int = 1, *, status: str = "ok") -> None:
        """Count ``n`` remote calls of ``operation`` (shows in ``--output json`` and metrics)."""
        self.context.calls.count(self.name, operation, n, status=status)

    def error(self, ref: Ref, message: str, *, transient: bool = False) -> ProviderError:
        """Build a ``ProviderError`` that names this provider and the reference."""
        return ProviderError(self.name, ref.describe(), message, transient=transient)

    @abstractmethod
    def versions(self, refs: Sequence[R]) -> Mapping[R, str | ProviderError | None]:
        """Current version id per reference, cheaply; ``None`` when unknown without a read."""

    @abstractmethod
    def fetch(self, refs: Sequence[R]) -> Mapping[R, Fetched | ProviderError]:
        """Values (and the version id read) per reference."""

    def expiry(self, refs: Sequence[R]) -> Mapping[R, float]:
        """When each reference's value expires (Unix seconds) by the store's metadata, as the
        last ``versions`` or ``fetch`` call saw it; a reference without one is left out."""
        return {ref: self._expiries[ref] for ref in refs if ref in self._expiries}

    def note_expiry(self, ref: Ref, when: float | None) -> None:
        """Record what a ``versions`` or ``fetch`` answer said about ``ref``'s expiry
        (``None``: none, which replaces an earlier one)."""
        if when is None:
            self._expiries.pop(ref, None)
        else:
            self._expiries[ref] = when

    def check(self, refs: Sequence[R]) -> Mapping[R, ProviderError | Unverified | None]:
        """For ``syncd doctor``: whether each reference exists and this process may read it,
        without reading a value. The default asks ``versions`` (a listing or metadata call:
        reachable, authenticated, the secret there). A reference it gives no token for is
        ``Unverified``, never a pass: "no token" means "read it to know" (not listed, not
        allowed to look, a store without metadata). A provider that can see more without a
        value, such as a missing key, or knows when "no token" is fine, overrides it."""
        checked: dict[R, ProviderError | Unverified | None] = {}
        for ref, result in self.versions(refs).items():
            if result is None:
                why = "its change detection shows nothing for it (not listed, not allowed to look"
                checked[ref] = self.unverified(ref, f"{why}, or no metadata to look at)")
            else:
                checked[ref] = result if isinstance(result, ProviderError) else None
        return checked

    def unverified(self, ref: R, why: str) -> Unverified:
        """``check``'s answer for a reference its cheap call can't judge, saying why."""
        return Unverified(self.name, ref.describe(), f"{why}; it is judged when read, next cycle")

    def list_keys(self, ref: R) -> Mapping[str, Ref] | ProviderError:
        """Every key under ``ref`` as its own reference, for ``data_from`` bundles.

        Providers that can't enumerate a source keep this default, which says so.
        """
        return self.error(ref, f"the {self.type_name} provider can't list keys; use 'data'")

    def close(self) -> None:
        """Release connections; called once when the process stops or reloads."""
