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
"Younger" is measured on the vault's clock (the ``Date`` header of its latest answer), not on
this host's: a host clock running ahead would otherwise trust a fresh timestamp.

The timestamp also tells a re-created secret apart: Key Vault soft-deletes, so a name comes
back only after a purge, as a new secret whose version has a new ``updated`` time (a recovered
secret keeps its versions and timestamps, and its value).

A secret's ``expires`` attribute (``expires_on``) comes with the same listing and with every
read, so its expiry is known on cycles that read nothing (``note_expiry``). A pinned version is
not in the listing: its expiry is known once this process has read it.

A dead vault must not hold a cycle: a timeout or a refused or dropped connection is retried
once (``retry_connect``/``retry_read``), and after a call gave up that way the provider's
other calls fail at once for ``HOLD`` seconds. The credential (Entra ID) gets the same
transport settings. With the defaults a vault that accepts and never answers costs a cycle
about ``2 x timeout``.

azure-core honours ``Retry-After`` however long it is; an answer asking for more than
``providers.base.RETRY_AFTER_MAX`` is not retried, so a throttling vault can't hold a cycle for
minutes. An answer the SDK can't decode (cut mid-body, or not JSON) is an error of its own
(``failures.py``), never the SDK's text, which can quote the body.

Every HTTP request that reaches the wire is counted by a response hook (operations
``list_secrets``, ``get_secret``, ``auth_challenge``; throttled and failed attempts included),
so retries and the challenge round trip show in the call counts, not only the logical calls;
a successful answer whose body isn't JSON is counted as ``error``.

Submodules: ``settings`` (config and reference), ``failures`` (errors as sentences, which of
them are a dead vault). The SDK is imported only when a provider is built, so ``syncd check``
works without it and says which extra to install.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

from providers.azure_key_vault.failures import (
    TRANSPORT_RETRIES,
    Held,
    counted,
    explain,
    is_transport,
    status_of,
)
from providers.azure_key_vault.settings import (
    AzureKeyVaultConfig,
    AzureKeyVaultRef,
    CertificateAuth,
    ClientSecretAuth,
    DefaultAuth,
)
from providers.base import (
    RETRY_AFTER_MAX,
    Provider,
    ProviderConfig,
    ProviderContext,
    Ref,
    Unverified,
    json_field,
    utf8,
)
from syncd.errors import ProviderError, SyncdError
from syncd.model import Fetched
from syncd.registry import missing_modules

__all__ = [
    "FRESH_SECONDS",
    "AzureKeyVaultConfig",
    "AzureKeyVaultProvider",
    "AzureKeyVaultRef",
    "CertificateAuth",
    "ClientSecretAuth",
    "DefaultAuth",
]

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
#: What the provider imports when it is built (checked at config load without importing).
NEEDS = ("azure.keyvault.secrets", "azure.identity")
#: After a call gave up on a dead vault, the provider's other calls fail at once this long.
HOLD = 10.0


