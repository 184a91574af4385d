"""The ``vault`` provider: HashiCorp Vault and OpenBao KV (v2 and v1) through hvac.

Why it looks the way it does:

- **Change detection without reading values.** For KV v2 one metadata read per path gives
  ``current_version``; the engine fetches a value only when that moved. KV v1 has no versions,
  so ``versions`` answers ``None`` and the engine reads and fingerprints every cycle. A pinned
  ``version`` needs no call at all: a KV v2 version never changes its content.
- **One login per process.** A token is obtained once, renewed at about two thirds of its TTL
  by a background timer (and, as a fallback, on the next call after that point), and replaced
  by a new login only when it can't be renewed (max TTL reached, revoked, expired). A cycle
  never logs in: that is what makes a refresh of a thousand secrets cheap for Vault itself.
- **Per-reference errors.** Every failure ends up as one ``ProviderError`` per reference,
  naming the provider and the KV path (never a value, never a token). Throttling (429) and
  5xx answers are retried with exponential backoff and jitter; unreachable servers are retried
  a few times and then reported as transient; a TLS failure is reported at once.
- **Bounded concurrency.** Vault has no batch read, so reads of distinct paths run on a small
  thread pool; several references to one path (different ``key``s) share one read.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from providers.base import Provider, ProviderConfig, ProviderContext, Ref
from syncd.duration import Duration
from syncd.errors import ProviderError, SyncdError
from syncd.model import Fetched

log = logging.getLogger("syncd.providers.vault")

#: Where a pod's projected service-account token lives.
K8S_TOKEN_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/token"  # noqa: S105 - a path
#: Renew (or log in again) when this share of a token's TTL has passed.
RENEW_AT = 2 / 3
#: Entries per page of a detailed-metadata LIST.
LIST_PAGE = 500
#: A folder is listed (instead of reading metadata per secret) from this many secrets on.
LIST_MIN = 2
#: Never wait longer than this between two retries of one call.
BACKOFF_CAP = 30.0

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


# --------------------------------------------------------------------------- config


class _AuthBlock(BaseModel):
    """Base of the ``auth:`` block; ``method`` picks the model. Unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: str
    mount: str | None = Field(
        None, description="Where the auth method is mounted; by default its method name."
    )


class TokenAuth(_AuthBlock):
    """A ready token: ``token_file`` (re-read when the token stops working) or ``VAULT_TOKEN``."""

    method: Literal["token"]
    token_file: str | None = Field(
        None, description="File holding the token; without it, env VAULT_TOKEN."
    )


class AppRoleAuth(_AuthBlock):
    """AppRole: a role id (not secret) and a secret id read from a file."""

    method: Literal["approle"]
    role_id: str | None = Field(None, description="The role id (or role_id_file).")
    role_id_file: str | None = Field(None, description="File holding the role id.")
    secret_id_file: str = Field(description="File holding the secret id.")

    @field_validator("secret_id_file")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("secret_id_file must name a file")
        return value


class KubernetesAuth(_AuthBlock):
    """Kubernetes: the pod's service-account token and a Vault role bound to it."""

    method: Literal["kubernetes"]
    role: str = Field(min_length=1, description="The Vault role bound to the service account.")
    jwt_file: str = Field(K8S_TOKEN_FILE, description="The service-account token file.")


class JwtAuth(_AuthBlock):
    """JWT/OIDC: a signed JWT from a file (e.g. a CI job's id token) and a Vault role."""

    method: Literal["jwt"]
    role: str | None = Field(None, description="The Vault role (or the mount's default role).")
    jwt_file: str = Field(description="File holding the JWT.")


AuthConfig = Annotated[
    TokenAuth | AppRoleAuth | KubernetesAuth | JwtAuth, Field(discriminator="method")
]


