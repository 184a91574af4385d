"""A small Azure Key Vault (secrets data plane) and Entra ID test double, on loopback only.

Why this exists: Lowkey Vault's server jar is not served by Maven Central (only its client
and Testcontainers libraries are, and its Docker image can't be pulled here), and no other
Key Vault emulator is published on a registry this project can reach. This double speaks the
parts of the real REST protocol syncd uses, so the real ``azure-keyvault-secrets`` and
``azure-identity`` SDKs talk to it unchanged:

* HTTPS with a self-signed certificate (the SDK refuses plain HTTP);
* challenge-based auth: a request without a valid bearer token gets ``401`` with
  ``WWW-Authenticate: Bearer authorization=".../<tenant>", resource="https://vault.azure.net"``;
* an Entra-like token endpoint (``/<tenant>/oauth2/v2.0/token``, OpenID discovery) that
  checks a client secret or a certificate-signed client assertion, and an App Service style
  managed identity endpoint (plain HTTP, ``X-IDENTITY-HEADER``) for ``DefaultAzureCredential``;
* secrets: set, get (latest or a version), list (paged, ``maxresults`` at most 25, like the
  service, items without a version id), list versions. Timestamps are whole seconds; the
  ``exp`` (expiry) attribute a set gives is kept and returned.
* soft-delete, which every vault has now: delete moves a secret (all its versions) to the
  deleted secrets, whose name can't be set again (``409 Conflict``) until it is purged
  (``DELETE /deletedsecrets/<name>``) or recovered (``POST .../recover``, versions and
  timestamps as they were). A secret set again after a purge is a new one: new version id,
  new ``created``.

Test hooks under ``/_double/`` (no auth, loopback only): ``faults`` queues responses such as
``429`` with ``Retry-After`` or ``503``; ``revoke`` invalidates every issued token (the next
request gets a continuous-access-evaluation claims challenge, as Key Vault sends); ``stats``
counts requests per operation so a test can check the provider's own counts against it.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import secrets
import ssl
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

RESOURCE = "https://vault.azure.net"
PAGE_MAX = 25
TOKEN_TTL = 3600


@dataclass
class Version:
    """One immutable version of a secret."""

    id: str
    value: str
    content_type: str | None
    tags: dict[str, str]
    created: int
    updated: int
    enabled: bool = True
    #: the ``exp`` attribute (Unix seconds), as a set request gave it
    expires: int | None = None


@dataclass
class Fault:
    """A canned response returned instead of the real one, ``times`` times."""

    status: int
    times: int
    retry_after: str | None
    match: str


@dataclass
class State:
    """Everything the double holds; one lock guards it (the server is threaded)."""

    tenant: str
    client_id: str
    client_secret: str
    client_cert_pem: bytes | None
    identity_header: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    secrets: dict[str, list[Version]] = field(default_factory=dict)
    #: soft-deleted secrets: name -> (versions, deletedDate)
    deleted: dict[str, tuple[list[Version], int]] = field(default_factory=dict)
    tokens: dict[str, float] = field(default_factory=dict)
    revoked: set[str] = field(default_factory=set)
    faults: list[Fault] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)

    def bump(self, op: str) -> None:
        with self.lock:
            self.stats[op] = self.stats.get(op, 0) + 1

    def issue_token(self) -> str:
        token = secrets.token_urlsafe(24)
        with self.lock:
            self.tokens[token] = time.time() + TOKEN_TTL
        return token

    def token_state(self, header: str | None) -> str:
        """``ok``, ``revoked`` (answered with a CAE claims challenge) or ``missing``."""
        if not header or not header.startswith("Bearer "):
            return "missing"
        token = header[len("Bearer ") :]
        with self.lock:
            expiry = self.tokens.get(token)
            if token in self.revoked:
                return "revoked"
        return "ok" if expiry is not None and expiry > time.time() else "missing"

    def take_fault(self, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if path.startswith(fault.match) and fault.times > 0:
                    fault.times -= 1
                    return fault
            self.faults = [f for f in self.faults if f.times > 0]
        return None


class Handler(BaseHTTPRequestHandler):
    """One request; routes by path. ``state`` and ``public`` are set on the server."""

    server: DoubleServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the request line may carry secret names, and tests don't need the noise."""

    # ------------------------------------------------------------------ plumbing

    def _send(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, code: str, message: str) -> None:
        self._send(status, {"error": {"code": code, "message": message}})

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    @property
    def _state(self) -> State:
        return self.server.state

    def _base(self) -> str:
        return self.server.public

    # ------------------------------------------------------------------ dispatch

    def do_GET(self) -> None:
        """Read requests."""
        self._dispatch("GET")

    def do_PUT(self) -> None:
        """Set a secret."""
        self._dispatch("PUT")

    def do_POST(self) -> None:
        """Token requests and test hooks."""
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        """Delete a secret."""
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if self.server.identity_only:
            self._identity(path, query)
            return
        if path.startswith("/_double/"):
            self._hook(method, path)
            return
        if re.fullmatch(r"/[^/]+/v2\.0/\.well-known/openid-configuration", path):
            self._openid(path.split("/")[1])
            return
        if path == "/common/discovery/instance":
            self._send(
                200,
                {
                    "tenant_discovery_endpoint": f"{self._base()}/{self._state.tenant}"
                    "/v2.0/.well-known/openid-configuration",
                    "metadata": [],
                },
            )
            return
        if re.fullmatch(r"/[^/]+/oauth2/v2\.0/token", path) and method == "POST":
            self._token(path.split("/")[1])
            return
        if not path.startswith(("/secrets", "/deletedsecrets")):
            self._error(404, "NotFound", f"no route for {path}")
            return
        body = self._body()
        fault = self._state.take_fault(path)
        if fault is not None:
            self._state.bump(f"fault_{fault.status}")
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            code = {429: "Throttled", 403: "Forbidden"}.get(fault.status, "ServiceUnavailable")
            self._send(
                fault.status, {"error": {"code": code, "message": "injected by the test"}}, headers
            )
            return
        auth = self._state.token_state(self.headers.get("Authorization"))
        if auth != "ok":
            self._state.bump("challenge")
            authority = f"{self._base()}/{self._state.tenant}"
            challenge = f'Bearer authorization="{authority}", resource="{RESOURCE}"'
            if auth == "revoked":
                # continuous access evaluation: the client must get a fresh token for these claims
                claims = json.dumps(
                    {"access_token": {"nbf": {"essential": True, "value": str(int(time.time()))}}}
                )
                encoded = base64.b64encode(claims.encode()).decode()
                challenge += f', error="insufficient_claims", claims="{encoded}"'
            self._send(
                401,
                {
                    "error": {
                        "code": "Unauthorized",
                        "message": "AKV10000: Request is missing a Bearer or PoP token.",
                    }
                },
                {"WWW-Authenticate": challenge},
            )
            return
        if path.startswith("/deletedsecrets"):
            self._deleted(method, path, query)
        else:
            self._secrets(method, path, query, body)

    # ------------------------------------------------------------------ identity

    def _openid(self, tenant: str) -> None:
        base = f"{self._base()}/{tenant}"
        self._send(
            200,
            {
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "issuer": f"{base}/v2.0",
                "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
            },
        )

    def _token(self, tenant: str) -> None:
        form = {k: v[-1] for k, v in parse_qs(self._body().decode()).items()}
        self._state.bump("token")
        state = self._state
        if tenant != state.tenant:
            self._send(
                400,
                {
                    "error": "invalid_request",
                    "error_description": f"AADSTS90002: Tenant '{tenant}' not found.",
                },
            )
            return
        if form.get("client_id") != state.client_id:
            self._send(
                400,
                {
                    "error": "unauthorized_client",
                    "error_description": "AADSTS700016: Application not found in the directory.",
                },
            )
            return
        secret = form.get("client_secret")
        assertion = form.get("client_assertion")
        if secret is not None:
            ok = secrets.compare_digest(secret, state.client_secret)
        else:
            ok = assertion is not None and _assertion_ok(assertion, state.client_cert_pem)
        if not ok:
            self._send(
                401,
                {
                    "error": "invalid_client",
                    "error_description": (
                        "AADSTS7000215: Invalid client secret or assertion provided."
                    ),
                },
            )
            return
        self._send(
            200,
            {
                "token_type": "Bearer",
                "expires_in": TOKEN_TTL,
                "ext_expires_in": TOKEN_TTL,
                "access_token": state.issue_token(),
            },
        )

    def _identity(self, path: str, query: dict[str, str]) -> None:
        if path != "/metadata/identity/oauth2/token":
            self._error(404, "NotFound", path)
            return
        self._state.bump("identity_token")
        if self.headers.get("X-IDENTITY-HEADER") != self._state.identity_header:
            self._send(
                401, {"error": "invalid_request", "error_description": "bad identity header"}
            )
            return
        self._send(
            200,
            {
                "access_token": self._state.issue_token(),
                "expires_on": str(int(time.time()) + TOKEN_TTL),
                "resource": query.get("resource", RESOURCE),
                "token_type": "Bearer",
            },
        )

    # ------------------------------------------------------------------ secrets

    def _bundle(self, name: str, version: Version, *, with_value: bool) -> dict[str, Any]:
        item: dict[str, Any] = {
            "id": f"{self._base()}/secrets/{name}/{version.id}",
            "attributes": {
                "enabled": version.enabled,
                "created": version.created,
                "updated": version.updated,
                "recoveryLevel": "Recoverable+Purgeable",
                "recoverableDays": 90,
            },
            "tags": version.tags,
        }
        if version.expires is not None:
            item["attributes"]["exp"] = version.expires
        if version.content_type is not None:
            item["contentType"] = version.content_type
        if with_value:
            item["value"] = version.value
        return item

    def _secrets(self, method: str, path: str, query: dict[str, str], body: bytes) -> None:
        parts = path.split("/")[2:]
        state = self._state
        if method == "GET" and not parts:
            state.bump("list")
            with state.lock:
                items = sorted(state.secrets.items())
            self._page(
                items,
                query,
                lambda n, vs: {
                    **self._bundle(n, vs[-1], with_value=False),
                    "id": f"{self._base()}/secrets/{n}",
                },
            )
            return
        name = parts[0] if parts else ""
        if not re.fullmatch(r"[0-9a-zA-Z-]{1,127}", name):
            self._error(400, "BadParameter", "The request URI contains an invalid name")
            return
        if method == "PUT" and len(parts) == 1:
            state.bump("set")
            self._set(name, body)
            return
        if method == "DELETE" and len(parts) == 1:
            state.bump("delete")
            now = int(time.time())
            with state.lock:
                versions = state.secrets.pop(name, None)
                if versions is not None:
                    state.deleted[name] = (versions, now)
            if versions is None:
                self._not_found(name)
                return
            self._send(200, self._deleted_bundle(name, versions, now))
            return
        if method == "GET" and len(parts) == 2 and parts[1] == "versions":
            state.bump("list_versions")
            with state.lock:
                versions = list(state.secrets.get(name, []))
            self._page(
                [(name, [v]) for v in versions],
                query,
                lambda n, vs: self._bundle(n, vs[-1], with_value=False),
            )
            return
        if method == "GET" and len(parts) in (1, 2):
            state.bump("get")
            wanted = parts[1] if len(parts) == 2 else ""
            with state.lock:
                versions = list(state.secrets.get(name, []))
            found = [v for v in versions if v.id == wanted] if wanted else versions[-1:]
            if not found:
                self._not_found(f"{name}/{wanted}" if wanted else name)
                return
            if not found[0].enabled:
                self._error(403, "Forbidden", "Operation get is not allowed on a disabled secret.")
                return
            self._send(200, self._bundle(name, found[0], with_value=True))
            return
        self._error(405, "MethodNotAllowed", f"{method} {path}")

    def _not_found(self, label: str) -> None:
        self._error(
            404,
            "SecretNotFound",
            f"A secret with (name/id) {label} was not found in this key vault.",
        )

    def _deleted_bundle(self, name: str, versions: list[Version], deleted: int) -> dict[str, Any]:
        """A DeletedSecretBundle: the latest version's bundle plus where and when it went."""
        return {
            **self._bundle(name, versions[-1], with_value=False),
            "recoveryId": f"{self._base()}/deletedsecrets/{name}",
            "deletedDate": deleted,
            "scheduledPurgeDate": deleted + 90 * 86400,
        }

    def _deleted(self, method: str, path: str, query: dict[str, str]) -> None:
        """``/deletedsecrets``: list, get, purge and recover soft-deleted secrets."""
        parts = path.split("/")[2:]
        state = self._state
        if method == "GET" and not parts:
            state.bump("list_deleted")
            with state.lock:
                items = sorted(state.deleted.items())
            dates = {n: when for n, (_, when) in items}
            self._page(
                [(n, vs) for n, (vs, _) in items],
                query,
                lambda n, vs: {
                    **self._deleted_bundle(n, vs, dates[n]),
                    "id": f"{self._base()}/secrets/{n}",
                },
            )
            return
        name = parts[0] if parts else ""
        with state.lock:
            entry = state.deleted.get(name)
        if entry is None:
            self._not_found(name)
            return
        if method == "GET" and len(parts) == 1:
            state.bump("get_deleted")
            self._send(200, self._deleted_bundle(name, *entry))
            return
        if method == "DELETE" and len(parts) == 1:
            state.bump("purge")
            with state.lock:
                state.deleted.pop(name, None)
            self._send(204)
            return
        if method == "POST" and parts[1:] == ["recover"]:
            state.bump("recover")
            with state.lock:
                restored = state.deleted.pop(name, None)
                if restored is not None:
                    state.secrets[name] = restored[0]
            if restored is None:
                self._not_found(name)
                return
            self._send(200, self._bundle(name, restored[0][-1], with_value=False))
            return
        self._error(405, "MethodNotAllowed", f"{method} {path}")

    def _set(self, name: str, body: bytes) -> None:
        try:
            doc = json.loads(body or b"{}")
        except json.JSONDecodeError:
            self._error(400, "BadParameter", "body is not JSON")
            return
        if not isinstance(doc.get("value"), str):
            self._error(400, "BadParameter", "value is required")
            return
        now = int(time.time())
        attrs = doc.get("attributes") or {}
        version = Version(
            id=uuid.uuid4().hex,
            value=doc["value"],
            content_type=doc.get("contentType"),
            tags=doc.get("tags") or {},
            created=now,
            updated=now,
            enabled=attrs.get("enabled", True) is not False,
            expires=attrs["exp"] if isinstance(attrs.get("exp"), int) else None,
        )
        with self._state.lock:
            if name in self._state.deleted:
                conflict = True
            else:
                conflict = False
                self._state.secrets.setdefault(name, []).append(version)
        if conflict:
            self._send(
                409,
                {
                    "error": {
                        "code": "Conflict",
                        "message": f"Secret {name} is currently in a deleted but recoverable "
                        "state, and its name cannot be reused; in this state, the secret can "
                        "only be recovered or purged.",
                        "innererror": {"code": "ObjectIsDeletedButRecoverable"},
                    }
                },
            )
            return
        self._send(200, self._bundle(name, version, with_value=True))

    def _page(
        self, items: list[tuple[str, list[Version]]], query: dict[str, str], render: Any
    ) -> None:
        try:
            size = min(int(query.get("maxresults", PAGE_MAX)), PAGE_MAX)
            start = int(query.get("$skiptoken", "0"))
        except ValueError:
            self._error(400, "BadParameter", "maxresults and $skiptoken must be integers")
            return
        page = items[start : start + size]
        body: dict[str, Any] = {"value": [render(n, vs) for n, vs in page if vs]}
        if start + size < len(items):
            api = query.get("api-version", "7.4")
            path = urlsplit(self.path).path
            body["nextLink"] = (
                f"{self._base()}{path}?api-version={api}"
                f"&$skiptoken={start + size}&maxresults={size}"
            )
        else:
            body["nextLink"] = None
        self._send(200, body)

    # ------------------------------------------------------------------ test hooks

    def _hook(self, method: str, path: str) -> None:
        state = self._state
        if path == "/_double/stats" and method == "GET":
            with state.lock:
                self._send(200, dict(state.stats))
            return
        if path == "/_double/reset" and method == "POST":
            with state.lock:
                state.stats.clear()
                state.faults.clear()
            self._send(200, {})
            return
        if path == "/_double/faults" and method == "POST":
            doc = json.loads(self._body() or b"{}")
            fault = Fault(
                status=int(doc.get("status", 429)),
                times=int(doc.get("times", 1)),
                retry_after=doc.get("retry_after"),
                match=doc.get("match", "/secrets"),
            )
            with state.lock:
                state.faults.append(fault)
            self._send(200, {})
            return
        if path == "/_double/revoke" and method == "POST":
            with state.lock:
                state.revoked.update(state.tokens)
            self._send(200, {})
            return
        self._error(404, "NotFound", path)


