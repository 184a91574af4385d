"""Azure SDK failures as one value-free sentence each, and which of them are a dead vault.

The SDK wraps what went wrong (a TLS error inside a ``ServiceRequestError``, a refused
connection to Entra ID inside a ``ClientAuthenticationError``), so every test here looks
through the whole chain of wrapped exceptions. azure-core is imported only when a failure is
explained, which happens only after a provider was built (so the SDK is there).
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator

from providers.base import RETRY_AFTER_MAX
from syncd.retry_after import retry_after

#: A timeout or a refused or dropped connection is retried this many times.
TRANSPORT_RETRIES = 1
#: The statuses azure-core retries (every other answer fails at once).
RETRIED = frozenset({408, 429, 500, 502, 503, 504}) | frozenset(range(506, 600))


class Held(Exception):
    """A call not sent because an earlier one gave up on a dead vault a moment ago."""


def explain(exc: BaseException, doing: str, *, vault: str, retry_total: int) -> tuple[str, bool]:
    """A one-line, value-free reason for a failed call, and whether it may pass by itself."""
    from azure.core.exceptions import (
        ClientAuthenticationError,
        DecodeError,
        HttpResponseError,
        IncompleteReadError,
        ServiceRequestError,
        ServiceResponseError,
    )

    if isinstance(exc, Held):
        return f"{doing}: {exc}", True
    if any(isinstance(e, IncompleteReadError) for e in _chain(exc)):
        return f"{doing}: {vault} dropped the connection in the middle of an answer", True
    if isinstance(exc, DecodeError | ValueError):
        # the SDK's own text can quote the body; only what is wrong with it is shown
        return (
            f"{doing}: {vault} answered with a body that is not JSON: is vault_url a Key "
            "Vault, or is a proxy in between answering?",
            False,
        )
    if is_tls_error(exc):
        return (
            f"{doing}: TLS certificate of {vault} or of the authority not trusted "
            "(set ca_bundle to the CA that signed it)",
            False,
        )
    if isinstance(exc, ClientAuthenticationError):
        return f"{doing}: authentication failed: {first_line(exc)}", is_transport(exc)
    if isinstance(exc, HttpResponseError) and exc.status_code is not None:
        code = exc.status_code
        retries = retry_total if code in RETRIED else 0
        wait = _retry_after(exc)
        tries = f"after {retries} retries"
        if wait is not None and wait > RETRY_AFTER_MAX:
            tries = f"and asked to wait {wait:.0f} s (Retry-After, over {RETRY_AFTER_MAX:g} s)"
        if code == 429:
            return f"{doing}: throttled by {vault} (429) {tries}", True
        if code >= 500 or code == 408:
            return f"{doing}: {vault} answered {code} {tries}", True
        if code == 403:
            return f"{doing}: access denied by {vault} (403): {first_line(exc)}", False
        return f"{doing}: {vault} answered {code}: {first_line(exc)}", False
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        attempts = 1 + TRANSPORT_RETRIES
        return f"{doing}: can't reach {vault} (after {attempts} attempts): {first_line(exc)}", True
    return f"{doing}: {type(exc).__name__}: {first_line(exc)}", False


def is_transport(exc: BaseException) -> bool:
    """A timeout or a refused or dropped connection (to the vault or the authority), found in
    the exception or what it wraps; a TLS failure is not one (it doesn't pass by itself)."""
    from azure.core.exceptions import ServiceRequestError, ServiceResponseError

    if is_tls_error(exc):
        return False
    return any(isinstance(e, ServiceRequestError | ServiceResponseError) for e in _chain(exc))


def is_tls_error(exc: BaseException) -> bool:
    """A certificate the client doesn't trust, anywhere in the chain."""
    return any(
        isinstance(e, ssl.SSLError) or "CERTIFICATE_VERIFY_FAILED" in str(e) for e in _chain(exc)
    )


def counted(exc: BaseException) -> bool:
    """Whether the failed call's answer went through the response hook (which counted it): an
    answer with a status, or a body the SDK couldn't decode; not one cut off mid-body."""
    from azure.core.exceptions import DecodeError, IncompleteReadError

    if any(isinstance(e, IncompleteReadError) for e in _chain(exc)):
        return False
    return getattr(exc, "response", None) is not None or isinstance(exc, DecodeError | ValueError)


def _retry_after(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    return retry_after(headers.get("Retry-After")) if headers is not None else None


def status_of(exc: BaseException) -> int | None:
    """The HTTP status an SDK exception carries, if any."""
    code = getattr(exc, "status_code", None)
    return code if isinstance(code, int) else None


def first_line(exc: BaseException) -> str:
    """The first line of an exception's text, at most 300 characters."""
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line[:300]


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it wraps: azure-core's ``inner_exception``, else cause or context."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        inner = getattr(current, "inner_exception", None)
        if not isinstance(inner, BaseException):
            inner = current.__cause__ or current.__context__
        current = inner
