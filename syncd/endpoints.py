"""The daemon's HTTP listener: ``/metrics``, ``/healthz``, ``/readyz`` and ``POST /sync``.

GET and HEAD read and never change anything; HEAD answers exactly what GET would, without
the body. ``POST /sync`` exists only while ``daemon.trigger`` is configured (otherwise the
path is as unknown as any other: 404), and it only queues a run for the daemon's worker.
Any other known method is 405 with ``Allow``; a method HTTP doesn't define is the standard
library's 501.

Every request is bounded: a connection that stops sending is dropped after
``REQUEST_TIMEOUT``, a body is drained up to ``MAX_BODY`` bytes and otherwise refused (it is
never parsed), and the access log keeps the method, the path without its query and the
status, never a header, so a token can't reach a log even when a caller puts it in the URL.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST

from syncd.display import shown
from syncd.trigger import BadRequest, requested_names

if TYPE_CHECKING:
    from syncd.daemon import Daemon

log = logging.getLogger("syncd.http")

SYNC_PATH = "/sync"
API_VERSION = "syncd.io/v1"
#: The most of a request body read (and thrown away); a larger one is refused with 413.
MAX_BODY = 64 * 1024
#: Seconds a client may take to send its request before the connection is dropped.
REQUEST_TIMEOUT = 10.0
#: The most of a path shown in a debug log line.
_LOGGED_PATH = 200
_READ_ONLY = "GET, HEAD"
_TEXT = "text/plain; charset=utf-8"
_JSON = "application/json"
_LENGTH = re.compile(r"[0-9]{1,12}")


class Server(ThreadingHTTPServer):
    """A thread per request; a request that fails is logged as one debug line rather than a
    traceback on stderr."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Log the failure's type (a client that hung up, a timeout), never its text."""
        del request
        kind = type(sys.exc_info()[1]).__name__
        log.debug("a request from %s failed: %s", client_address[0], kind)