class VaultProviderConfig(ProviderConfig):
    """``{type: vault, addr: https://vault:8200, mount: secret, auth: {method: approle, ...}}``."""

    type: Literal["vault"]
    addr: str | None = Field(None, description="Server URL; by default env VAULT_ADDR.")
    namespace: str | None = Field(
        None, description="Vault/OpenBao namespace; by default env VAULT_NAMESPACE."
    )
    ca_cert: str | None = Field(
        None, description="PEM CA bundle that signed the server; by default env VAULT_CACERT."
    )
    mount: str = Field("secret", min_length=1, description="The KV mount path.")
    kv_version: Literal[1, 2] = Field(2, description="KV engine version of the mount.")
    auth: AuthConfig = Field(
        default_factory=lambda: TokenAuth(method="token"),
        description="How to log in: token (default), approle, kubernetes or jwt.",
    )
    list_metadata: bool = Field(
        True,
        description=(
            "Detect changes with one LIST of detailed-metadata per folder (OpenBao) instead of "
            "one metadata read per secret; falls back by itself where unsupported or denied."
        ),
    )
    concurrency: int = Field(8, ge=1, le=64, description="Parallel reads (Vault has no batch).")
    timeout: Duration = Field(10.0, description="Per-request timeout.")
    retries: int = Field(4, ge=0, le=10, description="Retries of a throttled/failed call.")
    backoff: Duration = Field(0.5, description="First retry delay; doubles, with jitter.")


class VaultRef(Ref):
    """``{provider: vault, path: app/db, key: password}``; no ``key``: the whole map as JSON."""

    path: str = Field(min_length=1, description="Path of the secret inside the mount.")
    key: str | None = Field(None, min_length=1, description="One field; omit for the whole map.")
    version: int | None = Field(None, ge=1, description="Pin a KV v2 version.")
    mount: str | None = Field(None, min_length=1, description="Override the provider's mount.")

    @field_validator("path", "mount")
    @classmethod
    def _strip_slashes(cls, value: str | None) -> str | None:
        if value is None:
            return None
        stripped = value.strip("/")
        if not stripped or "//" in stripped:
            raise ValueError("must be a path like app/db (no empty segments)")
        return stripped

    def describe(self) -> str:
        """``vault:app/db#password@3`` (mount shown only when the reference overrides it)."""
        where = f"{self.mount}/{self.path}" if self.mount else self.path
        key = f"#{self.key}" if self.key else ""
        pin = f"@{self.version}" if self.version else ""
        return f"{self.provider}:{where}{key}{pin}"


# --------------------------------------------------------------------------- internals


