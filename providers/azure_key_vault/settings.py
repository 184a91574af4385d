"""The ``azure-key-vault`` provider's config block and reference, as the config file spells them.

Kept apart from the client code so ``syncd check`` and ``syncd schema`` validate a config
without the Azure SDK installed. No credential is ever a config value: secrets come from a
file or an environment variable named here.
"""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from providers.base import ProviderConfig, Ref
from syncd.duration import Duration


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
    retry_total: int = Field(
        4,
        ge=0,
        le=20,
        description="Retries on 408, 429, 500, 502-504 (Retry-After honoured); a timeout or a "
        "refused or dropped connection is retried once.",
    )
    retry_backoff_factor: Duration = Field(
        0.8, description="Backoff base: retry n waits factor x 2^(n-1) (the first at once)."
    )
    retry_backoff_max: Duration = Field(60.0, gt=0, description="Longest backoff.")
    timeout: Duration = Field(
        5.0, gt=0, description="To connect (TLS included), and to wait for each answer."
    )

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
