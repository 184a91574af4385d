"""The Vault token of one provider: one login per process, renewed, replaced only when dead.

A token is obtained once, renewed at about two thirds of its TTL by a background timer (and,
as a fallback, on the next call after that point), and replaced by a new login only when it
can't be renewed (max TTL reached, revoked, expired). A cycle never logs in: that is what keeps
a refresh of a thousand secrets cheap for Vault itself (a login is a storage write there).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from providers.vault.calls import Caller, Failure
from providers.vault.metadata import field
from providers.vault.settings import (
    AppRoleAuth,
    JwtAuth,
    KubernetesAuth,
    TokenAuth,
    VaultProviderConfig,
    _AuthBlock,
)

log = logging.getLogger("syncd.providers.vault")

#: Renew (or log in again) when this share of a token's TTL has passed.
RENEW_AT = 2 / 3


def _now() -> float:
    return time.monotonic()


class Tokens:
    """Holds the client's token: login, renewal timer, dead-token detection, revoke on close."""

    def __init__(
        self,
        *,
        name: str,
        config: VaultProviderConfig,
        client: Any,
        caller: Caller,
        base_dir: Path,
    ) -> None:
        self._name = name
        self._config = config
        self._client = client
        self._caller = caller
        self._base_dir = base_dir
        self._lock = threading.RLock()
        self._timer: threading.Timer | None = None
        self._closed = False
        self._token: str | None = None  # the token in use; None until the first call
        self._full_ttl = 0.0  # TTL granted at login: a renewal that grants less hit max TTL
        self._due: float | None = None  # monotonic time of the next renew/login, None: never
        self._next = "renew"  # what to do when due: "renew" or "login"

    def path(self, name: str) -> Path:
        """A configured file name, relative to the config file's folder."""
        return self._base_dir / os.path.expanduser(name)

    def ensure(self) -> None:
        """Log in on first use; renew (or log in again) once past 2/3 of the TTL."""
        with self._lock:
            if self._token is None:
                self._login()
            elif self._due is not None and _now() >= self._due:
                self._refresh()

    def close(self) -> None:
        """Stop the renewal timer; revoke a token this process logged in for."""
        with self._lock:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self._token is not None and self._config.auth.method != "token":
                try:
                    self._caller.call("revoke", self._client.auth.token.revoke_self)
                except Failure as exc:
                    log.info("%s: could not revoke the login token: %s", self._name, exc.message)
            self._token = None

    def after_denial(self) -> bool | Failure:
        """After a 403, tell a dead token from a policy denial.

        Returns ``False`` when the token still works (the policy denies the path), ``True``
        after a successful new login (retry the denied reads), or the login's failure.
        """
        with self._lock:
            try:
                if self._alive():
                    return False
                log.info("%s: the token stopped working; logging in again", self._name)
                self._token = None
                self._login()
            except Failure as exc:
                return exc
            return True

    # ------------------------------------------------------------------ login

    def _login(self) -> None:
        """Obtain a token with the configured method and schedule its renewal."""
        auth = self._config.auth
        mount = auth.mount or auth.method
        if isinstance(auth, TokenAuth):
            token = self._static_token(auth)
            self._client.token = token
            info = self._caller.call(
                "lookup_self",
                self._client.auth.token.lookup_self,
                where="auth/token/lookup-self",
                login=True,
            )
            data = field(info, "data")
            ttl = _seconds(data.get("ttl"))
            renewable = bool(data.get("renewable"))
        else:
            response = self._caller.call(
                "login",
                lambda: self._do_login(auth, mount),
                where=f"auth/{mount}/login",
                login=True,
            )
            granted = field(response, "auth")
            token = str(granted.get("client_token") or "")
            if not token:
                raise Failure(f"login with {auth.method} at auth/{mount} returned no token")
            self._client.token = token
            ttl = _seconds(granted.get("lease_duration"))
            renewable = bool(granted.get("renewable"))
        self._token = token
        self._full_ttl = ttl
        self._next = "renew" if renewable else "login"
        log.info("%s: authenticated with %s (token TTL %ds)", self._name, auth.method, int(ttl))
        self._schedule(ttl)

    def _do_login(self, auth: _AuthBlock, mount: str) -> Any:
        client = self._client
        if isinstance(auth, AppRoleAuth):
            role_id = auth.role_id or (
                self._read_file(auth.role_id_file, "role_id_file") if auth.role_id_file else None
            )
            if not role_id:
                raise Failure("approle auth needs role_id or role_id_file")
            secret_id = self._read_file(auth.secret_id_file, "secret_id_file")
            return client.auth.approle.login(
                role_id=role_id, secret_id=secret_id, mount_point=mount, use_token=False
            )
        if isinstance(auth, KubernetesAuth):
            jwt = self._read_file(auth.jwt_file, "jwt_file")
            return client.auth.kubernetes.login(
                role=auth.role, jwt=jwt, mount_point=mount, use_token=False
            )
        if isinstance(auth, JwtAuth):
            jwt = self._read_file(auth.jwt_file, "jwt_file")
            return client.auth.jwt.jwt_login(role=auth.role, jwt=jwt, path=mount, use_token=False)
        raise Failure(f"unknown auth method {auth.method!r}")

    def _static_token(self, auth: TokenAuth) -> str:
        if auth.token_file:
            return self._read_file(auth.token_file, "token_file")
        token = os.environ.get("VAULT_TOKEN", "").strip()
        if not token:
            raise Failure("no token: set VAULT_TOKEN or auth.token_file (or another auth method)")
        return token

    def _read_file(self, name: str | None, field: str) -> str:
        path = self.path(name or "")
        try:
            text = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise Failure(f"can't read {field} {path}: {exc.strerror}") from exc
        except UnicodeDecodeError as exc:
            raise Failure(f"{field} {path} is not UTF-8 text") from exc
        if not text:
            raise Failure(f"{field} {path} is empty")
        return text

    # ------------------------------------------------------------------ renewal

    def _schedule(self, ttl: float) -> None:
        """Plan the next renew/login at 2/3 of ``ttl``; a timer runs it between cycles."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if ttl <= 0 or (self._next == "login" and self._config.auth.method == "token"):
            self._due = None  # a root/periodic-less token that never expires, or can't renew
            return
        delay = ttl * RENEW_AT
        self._due = _now() + delay
        if self._closed:
            return
        self._timer = threading.Timer(delay, self._on_timer)
        self._timer.daemon = True
        self._timer.name = f"vault-{self._name}-renew"
        self._timer.start()

    def _on_timer(self) -> None:
        with self._lock:
            if self._closed or self._token is None:
                return
            if self._due is None or _now() < self._due:
                return
            try:
                self._refresh()
            except Failure as exc:
                # the next call tries again and reports the failure on each reference
                log.warning("%s: token refresh failed: %s", self._name, exc.message)
                self._token = None
                self._due = None

    def _refresh(self) -> None:
        """Renew the token; log in again when it can't be renewed any more."""
        can_login = self._config.auth.method != "token"
        if self._next == "login" and can_login:
            self._login()
            return
        try:
            response = self._caller.call(
                "renew", self._client.auth.token.renew_self, where="auth/token/renew-self"
            )
        except Failure as exc:
            if exc.transient:
                self._schedule(max(self._full_ttl / 6, 1.0))  # keep the token, try again soon
                raise
            log.info("%s: token renewal refused (%s); logging in again", self._name, exc.message)
            self._login()
            return
        granted = field(response, "auth")
        ttl = _seconds(granted.get("lease_duration"))
        if ttl + 1 < self._full_ttl and can_login:
            self._next = "login"  # capped by the max TTL: the next step is a fresh login
        self._schedule(ttl)

    def _alive(self) -> bool:
        """Whether the current token still works (``lookup-self`` succeeds)."""
        try:
            self._caller.call(
                "lookup_self", self._client.auth.token.lookup_self, where="auth/token/lookup-self"
            )
        except Failure as exc:
            if exc.status in (401, 403):
                return False
            raise
        return True


def _seconds(value: object) -> float:
    """A TTL from the server; anything that isn't a sane number of seconds counts as none."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return float(value) if 0 < value < 10 * 366 * 86400 else 0.0
