"""One Vault HTTP call: retries, counting, the hold on a dead server, errors as sentences.

Why the retry rules differ by failure:

- **429 and 5xx** mean the server is there and busy (a rate-limit quota, a sealed or standby
  node): retried ``retries`` times with exponential backoff and jitter, and never sooner than
  the answer's ``Retry-After`` asks (OpenBao and Vault send it with
  ``enable_rate_limit_response_headers``). A ``Retry-After`` beyond
  ``providers.base.RETRY_AFTER_MAX`` ends the call at once, as transient: a server asking for
  minutes must not hold the cycle that long, and the daemon's own backoff tries again later.
- **A timeout or a refused/dropped connection**, or one cut in the middle of an answer, rarely
  heals within seconds; each attempt of a hanging server costs a whole ``timeout``. It is
  retried once, and then every other request of this provider fails at once for ``HOLD``
  seconds instead of waiting on the same dead server again. That is what bounds a cycle
  against a hung Vault to about two timeouts however many secrets it has, and the daemon's own
  backoff tries again later.
- **TLS and other 4xx** answers are never retried: they don't pass by themselves; nor is an
  answer that isn't JSON (an HTML page, a truncated document), which says the address or
  something in between is wrong, never what a KV path holds.

hvac hides an answer's headers and real status behind its exception classes, so the provider's
``requests`` session carries a response hook (``note_answer``) that keeps both for the thread
that made the call. hvac and requests are handed in by the provider (imported lazily), so this
module imports without them.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from providers.base import RETRY_AFTER_MAX
from syncd.retry_after import retry_after

T = TypeVar("T")

#: Never wait longer than this between two retries of one call.
BACKOFF_CAP = 30.0
#: A timed-out or refused call is retried this many times (at most ``retries``).
TRANSPORT_RETRIES = 1
#: After a call gave up on a dead server, the provider's other calls fail at once this long.
HOLD = 10.0


@dataclass(frozen=True)
class _Answer:
    """What the response hook saw of the last answer on this thread."""

    status: int
    retry_after: float | None


class Failure(Exception):
    """A failed call, already turned into a user-facing sentence (no value, no token)."""

    def __init__(self, message: str, *, transient: bool = False, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.transient = transient
        self.status = status


class Caller:
    """Runs calls against one server with the retry rules above; counts every attempt."""

    def __init__(
        self,
        *,
        addr: str,
        auth_method: str,
        timeout: float,
        retries: int,
        backoff: float,
        count: Callable[[str, str], None],
        hvac: Any,
        requests: Any,
    ) -> None:
        self.addr = addr
        self._auth_method = auth_method
        self._timeout = timeout
        self._retries = retries
        self._backoff = backoff
        self._count = count
        self._hvac_errors = hvac.exceptions
        self._http_errors = requests.exceptions
        self._response_type = requests.Response
        self._lock = threading.Lock()
        self._dead: tuple[float, str] | None = None  # (monotonic time, why) of the last give-up
        self._answers = threading.local()  # the last answer each thread's call got

    def note_answer(self, response: Any, *args: Any, **kwargs: Any) -> None:
        """``requests`` response hook: keep the status and ``Retry-After`` for this thread."""
        del args, kwargs
        self._answers.last = _Answer(
            int(response.status_code), retry_after(response.headers.get("Retry-After"))
        )

    def call(
        self, operation: str, fn: Callable[[], T], *, where: str = "", login: bool = False
    ) -> T:
        """Run ``fn`` with retries; count every attempt; raise ``Failure``."""
        hvac_exc, req_exc = self._hvac_errors, self._http_errors
        transport = (req_exc.ConnectionError, req_exc.Timeout, req_exc.ChunkedEncodingError)
        attempt = transport_failures = 0
        while True:
            self._check_hold()
            attempt += 1
            self._answers.last = None
            wait = 0.0
            try:
                result = fn()
            except hvac_exc.VaultError as exc:
                answer: _Answer | None = self._answers.last
                status = answer.status if answer is not None else _status(exc)
                wait = (answer.retry_after if answer is not None else None) or 0.0
                self._count(operation, "throttled" if status == 429 else "error")
                busy = status == 429 or status >= 500
                if not busy or attempt > self._retries or wait > RETRY_AFTER_MAX:
                    raise self._http_failure(
                        exc, status, where=where, login=login, attempts=attempt, wait=wait
                    ) from None
            except req_exc.SSLError as exc:
                self._count(operation, "error")
                raise Failure(f"TLS with {self.addr} failed: {_tls_reason(exc)}") from None
            except transport as exc:
                self._count(operation, "error")
                transport_failures += 1
                if transport_failures > min(self._retries, TRANSPORT_RETRIES):
                    raise self._give_up(exc, attempt) from None
            except OSError as exc:  # e.g. the CA file vanished
                self._count(operation, "error")
                raise Failure(f"{where}: {exc.strerror or exc}") from None
            else:
                if isinstance(result, self._response_type) and result.status_code == 200:
                    # hvac hands back the raw response when a 200 answer isn't JSON
                    self._count(operation, "error")
                    raise self._not_json(result, where=where)
                self._count(operation, "ok")
                with self._lock:
                    self._dead = None
                return result
            delay = min(BACKOFF_CAP, self._backoff * 2 ** (attempt - 1))
            time.sleep(max(wait, random.uniform(delay / 2, delay)))  # noqa: S311 - jitter

    def _not_json(self, response: Any, *, where: str) -> Failure:
        """A 200 answer hvac couldn't decode: the address, or something in between, is wrong."""
        kind = str(response.headers.get("Content-Type") or "no Content-Type").split(";")[0]
        return Failure(
            f"{where}: Vault at {self.addr} answered HTTP 200 with a body that is not JSON "
            f"({kind[:60]}, {len(response.content)} bytes): is addr a Vault server, or is a "
            "proxy in between answering?"
        )

    def _give_up(self, exc: Exception, attempts: int) -> Failure:
        """The server is gone: say so, and hold the provider's other calls for ``HOLD``."""
        if isinstance(exc, self._http_errors.Timeout):
            kind = f"did not answer within {self._timeout:g} s"
        elif isinstance(exc, self._http_errors.ChunkedEncodingError):
            kind = "dropped the connection in the middle of an answer"
        else:
            kind = "is unreachable (connection refused or dropped)"
        message = f"Vault at {self.addr} {kind} (after {attempts} attempts)"
        with self._lock:
            self._dead = (time.monotonic(), message)
        return Failure(message, transient=True)

    def _check_hold(self) -> None:
        with self._lock:
            dead = self._dead
        if dead is not None and time.monotonic() - dead[0] < HOLD:
            raise Failure(f"{dead[1]}; not asked again for {HOLD:g} s after that", transient=True)

    def _http_failure(
        self, exc: Exception, status: int, *, where: str, login: bool, attempts: int, wait: float
    ) -> Failure:
        server = "; ".join(str(e) for e in (getattr(exc, "errors", None) or []) if e)
        detail = f" ({server[:300]})" if server else ""
        tries = f"after {attempts} attempt{'s' if attempts > 1 else ''}"
        if wait > RETRY_AFTER_MAX:
            tries += f" (Retry-After asked for {wait:.0f} s, over {RETRY_AFTER_MAX:g} s)"
        if login and self._auth_method == "token" and status in (401, 403):
            return Failure(
                f"the token was refused (HTTP {status}{detail}): expired, revoked or wrong",
                status=status,
            )
        if login:
            return Failure(
                f"login with {self._auth_method} failed: HTTP {status}{detail}",
                transient=status == 429 or status >= 500,
                status=status,
            )
        if status == 404:
            return Failure(f"{where}: not found", status=404)
        if status in (401, 403):
            return Failure(f"{where}: permission denied{detail}", status=status)
        if status == 429:
            return Failure(
                f"{where}: throttled (HTTP 429) {tries}",
                transient=True,
                status=429,
            )
        if status >= 500:
            return Failure(
                f"{where}: server error HTTP {status}{detail} {tries}",
                transient=True,
                status=status,
            )
        return Failure(f"{where}: HTTP {status}{detail}", status=status)


_STATUS_OF = {
    "InvalidRequest": 400,
    "Unauthorized": 401,
    "Forbidden": 403,
    "InvalidPath": 404,
    "UnsupportedOperation": 405,
    "PreconditionFailed": 412,
    "RateLimitExceeded": 429,
    "InternalServerError": 500,
    "VaultNotInitialized": 501,
    "BadGateway": 502,
    "VaultDown": 503,
}


def _status(exc: Exception) -> int:
    """The HTTP status behind an hvac exception (hvac keeps only the class), for an answer the
    response hook didn't see."""
    for cls in type(exc).__mro__:
        if cls.__name__ in _STATUS_OF:
            return _STATUS_OF[cls.__name__]
    return 500


_TLS_REASON = re.compile(r"certificate verify failed: ([^()'\"]+)")


def _tls_reason(exc: Exception) -> str:
    match = _TLS_REASON.search(str(exc))
    if match:
        return (
            f"certificate verify failed ({match[1].strip()[:200]}); set ca_cert to the CA that "
            "signed the server's certificate"
        )
    return "TLS handshake error (is the address https and the server speaking TLS?)"