def handler(daemon: Daemon) -> type[BaseHTTPRequestHandler]:
    """The request handler class for ``daemon``'s listener."""

    class Handler(BaseHTTPRequestHandler):
        """Routes by path and method; see the module docstring for the rules."""

        server_version = "syncd"
        timeout = REQUEST_TIMEOUT

        def do_GET(self) -> None:
            self._read(body=True)

        def do_HEAD(self) -> None:
            self._read(body=False)

        def do_POST(self) -> None:
            if self._path() == SYNC_PATH and daemon.trigger is not None:
                self._sync()
            else:
                self._refuse()

        def _refuse(self) -> None:
            if not self._drained():
                return
            if self._path() == SYNC_PATH and daemon.trigger is None:
                self._send(404, b"not found\n", _TEXT)
            elif self._path() == SYNC_PATH:
                self._send(405, b"POST only\n", _TEXT, headers={"Allow": "POST"})
            else:
                self._send(405, b"read-only: GET or HEAD\n", _TEXT, headers={"Allow": _READ_ONLY})

        do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _refuse

        def _read(self, *, body: bool) -> None:
            if not self._drained():
                return
            path = self._path()
            if path == "/metrics":
                data = daemon.metrics.exposition()
                self._send(200, data, CONTENT_TYPE_LATEST, body=body)
            elif path in ("/healthz", "/readyz"):
                problem = daemon.healthz() if path == "/healthz" else daemon.readyz()
                text = f"{problem}\n" if problem else "ok\n"
                if path == "/readyz":
                    text += "".join(f"{line}\n" for line in daemon.health.outcome_lines())
                self._send(503 if problem else 200, text.encode(), _TEXT, body=body)
            elif path == SYNC_PATH and daemon.trigger is not None:
                self._send(405, b"POST only\n", _TEXT, body=body, headers={"Allow": "POST"})
            else:
                self._send(404, b"not found\n", _TEXT, body=body)

        # -------------------------------------------------------------- POST /sync

        def _sync(self) -> None:
            """Authenticate, validate, then queue: nothing is queued for a caller that
            hasn't proven it holds the token, and nothing about the config is told to it."""
            token = daemon.trigger
            assert token is not None
            if not self._drained():
                daemon.metrics.sync_requests.labels("invalid").inc()
                return
            client = self.address_string()
            authorization = self.headers.get("Authorization")
            verdict = token.check(authorization)
            if verdict == "unavailable":
                daemon.metrics.sync_requests.labels("unavailable").inc()
                self._status(503, "the trigger's token file is not usable: see the daemon's log")
                return
            if verdict == "unauthorized":
                daemon.metrics.sync_requests.labels("unauthorized").inc()
                given = authorization is not None
                log.warning(
                    "POST /sync from %s refused: %s",
                    client,
                    "a wrong bearer token" if given else "no bearer token",
                )
                challenge = 'Bearer realm="syncd"' + (', error="invalid_token"' if given else "")
                self._status(401, "a bearer token is needed", {"WWW-Authenticate": challenge})
                return
            try:
                names = requested_names(self._query())
            except BadRequest as exc:
                daemon.metrics.sync_requests.labels("invalid").inc()
                self._status(400, str(exc))
                return
            if daemon.stop_event.is_set():
                daemon.metrics.sync_requests.labels("unavailable").inc()
                self._status(503, "the daemon is stopping")
                return
            if not daemon.leading:
                daemon.metrics.sync_requests.labels("not-leader").inc()
                log.info("POST /sync from %s refused: this replica is not the leader", client)
                self._status(503, "this replica is not the leader: send it to the leader")
                return
            if names is not None:
                known = daemon.known_secrets()
                unknown = [name for name in names if name not in known]
                if unknown:
                    daemon.metrics.sync_requests.labels("unknown").inc()
                    self._status(
                        404,
                        f"unknown secrets: {', '.join(unknown)}",
                        extra={"unknown": unknown},
                    )
                    return
            merged = daemon.request_sync(names)
            daemon.metrics.sync_requests.labels("merged" if merged else "accepted").inc()
            log.info(
                "POST /sync from %s: %s %s",
                client,
                ", ".join(shown(name) for name in names) if names else "every secret",
                "joins the queued run" if merged else "queued",
            )
            everything = [secret.name for secret in daemon.config.secrets]
            self._json(
                202,
                {"apiVersion": API_VERSION, "kind": "SyncRequest", "secrets": names or everything},
            )

        def _status(
            self,
            code: int,
            message: str,
            headers: dict[str, str] | None = None,
            *,
            extra: dict[str, Any] | None = None,
        ) -> None:
            body = {"apiVersion": API_VERSION, "kind": "Status", "code": code, "message": message}
            self._json(code, {**body, **(extra or {})}, headers)

        def _json(
            self, code: int, document: dict[str, Any], headers: dict[str, str] | None = None
        ) -> None:
            data = (json.dumps(document) + "\n").encode()
            self._send(code, data, _JSON, headers=headers)

        # -------------------------------------------------------------- plumbing

        def _path(self) -> str:
            return getattr(self, "path", "").split("?", 1)[0]

        def _query(self) -> str:
            return getattr(self, "path", "").partition("?")[2]

        def _drained(self) -> bool:
            """Read and drop the request body (so the answer isn't lost to a reset) when it
            is small enough; otherwise answer the refusal and say False."""
            if "Transfer-Encoding" in self.headers:
                self.close_connection = True
                self._send(411, b"send a Content-Length, not a chunked body\n", _TEXT)
                return False
            length = self.headers.get("Content-Length")
            if length is None:
                return True
            if not _LENGTH.fullmatch(length.strip()):
                self.close_connection = True
                self._send(400, b"bad Content-Length\n", _TEXT)
                return False
            remaining = int(length)
            if remaining > MAX_BODY:
                self.close_connection = True
                self._send(413, f"bodies are ignored; at most {MAX_BODY} bytes\n".encode(), _TEXT)
                return False
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, 8192))
                if not chunk:
                    break
                remaining -= len(chunk)
            return True

        def _send(
            self,
            code: int,
            data: bytes,
            content_type: str,
            *,
            body: bool = True,
            headers: dict[str, str] | None = None,
        ) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            if body:
                self.wfile.write(data)

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            del size
            log.debug(
                "%s %s %s %s",
                self.address_string(),
                shown(self.command or "-"),
                shown(self._path()[:_LOGGED_PATH]),
                code,
            )

        def log_message(self, format: str, *args: Any) -> None:
            # the standard library's other lines (malformed requests, timeouts) may hold
            # the raw request line in their arguments: only the kind of line is kept
            del args
            log.debug("%s: %s", self.address_string(), format)

    return Handler
