"""The ``http-json`` provider: secrets from a plain HTTPS JSON API, read only on change.

The worked example of docs/plugins.md, packaged outside syncd. The API it reads:

- ``GET <url>/secrets`` answers ``{"<name>": {"version": "<id>", "expires": <seconds>}}``:
  every secret this token may read, with its current version id and (optionally) when its
  value expires (Unix seconds), and no value. One such call answers change detection for
  every reference, so a cycle where nothing changed reads no value.
- ``GET <url>/secrets/<name>`` answers ``{"version": "<id>", "value": "<text>"}``, or 404.

Both are sent with ``Authorization: Bearer <token>``, the token taken from the environment
variable ``token_env`` names (never from the config file). Redirects are not followed: they
would carry the token to another address.

Everything the server sends is hostile input: a body is read up to a bound, must be JSON of
the documented shape, and a version id that doesn't look like one is replaced by a digest of
it (it ends up in the target's labels). A bad answer about one secret fails that secret.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal
from urllib.parse import quote

import urllib3
from pydantic import Field, model_validator

from providers.base import (
    RETRY_AFTER_MAX,
    Provider,
    ProviderConfig,
    ProviderContext,
    Ref,
    Unverified,
    json_field,
    utf8,
)
from syncd.errors import ProviderError, SyncdError
from syncd.model import Fetched
from syncd.retry_after import retry_after

log = logging.getLogger(__name__)

#: What a secret name may be: it goes into a URL path and, through data_from, into key names.
NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
_NAME = re.compile(NAME)
#: What a version id may look like as it is; any other is replaced by a digest of it.
_VERSION = re.compile(r"[A-Za-z0-9._:+=@-]{1,64}")
#: The largest answers read: a listing, and one secret.
LISTING_MAX = 8 << 20
VALUE_MAX = 1 << 20
#: HTTP statuses that may pass by themselves (tried again, then reported as transient).
BUSY = frozenset({429, 500, 502, 503, 504})
BACKOFF = 0.2
BACKOFF_CAP = 2.0


class HttpJsonConfig(ProviderConfig):
    """``{type: http-json, url: https://secrets.example, token_env: SECRETS_TOKEN}``."""

    type: Literal["http-json"]
    url: str = Field(
        pattern=r"^https://[^\s/?#@]+(/[^\s?#]*)?$",
        description="The API's base address (https only).",
    )
    token_env: str = Field(
        "SYNCD_HTTP_JSON_TOKEN",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="The environment variable holding the bearer token.",
    )
    ca_file: str | None = Field(
        None,
        min_length=1,
        description="PEM file of the CAs to trust, relative to the config file "
        "(default: the system's).",
    )
    timeout: float = Field(5.0, gt=0, le=60, description="Seconds one HTTP attempt may take.")
    retries: int = Field(2, ge=0, le=5, description="Extra attempts of a call that may pass.")


class HttpJsonRef(Ref):
    """``{provider: api, name: db-password, key: password}``; ``{provider: api, prefix: app-}``
    under ``data_from``."""

    name: str | None = Field(None, pattern=f"^{NAME}$", description="The secret's name.")
    prefix: str | None = Field(
        None,
        pattern=f"^{NAME}$",
        description="With data_from: every secret whose name starts with this (keys: the "
        "names without it).",
    )
    key: str | None = Field(None, min_length=1, description="Pick this field of a JSON value.")

    @model_validator(mode="after")
    def _name_or_prefix(self) -> HttpJsonRef:
        if (self.name is None) == (self.prefix is None):
            raise ValueError("give exactly one of 'name' and 'prefix'")
        return self

    def describe(self) -> str:
        """``api:db-password#password`` (``api:app-*`` for a prefix)."""
        if self.name is None:
            return f"{self.provider}:{self.prefix}*"
        return f"{self.provider}:{self.name}" + (f"#{self.key}" if self.key else "")


class CallFailed(Exception):
    """One API call failed; ``reason`` is a sentence without any value in it."""

    def __init__(self, reason: str, *, transient: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient


class HttpJsonProvider(Provider[HttpJsonConfig, HttpJsonRef]):
    """One listing per cycle for change detection; one read per changed secret."""

    type_name: ClassVar[str] = "http-json"
    config_model: ClassVar[type[ProviderConfig]] = HttpJsonConfig
    ref_model: ClassVar[type[Ref]] = HttpJsonRef

    def __init__(self, config: HttpJsonConfig, *, context: ProviderContext) -> None:
        super().__init__(config, context=context)
        token = os.environ.get(config.token_env)
        if not token:
            raise SyncdError(f"the environment variable {config.token_env} (token_env) is empty")
        ca_file = None
        if config.ca_file is not None:
            ca_file = str(context.base_dir / os.path.expanduser(config.ca_file))
            if not os.path.isfile(ca_file):
                raise SyncdError(f"ca_file {ca_file} is not a file")
        self.base = config.url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        self._http = urllib3.PoolManager(
            maxsize=4,
            cert_reqs="CERT_REQUIRED",
            ca_certs=ca_file,
            timeout=urllib3.Timeout(total=config.timeout),
            retries=False,  # every attempt is made (and counted) here
        )

    def close(self) -> None:
        """Close the pooled connections."""
        self._http.clear()

    # ------------------------------------------------------------------ change detection

    def versions(
        self, refs: Sequence[HttpJsonRef]
    ) -> Mapping[HttpJsonRef, str | ProviderError | None]:
        """Every reference's version id from one listing; no value is read."""
        result: dict[HttpJsonRef, str | ProviderError | None] = {}
        named = self._named(refs, result)
        if not named:
            return result
        try:
            listing = self._listing()
        except CallFailed as exc:
            return result | {r: self.error(r, exc.reason, transient=exc.transient) for r in named}
        for ref in named:
            entry = listing.get(ref.name or "")
            if not isinstance(entry, dict):
                result[ref] = None  # not listed, or an entry not understood: the read decides
                continue
            self.note_expiry(ref, _expires(entry.get("expires")))
            result[ref] = _token(entry.get("version"))
        return result

    def check(
        self, refs: Sequence[HttpJsonRef]
    ) -> Mapping[HttpJsonRef, ProviderError | Unverified | None]:
        """For ``syncd doctor``, from the same listing: it shows every secret the token may
        read, so a secret it doesn't show is a problem, not a question."""
        try:
            listing = self._listing()
        except CallFailed as exc:
            return {r: self.error(r, exc.reason, transient=exc.transient) for r in refs}
        found: dict[HttpJsonRef, ProviderError | Unverified | None] = {}
        for ref in refs:
            if ref.name is not None and not isinstance(listing.get(ref.name), dict):
                found[ref] = self.error(ref, "not in the listing (missing, or not for this token)")
            else:
                found[ref] = None
        return found

    def list_keys(self, ref: HttpJsonRef) -> Mapping[str, Ref] | ProviderError:
        """Every listed secret whose name starts with ``ref.prefix``, keyed by the rest of its
        name. A listed name that can't be a secret name is left out, with a warning."""
        prefix = ref.prefix
        if prefix is None:
            return self.error(ref, "data_from needs 'prefix'")
        try:
            listing = self._listing()
        except CallFailed as exc:
            return self.error(ref, exc.reason, transient=exc.transient)
        keys: dict[str, Ref] = {}
        for name in listing:
            if not name.startswith(prefix) or name == prefix:
                continue
            if not _NAME.fullmatch(name):
                log.warning(
                    "provider %r: left out a listed name that is not valid: %r",
                    self.name,
                    name[:100],
                )
                continue
            keys[name.removeprefix(prefix)] = ref.model_copy(update={"name": name, "prefix": None})
        return keys

    def _named(
        self, refs: Sequence[HttpJsonRef], result: dict[HttpJsonRef, Any]
    ) -> list[HttpJsonRef]:
        """The references that name one secret; a ``prefix`` one gets its error in ``result``."""
        named = []
        for ref in refs:
            if ref.name is None:
                result[ref] = self.error(ref, "'prefix' names many secrets: use it with data_from")
            else:
                named.append(ref)
        return named

    def _listing(self) -> dict[str, Any]:
        document = self._get("list", "/secrets", LISTING_MAX)
        if not isinstance(document, dict):
            raise CallFailed("the listing (GET /secrets) is not a JSON object", transient=False)
        return document

    # ------------------------------------------------------------------ reading

    def fetch(self, refs: Sequence[HttpJsonRef]) -> Mapping[HttpJsonRef, Fetched | ProviderError]:
        """Each secret read once, however many references (keys) use it."""
        result: dict[HttpJsonRef, Fetched | ProviderError] = {}
        answers: dict[str, Any] = {}
        for ref in self._named(refs, result):
            name = ref.name or ""
            if name not in answers:
                try:
                    answers[name] = self._get("read", f"/secrets/{quote(name, safe='')}", VALUE_MAX)
                except CallFailed as exc:
                    answers[name] = exc
            answer = answers[name]
            if isinstance(answer, CallFailed):
                result[ref] = self.error(ref, answer.reason, transient=answer.transient)
            else:
                result[ref] = self._value(ref, answer)
        return result

    def _value(self, ref: HttpJsonRef, answer: Any) -> Fetched | ProviderError:
        """The value in a read's answer, checked; no message quotes the answer."""
        if not isinstance(answer, dict) or not isinstance(answer.get("value"), str):
            return self.error(ref, "the server's answer is not an object with a string 'value'")
        try:
            text = answer["value"]
            data = json_field(text, ref.key) if ref.key is not None else utf8(text)
            fetched = Fetched(ref.decoded(data), _token(answer.get("version")))
        except ValueError as exc:
            return self.error(ref, str(exc))
        except ProviderError as exc:
            return exc
        self.note_expiry(ref, _expires(answer.get("expires")))
        return fetched

    # ------------------------------------------------------------------ one HTTP call

    def _get(self, operation: str, path: str, limit: int) -> Any:
        """``GET path`` as JSON, tried again while the server is busy or unreachable; every
        attempt counted as ``operation``. ``CallFailed`` says why it didn't work."""
        attempt = 0
        while True:
            attempt += 1
            wait = 0.0
            try:
                status, headers, body = self._attempt(path, limit)
            except urllib3.exceptions.SSLError as exc:
                self.count(operation, status="error")
                raise CallFailed(
                    f"TLS with {self.base} failed: {_short(exc)}", transient=False
                ) from None
            except urllib3.exceptions.HTTPError as exc:  # refused, reset, timed out
                self.count(operation, status="error")
                failure = CallFailed(f"{self.base} is unreachable: {_short(exc)}", transient=True)
            else:
                if status == 200:
                    self.count(operation)
                    return _json(body, path)
                self.count(operation, status="throttled" if status == 429 else "error")
                failure = self._refused(status, path)
                wait = retry_after(headers.get("Retry-After")) or 0.0
                if not failure.transient or wait > RETRY_AFTER_MAX:
                    raise failure
            if attempt > self.config.retries:
                raise failure
            backoff = min(BACKOFF_CAP, BACKOFF * 2 ** (attempt - 1))
            time.sleep(max(wait, random.uniform(backoff / 2, backoff)))  # noqa: S311 - jitter

    def _attempt(self, path: str, limit: int) -> tuple[int, Mapping[str, str], bytes | None]:
        """One request: the status, the headers, and the body (``None``: over ``limit``)."""
        response = self._http.request(
            "GET", self.base + path, headers=self._headers, preload_content=False, redirect=False
        )
        try:
            body = response.read(limit + 1)
        finally:
            response.release_conn()
        return response.status, response.headers, body if len(body) <= limit else None

    def _refused(self, status: int, path: str) -> CallFailed:
        """A non-200 answer as a sentence; the body is never quoted (it may echo a value)."""
        if status == 404:
            return CallFailed("not found", transient=False)
        if status in (401, 403):
            why = f"check the token in {self.config.token_env}"
            return CallFailed(f"access denied (HTTP {status}): {why}", transient=False)
        if status in BUSY:
            return CallFailed(f"the server is busy (HTTP {status})", transient=True)
        if 300 <= status < 400:
            return CallFailed(
                f"GET {path} answered a redirect (HTTP {status}), not followed: is url right?",
                transient=False,
            )
        return CallFailed(f"GET {path} answered HTTP {status}", transient=False)


def _json(body: bytes | None, path: str) -> Any:
    if body is None:
        raise CallFailed(f"the answer to GET {path} is too large", transient=False)
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, nested too deeply
        raise CallFailed(f"the answer to GET {path} is not JSON", transient=False) from None


def _token(version: object) -> str | None:
    """A version id as the change token: ``None`` (read to know) when there is none; one
    that doesn't look like an id is replaced by a digest of it (it goes into labels)."""
    if not isinstance(version, str) or not version:
        return None
    if _VERSION.fullmatch(version):
        return version
    return "h" + hashlib.sha256(version.encode("utf-8", "replace")).hexdigest()[:24]


def _expires(value: object) -> float | None:
    """An ``expires`` field as Unix seconds, or ``None`` when absent or not a number."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value) if value > 0 else None
    return None


def _short(exc: Exception) -> str:
    """An HTTP library error in one short line (it names addresses, never a value)."""
    return " ".join(str(exc).split())[:200] or type(exc).__name__
