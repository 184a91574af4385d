"""The one interface every target implements.

A target answers "which versions exist" and "which consumers use them" from its own labels
(state lives in the target, no local database) and performs the four writes of a swap:
create a version, repoint a consumer, wait for it to converge, delete an old version.

All writes go through methods here so the engine can count them and a dry run can refuse
them. A target must make each write idempotent: the engine may repeat any step after a crash.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from syncd.calls import CallCounter
from syncd.errors import ConvergenceError, TargetError
from syncd.model import Consumer, Finding, NewVersion, Rollout, VersionInfo

if TYPE_CHECKING:
    from syncd.config import SecretSpec
    from syncd.leader import LeaderElector

#: The component name under which target writes are counted.
TARGET_COUNTER = "target"
#: The component name under which target reads are counted.
TARGET_READS = "target-read"
#: The installation a config belongs to when it names none (objects from before installations
#: had names belong to it too).
DEFAULT_INSTANCE = "default"
#: A target's largest value unless it says otherwise (a Kubernetes Secret's limit).
MAX_VALUE_BYTES = 1024 * 1024


def kubernetes_only(spec: SecretSpec[Any]) -> list[str]:
    """Problems for secret fields that only the kubernetes target understands."""
    problems = [
        f"'{name}' applies to the kubernetes target only"
        for name in ("namespace", "type")
        if getattr(spec, name) is not None
    ]
    if spec.strategy != "versioned":
        problems.append("'strategy' applies to the kubernetes target only")
    return problems


class TargetConfig(BaseModel):
    """Base of the ``target:`` block. Unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str


@dataclass(frozen=True)
class TargetContext:
    """What a target gets from the process: where relative paths start, counters, the
    secrets it manages (targets that place secrets per secret, e.g. by namespace, need them),
    and the installation it writes for.

    ``instance`` is this installation's name. Every object the target creates carries it, and
    the target sees only objects that carry it: listing versions, finding consumers, garbage
    collection and prune never touch another installation's objects. Objects written before
    installations had names carry none and belong to ``DEFAULT_INSTANCE``.
    """

    base_dir: Path
    calls: CallCounter
    secrets: Mapping[str, SecretSpec[Any]] = field(default_factory=dict)
    instance: str = DEFAULT_INSTANCE


C = TypeVar("C", bound=TargetConfig)


