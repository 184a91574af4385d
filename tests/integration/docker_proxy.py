"""A fault-injecting proxy in front of dockerd's API socket, for the Swarm fault and crash
tests: a test scripts what happens to chosen requests (hold, fail, drop, hang, refuse) while
syncd talks to the proxy's socket as if it were dockerd's.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

#: What the proxy does to a request a rule matches:
#: ``watch`` forwards it and only notes that it came; ``hold`` keeps it until the test
#: releases it (forwarded or dropped); ``gate`` holds the first ``nth`` matching requests until
#: all of them have arrived, then forwards them together; ``hang`` never answers; ``fail``
#: answers 500 itself; ``drop`` closes the connection without forwarding; ``drop-after``
#: forwards, then closes without passing dockerd's answer on (the write happened, the caller
#: can't know); ``refuse`` drops it and stops listening, so later connections are refused
#: until ``DockerProxy.listen``.
ProxyAction = Literal["watch", "hold", "gate", "hang", "fail", "drop", "drop-after", "refuse"]
#: How long the proxy's accept waits before it checks whether it should stop.
ACCEPT_POLL = 0.1
_API_VERSION = re.compile(r"^/v[0-9.]+(?=/)")
_FAILURE_BODY = b'{"message":"injected by the test proxy"}'
_FAILURE = (
    b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n"
    + f"Content-Length: {len(_FAILURE_BODY)}\r\nConnection: close\r\n\r\n".encode()
    + _FAILURE_BODY
)


@dataclass(eq=False)
class Rule:
    """A fault for the ``nth`` request whose method and API path match (``gate``: the first
    ``nth``). ``path`` is a regular expression over the path without its ``/v1.NN`` prefix and
    query, e.g. ``/services/[^/]+/update``."""

    method: str
    path: str
    action: ProxyAction
    nth: int = 1
    seen: int = 0
    #: set once the rule's request arrived (for ``gate``: all of them)
    hit: threading.Event = field(default_factory=threading.Event)
    _released: threading.Event = field(default_factory=threading.Event)
    _forward: bool = False
    _gate: threading.Barrier | None = None

    def matches(self, method: str, path: str) -> bool:
        return method == self.method and re.fullmatch(self.path, path) is not None

    def wait(self, timeout: float = 60.0) -> None:
        """Wait until the rule's request arrived; fail the test if it never does."""
        if not self.hit.wait(timeout):
            pytest.fail(f"no {self.method} {self.path} request #{self.nth} within {timeout:.0f}s")

    def release(self, *, forward: bool) -> None:
        """Let a held request go on to dockerd (``forward``) or drop it unanswered."""
        self._forward = forward
        self._released.set()