class _Failure(Exception):
    """A failed call, already turned into a user-facing sentence (no value, no token)."""

    def __init__(self, message: str, *, transient: bool = False, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.transient = transient
        self.status = status


@dataclass(frozen=True)
class _Read:
    """One KV read: several references to the same path and version share it."""

    mount: str
    path: str
    version: int | None

    def api_path(self, kv_version: int, kind: str = "data") -> str:
        if kv_version == 1:
            return f"{self.mount}/{self.path}"
        return f"{self.mount}/{kind}/{self.path}"


@dataclass(frozen=True)
class _Folder:
    """One folder of a KV v2 mount whose secrets' versions one LIST can answer."""

    mount: str
    folder: str
    names: frozenset[str]

    def api_path(self) -> str:
        return f"{self.mount}/detailed-metadata/{self.folder}".rstrip("/") + "/"


@dataclass(frozen=True)
class _Secret:
    """What one KV read returned: the map and the version it came from."""

    data: dict[str, Any]
    version: str | None


def _now() -> float:
    return time.monotonic()


class VaultProvider(Provider[VaultProviderConfig, VaultRef]):
    """Reads KV v2/v1 secrets from Vault or OpenBao with one long-lived, renewed token."""

    type_name: ClassVar[str] = "vault"
    config_model: ClassVar[type[ProviderConfig]] = VaultProviderConfig
    ref_model: ClassVar[type[Ref]] = VaultRef

    def __init__(self, config: VaultProviderConfig, *, context: ProviderContext) -> None:
        super().__init__(config, context=context)
        try:
            import hvac
            import requests
        except ImportError as exc:
            raise SyncdError("the vault provider needs hvac: pip install 'syncd[vault]'") from exc
        self._hvac = hvac
        self._requests = requests
        self.addr = (config.addr or os.environ.get("VAULT_ADDR") or "").rstrip("/")
        if not self.addr:
            raise SyncdError("no Vault address: set 'addr' or the VAULT_ADDR environment variable")
        ca = config.ca_cert or os.environ.get("VAULT_CACERT")
        verify: bool | str = True
        if ca:
            ca_path = self._path(ca)
            if not ca_path.is_file():
                raise SyncdError(f"ca_cert {ca_path} does not exist")
            verify = str(ca_path)
        namespace = config.namespace or os.environ.get("VAULT_NAMESPACE") or None
        self._client = hvac.Client(
            url=self.addr, verify=verify, namespace=namespace, timeout=config.timeout
        )
        self._lock = threading.RLock()
        self._pool: ThreadPoolExecutor | None = None
        self._timer: threading.Timer | None = None
        self._closed = False
        self._token: str | None = None  # the token in use; None until the first call
        self._full_ttl = 0.0  # TTL granted at login: a renewal that grants less hit max TTL
        self._due: float | None = None  # monotonic time of the next renew/login, None: never
        self._next = "renew"  # what to do when due: "renew" or "login"
        self._no_metadata: set[str] = set()  # paths whose metadata the policy hides
        self._no_list: set[str] = set()  # mounts without detailed-metadata LIST for us

    # ------------------------------------------------------------------ interface

    def versions(self, refs: Sequence[VaultRef]) -> Mapping[VaultRef, str | ProviderError | None]:
        """KV v2: ``current_version`` from a folder LIST or a metadata read; v1: ``None``."""
        if self.config.kv_version == 1:
            return dict.fromkeys(refs, None)
        result: dict[VaultRef, str | ProviderError | None] = {}
        live: dict[_Read, list[VaultRef]] = {}
        for ref in refs:
            if ref.version is not None:
                result[ref] = str(ref.version)  # a pinned version's content never changes
            else:
                live.setdefault(self._read_of(ref, None), []).append(ref)
        listed = self._list_versions(list(live))
        answers = self._batch(
            [r for r in live if listed.get(r) is None],
            self._current_version,
            denied=self._no_metadata_access,
        )
        self._learn_list_support(listed, answers)
        answers.update({r: a for r, a in listed.items() if a is not None})
        for read, answer in answers.items():
            for ref in live[read]:
                result[ref] = self._error(ref, answer) if isinstance(answer, _Failure) else answer
        return result

    def fetch(self, refs: Sequence[VaultRef]) -> Mapping[VaultRef, Fetched | ProviderError]:
        """Read each distinct path (and pinned version) once, concurrently; pick fields."""
        result: dict[VaultRef, Fetched | ProviderError] = {}
        reads: dict[_Read, list[VaultRef]] = {}
        for ref in refs:
            if ref.version is not None and self.config.kv_version == 1:
                result[ref] = self.error(ref, "a version pin needs a KV v2 mount (kv_version: 2)")
                continue
            reads.setdefault(self._read_of(ref, ref.version), []).append(ref)
        answers = self._batch(list(reads), self._read_secret)
        for read, answer in answers.items():
            for ref in reads[read]:
                if isinstance(answer, _Failure):
                    result[ref] = self._error(ref, answer)
                else:
                    result[ref] = self._pick(ref, read, answer)
        return result

    def close(self) -> None:
        """Stop the renewal timer and the pool; revoke a token this process logged in for."""
        with self._lock:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self._token is not None and self.config.auth.method != "token":
                try:
                    self._call("revoke", self._client.auth.token.revoke_self)
                except _Failure as exc:
                    log.info("%s: could not revoke the login token: %s", self.name, exc.message)
            self._token = None
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    # ------------------------------------------------------------------ batching

    def _read_of(self, ref: VaultRef, version: int | None) -> _Read:
        return _Read(ref.mount or self.config.mount.strip("/"), ref.path, version)

    def _batch(
        self,
        reads: list[K],
        one: Callable[[K], T],
        *,
        denied: Callable[[K], T] | None = None,
    ) -> dict[K, T | _Failure]:
        """Run ``one`` for every read on the pool, after making sure a token is in hand.

        A 403 can mean a dead token (revoked, expired while the process slept) rather than a
        missing grant; one ``lookup-self`` per batch tells which, and only a dead token gets a
        new login and a retry, so a path the policy denies costs no login. What the policy
        really denies goes to ``denied`` when given.
        """
        if not reads:
            return {}
        try:
            self._ensure_token()
        except _Failure as exc:
            return dict.fromkeys(reads, exc)
        answers = self._run(reads, one)
        refused = [r for r, a in answers.items() if isinstance(a, _Failure) and a.status == 403]
        if refused:
            verdict = self._after_denial()
            if isinstance(verdict, _Failure):
                answers.update(dict.fromkeys(refused, verdict))
                return answers
            if verdict:
                answers.update(self._run(refused, one))
                refused = [r for r in refused if _is_denial(answers[r])]
        if denied is not None:
            for read in refused:
                answers[read] = denied(read)
        return answers

    def _run(self, reads: list[K], one: Callable[[K], T]) -> dict[K, T | _Failure]:
        def guarded(read: K) -> T | _Failure:
            try:
                return one(read)
            except _Failure as exc:
                return exc

        if len(reads) == 1:
            return {reads[0]: guarded(reads[0])}
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                max_workers=self.config.concurrency, thread_name_prefix=f"vault-{self.name}"
            )
        return dict(zip(reads, self._pool.map(guarded, reads), strict=True))

    # ------------------------------------------------------------------ KV calls

    def _list_versions(self, reads: list[_Read]) -> dict[_Read, str | _Failure | None]:
        """Versions from one detailed-metadata LIST per folder holding several secrets.

        OpenBao lists every secret of a folder with its metadata in one call, so a no-change
        cycle over a thousand secrets in a few folders costs a few calls instead of a thousand.
        A read the listing can't answer maps to ``None`` (read its metadata on its own).
        """
        if not self.config.list_metadata:
            return {}
        by_folder: dict[tuple[str, str], dict[str, _Read]] = {}
        for read in reads:
            folder, _, name = read.path.rpartition("/")
            by_folder.setdefault((read.mount, folder), {})[name] = read
        folders = [
            _Folder(mount, folder, frozenset(names))
            for (mount, folder), names in by_folder.items()
            if len(names) >= LIST_MIN and mount not in self._no_list
        ]
        result: dict[_Read, str | _Failure | None] = {}
        for group, answer in self._batch(
            folders, self._list_folder, denied=self._no_list_access
        ).items():
            members = by_folder[(group.mount, group.folder)]
            for name, read in members.items():
                if isinstance(answer, _Failure):
                    result[read] = answer
                else:
                    result[read] = answer.get(name)
        return result

    def _list_folder(self, folder: _Folder) -> dict[str, str | _Failure | None]:
        found: dict[str, str | _Failure | None] = {}
        last_wanted = max(folder.names)
        after = ""
        while True:
            params: dict[str, str | int] = {"limit": LIST_PAGE}
            if after:
                params["after"] = after
            try:
                response = self._call(
                    "list_metadata",
                    lambda p=params: self._client.adapter.list(  # type: ignore[misc]
                        f"/v1/{folder.api_path()}", params=p
                    ),
                    where=folder.api_path(),
                )
            except _Failure as exc:
                if exc.status in (400, 405, 501):  # the server has no such listing
                    self._no_list.add(folder.mount)
                if exc.status in (400, 404, 405, 501):
                    return found  # no such folder, or no such endpoint: read one by one
                raise
            data = (response or {}).get("data") or {}
            keys: list[str] = data.get("keys") or []
            infos: dict[str, Any] = data.get("key_info") or {}
            for name in folder.names & set(infos):
                where = "/".join(p for p in (folder.mount, "data", folder.folder, name) if p)
                found[name] = _version_of(infos[name], where)
            if len(keys) < LIST_PAGE or not keys or keys[-1] >= last_wanted:
                return found
            if folder.names <= set(found):
                return found
            after = keys[-1]

    def _no_list_access(self, folder: _Folder) -> dict[str, str | _Failure | None]:
        """The policy grants no LIST on detailed-metadata: read metadata per secret."""
        log.info(
            "%s: no list access to %s; reading metadata per secret instead",
            self.name,
            folder.api_path(),
        )
        self._no_list.add(folder.mount)
        return {}

    def _learn_list_support(
        self, listed: dict[_Read, str | _Failure | None], answers: dict[_Read, Any]
    ) -> None:
        """A listing that found nothing where single reads found secrets: no such endpoint.

        HashiCorp Vault has no detailed-metadata LIST and answers 404, like a missing folder;
        stop listing that mount once a secret the listing missed turns out to exist.
        """
        for read, listed_answer in listed.items():
            if listed_answer is None and isinstance(answers.get(read), str):
                if read.mount not in self._no_list:
                    log.info("%s: %s/ has no detailed-metadata list", self.name, read.mount)
                self._no_list.add(read.mount)

    def _no_metadata_access(self, read: _Read) -> str | None:
        """A policy that grants data/ but not metadata/: fall back to read-and-compare."""
        log.warning(
            "%s: no read access to %s; reading its value every cycle instead",
            self.name,
            read.api_path(2, "metadata"),
        )
        self._no_metadata.add(read.api_path(2, "metadata"))
        return None

    def _current_version(self, read: _Read) -> str | None:
        if read.api_path(2, "metadata") in self._no_metadata:
            return None
        response = self._call(
            "read_metadata",
            lambda: self._client.secrets.kv.v2.read_secret_metadata(
                path=read.path, mount_point=read.mount
            ),
            where=read.api_path(2, "metadata"),
        )
        data = (response or {}).get("data") or {}
        version = _version_of(data, f"{read.mount}/data/{read.path}")
        if isinstance(version, _Failure):
            raise version
        return version

    def _read_secret(self, read: _Read) -> _Secret:
        where = read.api_path(self.config.kv_version)
        if self.config.kv_version == 1:
            response = self._call(
                "read",
                lambda: self._client.secrets.kv.v1.read_secret(
                    path=read.path, mount_point=read.mount
                ),
                where=where,
            )
            data = (response or {}).get("data")
            if not isinstance(data, dict):
                raise _Failure(f"{where}: the answer holds no key/value map (is it a KV mount?)")
            return _Secret(data, None)
        response = self._call(
            "read",
            lambda: self._client.secrets.kv.v2.read_secret_version(
                path=read.path,
                version=read.version,
                mount_point=read.mount,
                raise_on_deleted_version=False,
            ),
            where=where,
        )
        body = (response or {}).get("data") or {}
        metadata = body.get("metadata") or {}
        version = metadata.get("version")
        which = f"version {read.version}" if read.version else "the current version"
        if metadata.get("destroyed"):
            raise _Failure(f"{where}: {which} is destroyed")
        if metadata.get("deletion_time"):
            raise _Failure(f"{where}: {which} is deleted")
        data = body.get("data")
        if not isinstance(data, dict):
            raise _Failure(f"{where}: the answer holds no key/value map (is it a KV v2 mount?)")
        return _Secret(data, str(version) if version is not None else None)

    def _pick(self, ref: VaultRef, read: _Read, secret: _Secret) -> Fetched | ProviderError:
        where = read.api_path(self.config.kv_version)
        if ref.key is None:
            text = json.dumps(secret.data, sort_keys=True, ensure_ascii=False)
        elif ref.key not in secret.data:
            return self.error(ref, f"{where}: field {ref.key!r} not found")
        else:
            value = secret.data[ref.key]
            if value is None:
                return self.error(ref, f"{where}: field {ref.key!r} is null")
            text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        try:
            return Fetched(ref.decoded(text.encode("utf-8")), secret.version)
        except ProviderError as exc:
            return exc

    def _error(self, ref: VaultRef, failure: _Failure) -> ProviderError:
        return self.error(ref, failure.message, transient=failure.transient)

    # ------------------------------------------------------------------ tokens

    def _ensure_token(self) -> None:
        """Log in on first use; renew (or log in again) once past 2/3 of the TTL."""
        with self._lock:
            if self._token is None:
                self._login()
            elif self._due is not None and _now() >= self._due:
                self._refresh()

    def _login(self) -> None:
        """Obtain a token with the configured method and schedule its renewal."""
        auth = self.config.auth
        mount = auth.mount or auth.method
        if isinstance(auth, TokenAuth):
            token = self._static_token(auth)
            self._client.token = token
            info = self._call(
                "lookup_self",
                self._client.auth.token.lookup_self,
                where="auth/token/lookup-self",
                login=True,
            )
            data = (info or {}).get("data") or {}
            ttl = float(data.get("ttl") or 0)
            renewable = bool(data.get("renewable"))
        else:
            response = self._call(
                "login",
                lambda: self._do_login(auth, mount),
                where=f"auth/{mount}/login",
                login=True,
            )
            granted = (response or {}).get("auth") or {}
            token = str(granted.get("client_token") or "")
            if not token:
                raise _Failure(f"login with {auth.method} at auth/{mount} returned no token")
            self._client.token = token
            ttl = float(granted.get("lease_duration") or 0)
            renewable = bool(granted.get("renewable"))
        self._token = token
        self._full_ttl = ttl
        self._next = "renew" if renewable else "login"
        log.info("%s: authenticated with %s (token TTL %ds)", self.name, auth.method, int(ttl))
        self._schedule(ttl)

    def _do_login(self, auth: _AuthBlock, mount: str) -> Any:
        if isinstance(auth, AppRoleAuth):
            role_id = auth.role_id or (
                self._read_file(auth.role_id_file, "role_id_file") if auth.role_id_file else None
            )
            if not role_id:
                raise _Failure("approle auth needs role_id or role_id_file")
            secret_id = self._read_file(auth.secret_id_file, "secret_id_file")
            return self._client.auth.approle.login(
                role_id=role_id, secret_id=secret_id, mount_point=mount, use_token=False
            )
        if isinstance(auth, KubernetesAuth):
            jwt = self._read_file(auth.jwt_file, "jwt_file")
            return self._client.auth.kubernetes.login(
                role=auth.role, jwt=jwt, mount_point=mount, use_token=False
            )
        if isinstance(auth, JwtAuth):
            jwt = self._read_file(auth.jwt_file, "jwt_file")
            return self._client.auth.jwt.jwt_login(
                role=auth.role, jwt=jwt, path=mount, use_token=False
            )
        raise _Failure(f"unknown auth method {auth.method!r}")

    def _static_token(self, auth: TokenAuth) -> str:
        if auth.token_file:
            return self._read_file(auth.token_file, "token_file")
        token = os.environ.get("VAULT_TOKEN", "").strip()
        if not token:
            raise _Failure("no token: set VAULT_TOKEN or auth.token_file (or another auth method)")
        return token

    def _read_file(self, name: str | None, field: str) -> str:
        path = self._path(name or "")
        try:
            text = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise _Failure(f"can't read {field} {path}: {exc.strerror}") from exc
        except UnicodeDecodeError as exc:
            raise _Failure(f"{field} {path} is not UTF-8 text") from exc
        if not text:
            raise _Failure(f"{field} {path} is empty")
        return text

    def _path(self, name: str) -> Path:
        return self.context.base_dir / os.path.expanduser(name)

    def _schedule(self, ttl: float) -> None:
        """Plan the next renew/login at 2/3 of ``ttl``; a timer runs it between cycles."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if ttl <= 0 or (self._next == "login" and self.config.auth.method == "token"):
            self._due = None  # a root/periodic-less token that never expires, or can't renew
            return
        delay = ttl * RENEW_AT
        self._due = _now() + delay
        if self._closed:
            return
        self._timer = threading.Timer(delay, self._on_timer)
        self._timer.daemon = True
        self._timer.name = f"vault-{self.name}-renew"
        self._timer.start()

    def _on_timer(self) -> None:
        with self._lock:
            if self._closed or self._token is None:
                return
            if self._due is None or _now() < self._due:
                return
            try:
                self._refresh()
            except _Failure as exc:
                # the next call tries again and reports the failure on each reference
                log.warning("%s: token refresh failed: %s", self.name, exc.message)
                self._token = None
                self._due = None

    def _refresh(self) -> None:
        """Renew the token; log in again when it can't be renewed any more."""
        can_login = self.config.auth.method != "token"
        if self._next == "login" and can_login:
            self._login()
            return
        try:
            response = self._call(
                "renew", self._client.auth.token.renew_self, where="auth/token/renew-self"
            )
        except _Failure as exc:
            if exc.transient:
                self._schedule(max(self._full_ttl / 6, 1.0))  # keep the token, try again soon
                raise
            log.info("%s: token renewal refused (%s); logging in again", self.name, exc.message)
            self._login()
            return
        granted = (response or {}).get("auth") or {}
        ttl = float(granted.get("lease_duration") or 0)
        if ttl + 1 < self._full_ttl and can_login:
            self._next = "login"  # capped by the max TTL: the next step is a fresh login
        self._schedule(ttl)

    def _token_alive(self) -> bool:
        """Whether the current token still works (``lookup-self`` succeeds)."""
        try:
            self._call(
                "lookup_self", self._client.auth.token.lookup_self, where="auth/token/lookup-self"
            )
        except _Failure as exc:
            if exc.status in (401, 403):
                return False
            raise
        return True

    def _after_denial(self) -> bool | _Failure:
        """After a 403, tell a dead token from a policy denial.

        Returns ``False`` when the token still works (the policy denies the path), ``True``
        after a successful new login (retry the denied reads), or the login's failure.
        """
        with self._lock:
            try:
                if self._token_alive():
                    return False
                log.info("%s: the token stopped working; logging in again", self.name)
                self._token = None
                self._login()
            except _Failure as exc:
                return exc
            return True

    # ------------------------------------------------------------------ one call

    def _call(
        self, operation: str, fn: Callable[[], T], *, where: str = "", login: bool = False
    ) -> T:
        """Run one remote call with retries; count every attempt; raise ``_Failure``.

        429 and 5xx answers and connection failures are retried with exponential backoff and
        jitter; everything else (403, 404, 400, TLS) fails at once.
        """
        hvac_exc = self._hvac.exceptions
        req_exc = self._requests.exceptions
        attempts = self.config.retries + 1
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                result = fn()
            except hvac_exc.VaultError as exc:
                status = _status(exc)
                retry = status == 429 or status >= 500
                self.count(operation, status="throttled" if status == 429 else "error")
                if not retry or last:
                    raise self._http_failure(
                        exc, status, where=where, login=login, attempts=attempt + 1
                    ) from None
            except req_exc.SSLError as exc:
                self.count(operation, status="error")
                raise _Failure(f"TLS with {self.addr} failed: {_tls_reason(exc)}") from None
            except (req_exc.ConnectionError, req_exc.Timeout) as exc:
                self.count(operation, status="error")
                if last:
                    kind = "timed out" if isinstance(exc, req_exc.Timeout) else "unreachable"
                    raise _Failure(
                        f"Vault at {self.addr} is {kind} (after {attempts} attempts)",
                        transient=True,
                    ) from None
            except OSError as exc:  # e.g. the CA file vanished
                self.count(operation, status="error")
                raise _Failure(f"{where}: {exc.strerror or exc}") from None
            else:
                self.count(operation)
                return result
            delay = min(BACKOFF_CAP, self.config.backoff * 2**attempt)
            time.sleep(random.uniform(delay / 2, delay))  # noqa: S311 - jitter, not crypto
        raise AssertionError("unreachable")  # pragma: no cover

    def _http_failure(
        self, exc: Exception, status: int, *, where: str, login: bool, attempts: int
    ) -> _Failure:
        server = "; ".join(str(e) for e in (getattr(exc, "errors", None) or []) if e)
        detail = f" ({server})" if server else ""
        if login and self.config.auth.method == "token" and status in (401, 403):
            return _Failure(
                f"the token was refused (HTTP {status}{detail}): expired, revoked or wrong",
                status=status,
            )
        if login:
            auth = self.config.auth
            return _Failure(
                f"login with {auth.method} failed: HTTP {status}{detail}",
                transient=status == 429 or status >= 500,
                status=status,
            )
        if status == 404:
            return _Failure(f"{where}: not found", status=404)
        if status in (401, 403):
            return _Failure(f"{where}: permission denied{detail}", status=status)
        if status == 429:
            return _Failure(
                f"{where}: throttled (HTTP 429) after {attempts} attempts",
                transient=True,
                status=429,
            )
        if status >= 500:
            return _Failure(
                f"{where}: server error HTTP {status}{detail} after {attempts} attempts",
                transient=True,
                status=status,
            )
        return _Failure(f"{where}: HTTP {status}{detail}", status=status)


def _version_of(metadata: dict[str, Any], where: str) -> str | _Failure:
    """``current_version`` of a KV v2 metadata record, or why it can't be read."""
    current = metadata.get("current_version")
    if not current:
        return _Failure(f"{where}: the secret has no versions")
    info = (metadata.get("versions") or {}).get(str(current)) or {}
    if info.get("destroyed"):
        return _Failure(f"{where}: current version {current} is destroyed")
    if info.get("deletion_time"):
        return _Failure(f"{where}: current version {current} is deleted")
    return str(current)


def _is_denial(answer: object) -> bool:
    return isinstance(answer, _Failure) and answer.status == 403


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
    """The HTTP status behind an hvac exception (hvac keeps only the class)."""
    for cls in type(exc).__mro__:
        if cls.__name__ in _STATUS_OF:
            return _STATUS_OF[cls.__name__]
    return 500


_TLS_REASON = re.compile(r"certificate verify failed: ([^()'\"]+)")


def _tls_reason(exc: Exception) -> str:
    match = _TLS_REASON.search(str(exc))
    if match:
        return (
            f"certificate verify failed ({match[1].strip()}); set ca_cert to the CA that "
            "signed the server's certificate"
        )
    return "TLS handshake error (is the address https and the server speaking TLS?)"
