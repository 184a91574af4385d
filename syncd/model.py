"""Plain data that crosses the engine/provider/target boundary.

These types are deliberately small and free of any backend detail: a provider produces
``Fetched`` values, a target stores and reports ``VersionInfo`` and ``Consumer`` objects, and
the engine turns both into ``PlanItem`` results. None of them ever holds a value except
``Fetched`` and ``NewVersion``, whose ``repr`` hides it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal

Action = Literal["create", "update", "unchanged", "repoint", "delete", "import", "error"]
#: What kind of failure an error item reports (metrics and ``--output json`` use it).
ErrorKind = Literal["input", "provider", "target", "convergence"]
#: How a swap ended when it didn't simply converge (``PlanItem.outcome``):
#: ``rolled-back``: consumers didn't converge on the new version and run the previous one
#: again; ``held``: they didn't converge and were left as they are (``on_failure: hold``);
#: ``rolling-back``: a rollback that hasn't converged yet (retried on the schedule);
#: ``waiting-window``: consumers wait for the rotation window; ``settled``: a group waited
#: for related edits and swapped together.
Outcome = Literal["rolled-back", "held", "rolling-back", "waiting-window", "settled"]
#: Rollout states recorded on a version's object (a failed version is never tried again).
RolloutState = Literal["rolling-back", "rolled-back", "held"]
ROLLOUT_STATES: tuple[RolloutState, ...] = ("rolling-back", "rolled-back", "held")


@dataclass(frozen=True)
class Rollout:
    """What went wrong with a version's rollout, stored on the version's own object (a
    label), so every instance and every restart knows it: never a value.

    ``attempts`` and ``retry_at`` are the retry schedule of a rollback that hasn't converged
    yet: kept here, in the target, a restart neither forgets nor resets them.
    """

    state: RolloutState
    #: when the state was recorded, UTC ``YYYY-MM-DDTHH:MM:SSZ``
    at: str
    attempts: int = 0
    #: the earliest time the rollback may be tried again (same format), or ``""``
    retry_at: str = ""

    def to_label(self) -> str:
        """The compact JSON a target stores (a Swarm label, a Kubernetes annotation)."""
        body: dict[str, object] = {"state": self.state, "at": self.at}
        if self.attempts:
            body["attempts"] = self.attempts
        if self.retry_at:
            body["retry_at"] = self.retry_at
        return json.dumps(body, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_label(cls, text: str | None) -> Rollout | None:
        """A stored label back; ``None`` when absent or not understood (treated as healthy,
        which at worst retries a version once more)."""
        if not text:
            return None
        try:
            body = json.loads(text)
        except ValueError:
            return None
        if not isinstance(body, dict) or body.get("state") not in ROLLOUT_STATES:
            return None
        attempts = body.get("attempts", 0)
        if not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 0:
            attempts = 0
        return cls(
            state=body["state"],
            at=str(body.get("at") or ""),
            attempts=attempts,
            retry_at=str(body.get("retry_at") or ""),
        )


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
    #: set when this version's rollout failed (or its rollback is under way)
    rollout: Rollout | None = None
    #: the secret's ledger as stored on this object (``syncd.history``), unparsed
    history: str = field(default="", repr=False, compare=False)
    #: the certificates' ``notAfter`` per key found in this version's values when it was made
    #: (``syncd.expiry.encode_stored``), unparsed: a restarted syncd knows them unread
    certificates: str = field(default="", compare=False)

    @property
    def failed(self) -> bool:
        """Consumers didn't converge on this version: it is never tried again."""
        return self.rollout is not None


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
    #: the ledger the new object carries (``syncd.history``), so it outlives older objects
    history: str = field(default="", repr=False)
    #: the certificates' ``notAfter`` per key in ``data`` (``syncd.expiry.encode_stored``)
    certificates: str = ""

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
            history=self.history,
            certificates=self.certificates,
        )


@dataclass(frozen=True)
class Revert:
    """A consumer syncd repointed to ``to`` whose references were put back to older ones
    (``old``) by someone else: a GitOps sync (Argo CD, Flux) or a ``helm upgrade``
    re-applying its manifest. ``again``: this very revert was seen and repointed once
    already, so the consumer is left as it is rather than rolled out back and forth.
    ``fix``: the target's advice on how to stop the reverts."""

    to: str
    old: frozenset[str]
    again: bool = False
    fix: str = field(default="", compare=False)


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
    #: secret -> how its references were put back after syncd repointed them (the targets
    #: that record their repoints on the consumer report it)
    reverted: dict[str, Revert] = field(default_factory=dict, hash=False, compare=False)

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
    #: for a provider's error: which provider, and the reference it failed on
    error_provider: str | None = None
    error_ref: str | None = None
    #: Things worth saying that are not failures (a named consumer missing, a rollout going on).
    notes: list[str] = field(default_factory=list)
    #: how the swap ended when it didn't simply converge (see ``Outcome``)
    outcome: Outcome | None = None
    #: when something waited for happens: the window opens, a rollback is retried (UTC ISO)
    until: str | None = None
    #: the version that failed, for ``rolled-back`` / ``held`` / ``rolling-back``
    failed_version: int | None = None
    #: a rollback finished in this cycle (``syncd_rollbacks_total`` counts these)
    rollback_done: bool = False
    #: when the value of each key expires (Unix seconds), for the keys the source or a
    #: certificate in the value gives one; complete only when ``error`` is ``None``
    expires: dict[str, float] = field(default_factory=dict)

    def error_document(self) -> dict[str, object] | None:
        """The error as ``--output json`` gives it: what, where from, and whether it may pass
        by itself (a program retries a transient error and pages on the others)."""
        if self.error is None:
            return None
        return {
            "message": self.error,
            "kind": self.error_kind,
            "provider": self.error_provider,
            "ref": self.error_ref,
            "transient": self.transient,
        }

    @property
    def needs_fix(self) -> bool:
        """A provider's or the input's failure that won't pass by itself (credentials refused,
        a missing reference, a value that doesn't parse): the daemon retries it on the slow
        end of its schedule only. A target's or a rollout's failure is never judged so: an
        API that is away or a rollout still moving comes back without anyone acting."""
        return (
            self.error is not None
            and self.error_kind in ("provider", "input")
            and (not self.transient)
        )

    @property
    def changes(self) -> bool:
        """Whether this item writes anything to the target."""
        return self.action in ("create", "update", "repoint", "delete", "import") or bool(
            self.deleted
        )


@dataclass(frozen=True)
class Finding:
    """One problem ``syncd doctor`` found: who has it, what it is, and how to fix it.

    ``warning``: not a problem, something doctor could not judge (a secret a provider's
    cheap call doesn't show, judged by the next cycle's read); it doesn't fail doctor."""

    subject: str
    problem: str
    fix: str
    warning: bool = False
