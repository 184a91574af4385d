"""What a cycle knows about one secret while it plans and applies, shared by the planner
(``syncd.engine``) and the write side (``syncd.swap``).

A ``Work`` starts with the secret and its versions in the target, gathers version ids,
fetched values (never printed: ``repr`` hides them), the version to create and the
consumers; ``fail`` records the first error on the secret's ``PlanItem`` and nothing of it is
written after that.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from syncd.config import Secret
from syncd.errors import ProviderError, SyncdError, TargetError
from syncd.model import Consumer, ErrorKind, Fetched, NewVersion, PlanItem, VersionInfo
from syncd.redact import REDACTOR


def failed_item(
    name: str,
    message: str,
    kind: ErrorKind,
    transient: bool = False,
    *,
    cause: ProviderError | None = None,
) -> PlanItem:
    """An error item that never carries a value (the message is redacted); ``cause``, a
    provider's error, also names the provider and reference and says if it is transient."""
    item = PlanItem(name, "error")
    _record(item, message, kind, transient, cause)
    return item


def _record(
    item: PlanItem, message: str, kind: ErrorKind, transient: bool, cause: ProviderError | None
) -> None:
    item.error = REDACTOR.redact(message)
    item.error_kind = kind
    item.transient = cause.transient if cause is not None else transient
    if cause is not None:
        item.error_provider = cause.provider
        item.error_ref = REDACTOR.redact(cause.ref)


@dataclass
class Work:
    """Per-secret scratch state during one cycle."""

    secret: Secret
    item: PlanItem
    versions: list[VersionInfo]
    #: the ``for_each`` secret this one was generated from
    template: str | None = None
    tokens: dict[str, str | None] = field(default_factory=dict)
    values: dict[str, Fetched] = field(default_factory=dict, repr=False)
    new: NewVersion | None = None
    current: VersionInfo | None = None
    consumers: list[Consumer] = field(default_factory=list)
    #: a newer source reference for the unchanged current version (a sibling key moved)
    resourced: str | None = None
    #: the newest version, when its rollout failed: ``current`` is then the version before
    #: it that consumers run (or go back to)
    failed: VersionInfo | None = None
    #: this cycle moves stale consumers back to ``current`` (a rollback being finished)
    rollback: bool = False
    #: stale consumers are repointed this cycle (False: waiting for the window, held, or a
    #: rollback whose retry isn't due)
    repoint: bool = True
    #: consumers already on ``current`` whose rollout a crash (or a restart) interrupted:
    #: waited for without a repoint, and their failure is the swap's failure
    pending: list[Consumer] = field(default_factory=list)
    #: why the newest version failed, for the messages of the steps after
    why: str = ""
    #: the certificates' ``notAfter`` per key in this cycle's values, stored on a new version
    certificates: dict[str, float] = field(default_factory=dict)

    @property
    def latest(self) -> VersionInfo | None:
        """The newest stored version: what the source is compared with."""
        return self.failed or self.current

    def fail(
        self,
        message: str,
        kind: ErrorKind,
        *,
        transient: bool = False,
        cause: ProviderError | None = None,
    ) -> None:
        if self.item.error is None:
            _record(self.item, message, kind, transient, cause)
            self.item.action = "error"
            # report the version still served, not the one that failed to land
            self.item.version = self.current.version if self.current else None
            self.item.changed_keys = []


def _final(work: Work) -> str | None:
    """The object name of the version this cycle ends on (None: one not created yet)."""
    current = work.current if work.new is None else None
    return current.object_name if current else None


def stale_consumers(work: Work) -> list[Consumer]:
    """Consumers referencing something other than the version this cycle ends on, except
    those ``reverted_again`` leaves as they are."""
    # a version not created yet: every current reference is stale
    final = _final(work)
    left = reverted_again(work)
    return [
        c
        for c in work.consumers
        if c not in left and any(obj != final for obj in c.refs.get(work.secret.name, ()))
    ]


def reverted_again(work: Work) -> list[Consumer]:
    """Consumers put back on old references a second time after syncd repointed them to the
    version this cycle ends on: repointing them again would only start a rollout that the
    next GitOps sync undoes. A new version gets a normal attempt (``to`` is then older)."""
    final = _final(work)
    return [
        c
        for c in work.consumers
        if (revert := c.reverted.get(work.secret.name)) is not None
        and revert.again
        and revert.to == final
    ]


def is_transient(exc: object) -> bool:
    """Whether a provider's or target's failure may pass by itself (as it judged it)."""
    return isinstance(exc, ProviderError | TargetError) and exc.transient


def describe(exc: BaseException) -> str:
    """An exception as one line: syncd's own errors as they are, others with their type."""
    if isinstance(exc, SyncdError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
