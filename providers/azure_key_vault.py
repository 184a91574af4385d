"""The ``azure-key-vault`` provider: secrets from Azure Key Vault.

Change detection without reading values: one ``list_properties_of_secrets`` pass (25 secrets
a page, the service's maximum) gives each secret's ``updated`` timestamp, which moves whenever
a new version is written or the secret's attributes change. That timestamp is the version id
syncd stores, so a cycle with no change costs ``ceil(secrets in vault / 25)`` list calls and no
``get_secret`` at all; only changed secrets are read, with bounded concurrency (Key Vault has
no batch read). A pinned ``version`` needs no listing: its id is its version.

Key Vault timestamps have whole-second resolution, so two writes in the same second would look
alike. A timestamp younger than ``FRESH_SECONDS`` is therefore not trusted as a version id
(``None``: the engine reads the value), which costs at most one extra read after a change.

Every HTTP request that reaches the wire is counted by a response hook (operations
``list_secrets``, ``get_secret``, ``auth_challenge``; throttled and failed attempts included),
so retries and the challenge round trip show in the call counts, not only the logical calls.
"""

from __future__ import annotations

import logging
import os
import random
import ssl
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from providers.base import Provider, ProviderConfig, ProviderContext, Ref, json_field
from syncd.errors import ProviderError, SyncdError
from syncd.model import Fetched

log = logging.getLogger("syncd.providers.azure_key_vault")

#: A list timestamp younger than this is not trusted as a version id (whole-second resolution).
FRESH_SECONDS = 2.0
#: After a 403 on list, read every secret for this long before trying to list again.
LIST_FORBIDDEN_RETRY = 3600.0
#: Key Vault never returns more than 25 items a page.
PAGE_SIZE = 25
#: Hosts of the public Azure clouds' Entra ID; any other authority skips instance discovery
#: (which would otherwise call the public cloud to validate it).
KNOWN_AUTHORITIES = frozenset(
    {
        "login.microsoftonline.com",
        "login.microsoftonline.us",
        "login.chinacloudapi.cn",
    }
)
INSTALL_HINT = "pip install 'syncd[azure]'"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DefaultAuth(_Strict):
    """``DefaultAzureCredential``: environment, workload identity, managed identity, CLI..."""

    method: Literal["default"] = "default"
    managed_identity_client_id: str | None = Field(
        None, description="Client id of a user-assigned managed identity."
    )


class _SecretSource(_Strict):
    """A secret read from a file or an environment variable, never written in the config."""

    @staticmethod
    def _one_of(file: str | None, env: str | None, what: str) -> None:
        if (file is None) == (env is None):
            raise ValueError(f"give exactly one of {what}_file or {what}_env")


class ClientSecretAuth(_SecretSource):
    """A service principal with a client secret read from a file or an environment variable."""

    method: Literal["client-secret"]
    tenant_id: str = Field(min_length=1)
    client_id: str = Field(min_length=1)
    client_secret_file: str | None = Field(None, description="File holding the client secret.")
    client_secret_env: str | None = Field(
        None, description="Environment variable holding the client secret."
    )

    @model_validator(mode="after")
    def _check(self) -> ClientSecretAuth:
        self._one_of(self.client_secret_file, self.client_secret_env, "client_secret")
        return self


class CertificateAuth(_SecretSource):
    """A service principal with a certificate (PEM or PKCS12 with its private key)."""

    method: Literal["certificate"]
    tenant_id: str = Field(min_length=1)
    client_id: str = Field(min_length=1)
    certificate_path: str = Field(description="PEM or PKCS12 file with the private key.")
    certificate_password_file: str | None = None
    certificate_password_env: str | None = None
    send_certificate_chain: bool = Field(
        False, description="Send the x5c header (subject name / issuer authentication)."
    )

    @model_validator(mode="after")
    def _check(self) -> CertificateAuth:
        if self.certificate_password_file and self.certificate_password_env:
            raise ValueError(
                "give at most one of certificate_password_file or certificate_password_env"
            )
        return self


Auth = Annotated[DefaultAuth | ClientSecretAuth | CertificateAuth, Field(discriminator="method")]


