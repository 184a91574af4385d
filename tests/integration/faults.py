"""Faults on loopback that every provider's tests inflict the same way.

A server that accepts and never answers, one that resets every connection, a port nobody
listens on; a cycle timed against a bound; ``syncd check`` run with an SDK made unimportable.
One copy here so each provider is attacked alike.

``FaultProxy`` goes further: a reverse proxy in front of the real server (OpenBao, moto, the
Key Vault double; TLS on both sides where the client expects it), whose behaviour a test
scripts per request while a client runs: pass through, refuse connections (a stopped server),
die on a given request (after the listing, before the reads), hang, answer 429 with
``Retry-After`` or a 5xx, close or reset the connection, cut an answer short (framed or mid
body), or answer any body (an HTML page, binary, a credential refusal).
"""

from __future__ import annotations

import http.client
import socket
import ssl
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from syncd.engine import CycleResult, Engine
from tests.conftest import ROOT

Fault = Literal["hang", "reset", "refuse"]


def timed_cycle(engine: Engine, *, bound: float) -> tuple[float, CycleResult]:
    """One engine cycle and its wall time; fails as soon as it runs over ``bound`` seconds."""
    box: dict[str, CycleResult] = {}
    thread = threading.Thread(target=lambda: box.setdefault("r", engine.run_cycle()), daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(bound + 1.0)
    elapsed = time.monotonic() - started
    assert not thread.is_alive(), f"the cycle was still running after {elapsed:.1f}s"
    return elapsed, box["r"]


@contextmanager
def dead_port(kind: Fault) -> Iterator[int]:
    """A loopback port that accepts and never answers ("hang"), resets every connection at
    once ("reset"), or has no listener ("refuse")."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = int(listener.getsockname()[1])
    if kind == "refuse":
        listener.close()
        yield port
        return
    listener.listen(64)
    listener.settimeout(0.1)
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            if kind == "reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
            else:
                held.append(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()


@contextmanager
def dead_endpoint(kind: Fault) -> Iterator[str]:
    """``dead_port`` as an ``http://`` URL."""
    with dead_port(kind) as port:
        yield f"http://127.0.0.1:{port}"


def check_without(module: str, config: Path) -> subprocess.CompletedProcess[str]:
    """``syncd check --config CONFIG`` in a process where ``module`` can't be imported."""
    blocked = (
        f"import sys; sys.modules[{module!r}] = None; from syncd.cli import main; sys.exit(main())"
    )
    return subprocess.run(
        [str(ROOT / ".venv" / "bin" / "python"), "-c", blocked, "check", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# --------------------------------------------------------------------------- the fault proxy


@dataclass(frozen=True)
class Seen:
    """One request that reached the proxy: when, what, and what the proxy did with it."""

    at: float
    method: str
    path: str
    #: the AWS JSON protocol's operation (``X-Amz-Target: secretsmanager.ListSecrets`` gives
    #: ``ListSecrets``); empty for other protocols
    operation: str
    #: the action that handled it (``pass`` when none did)
    action: str


Match = Callable[[Seen], bool]


def anything(_: Seen) -> bool:
    """Every request."""
    return True


@dataclass(frozen=True)
class Answer:
    """Answer the request with this response instead of forwarding it."""

    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    name: str = "answer"


@dataclass(frozen=True)
class Hang:
    """Read the request and never answer (until the fault is cleared)."""

    name: str = "hang"


@dataclass(frozen=True)
class Drop:
    """Read the request and close the connection unanswered: ``reset`` sends a TCP RST, else
    an orderly close (FIN), as a crashing or restarting server does."""

    reset: bool = False
    name: str = "drop"


@dataclass(frozen=True)
class Cut:
    """Forward the request, then send the real answer's body without its last ``tail`` bytes
    (None: without its second half): with ``framed`` as a complete response whose
    Content-Length says so (a truncated document, value and all), else under the full
    Content-Length, closing the connection mid-body. The bodies sent are kept in
    ``FaultProxy.cut_bodies``."""

    framed: bool = True
    tail: int | None = None
    name: str = "cut"


@dataclass(frozen=True)
class Kill:
    """The server dies now: this connection and every other one is dropped, and new ones are
    refused until ``up()`` (or ``clear()``)."""

    name: str = "kill"


Action = Answer | Hang | Drop | Cut | Kill


@dataclass
class _Rule:
    match: Match
    action: Action
    times: int | None  # None: every matching request


#: Headers that describe one connection, not the message (never forwarded either way).
_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "content-length",
        "accept-encoding",
    }
)
#: How long a hung request is held at most, so a forgotten ``clear()`` can't leak threads.
HANG_MAX = 120.0


@dataclass(frozen=True)
class TlsFiles:
    """A test CA and a loopback server certificate it signed (PEM files)."""

    ca: Path
    cert: Path
    key: Path


def make_tls(directory: Path) -> TlsFiles:
    """Generate a throwaway CA and a certificate for 127.0.0.1/localhost signed by it."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "syncd fault proxy test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(
        ca=directory / "ca.pem", cert=directory / "cert.pem", key=directory / "key.pem"
    )
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


class FaultProxy:
    """A reverse proxy on loopback in front of a real server, whose faults a test scripts.

    By default every request is forwarded (over TLS when ``upstream`` is ``https://``, trusting
    ``upstream_ca``) and answered with the server's answer; with ``tls`` the proxy itself
    speaks HTTPS with that certificate. ``fault(action, when=...)`` makes matching requests
    fail in one of the ways a real server, load balancer or network does; ``down()`` refuses
    connections like a stopped server; ``clear()`` heals everything. Every request is
    recorded in ``seen``, so a test can tell what a client sent and when (retry gaps).

    Absolute URLs of the upstream in answers (next-page links, auth challenges) are rewritten
    to the proxy's, so a client that follows them stays behind the proxy. The listening port
    stays the same through ``down()``/``up()``: a client configured once finds the server
    again, as it would after a restart.
    """

    def __init__(
        self, upstream: str, *, upstream_ca: str | None = None, tls: TlsFiles | None = None
    ) -> None:
        parts = urlsplit(upstream)
        assert parts.hostname and parts.port, f"upstream {upstream!r} needs a host and a port"
        self._upstream = (parts.scheme, parts.hostname, parts.port)
        self._upstream_origin = f"{parts.scheme}://{parts.hostname}:{parts.port}".encode()
        self._client_context: ssl.SSLContext | None = None
        if parts.scheme == "https":
            self._client_context = ssl.create_default_context(cafile=upstream_ca)
        self._server_context: ssl.SSLContext | None = None
        if tls is not None:
            self._server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._server_context.load_cert_chain(str(tls.cert), str(tls.key))
        self._lock = threading.Lock()
        self._rules: list[_Rule] = []
        self._conns: set[socket.socket] = set()
        self._release = threading.Event()
        self._closed = False
        self._listener: socket.socket | None = None
        self.seen: list[Seen] = []
        self.cut_bodies: list[bytes] = []
        self.port = 0
        self._bind()
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self._origin = self.url.encode()
        self._acceptor = threading.Thread(target=self._accept, name="fault-proxy", daemon=True)
        self._acceptor.start()

    # ------------------------------------------------------------------ scripting

    def fault(self, action: Action, *, when: Match = anything, times: int | None = None) -> None:
        """Handle the next ``times`` requests matching ``when`` (None: all of them) with
        ``action``; the first matching rule wins, in the order they were added."""
        with self._lock:
            self._rules.append(_Rule(when, action, times))

    def down(self) -> None:
        """Stop like a killed server: drop every connection, refuse new ones."""
        with self._lock:
            listener, self._listener = self._listener, None
            conns = list(self._conns)
        if listener is not None:
            listener.close()
        for conn in conns:
            _close(conn, reset=False)

    def up(self) -> None:
        """Listen again on the same port (a restarted server)."""
        with self._lock:
            if self._listener is not None or self._closed:
                return
        self._bind()

    def clear(self) -> None:
        """Forget every fault, release hung requests and listen again: the server is back."""
        with self._lock:
            self._rules.clear()
            release, self._release = self._release, threading.Event()
        release.set()
        self.up()

    def close(self) -> None:
        """Stop for good."""
        with self._lock:
            self._closed = True
            self._rules.clear()
        self._release.set()
        self.down()
        self._acceptor.join(5)

    def requests(self, when: Match = anything, *, since: float = 0.0) -> list[Seen]:
        """The recorded requests matching ``when`` that arrived at or after ``since``."""
        with self._lock:
            return [s for s in self.seen if s.at >= since and when(s)]

    # ------------------------------------------------------------------ plumbing

    def _bind(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        deadline = time.monotonic() + 5
        while True:
            try:
                listener.bind(("127.0.0.1", self.port))
                break
            except OSError:
                if self.port == 0 or time.monotonic() > deadline:
                    listener.close()
                    raise
                time.sleep(0.05)  # a connection of ours still holds the port for a moment
        listener.listen(128)
        listener.settimeout(0.05)
        self.port = int(listener.getsockname()[1])
        with self._lock:
            self._listener = listener

    def _accept(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
                listener = self._listener
            if listener is None:
                time.sleep(0.02)
                continue
            try:
                conn, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        try:
            if self._server_context is not None:
                conn = self._server_context.wrap_socket(conn, server_side=True)
        except OSError:
            conn.close()
            return
        with self._lock:
            self._conns.add(conn)
        try:
            _Handler(conn, ("127.0.0.1", 0), self)
        except Exception:  # the client or a fault broke the exchange: this connection ends
            pass
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()

    def _decide(self, method: str, path: str, operation: str) -> tuple[Seen, Action | None]:
        now = time.monotonic()
        with self._lock:
            probe = Seen(now, method, path, operation, "pass")
            action: Action | None = None
            for rule in self._rules:
                if (rule.times is None or rule.times > 0) and rule.match(probe):
                    if rule.times is not None:
                        rule.times -= 1
                    action = rule.action
                    break
            seen = Seen(now, method, path, operation, action.name if action else "pass")
            self.seen.append(seen)
            return seen, action

    def _hang(self) -> None:
        with self._lock:
            release = self._release
        release.wait(HANG_MAX)

    def _forward(
        self, method: str, path: str, headers: list[tuple[str, str]], body: bytes
    ) -> tuple[int, str, list[tuple[str, str]], bytes] | None:
        """The upstream's answer (status, reason, headers, body), or None when it's down."""
        scheme, host, port = self._upstream
        conn: http.client.HTTPConnection
        if scheme == "https":
            conn = http.client.HTTPSConnection(host, port, timeout=30, context=self._client_context)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=30)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for name, value in headers:
                if name.lower() not in _HOP:
                    conn.putheader(name, value)
            if body or method in ("POST", "PUT", "PATCH"):
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body or None)
            answer = conn.getresponse()
            data = answer.read()
        except (OSError, http.client.HTTPException):
            return None
        finally:
            conn.close()
        origin, ours = self._upstream_origin, self._origin
        kept = [
            (k, v.replace(origin.decode(), ours.decode()))
            for k, v in answer.getheaders()
            if k.lower() not in _HOP
        ]
        return answer.status, answer.reason, kept, data.replace(origin, ours)


def _close(conn: socket.socket, *, reset: bool) -> None:
    """Close ``conn`` with a FIN, or with a RST (``reset``), waking any thread reading it."""
    try:
        if reset:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    conn.close()


class _Handler(BaseHTTPRequestHandler):
    """One client connection of a ``FaultProxy``: requests read, faults played, answers relayed."""

    protocol_version = "HTTP/1.1"
    server: FaultProxy  # type: ignore[assignment]

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: request lines name secrets, and the tests don't need the noise."""
        del format, args

    def _body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _any(self) -> None:
        proxy = self.server
        body = self._body()
        target = self.headers.get("X-Amz-Target") or ""
        _, action = proxy._decide(self.command, self.path, target.rpartition(".")[2])
        headers = list(self.headers.items())
        if isinstance(action, Kill):
            proxy.down()
            self._drop(reset=True)
        elif isinstance(action, Hang):
            proxy._hang()
            self._drop(reset=False)
        elif isinstance(action, Drop):
            self._drop(reset=action.reset)
        elif isinstance(action, Answer):
            self._send(action.status, "", list(action.headers), action.body)
        else:
            answer = proxy._forward(self.command, self.path, headers, body)
            if answer is None:
                self._drop(reset=False)  # the upstream itself is gone
                return
            status, reason, kept, data = answer
            if isinstance(action, Cut):
                cut = len(data) // 2 if action.tail is None else max(0, len(data) - action.tail)
                part = data[:cut]
                proxy.cut_bodies.append(part)
                self._send(status, reason, kept, part, length=None if action.framed else len(data))
                if not action.framed:
                    self._drop(reset=False)
                return
            self._send(status, reason, kept, data)

    def _send(
        self,
        status: int,
        reason: str,
        headers: list[tuple[str, str]],
        data: bytes,
        *,
        length: int | None = None,
    ) -> None:
        self.send_response_only(status, reason or None)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data) if length is None else length))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _drop(self, *, reset: bool) -> None:
        self.close_connection = True
        _close(self.connection, reset=reset)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_LIST = _any