class Target(ABC, Generic[C]):
    """A place secrets are written to. Subclasses set the class attributes."""

    type_name: ClassVar[str]
    config_model: ClassVar[type[TargetConfig]]
    #: Whether the target has consumers to repoint (files: no, the path itself is stable).
    has_consumers: ClassVar[bool] = True
    #: Whether the engine should delete versions beyond ``keep`` (files prunes generations).
    collects_versions: ClassVar[bool] = True

    def __init__(self, config: C, *, context: TargetContext) -> None:
        self.config = config
        self.context = context
        #: Called before every write; raises (``NotLeaderError``) when this process may no
        #: longer write, e.g. a leader that can't be sure it still holds its lease.
        self.write_guard: Callable[[], None] | None = None
        #: Called with how many versions ``create_versions`` just finished (made or failed),
        #: so a progress display can count them; set by the engine for one write.
        self.created: Callable[[int], None] | None = None

    def count_write(self, operation: str, n: int = 1) -> None:
        """Call before each write: checks the write guard, then counts it
        (``target_writes`` in ``--output json``)."""
        if self.write_guard is not None:
            self.write_guard()
        self.context.calls.count(TARGET_COUNTER, operation, n)

    def count_read(self, operation: str, n: int = 1) -> None:
        """Count a read of the target (``target_calls.read`` in ``--output json``)."""
        self.context.calls.count(TARGET_READS, operation, n)

    @classmethod
    def unavailable(cls) -> str | None:
        """Why this target can't run here (a missing SDK, naming the extra to install)."""
        return None

    @classmethod
    def validate_spec(cls, spec: SecretSpec[Any], config: TargetConfig) -> list[str]:
        """Problems that make ``spec`` impossible for this target.

        Each entry is a sentence saying what is wrong, e.g. a name the target can't hold.
        Checked at config load, and again at run time for every secret and key a source
        supplies (``for_each`` names, ``data_from`` keys), so the rules are the same for both.
        Runs without connecting anywhere, so ``syncd check`` works offline.
        """
        del spec, config
        return []

    @classmethod
    def validate_set(
        cls, specs: Sequence[SecretSpec[Any]], config: TargetConfig
    ) -> list[tuple[int, str]]:
        """Problems between secrets (two that would land on one object), as
        ``(index in specs, sentence)``; checked at config load and for generated secrets."""
        del specs, config
        return []

    def prepare(self) -> None:
        """Check local settings and credentials (a kubeconfig, a user name, an SDK) so that a
        target that can't work fails here, before a reload replaces the running one.

        Writes nothing and, where the backend allows it, makes no network call.
        """

    def stored_settings(self, spec: SecretSpec[Any]) -> dict[str, str]:
        """Settings besides the data that this target stores with ``spec``'s versions (a file
        mode, a Secret type). They are fingerprinted with the data, so editing one makes a
        new version on the next cycle.

        Only values that differ from the target's defaults are returned, so a release that
        learns a new setting doesn't give every existing secret a new version.
        """
        del spec
        return {}

    def max_value_bytes(self) -> int:
        """The largest value this target stores: a template's render stops past it, so a
        runaway template fails fast instead of building what the write would refuse."""
        return MAX_VALUE_BYTES

    def exclusive(self) -> AbstractContextManager[None]:
        """Hold the target for writing during one cycle.

        A target that two processes could write at once (a directory) takes a lock and raises
        ``TargetError`` naming the holder when another process has it. The default holds
        nothing: Swarm and Kubernetes writes are guarded per object.
        """
        return nullcontext()

    def repair(self) -> None:
        """Fix what an interrupted run left (temporary objects, extra generations, objects to
        adopt). Called once per real cycle inside ``exclusive()``, never in a dry run, and it
        writes only when there is something to fix.
        """

    def update_source(self, version: VersionInfo, source: str) -> bool:
        """Record a new source reference on an unchanged version, without touching its data.

        Used when an upstream object moved but this secret's value didn't (a sibling field of
        the same JSON secret changed): storing the new version id spares every later cycle a
        read. A metadata-only write; ``False`` when the target can't (the engine then
        remembers it for this process only).
        """
        del version, source
        return False

    def write_history(self, version: VersionInfo, ledger: str) -> bool:
        """Store ``ledger`` (``syncd.history``'s text) on ``version``'s own object, replacing
        the one there: a metadata-only write. New versions already carry the ledger from
        ``NewVersion.history``; this records how their swap went.

        ``False`` when the object is no longer that version, or the target keeps no ledger
        (the default). Raises ``TargetError`` when the write fails; the swap only warns.
        """
        del version, ledger
        return False

    def reference_name(self, version: VersionInfo) -> str:
        """The name a manifest or stack file uses for ``version`` (``syncd names``)."""
        return version.object_name

    @abstractmethod
    def load_key(self) -> bytes | None:
        """The installation's fingerprint HMAC key, or ``None`` if none was stored yet."""

    @abstractmethod
    def store_key(self, key: bytes) -> None:
        """Persist a newly generated HMAC key (first run only)."""

    @abstractmethod
    def list_versions(self, names: Sequence[str]) -> dict[str, list[VersionInfo]]:
        """Every managed version of the given logical secrets, oldest first (one listing)."""

    def create_versions(self, items: Sequence[NewVersion]) -> dict[str, VersionInfo | TargetError]:
        """Create the given versions; one result per secret name, a bad item fails alone.

        Targets that write the whole set at once (files) override this; the others create
        one object per item with ``create_version``. Either way ``created`` hears of each
        item once it is done.
        """
        results: dict[str, VersionInfo | TargetError] = {}
        for item in items:
            try:
                results[item.secret] = self.create_version(item)
            except TargetError as exc:
                results[item.secret] = exc
            if self.created is not None:
                self.created(1)
        return results

    def create_version(self, item: NewVersion) -> VersionInfo:
        """Create one version (targets that don't override ``create_versions``)."""
        raise TargetError(f"the {self.type_name} target can't create {item.secret!r} alone")

    def record(
        self, about: Consumer | VersionInfo, reason: str, message: str, *, warning: bool = False
    ) -> None:
        """Tell the platform what syncd did to ``about`` (Kubernetes: an Event on the
        workload or version Secret, so ``kubectl describe`` shows it). Best effort: never
        raises, never counts as a write. The default does nothing."""
        del about, reason, message, warning

    def find_consumers(
        self, specs: Sequence[SecretSpec[Any]], versions: Mapping[str, list[VersionInfo]]
    ) -> dict[str, list[Consumer] | TargetError]:
        """Consumers of each secret, with which versions they reference (one listing)."""
        del versions
        return {spec.name: [] for spec in specs}

    def repoint(
        self, consumer: Consumer, swaps: Mapping[str, VersionInfo], *, rollback: bool = False
    ) -> None:
        """Point ``consumer`` at other versions: ``swaps`` maps an object name it references
        to the version that replaces it.

        One update per consumer, however many of its secrets changed. ``rollback``: the
        versions are older ones the consumer ran before and the rollout to the newer ones
        failed, so the target may also clear what that rollout left stuck (a StatefulSet
        pod that will never become ready). A consumer that no longer references a swapped
        name (the orchestrator already rolled it back) is left alone.
        """
        del swaps, rollback
        raise TargetError(f"{self.type_name} target has no consumers to repoint ({consumer.label})")

    def wait_converged(
        self, consumers: Sequence[Consumer], *, timeout: float, rollback: bool = False
    ) -> dict[str, ConvergenceError | None]:
        """Wait until each consumer runs its new spec; result keyed by ``Consumer.label``.

        ``rollback``: waiting for consumers to run an older version again, so the
        orchestrator's own rollback finishing (a Swarm ``rollback_completed``) is success.
        """
        del timeout, rollback
        return {c.label: None for c in consumers}

    def mark(self, version: VersionInfo, rollout: Rollout | None) -> VersionInfo:
        """Record how ``version``'s rollout failed (or clear it) on the version's own object.

        A metadata-only write (a label), so every instance and every restart knows that this
        version failed and never tries it again. Raises ``TargetError`` when it can't.
        """
        del rollout
        raise TargetError(f"the {self.type_name} target can't mark {version.object_name!r}")

    def protected(self) -> set[str]:
        """Object names that must never be deleted (e.g. referenced by a rollback spec)."""
        return set()

    def delete_version(self, version: VersionInfo) -> bool:
        """Delete one old version; ``False`` when the target says it is still in use."""
        raise TargetError(
            f"{self.type_name} target does not delete single versions ({version.object_name})"
        )

    def import_existing(self, item: NewVersion, *, trust: bool) -> VersionInfo | None:
        """Adopt an unmanaged object named like ``item.secret`` as version ``item.version``
        without changing its data or its consumers; None when there is nothing to adopt.

        ``trust`` accepts the object's data unchecked where the target can't read it back.
        """
        del item, trust
        raise TargetError(f"the {self.type_name} target can't import existing secrets")

    def diagnose(self) -> list[Finding]:
        """Target-specific consumer problems for ``syncd doctor`` (read-only)."""
        return []

    def watch(self) -> None:
        """Start keeping what cycles read in memory, fed by the backend's change stream (a
        long-running daemon calls it once; ``stop_watching`` or ``close`` stops it). The
        default keeps nothing: every cycle reads the backend."""

    def stop_watching(self) -> None:
        """Stop what ``watch`` started. A stopping daemon calls it before it hands its lease
        over, so a successor never starts while this process still works."""

    def leader_elector(
        self, *, identity: str, on_change: Callable[[bool], None]
    ) -> LeaderElector | None:
        """An elector when the target supports (and the config enables) leader election."""
        del identity, on_change
        return None

    def close(self) -> None:
        """Release connections."""