class AzureKeyVaultConfig(ProviderConfig):
    """``{type: azure-key-vault, vault_url: https://my-vault.vault.azure.net}``."""

    type: Literal["azure-key-vault"]
    vault_url: str = Field(description="https://<vault>.vault.azure.net")
    auth: Auth = Field(default_factory=DefaultAuth, description="How to get an Entra ID token.")
    authority_host: str | None = Field(
        None, description="Entra ID authority, e.g. https://login.microsoftonline.us."
    )
    ca_bundle: str | None = Field(
        None, description="CA bundle (PEM) to trust for the vault and the authority."
    )
    verify_challenge_resource: bool = Field(
        True, description="Check the auth challenge's resource matches the vault's domain."
    )
    concurrency: int = Field(8, ge=1, le=64, description="Parallel get_secret calls.")
    retry_total: int = Field(6, ge=0, le=20, description="Retries on 408/429/5xx and errors.")
    retry_backoff_factor: float = Field(0.8, ge=0, description="Exponential backoff base (s).")
    retry_backoff_max: float = Field(60.0, gt=0, description="Longest backoff (s).")
    timeout: float = Field(30.0, gt=0, description="Connect and read timeout (s).")

    @field_validator("vault_url")
    @classmethod
    def _https(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError("vault_url must be an https:// URL")
        return value.rstrip("/")


class AzureKeyVaultRef(Ref):
    """``{provider: kv, name: db-password, version: <32 hex>, key: password}``."""

    name: str = Field(
        pattern=r"^[0-9a-zA-Z-]{1,127}$", description="Secret name (letters, digits, dashes)."
    )
    version: str | None = Field(
        None, pattern=r"^[0-9a-fA-F]{32}$", description="Pin one version (32 hex digits)."
    )
    key: str | None = Field(
        None, min_length=1, description="Pick one field of a JSON object value."
    )

    def describe(self) -> str:
        """``kv:db-password``, ``kv:db-password/<version>``, ``kv:db-password#key``."""
        text = f"{self.provider}:{self.name}"
        if self.version:
            text += f"/{self.version}"
        if self.key:
            text += f"#{self.key}"
        return text


class AzureKeyVaultProvider(Provider[AzureKeyVaultConfig, AzureKeyVaultRef]):
    """One vault; one ``SecretClient`` and credential per process, reused every cycle."""

    type_name: ClassVar[str] = "azure-key-vault"
    config_model: ClassVar[type[ProviderConfig]] = AzureKeyVaultConfig
    ref_model: ClassVar[type[Ref]] = AzureKeyVaultRef

    def __init__(self, config: AzureKeyVaultConfig, *, context: ProviderContext) -> None:
        super().__init__(config, context=context)
        try:
            from azure.core.pipeline.policies import RetryPolicy
            from azure.keyvault.secrets import SecretClient
        except ImportError as exc:
            raise SyncdError(f"the Azure SDK is not installed ({INSTALL_HINT})") from exc
        self._ca = self._path(config.ca_bundle) if config.ca_bundle else None
        self._credential = self._make_credential()

        class JitterRetryPolicy(RetryPolicy[Any, Any]):
            """azure-core's policy (Retry-After first) with +-20% jitter on its own backoff."""

            def get_backoff_time(self, settings: dict[str, Any]) -> float:
                backoff: float = super().get_backoff_time(settings)
                return backoff * random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not crypto

        transport: dict[str, Any] = {
            "connection_timeout": config.timeout,
            "read_timeout": config.timeout,
        }
        if self._ca:
            transport["connection_verify"] = self._ca
        self._client = SecretClient(
            vault_url=config.vault_url,
            credential=self._credential,
            verify_challenge_resource=config.verify_challenge_resource,
            retry_policy=JitterRetryPolicy(
                retry_total=config.retry_total,
                retry_backoff_factor=config.retry_backoff_factor,
                retry_backoff_max=config.retry_backoff_max,
            ),
            raw_response_hook=self._on_response,
            **transport,
        )
        self._list_forbidden_until = 0.0

    # ------------------------------------------------------------------ setup

    def _path(self, value: str) -> str:
        return str((self.context.base_dir / os.path.expanduser(value)).resolve())

    def _read_secret(self, file: str | None, env: str | None, what: str) -> str:
        """Read a credential from its file or environment variable (never from the config)."""
        if file is not None:
            path = self._path(file)
            try:
                text = Path(path).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise SyncdError(f"can't read {what} file {path}: {exc.strerror}") from exc
            if not text:
                raise SyncdError(f"{what} file {path} is empty")
            return text
        assert env is not None
        text = os.environ.get(env, "").strip()
        if not text:
            raise SyncdError(f"environment variable {env} ({what}) is not set or empty")
        return text

    def _make_credential(self) -> Any:
        """Build the credential once: tokens are cached and refreshed by azure-identity."""
        try:
            from azure import identity
        except ImportError as exc:
            raise SyncdError(f"azure-identity is not installed ({INSTALL_HINT})") from exc
        config = self.config
        common: dict[str, Any] = {}
        if config.authority_host:
            common["authority"] = config.authority_host
            host = urlsplit(config.authority_host).hostname or ""
            if host not in KNOWN_AUTHORITIES:
                common["disable_instance_discovery"] = True
        if self._ca:
            common["connection_verify"] = self._ca
        auth = config.auth
        if isinstance(auth, ClientSecretAuth):
            secret = self._read_secret(
                auth.client_secret_file, auth.client_secret_env, "client secret"
            )
            return identity.ClientSecretCredential(auth.tenant_id, auth.client_id, secret, **common)
        if isinstance(auth, CertificateAuth):
            password = None
            if auth.certificate_password_file or auth.certificate_password_env:
                password = self._read_secret(
                    auth.certificate_password_file,
                    auth.certificate_password_env,
                    "certificate password",
                ).encode()
            path = self._path(auth.certificate_path)
            try:
                data = Path(path).read_bytes()
            except OSError as exc:
                raise SyncdError(f"can't read certificate {path}: {exc.strerror}") from exc
            return identity.CertificateCredential(
                auth.tenant_id,
                auth.client_id,
                certificate_data=data,
                password=password,
                send_certificate_chain=auth.send_certificate_chain,
                **common,
            )
        if auth.managed_identity_client_id:
            common["managed_identity_client_id"] = auth.managed_identity_client_id
        return identity.DefaultAzureCredential(**common)

    def close(self) -> None:
        """Close the client's connections and the credential's."""
        self._client.close()
        close = getattr(self._credential, "close", None)
        if close is not None:
            close()

    # ------------------------------------------------------------------ counting

    def _on_response(self, response: Any) -> None:
        """Count one HTTP request that got a response (retries and challenges included)."""
        http = response.http_response
        status = http.status_code
        segments = [s for s in urlsplit(http.request.url).path.split("/") if s]
        if status == 401 and "WWW-Authenticate" in http.headers:
            operation = "auth_challenge"
        elif segments == ["secrets"]:
            operation = "list_secrets"
        elif segments[:1] == ["secrets"] and http.request.method == "GET":
            operation = "get_secret"
        else:
            operation = http.request.method.lower()
        self.count(operation, status="ok" if status < 400 else str(status))

    # ------------------------------------------------------------------ the interface

    def versions(
        self, refs: Sequence[AzureKeyVaultRef]
    ) -> Mapping[AzureKeyVaultRef, str | ProviderError | None]:
        """One listing of the vault answers for every unpinned reference."""
        result: dict[AzureKeyVaultRef, str | ProviderError | None] = {
            ref: f"v:{ref.version}" for ref in refs if ref.version
        }
        unpinned = [ref for ref in refs if not ref.version]
        if not unpinned:
            return result
        if time.monotonic() < self._list_forbidden_until:
            result.update(dict.fromkeys(unpinned))
            return result
        try:
            listed = self._list()
        except Exception as exc:  # noqa: BLE001 - mapped to one error per reference
            if getattr(exc, "response", None) is None:
                self.count("list_secrets", status="error")  # never reached the server
            if _status(exc) == 403:
                log.warning(
                    "provider %r: not allowed to list secrets in %s; reading every secret each "
                    "cycle for the next hour (grant list permission for cheap change detection)",
                    self.name,
                    self.config.vault_url,
                )
                self._list_forbidden_until = time.monotonic() + LIST_FORBIDDEN_RETRY
                result.update(dict.fromkeys(unpinned))
                return result
            message, transient = self._explain(exc, "listing secrets")
            result.update({ref: self.error(ref, message, transient=transient) for ref in unpinned})
            return result
        now = time.time()
        for ref in unpinned:
            entry = listed.get(ref.name)
            if entry is None:
                result[ref] = self.error(ref, f"secret {ref.name!r} not found in {self._vault}")
            elif not entry[1]:
                result[ref] = self.error(ref, f"secret {ref.name!r} is disabled in {self._vault}")
            else:
                result[ref] = _timestamp_token(entry[0], now)
        return result

    def fetch(
        self, refs: Sequence[AzureKeyVaultRef]
    ) -> Mapping[AzureKeyVaultRef, Fetched | ProviderError]:
        """``get_secret`` once per distinct (name, version), ``concurrency`` at a time."""
        wanted = list(dict.fromkeys((ref.name, ref.version) for ref in refs))
        if not wanted:
            return {}
        workers = min(self.config.concurrency, len(wanted))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="azure-kv") as pool:
            got = dict(zip(wanted, pool.map(self._get, wanted), strict=True))
        now = time.time()
        return {ref: self._value(ref, got[(ref.name, ref.version)], now) for ref in refs}

    # ------------------------------------------------------------------ helpers

    @property
    def _vault(self) -> str:
        return urlsplit(self.config.vault_url).netloc

    def _list(self) -> dict[str, tuple[float | None, bool]]:
        """``{name: (updated timestamp, enabled)}`` for every secret in the vault."""
        found: dict[str, tuple[float | None, bool]] = {}
        pages = self._client.list_properties_of_secrets(max_page_size=PAGE_SIZE).by_page()
        for page in pages:
            for props in page:
                updated = props.updated_on.timestamp() if props.updated_on else None
                if props.name:
                    found[props.name] = (updated, props.enabled is not False)
        return found

    def _get(self, key: tuple[str, str | None]) -> Any:
        """The ``KeyVaultSecret`` or the exception (mapped per reference by the caller)."""
        name, version = key
        try:
            return self._client.get_secret(name, version)
        except Exception as exc:  # noqa: BLE001 - one failed secret must not stop the others
            if getattr(exc, "response", None) is None:
                self.count("get_secret", status="error")  # never reached the server
            return exc

    def _value(self, ref: AzureKeyVaultRef, got: Any, now: float) -> Fetched | ProviderError:
        if isinstance(got, Exception):
            version = f" version {ref.version}" if ref.version else ""
            what = f"reading secret {ref.name!r}{version}"
            if _status(got) == 404:
                where = (
                    f"version {ref.version} of secret {ref.name!r}"
                    if ref.version
                    else (f"secret {ref.name!r}")
                )
                return self.error(ref, f"{where} not found in {self._vault}")
            if _status(got) == 403 and "disabled" in str(got):
                return self.error(ref, f"secret {ref.name!r} is disabled in {self._vault}")
            message, transient = self._explain(got, what)
            return self.error(ref, message, transient=transient)
        data = (got.value or "").encode("utf-8")
        if ref.key is not None:
            try:
                data = json_field(got.value or "", ref.key)
            except ValueError as exc:
                return self.error(ref, f"secret {ref.name!r}: {exc}")
        if ref.version:
            token: str | None = f"v:{ref.version}"
        else:
            updated = got.properties.updated_on
            token = _timestamp_token(updated.timestamp() if updated else None, now)
        try:
            return Fetched(ref.decoded(data), token)
        except ProviderError as exc:
            return exc

    def _explain(self, exc: BaseException, doing: str) -> tuple[str, bool]:
        """A one-line, value-free reason for a failed call, and whether it may pass by itself."""
        from azure.core.exceptions import (
            ClientAuthenticationError,
            HttpResponseError,
            ServiceRequestError,
            ServiceResponseError,
        )

        vault = self._vault
        if _is_tls_error(exc):
            return (
                f"{doing}: TLS certificate of {vault} or of the authority not trusted "
                "(set ca_bundle to the CA that signed it)",
                False,
            )
        if isinstance(exc, ClientAuthenticationError):
            return f"{doing}: authentication failed: {_first_line(exc)}", False
        if isinstance(exc, HttpResponseError) and exc.status_code is not None:
            code = exc.status_code
            if code == 429:
                return (
                    f"{doing}: throttled by {vault} (429) after {self.config.retry_total} retries",
                    True,
                )
            if code >= 500 or code == 408:
                return (
                    f"{doing}: {vault} answered {code} after {self.config.retry_total} retries",
                    True,
                )
            if code == 403:
                return f"{doing}: access denied by {vault} (403): {_first_line(exc)}", False
            return f"{doing}: {vault} answered {code}: {_first_line(exc)}", False
        if isinstance(exc, ServiceRequestError | ServiceResponseError):
            return f"{doing}: can't reach {vault}: {_first_line(exc)}", True
        return f"{doing}: {type(exc).__name__}: {_first_line(exc)}", False


def _timestamp_token(updated: float | None, now: float) -> str | None:
    """``u:<epoch seconds>``, or ``None`` while the timestamp is too fresh to tell writes apart."""
    if updated is None or now - updated < FRESH_SECONDS:
        return None
    return f"u:{int(updated)}"


def _status(exc: BaseException) -> int | None:
    code = getattr(exc, "status_code", None)
    return code if isinstance(code, int) else None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line[:300]


def _is_tls_error(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLError) or "CERTIFICATE_VERIFY_FAILED" in str(current):
            return True
        inner = getattr(current, "inner_exception", None)
        current = (
            inner
            if isinstance(inner, BaseException)
            else (current.__cause__ or current.__context__)
        )
    return False