def _assertion_ok(assertion: str, cert_pem: bytes | None) -> bool:
    """Check a client assertion JWT's RS256/PS256 signature against the registered certificate."""
    if cert_pem is None:
        return False
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    try:
        head_b64, claims_b64, sig_b64 = assertion.split(".")
        header = json.loads(_b64url(head_b64))
        claims = json.loads(_b64url(claims_b64))
        signature = _b64url(sig_b64)
    except ValueError:
        return False
    key = x509.load_pem_x509_certificate(cert_pem).public_key()
    if not isinstance(key, rsa.RSAPublicKey) or claims.get("exp", 0) < time.time():
        return False
    pad: padding.AsymmetricPadding = (
        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=hashes.SHA256.digest_size)
        if header.get("alg") == "PS256"
        else padding.PKCS1v15()
    )
    try:
        key.verify(signature, f"{head_b64}.{claims_b64}".encode(), pad, hashes.SHA256())
    except InvalidSignature:
        return False
    return True


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class DoubleServer(ThreadingHTTPServer):
    """A threaded server that carries the shared state and its public base URL."""

    daemon_threads = True

    def __init__(self, port: int, state: State, *, public: str, identity_only: bool) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.state = state
        self.public = public
        self.identity_only = identity_only


def main() -> None:
    """Start the HTTPS vault/Entra listener and the HTTP managed identity listener."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--identity-port", type=int, required=True)
    parser.add_argument("--cert", required=True, help="server certificate (PEM)")
    parser.add_argument("--key", required=True, help="server private key (PEM)")
    parser.add_argument(
        "--config",
        required=True,
        help="JSON: tenant, client_id, client_secret_file, client_cert_file, identity_header",
    )
    args = parser.parse_args()
    conf = json.loads(Path(args.config).read_text())
    cert_file = conf.get("client_cert_file")
    state = State(
        tenant=conf["tenant"],
        client_id=conf["client_id"],
        client_secret=Path(conf["client_secret_file"]).read_text().strip(),
        client_cert_pem=Path(cert_file).read_bytes() if cert_file else None,
        identity_header=conf["identity_header"],
    )
    public = f"https://127.0.0.1:{args.port}"
    vault = DoubleServer(args.port, state, public=public, identity_only=False)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    vault.socket = context.wrap_socket(vault.socket, server_side=True)
    identity = DoubleServer(args.identity_port, state, public=public, identity_only=True)
    threading.Thread(target=identity.serve_forever, daemon=True).start()
    vault.serve_forever()


if __name__ == "__main__":
    main()