class AzureKeyVaultProvider(Provider[AzureKeyVaultConfig, AzureKeyVaultRef]):
    """One vault; one ``SecretClient`` and credential per process, reused every cycle."""

    type_name: ClassVar[str] = "azure-key-vault"
    config_model: ClassVar[type[ProviderConfig]] = AzureKeyVaultConfig
    ref_model: ClassVar[type[Ref]] = AzureKeyVaultRef

    @classmethod
    def unavailable(cls) -> str | None:
        """The Azure SDK not installed: name the extra, without importing it."""
        return missing_modules("the azure-key-vault provider", NEEDS, "azure")

    def __init__(self, config: AzureKeyVaultConfig, *, context: ProviderContext) -> None:
        super().__init__(config, context=context)
        try:
            from azure.core.pipeline.policies import RetryPolicy
            from azure.keyvault.secrets import SecretClient
        except ImportError as exc:
            raise SyncdError(f"the Azure SDK is not installed ({INSTALL_HINT})") from exc
        self._ca = self._path(config.ca_bundle) if config.ca_bundle else None
        self._lock = threading.Lock()
        self._dead: tuple[float, str] | None = None  # (monotonic time, why) of the last give-up
        self._clock: tuple[float, float] | None = None  # (vault's Date, monotonic) last seen
        self._credential = self._make_credential()

        class JitterRetryPolicy(RetryPolicy[Any, Any]):
            """azure-core's policy (Retry-After first) with +-20% jitter on its own backoff,
            and no retry when Retry-After asks for more than ``RETRY_AFTER_MAX`` (azure-core
            would sleep whatever it says, an hour included, inside the cycle)."""

            def get_backoff_time(self, settings: dict[str, Any]) -> float:
                backoff: float = super().get_backoff_time(settings)
                return backoff * random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not crypto

            def is_retry(self, settings: dict[str, Any], response: Any) -> bool:
                wait = self.get_retry_after(response)
                if wait is not None and wait > RETRY_AFTER_MAX:
                    return False
                return bool(super().is_retry(settings, response))

        transport = self._transport()
        self._client = SecretClient(
            vault_url=config.vault_url,
            credential=self._credential,
            verify_challenge_resource=config.verify_challenge_resource,
            retry_policy=JitterRetryPolicy(**self._retries()),
            raw_response_hook=self._on_response,
            **transport,
        )
        self._list_forbidden_until = 0.0

    # ------------------------------------------------------------------ setup

    def _path(self, value: str) -> str:
        return str((self.context.base_dir / os.path.expanduser(value)).resolve())

    def _transport(self) -> dict[str, Any]:
        """azure-core transport settings (its defaults wait 300 s to connect and to read)."""
        settings: dict[str, Any] = {
            "connection_timeout": self.config.timeout,
            "read_timeout": self.config.timeout,
        }
        if self._ca:
            settings["connection_verify"] = self._ca
        return settings

    def _retries(self) -> dict[str, Any]:
        """azure-core retry settings: ``retry_total`` for answers, one retry for transport.

        ``retry_status`` defaults to 3 in azure-core, which would cap ``retry_total`` quietly.
        """
        config = self.config
        return {
            "retry_total": config.retry_total,
            "retry_status": config.retry_total,
            "retry_connect": TRANSPORT_RETRIES,
            "retry_read": TRANSPORT_RETRIES,
            "retry_backoff_factor": config.retry_backoff_factor,
            "retry_backoff_max": config.retry_backoff_max,
        }

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
        common: dict[str, Any] = {
            "connection_timeout": config.timeout,
            "read_timeout": config.timeout,
        }
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
            return identity.ClientSecretCredential(
                auth.tenant_id, auth.client_id, secret, **common, **self._retries()
            )
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
                **self._retries(),
            )
        if auth.managed_identity_client_id:
            common["managed_identity_client_id"] = auth.managed_identity_client_id
        # the timeouts only: managed identity has retry rules of its own (IMDS asks for them)
        return identity.DefaultAzureCredential(**common)

    def close(self) -> None:
        """Close the client's connections and the credential's."""
        self._client.close()
        close = getattr(self._credential, "close", None)
        if close is not None:
            close()

    # ------------------------------------------------------------------ counting

    def _on_response(self, response: Any) -> None:
        """Count one HTTP request that got a response (retries and challenges included), and
        note the vault's clock from its ``Date`` header."""
        http = response.http_response
        status = http.status_code
        self._note_clock(http.headers.get("Date"))
        segments = [s for s in urlsplit(http.request.url).path.split("/") if s]
        outcome = "ok" if status < 400 else str(status)
        if status < 300 and not _json_body(http):
            outcome = "error"  # an answer the SDK can't decode is a failed call
        if status == 401 and "WWW-Authenticate" in http.headers:
            operation = "auth_challenge"
        elif segments == ["secrets"]:
            operation = "list_secrets"
        elif segments[:1] == ["secrets"] and http.request.method == "GET":
            operation = "get_secret"
        else:
            operation = http.request.method.lower()
        self.count(operation, status=outcome)

    def _note_clock(self, date: object) -> None:
        if not isinstance(date, str):
            return
        try:
            when = parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            return
        with self._lock:
            self._clock = (when, time.monotonic())

    def _vault_now(self) -> float:
        """The vault's time now: its last ``Date`` plus what passed since (truncated to the
        second, so it errs early, the safe side); this host's clock before any answer."""
        with self._lock:
            clock = self._clock
        if clock is None:
            return time.time()
        return clock[0] + (time.monotonic() - clock[1])

    # ------------------------------------------------------------------ dead vault

    def _check_hold(self) -> None:
        with self._lock:
            dead = self._dead
        if dead is not None and time.monotonic() - dead[0] < HOLD:
            raise Held(f"not sent, because {dead[1]} (no call for {HOLD:g} s after that)")

    def _note_failure(self, exc: BaseException, doing: str) -> None:
        """A call gave up on a dead vault (or authority): hold the others for ``HOLD``."""
        if is_transport(exc):
            message, _ = self._explain(exc, doing)
            with self._lock:
                self._dead = (time.monotonic(), message)

    def _note_success(self) -> None:
        with self._lock:
            self._dead = None

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
            self._check_hold()
            listed = self._list()
        except Exception as exc:  # noqa: BLE001 - mapped to one error per reference
            if not counted(exc) and not isinstance(exc, Held):
                self.count("list_secrets", status="error")  # no answer the hook counted
                self._note_failure(exc, "listing secrets")
            if status_of(exc) == 403:
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
        self._note_success()
        now = self._vault_now()
        for ref in unpinned:
            entry = listed.get(ref.name)
            if entry is None:
                result[ref] = self.error(ref, f"secret {ref.name!r} not found in {self._vault}")
            elif not entry[1]:
                result[ref] = self.error(ref, f"secret {ref.name!r} is disabled in {self._vault}")
            else:
                result[ref] = _timestamp_token(entry[0], now)
                self.note_expiry(ref, entry[2])
        return result

    def check(
        self, refs: Sequence[AzureKeyVaultRef]
    ) -> Mapping[AzureKeyVaultRef, ProviderError | Unverified | None]:
        """For ``syncd doctor``, from the same listing: a listed, enabled secret passes. The
        listing can't judge a pinned version (it describes current versions only), nor any
        secret while this identity may not list: those are ``Unverified``, and the next
        cycle's read decides."""
        result: dict[AzureKeyVaultRef, ProviderError | Unverified | None] = {}
        answers = self.versions(refs)
        # no token is also the answer for a secret written seconds ago: listed, so it passes
        forbidden = time.monotonic() < self._list_forbidden_until
        for ref, answer in answers.items():
            if isinstance(answer, ProviderError):
                result[ref] = answer
            elif ref.version:
                result[ref] = self.unverified(ref, "the listing doesn't show pinned versions")
            elif answer is None and forbidden:
                result[ref] = self.unverified(ref, "this identity may not list the vault")
            else:
                result[ref] = None
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
        now = self._vault_now()
        return {ref: self._value(ref, got[(ref.name, ref.version)], now) for ref in refs}

    # ------------------------------------------------------------------ helpers

    @property
    def _vault(self) -> str:
        return urlsplit(self.config.vault_url).netloc

    def _list(self) -> dict[str, tuple[float | None, bool, float | None]]:
        """``{name: (updated timestamp, enabled, expires timestamp)}`` for every secret in the
        vault (the listing describes each secret's current version)."""
        found: dict[str, tuple[float | None, bool, float | None]] = {}
        pages = self._client.list_properties_of_secrets(max_page_size=PAGE_SIZE).by_page()
        for page in pages:
            for props in page:
                if props.name:
                    found[props.name] = (
                        _stamp(props.updated_on),
                        props.enabled is not False,
                        _stamp(props.expires_on),
                    )
        return found

    def _get(self, key: tuple[str, str | None]) -> Any:
        """The ``KeyVaultSecret`` or the exception (mapped per reference by the caller)."""
        name, version = key
        try:
            self._check_hold()
            secret = self._client.get_secret(name, version)
        except Exception as exc:  # noqa: BLE001 - one failed secret must not stop the others
            if not counted(exc) and not isinstance(exc, Held):
                self.count("get_secret", status="error")  # no answer the hook counted
                self._note_failure(exc, f"reading secret {name!r}")
            return exc
        self._note_success()
        return secret

    def _value(self, ref: AzureKeyVaultRef, got: Any, now: float) -> Fetched | ProviderError:
        if isinstance(got, Exception):
            version = f" version {ref.version}" if ref.version else ""
            what = f"reading secret {ref.name!r}{version}"
            if status_of(got) == 404:
                where = (
                    f"version {ref.version} of secret {ref.name!r}"
                    if ref.version
                    else (f"secret {ref.name!r}")
                )
                return self.error(ref, f"{where} not found in {self._vault}")
            if status_of(got) == 403 and "disabled" in str(got):
                return self.error(ref, f"secret {ref.name!r} is disabled in {self._vault}")
            message, transient = self._explain(got, what)
            return self.error(ref, message, transient=transient)
        try:
            text = got.value or ""
            data = json_field(text, ref.key) if ref.key is not None else utf8(text)
        except ValueError as exc:
            return self.error(ref, f"secret {ref.name!r}: {exc}")
        if ref.version:
            token: str | None = f"v:{ref.version}"
        else:
            token = _timestamp_token(_stamp(got.properties.updated_on), now)
        try:
            fetched = Fetched(ref.decoded(data), token)
        except ProviderError as exc:
            return exc
        self.note_expiry(ref, _stamp(got.properties.expires_on))
        return fetched

    def _explain(self, exc: BaseException, doing: str) -> tuple[str, bool]:
        """A one-line, value-free reason for a failed call, and whether it may pass by itself."""
        return explain(exc, doing, vault=self._vault, retry_total=self.config.retry_total)


def _json_body(http: Any) -> bool:
    """Whether a successful answer carries a JSON body (an empty one counts, as for 204)."""
    from azure.core.exceptions import AzureError

    try:
        body = http.body()
    except AzureError:  # not read (a stream): the SDK reports what it finds
        return True
    try:
        json.loads(body or b"{}")
    except (ValueError, RecursionError):  # not UTF-8, not JSON, nested too deeply
        return False
    return True


def _stamp(when: datetime | None) -> float | None:
    """An SDK timestamp (``updated_on``, ``expires_on``) as Unix seconds."""
    return when.timestamp() if when is not None else None


def _timestamp_token(updated: float | None, now: float) -> str | None:
    """``u:<epoch seconds>``, or ``None`` while the timestamp is too fresh to tell writes apart."""
    if updated is None or now - updated < FRESH_SECONDS:
        return None
    return f"u:{int(updated)}"
