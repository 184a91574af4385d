"""``POST /sync``: what a caller must prove, what it may ask for, and how requests merge.

Everything here treats the request as hostile: the bearer token is compared in constant
time with one read from ``daemon.trigger.token_file`` (read on every request, so a rotated
token counts at once, and never logged); the query is bounded in size and in the number of
names, and a name is only ever echoed back JSON-escaped. A token file that is missing,
empty, too short or not a bearer token refuses every request: an empty token must never
match an empty ``Authorization``.

Requests don't run cycles themselves: they are merged into one ``SyncQueue`` entry that
the daemon's single worker takes when it gets to it, so ten webhooks in a burst make one
cycle, and a cycle never runs on an HTTP thread.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl

log = logging.getLogger("syncd.trigger")

#: A token file larger than this is not a token (and is not read further).
MAX_TOKEN_BYTES = 4096
#: Shorter tokens can be guessed; ``openssl rand -base64 32`` gives 44 characters.
MIN_TOKEN_CHARS = 16
#: RFC 6750 ``b64token``: what a bearer token may hold, so comparison is on plain ASCII.
_B64TOKEN = re.compile(rb"[A-Za-z0-9\-._~+/]+=*")
#: ``?secret=`` given more often than this is refused rather than parsed.
MAX_NAMES = 256
#: No secret name is longer (target names are at most 253 characters).
MAX_NAME = 253

Verdict = Literal["ok", "unauthorized", "unavailable"]


class TokenFile:
    """The bearer token callers must send, read from its file on every check."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        #: the problem logged last, so a broken file is logged once, not once per request
        self._logged: str | None = None

    def read(self) -> bytes | str:
        """The token, or why there is none usable (a sentence about the file, never its
        content)."""
        try:
            # O_NONBLOCK: a FIFO at the path must not hang the HTTP thread
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            return f"can't be read: {exc.strerror or type(exc).__name__}"
        with os.fdopen(fd, "rb") as file:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return "is not a regular file"
            data = file.read(MAX_TOKEN_BYTES + 1)
        if len(data) > MAX_TOKEN_BYTES:
            return f"is larger than {MAX_TOKEN_BYTES} bytes"
        token = data.strip()
        if not token:
            return "is empty"
        if not _B64TOKEN.fullmatch(token):
            return "holds characters a bearer token can't have (letters, digits, -._~+/ and =)"
        if len(token) < MIN_TOKEN_CHARS:
            return f"holds a token shorter than {MIN_TOKEN_CHARS} characters"
        return token

    def usable(self) -> bool:
        """Whether the file holds a token now (logging why not), as at start and reload."""
        return self._current() is not None

    def check(self, authorization: str | None) -> Verdict:
        """Whether ``authorization`` (the header, or None) carries the current token."""
        token = self._current()
        if token is None:
            return "unavailable"
        given = _bearer(authorization)
        if given is None:
            return "unauthorized"
        return "ok" if hmac.compare_digest(given, token) else "unauthorized"

    def _current(self) -> bytes | None:
        token = self.read()
        self._report(token if isinstance(token, str) else None)
        return None if isinstance(token, str) else token

    def _report(self, problem: str | None) -> None:
        """Log a change of the file's state: once when it breaks, once when it is fixed."""
        with self._lock:
            if problem == self._logged:
                return
            self._logged = problem
        if problem is not None:
            log.error(
                "daemon.trigger: the token file %s %s; every POST /sync answers 503 until it "
                "holds a token",
                self.path,
                problem,
            )
        else:
            log.info("daemon.trigger: the token file %s holds a token again", self.path)


def _bearer(authorization: str | None) -> bytes | None:
    """The token of ``Bearer <token>``; None for anything else (no header, another scheme,
    characters a token can't have)."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    given = token.strip().encode("ascii", errors="replace")
    if len(given) > MAX_TOKEN_BYTES or not _B64TOKEN.fullmatch(given):
        return None
    return given


class BadRequest(ValueError):
    """A query ``POST /sync`` doesn't take; the message says what is wrong, never echoing it."""


def requested_names(query: str) -> list[str] | None:
    """The names of ``?secret=NAME&secret=...`` in the order given, once each; None (every
    secret) when there is no query."""
    if not query:
        return None
    try:
        fields = parse_qsl(
            query,
            keep_blank_values=True,
            strict_parsing=True,
            errors="strict",
            max_num_fields=MAX_NAMES,
        )
    except ValueError as exc:
        if "Max number of fields" in str(exc):
            raise BadRequest(f"at most {MAX_NAMES} secret= parameters") from exc
        raise BadRequest("the query is not key=value pairs of UTF-8 text") from exc
    names: list[str] = []
    for key, value in fields:
        if key != "secret":
            raise BadRequest("the only query parameter is secret=NAME")
        if not value or len(value) > MAX_NAME:
            raise BadRequest(f"a secret name is 1 to {MAX_NAME} characters")
        names.append(value)
    return list(dict.fromkeys(names))


@dataclass
class _Pending:
    everything: bool = False
    names: set[str] = field(default_factory=set)


class SyncQueue:
    """Requested syncs not yet taken by the worker, merged into one run."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: _Pending | None = None

    def add(self, names: list[str] | None) -> bool:
        """Queue ``names`` (None: every secret); True when nothing was queued before, so the
        caller must schedule a run (otherwise the queued run takes these too)."""
        with self._lock:
            first = self._pending is None
            pending = self._pending = self._pending or _Pending()
            if names is None:
                pending.everything = True
            else:
                pending.names.update(names)
            return first

    def take(self) -> list[str] | None:
        """What was requested since the last take (None: every secret), emptying the queue;
        an empty list when nothing was."""
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is None:
            return []
        if pending.everything:
            return None
        return sorted(pending.names)
