"""The ``vault`` provider's config block and reference, as the config file spells them.

Kept apart from the client code so ``syncd check`` and ``syncd schema`` can validate a config
without hvac installed: nothing here talks to a server.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from providers.base import ProviderConfig, Ref
from syncd.duration import Duration

#: Where a pod's projected service-account token lives.
K8S_TOKEN_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/token"  # noqa: S105 - a path


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
    """``{type: vault, addr: https://vault:8200, mount: secret, auth: {method: approle, ...}}``.

    The time defaults bound what a dead server costs: one that accepts connections and never
    answers costs a cycle about ``2 x timeout`` (the first try and one retry), one that refuses
    them well under a second (see docs/providers/vault.md).
    """

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
    timeout: Duration = Field(
        5.0, gt=0, description="Per request: to connect, and then to wait for the answer."
    )
    retries: int = Field(
        4,
        ge=0,
        le=10,
        description="Retries of a throttled (429) or 5xx call; a timeout or a refused or "
        "dropped connection is retried once.",
    )
    backoff: Duration = Field(
        0.5, description="First retry delay; doubles each retry (capped at 30 s), jittered."
    )


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
