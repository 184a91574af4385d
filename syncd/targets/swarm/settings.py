"""The ``target: {type: swarm}`` block, and the names derived from it per installation."""

from __future__ import annotations

import string
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from syncd.duration import Duration
from syncd.targets.base import DEFAULT_INSTANCE, TargetConfig
from syncd.targets.swarm.names import DEFAULT_KEY_CONFIG, NAME_CHARS, valid_object_name


class SwarmTls(BaseModel):
    """TLS settings for a remote Docker daemon (``tcp://host:2376``); paths are files."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ca_cert: str | None = Field(None, description="CA certificate that signed the daemon's.")
    client_cert: str | None = Field(None, description="Client certificate (PEM).")
    client_key: str | None = Field(None, description="Client key (PEM).")
    verify: bool = Field(True, description="Verify the daemon's certificate.")


class SwarmTargetConfig(TargetConfig):
    """``{type: swarm}``: the local daemon by default (``DOCKER_HOST`` and friends apply)."""

    type: Literal["swarm"]
    docker_host: str | None = Field(
        None,
        description="Docker API of a manager node, e.g. unix:///var/run/docker.sock or "
        "tcp://manager:2376; default: DOCKER_HOST / DOCKER_TLS_VERIFY / DOCKER_CERT_PATH.",
    )
    tls: SwarmTls | None = Field(None, description="TLS for a tcp:// docker_host.")
    naming: str = Field(
        "{name}-v{version}",
        description="Name of each version's secret; must use {name} and {version} once, "
        "with a separator that doesn't end in a digit between them.",
    )
    key_config: str | None = Field(
        None,
        description="Swarm config holding the fingerprint HMAC key (created on first run); "
        f"default {DEFAULT_KEY_CONFIG}, or {DEFAULT_KEY_CONFIG}-<instance> for a named instance.",
    )
    key_file: str | None = Field(
        None,
        description="Keep the HMAC key in this file instead of a Swarm config (e.g. a Swarm "
        "secret mounted into syncd); relative to the config file.",
    )
    api_timeout: Duration = Field(60.0, gt=0, description="How long one Docker API call may take.")

    @field_validator("naming")
    @classmethod
    def _naming(cls, value: str) -> str:
        """Refuse templates that can't make valid names, or that make one name twice.

        Between ``{name}`` and ``{version}`` there must be text whose character next to the
        version is not a digit: with ``{name}{version}``, ``x1`` version 2 and ``x`` version
        12 would both be ``x12``.
        """
        try:
            parts = list(string.Formatter().parse(value))
        except ValueError as exc:
            raise ValueError(f"naming {value!r} is not a valid template: {exc}") from exc
        fields = [(f, spec, conv) for _, f, spec, conv in parts if f is not None]
        if sorted(f for f, _, _ in fields) != ["name", "version"] or any(
            spec or conv for _, spec, conv in fields
        ):
            raise ValueError(
                f"naming {value!r} must use {{name}} and {{version}} exactly once each, "
                "with no other field and no format spec"
            )
        literal = "".join(text for text, _, _, _ in parts)
        if set(literal) - NAME_CHARS:
            raise ValueError(
                f"naming {value!r} may only add letters, digits, '-', '_' and '.' to the name"
            )
        # the literal text just before the second field separates the two
        _, (separator, second, _, _) = [p for p in parts if p[1] is not None]
        next_to_version = separator[-1:] if second == "version" else separator[:1]
        if not next_to_version or next_to_version.isdigit():
            raise ValueError(
                f"naming {value!r} needs a separator between {{name}} and {{version}} that "
                "doesn't end in a digit (like '-v'), or two names could make the same object"
            )
        return value

    @field_validator("key_config")
    @classmethod
    def _key_config(cls, value: str | None) -> str | None:
        if value is not None and not valid_object_name(value):
            raise ValueError(f"key_config {value!r} is not a valid Swarm config name")
        return value

    def key_config_name(self, instance: str) -> str:
        """The Swarm config of ``instance``'s key: ``key_config``, else the default name
        (plus ``-<instance>`` for a named instance, so installations never share a key)."""
        if self.key_config is not None:
            return self.key_config
        if instance == DEFAULT_INSTANCE:
            return DEFAULT_KEY_CONFIG
        return f"{DEFAULT_KEY_CONFIG}-{instance}"


__all__ = ["SwarmTargetConfig", "SwarmTls"]
