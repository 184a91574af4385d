"""Plain data that crosses the engine/provider/target boundary.

These types are deliberately small and free of any backend detail: a provider produces
``Fetched`` values, a target stores and reports ``VersionInfo`` and ``Consumer`` objects, and
the engine turns both into ``PlanItem`` results. None of them ever holds a value except
``Fetched`` and ``NewVersion``, whose ``repr`` hides it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Action = Literal["create", "update", "unchanged", "repoint", "delete", "import", "error"]
#: What kind of failure an error item reports (metrics and ``--output json`` use it).
ErrorKind = Literal["input", "provider", "target", "convergence"]


@dataclass(frozen=True)
class Fetched:
    """A value read from a provider, with the provider's version id for it (if it has one)."""

    value: bytes = field(repr=False)
    token: str | None = None


@dataclass(frozen=True)
class VersionInfo:
    """What a target knows about one stored version of a secret (its labels, never its data).

    ``keys`` maps each bundle key to a short keyed HMAC of that key's value, which lets a plan
    say *which* keys changed without ever holding or printing a value.
    """

    secret: str
    version: int
    object_name: str
    fingerprint: str
    keys: dict[str, str] = field(default_factory=dict)
    source: str = ""
    created_at: str = ""


@dataclass(frozen=True)
class NewVersion:
    """A version the engine asks a target to create."""

    secret: str
    version: int
    data: dict[str, bytes] = field(repr=False)
    fingerprint: str
    keys: dict[str, str]
    source: str
    created_at: str

    def stored_as(self, object_name: str) -> VersionInfo:
        """What a target reports once this version exists under ``object_name``."""
        return VersionInfo(
            secret=self.secret,
            version=self.version,
            object_name=object_name,
            fingerprint=self.fingerprint,
            keys=dict(self.keys),
            source=self.source,
            created_at=self.created_at,
        )


@dataclass(frozen=True)
class Consumer:
    """A workload (Swarm service, Kubernetes Deployment...) that references secret versions.

    ``refs`` maps each managed secret's logical name to the object names of its versions that
    this consumer references right now.
    """

    kind: str
    name: str
    namespace: str = ""
    refs: dict[str, frozenset[str]] = field(default_factory=dict, hash=False, compare=False)
    #: A consumer named in ``consumers:`` that doesn't exist (yet): reported, never repointed,
    #: and it doesn't block creating versions (stack users create secrets before deploying).
    missing: bool = field(default=False, compare=False)
    #: Why the consumer has not converged on the spec it runs now (a stuck rollout, a paused
    #: or rolled-back update), from data the consumer listing already holds; ``None``: it has.
    unconverged: str | None = field(default=None, compare=False)

    @property
    def label(self) -> str:
        """Human-readable id used in logs and plans, e.g. ``service/agent-zero``."""
        ns = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind}/{ns}{self.name}"


@dataclass
class PlanItem:
    """The decision for one secret in one cycle, and after apply, what happened."""

    name: str
    action: Action
    version: int | None = None
    changed_keys: list[str] = field(default_factory=list)
    consumers: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    error: str | None = None
    error_kind: ErrorKind | None = None
    #: the failure may pass by itself (throttled, unreachable, 5xx), as the provider judged it
    transient: bool = False
    #: Things worth saying that are not failures (a named consumer missing, a rollout going on).
    notes: list[str] = field(default_factory=list)

    @property
    def changes(self) -> bool:
        """Whether this item writes anything to the target."""
        return self.action in ("create", "update", "repoint", "delete", "import") or bool(
            self.deleted
        )


@dataclass(frozen=True)
class Finding:
    """One problem ``syncd doctor`` found: who has it, what it is, and how to fix it."""

    subject: str
    problem: str
    fix: str