class DockerProxy:
    """A unix-socket HTTP proxy in front of dockerd's socket that injects faults per request.

    Each request is forwarded on a connection of its own with ``Connection: close``, so every
    request is seen whole and answered (or not) on its own. ``requests`` records each one as
    ``(method, path, what happened)``.
    """

    def __init__(self, upstream: str, path: Path, *, timeout: float = 120.0) -> None:
        self.upstream = upstream.removeprefix("unix://")
        self.path = path
        self.timeout = timeout
        self.rules: list[Rule] = []
        self.requests: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener: socket.socket | None = None
        self.listen()
        self._thread = threading.Thread(target=self._accept, name="docker-proxy", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"unix://{self.path}"

    def add(self, method: str, path: str, action: ProxyAction, nth: int = 1) -> Rule:
        """Add a rule (see ``ProxyAction``)."""
        rule = Rule(method, path, action, nth)
        if action == "gate":
            rule._gate = threading.Barrier(nth, timeout=self.timeout, action=rule.hit.set)
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        """Forget every rule, dropping any request still held."""
        with self._lock:
            rules, self.rules = self.rules, []
        for rule in rules:
            if not rule._released.is_set():
                rule.release(forward=False)
            if rule._gate is not None:
                rule._gate.abort()

    def count(self, method: str, path: str) -> int:
        """How many requests like this came through."""
        return sum(1 for m, p, _ in self.requests if m == method and re.fullmatch(path, p))

    def listen(self) -> None:
        """Accept connections (again, after ``refuse``)."""
        with self._lock:
            if self._listener is not None:
                return
            self.path.unlink(missing_ok=True)
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(str(self.path))
            listener.listen(64)
            listener.settimeout(ACCEPT_POLL)
            self._listener = listener

    def refuse(self) -> None:
        """Stop listening: connecting fails with ECONNREFUSED (the socket file stays)."""
        with self._lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
            # the accept thread's poll holds the socket open until its timeout ends
            time.sleep(ACCEPT_POLL * 1.5)

    def close(self) -> None:
        self._stop.set()
        self.clear()
        self.refuse()
        self._thread.join(timeout=10)
        self.path.unlink(missing_ok=True)

    def _accept(self) -> None:
        while not self._stop.is_set():
            listener = self._listener
            if listener is None:
                time.sleep(0.02)
                continue
            try:
                conn, _ = listener.accept()
            except OSError:  # a timeout, or closed by refuse()
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(self.timeout)
            try:
                request = _read_request(conn)
            except OSError:
                return
            if request is None:
                return
            method, path, raw = request
            rule = self._rule_for(method, path)
            action: ProxyAction = rule.action if rule is not None else "watch"
            with self._lock:
                self.requests.append((method, path, action))
            if rule is not None and action in ("hold", "hang"):
                rule.hit.set()
                while not rule._released.wait(0.1):
                    if self._stop.is_set():
                        return
                if action == "hang" or not rule._forward:
                    return
            elif rule is not None and action == "gate":
                assert rule._gate is not None
                try:
                    rule._gate.wait()
                except threading.BrokenBarrierError:
                    return
            elif rule is not None:
                rule.hit.set()
            if action == "fail":
                conn.sendall(_FAILURE)
                return
            if action == "drop":
                return
            if action == "refuse":
                self.refuse()
                return
            answer = self._forward(raw)
            if answer is not None and action != "drop-after":
                with contextlib.suppress(OSError):
                    conn.sendall(answer)

    def _rule_for(self, method: str, path: str) -> Rule | None:
        firing = []
        with self._lock:
            for rule in self.rules:
                if rule.matches(method, path):
                    rule.seen += 1
                    if rule.seen == rule.nth or (rule.action == "gate" and rule.seen <= rule.nth):
                        firing.append(rule)
        return firing[0] if firing else None

    def _forward(self, raw: bytes) -> bytes | None:
        """dockerd's whole answer, or ``None`` when dockerd can't be reached (the client
        then sees its connection closed, as when a daemon goes away mid-request)."""
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        upstream.settimeout(self.timeout)
        try:
            upstream.connect(self.upstream)
            upstream.sendall(raw)
            chunks = []
            while data := upstream.recv(65536):
                chunks.append(data)
        except OSError:
            return None
        finally:
            upstream.close()
        return b"".join(chunks)


def _read_request(conn: socket.socket) -> tuple[str, str, bytes] | None:
    """One HTTP request: ``(method, API path, bytes to forward with Connection: close)``."""
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        data = conn.recv(65536)
        if not data:
            return None
        buffer += data
    head, _, body = buffer.partition(b"\r\n\r\n")
    request_line, *header_lines = head.decode("latin-1").split("\r\n")
    method, target, protocol = request_line.split(" ", 2)
    headers = [tuple(part.strip() for part in line.split(":", 1)) for line in header_lines]
    fields = {name.lower(): value for name, value in headers}
    assert "chunked" not in fields.get("transfer-encoding", ""), "chunked bodies aren't proxied"
    length = int(fields.get("content-length", "0"))
    while len(body) < length:
        data = conn.recv(65536)
        if not data:
            return None
        body += data
    kept = [f"{name}: {value}" for name, value in headers if name.lower() != "connection"]
    forwarded = "\r\n".join([f"{method} {target} {protocol}", *kept, "Connection: close", "", ""])
    path = _API_VERSION.sub("", target.split("?", 1)[0])
    return method, path, forwarded.encode("latin-1") + body[:length]
