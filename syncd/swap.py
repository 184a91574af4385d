"""The write side of a cycle, one explicit step at a time.

The planner (``syncd.engine``) decides; this module executes, in this order::

    record sources -> create N+1 -> roll forward: repoint stale consumers, wait
      -> converged: collect versions beyond keep -> prune
      -> not converged (timeout, failed rollout, paused or rolled-back update):
           on_failure rollback: mark N+1 rolling-back -> roll back: repoint to N, wait
                                -> mark N+1 rolled-back (never tried again)
                                -> not converged: keep rolling-back, retry on the schedule
           on_failure hold:     mark N+1 held, leave consumers as they are

Every step is one a crash may interrupt, and the next cycle plans again from what the target
holds: a version created but not used is repointed to; a consumer repointed but not yet
converged is waited for; a version marked ``rolling-back`` is rolled back. The marks live on
the version objects (labels), so every instance and every restart knows them, and the
rollback's retry schedule (``daemon.backoff_min`` to ``backoff_max``) is kept there too.
Nothing here deletes what a consumer references, or what the target says something can still
fall back to (``Target.protected``).

A cut-over group is swapped as one: consumers of several changed secrets get one update,
and when any member fails, every member that moved this cycle rolls back with it, so no
consumer runs a new user with an old password.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from syncd import history
from syncd.backoff import backoff_delay
from syncd.errors import TargetError
from syncd.logs import fields
from syncd.model import Consumer, NewVersion, Outcome, PlanItem, Rollout, VersionInfo
from syncd.targets.base import Target
from syncd.work import Work, describe, is_transient, stale_consumers

log = logging.getLogger("syncd.swap")


def utc_now() -> str:
    """Now as the target's labels store times."""
    return stamp(datetime.now(UTC))


def stamp(moment: datetime) -> str:
    """A datetime as ``YYYY-MM-DDTHH:MM:SSZ``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_stamp(text: str) -> datetime | None:
    """A stored time back; ``None`` when it doesn't parse (then it is due now)."""
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


def previous_healthy(work: Work, below: int) -> VersionInfo | None:
    """The newest version older than ``below`` whose rollout didn't fail: what consumers
    go back to."""
    older = [v for v in work.versions if v.version < below and not v.failed]
    return older[-1] if older else None


def _about(consumer: Consumer, secrets: set[str]) -> dict[str, object]:
    """The log fields of a line about ``consumer``."""
    return fields(
        consumer=consumer.label, namespace=consumer.namespace, secret=", ".join(sorted(secrets))
    )


def report(work: Work, outcome: Outcome, message: str, *, until: str | None = None) -> None:
    """Set a swap outcome on the secret's item, replacing an earlier message: a rollback's
    end says more than its start."""
    work.item.error = None
    work.fail(message, "convergence")
    work.item.outcome = outcome
    work.item.until = until
    work.item.failed_version = work.failed.version if work.failed else None


@dataclass
class Moved:
    """What one roll (forward or back) did."""

    #: consumer labels that were repointed (or waited for) and converged
    converged: set[str] = field(default_factory=set)
    #: secret -> consumer labels repointed (or waited for) to its version
    consumers: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    #: secrets that had a consumer repointed (or waited for)
    touched: set[str] = field(default_factory=set)
    #: secret -> why its consumers did not converge
    failed: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    #: secret -> (why a repoint never landed: an API error, whether it may pass by itself)
    unreached: dict[str, tuple[str, bool]] = field(default_factory=dict)
    #: secret -> consumers an operator paused: they can't converge, but not for the
    #: version's sake, so they are reported and nothing is rolled back
    paused: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    seconds: float = 0.0


class Swap:
    """Executes the writes a plan decided, against one target."""

    def __init__(self, target: Target[Any], *, schedule: tuple[float, float]) -> None:
        self.target = target
        #: the retry schedule of a rollback that didn't converge (``daemon.backoff_*``)
        self.schedule = schedule
        #: versions this process saw every consumer converge on (a consumer unconverged on
        #: one of them later is not this swap's failure)
        self.converged: set[str] = set()
        #: secrets whose history changed this apply (created, marked); see ``record_history``
        self._changed: set[str] = set()

    def apply(
        self,
        works: Sequence[Work],
        *,
        orphans: dict[str, list[VersionInfo]],
        items: list[PlanItem],
    ) -> None:
        """Every step, in order; each secret's failure stops only that secret (and its group)."""
        self._changed = set()
        self.record_sources(works)
        self.create(works)
        forward = self.roll_forward(works)
        self.fail_swaps(works, forward)
        self.roll_back(works)
        self.collect(works, forward.converged)
        self.record_history(works, forward)
        self.prune(orphans, items)

    # ------------------------------------------------------------------ record, create

    def record_sources(self, works: Sequence[Work]) -> None:
        """Store the newer source reference of unchanged versions (metadata only), so the
        next cycle - in this process or any other - reads no value for them."""
        for work in works:
            if work.resourced is None or work.current is None or work.item.error is not None:
                continue
            try:
                recorded = self.target.update_source(work.current, work.resourced)
            except Exception as exc:  # noqa: BLE001 - the value is fine; only a read is lost
                log.warning(
                    "%s: can't record the new source version: %s", work.secret.name, describe(exc)
                )
                continue
            if recorded:
                work.current = replace(work.current, source=work.resourced)
                work.versions[-1] = work.current

    def create(self, works: Sequence[Work]) -> None:
        """Create every new version in one call (a bad item fails alone)."""
        pending = [w for w in works if w.new is not None and w.item.error is None]
        if not pending:
            return
        at = utc_now()
        for work in pending:
            work.new = self._carry_history(work, at)
        try:
            results = self.target.create_versions([w.new for w in pending if w.new])
        except Exception as exc:  # noqa: BLE001 - nothing was created for any of them
            for work in pending:
                work.fail(
                    f"can't create version: {describe(exc)}", "target", transient=is_transient(exc)
                )
            return
        for work in pending:
            result = results.get(work.secret.name)
            if isinstance(result, VersionInfo):
                self._changed.add(work.secret.name)
                work.versions.append(result)
                work.current = result
                work.failed = None
                work.item.failed_version = None
                work.new = None
                log.info(
                    "created %s version %d",
                    work.secret.name,
                    result.version,
                    extra=fields(secret=work.secret.name, version=result.version),
                )
                self.target.record(
                    result, "Created", f"version {result.version} of {work.secret.name}"
                )
            else:
                work.fail(
                    f"can't create version: {result or 'target returned nothing'}",
                    "target",
                    transient=is_transient(result),
                )

    # ------------------------------------------------------------------ roll forward

    def roll_forward(self, works: Sequence[Work]) -> Moved:
        """Repoint each stale consumer once (all its secrets together), then wait for all,
        with the consumers whose rollout a crash interrupted (``Work.pending``)."""
        live = [
            w
            for w in works
            if w.item.error is None and w.current is not None and w.repoint and not w.rollback
        ]
        moved = self._move(live, rollback=False)
        by_name = {w.secret.name: w for w in live}
        for name, (message, transient) in moved.unreached.items():
            by_name[name].fail(message, "target", transient=transient)
        for name, reasons in moved.paused.items():
            by_name[name].fail(f"did not converge: {'; '.join(reasons)}", "convergence")
        for work in live:
            if (
                work.current is not None
                and work.item.error is None
                and not moved.failed.get(work.secret.name)
            ):
                self.converged.add(work.current.object_name)
        return moved

    def _move(self, works: Sequence[Work], *, rollback: bool) -> Moved:
        """One roll: repoint every stale consumer of ``works`` to its secret's ``current``
        in one update per consumer, then wait for them all."""
        started = time.monotonic()
        swaps: dict[str, dict[str, VersionInfo]] = defaultdict(dict)
        consumers: dict[str, Consumer] = {}
        waiting: dict[str, Consumer] = {}
        secrets_of: dict[str, set[str]] = defaultdict(set)
        for work in works:
            assert work.current is not None
            if rollback:
                # those already back (a crash after the update, the orchestrator's own
                # rollback) are waited for too: a rollback is done when they run it
                for consumer in work.consumers:
                    if work.current.object_name in consumer.refs.get(work.secret.name, ()):
                        waiting.setdefault(consumer.label, consumer)
                        secrets_of[consumer.label].add(work.secret.name)
            for consumer in work.pending if not rollback else ():
                waiting.setdefault(consumer.label, consumer)
                secrets_of[consumer.label].add(work.secret.name)
            for consumer in stale_consumers(work):
                consumers[consumer.label] = consumer
                secrets_of[consumer.label].add(work.secret.name)
                for obj in consumer.refs.get(work.secret.name, ()):
                    if obj != work.current.object_name:
                        swaps[consumer.label][obj] = work.current
        by_name = {w.secret.name: w for w in works}
        verb = "roll back" if rollback else "repoint"
        moved = Moved()
        for label, consumer in consumers.items():
            try:
                self.target.repoint(consumer, swaps[label], rollback=rollback)
                waiting[label] = consumer
                change = ", ".join(
                    f"{old} -> {v.object_name}" for old, v in sorted(swaps[label].items())
                )
                log.info(
                    "%s %s: %s",
                    "rolled back" if rollback else "repointed",
                    label,
                    change,
                    extra=_about(consumer, secrets_of[label]),
                )
                self.target.record(
                    consumer, "RolledBack" if rollback else "Repointed", change, warning=rollback
                )
            except Exception as exc:  # noqa: BLE001 - this consumer's secrets fail, others go on
                # the update never landed (an API error), so nothing is rolled back for it
                for name in secrets_of[label]:
                    moved.unreached.setdefault(
                        name, (f"can't {verb} {label}: {describe(exc)}", is_transient(exc))
                    )
        if not waiting:
            return moved
        timeout = max(by_name[n].secret.timeout for c in waiting for n in secrets_of[c])
        try:
            results = self.target.wait_converged(
                list(waiting.values()), timeout=timeout, rollback=rollback
            )
        except Exception as exc:  # noqa: BLE001 - nothing known: every wait failed
            results = {label: TargetError(describe(exc)) for label in waiting}  # type: ignore[misc]
        moved.seconds = time.monotonic() - started
        for label, consumer in waiting.items():
            moved.touched |= secrets_of[label]
            for name in secrets_of[label]:
                moved.consumers[name].add(label)
            error = results.get(label)
            if error is None:
                moved.converged.add(label)
                log.info(
                    "%s converged in %.1fs",
                    label,
                    moved.seconds,
                    extra=_about(consumer, secrets_of[label]),
                )
                self.target.record(
                    consumer,
                    "Converged",
                    f"rolled out with {', '.join(sorted(secrets_of[label]))} "
                    f"in {moved.seconds:.1f}s",
                )
            else:
                blamed = moved.failed if getattr(error, "blame", True) else moved.paused
                said = str(error) if str(error).startswith(label) else f"{label}: {error}"
                for name in secrets_of[label]:
                    blamed[name].append(said)
                self.target.record(consumer, "RolloutFailed", str(error), warning=True)
        for name in moved.touched:
            _now_on_current(by_name[name], set(waiting))
        return moved

    # ------------------------------------------------------------------ failure

    def fail_swaps(self, works: Sequence[Work], forward: Moved) -> None:
        """Consumers that didn't converge: roll back (mark rolling-back; ``roll_back`` does
        the rest) or hold (mark held), per ``on_failure``; a group fails as one."""
        if not forward.failed:
            return
        failed_groups = {w.secret.cutover for w in works if w.secret.name in forward.failed}
        for work in works:
            name = work.secret.name
            if work.current is None or name not in forward.touched:
                continue
            if name not in forward.failed and work.secret.cutover not in failed_groups:
                continue
            reasons = forward.failed.get(name) or [
                f"another secret of {work.secret.cutover} did not converge"
            ]
            self._fail_one(work, "; ".join(reasons), forward.seconds)

    def _fail_one(self, work: Work, reason: str, seconds: float) -> None:
        assert work.current is not None
        failed = work.current
        previous = previous_healthy(work, failed.version)
        what = f"consumers did not converge on v{failed.version} after {seconds:.0f}s ({reason})"
        work.why = what
        log.error("%s: %s", work.secret.name, what, extra=fields(secret=work.secret.name))
        in_place = work.secret.spec.strategy == "in-place"
        if work.secret.on_failure == "hold" or in_place or previous is None:
            why = (
                "on_failure: hold"
                if work.secret.on_failure == "hold"
                else "an in-place secret has no previous version to go back to"
                if in_place
                else "there is no earlier version to go back to"
            )
            if not in_place:  # one object holds every version of it: nothing to mark
                work.failed = self._mark(work, failed, Rollout("held", utc_now()))
            work.current = previous or failed
            report(
                work,
                "held",
                f"{what}; consumers left as they are ({why}); v{failed.version} is not tried "
                "again, a new upstream value is",
            )
            return
        work.failed = self._mark(work, failed, Rollout("rolling-back", utc_now()))
        work.current = previous
        work.rollback = True
        report(work, "rolling-back", f"{what}; rolling back to v{previous.version}")

    def _mark(self, work: Work, version: VersionInfo, rollout: Rollout | None) -> VersionInfo:
        """Record a rollout outcome on the version; a failure to record is logged and the
        swap goes on (the consumers come first), and the next cycle records it again."""
        self._changed.add(work.secret.name)
        try:
            return self.target.mark(version, rollout)
        except Exception as exc:  # noqa: BLE001 - reported, the rollback still happens
            log.error(
                "%s: can't record that v%d %s: %s",
                work.secret.name,
                version.version,
                rollout.state if rollout else "is healthy",
                describe(exc),
            )
            work.item.notes.append(f"the outcome was not recorded on the target: {describe(exc)}")
            return replace(version, rollout=rollout)

    # ------------------------------------------------------------------ roll back

    def roll_back(self, works: Sequence[Work]) -> None:
        """Move consumers of failed versions back to ``current``, wait, and record the end:
        rolled back for good, or rolling back still with the next retry time."""
        todo = [
            w
            for w in works
            if w.rollback and w.repoint and w.current is not None and w.failed is not None
        ]
        if not todo:
            return
        for work in todo:
            assert work.failed is not None and work.current is not None
            log.warning(
                "%s: rolling back v%d -> v%d",
                work.secret.name,
                work.failed.version,
                work.current.version,
                extra=fields(secret=work.secret.name, version=work.current.version),
            )
        moved = self._move(todo, rollback=True)
        for work in todo:
            assert work.failed is not None and work.current is not None
            failed, back = work.failed, work.current
            name = work.secret.name
            reasons = [*moved.failed.get(name, []), *moved.paused.get(name, [])]
            if work.secret.name in moved.unreached:
                reasons.append(moved.unreached[work.secret.name][0])
            if reasons:
                self._rollback_failed(work, "; ".join(reasons))
                continue
            rollout = Rollout("rolled-back", utc_now())
            work.failed = self._mark(work, failed, rollout)
            work.item.rollback_done = True
            log.warning(
                "%s: rolled back v%d -> v%d in %.1fs; v%d is not tried again",
                work.secret.name,
                failed.version,
                back.version,
                moved.seconds,
                failed.version,
                extra=fields(secret=work.secret.name, version=back.version),
            )
            self.target.record(
                failed,
                "RolledBack",
                f"consumers didn't converge on it; rolled back to v{back.version}",
                warning=True,
            )
            report(
                work,
                "rolled-back",
                f"{work.why}; rolled back to v{back.version} in {moved.seconds:.1f}s. "
                f"v{failed.version} is not tried again; a new upstream value is",
            )

    def _rollback_failed(self, work: Work, reason: str) -> None:
        """The previous version didn't converge either: keep the mark, count the attempt and
        store when to try again (the retry schedule, kept in the target)."""
        assert work.failed is not None and work.current is not None
        state = work.failed.rollout or Rollout("rolling-back", utc_now())
        attempts = state.attempts + 1
        delay = backoff_delay(attempts, *self.schedule)
        retry = stamp(datetime.now(UTC) + timedelta(seconds=delay))
        work.failed = self._mark(
            work, work.failed, replace(state, attempts=attempts, retry_at=retry)
        )
        report(
            work,
            "rolling-back",
            f"rolling v{work.failed.version} back to v{work.current.version} did not converge "
            f"({reason}); attempt {attempts}, retrying at {retry}",
            until=retry,
        )

    # ------------------------------------------------------------------ collect, prune

    def collect(self, works: Sequence[Work], moved: set[str]) -> None:
        """Delete versions beyond ``keep`` of secrets whose consumers all converged."""
        if not self.target.collects_versions:
            return
        candidates = {
            w.secret.name: self._gc_candidates(w, moved)
            for w in works
            if w.item.error is None and w.current is not None
        }
        if not any(candidates.values()):
            return
        try:
            protected = self.target.protected()
        except Exception as exc:  # noqa: BLE001 - without the protected set nothing is deleted
            log.warning("skipping garbage collection: %s", describe(exc))
            return
        by_name = {w.secret.name: w for w in works}
        for name, old in candidates.items():
            for version in old:
                if version.object_name in protected:
                    log.info(
                        "keeping %s: a consumer can still roll back to it", version.object_name
                    )
                    continue
                try:
                    if self.target.delete_version(version):
                        by_name[name].item.deleted.append(version.object_name)
                        log.info(
                            "collected %s",
                            version.object_name,
                            extra=fields(secret=name, version=version.version),
                        )
                        self.target.record(
                            version, "Collected", "no consumer references it any more"
                        )
                    else:
                        log.info("keeping %s: still in use (not yet)", version.object_name)
                except Exception as exc:  # noqa: BLE001 - GC retries next cycle
                    log.warning("can't delete %s: %s", version.object_name, describe(exc))

    @staticmethod
    def _gc_candidates(work: Work, moved: set[str]) -> list[VersionInfo]:
        """Versions older than the current one beyond ``keep`` that no consumer references.

        A consumer that moved to the current version this cycle no longer references what it
        had; every other consumer's references are spared whatever the target says. A failed
        newest version is newer than ``current``, so it stays (its mark is what keeps it from
        being tried again).
        """
        if work.current is None:
            return []
        older = [v for v in work.versions if v.version < work.current.version]
        doomed = older[: max(0, len(older) - work.secret.keep)]
        referenced = {
            obj
            for c in work.consumers
            if c.label not in moved
            for obj in c.refs.get(work.secret.name, ())
        }
        return [v for v in doomed if v.object_name not in referenced]

    # ------------------------------------------------------------------ history

    def _carry_history(self, work: Work, at: str) -> NewVersion:
        """The new version to create, carrying the secret's ledger with its own entry: a
        version no consumer has to move to has swapped once it exists (so only a swap with
        consumers writes its ledger again)."""
        assert work.new is not None
        moving = self.target.has_consumers and bool(stale_consumers(work) or work.pending)
        outcome: history.EntryOutcome = "rolling-out" if moving else "converged"
        base = _ledger(work, work.versions).entries
        entries = history.record(base, work.new.stored_as(""), outcome, at=at)
        return replace(work.new, history=history.encode(entries))

    def record_history(self, works: Sequence[Work], forward: Moved) -> None:
        """Record in each changed secret's ledger how its swap went and what was collected,
        on its newest object: one metadata write per secret whose ledger changed. A failure
        costs the ledger an update, never the swap: it is logged, and the next change of the
        secret records the state then."""
        changed = self._changed | forward.touched | set(forward.unreached) | set(forward.paused)
        at = utc_now()
        for work in works:
            if work.secret.name not in changed and not work.item.deleted:
                # a swap a crash (or a window) left unfinished may have settled meanwhile;
                # a cycle that failed before its swap (a provider's error) says nothing of it
                newest = max(work.versions, key=lambda v: v.version, default=None)
                if newest is None or work.item.error or not history.unsettled(newest.history):
                    continue
            try:
                self._record_history(work, forward, at)
            except Exception as exc:  # noqa: BLE001 - the ledger is a record, not the swap
                log.warning(
                    "%s: can't record the history: %s",
                    work.secret.name,
                    describe(exc),
                    extra=fields(secret=work.secret.name),
                )

    def _record_history(self, work: Work, forward: Moved, at: str) -> None:
        gone = set(work.item.deleted)
        left = [v for v in work.versions if v.object_name not in gone]
        if not left:
            return
        entries = list(_ledger(work, left).entries)
        subject = _subject(work)
        if subject is not None:
            version, outcome = subject
            moved = set(forward.consumers.get(work.secret.name, set()))
            if outcome == "converged":  # and those a killed run moved
                moved |= {
                    c.label
                    for c in work.consumers
                    if version.object_name in c.refs.get(work.secret.name, ())
                }
            entries = history.record(entries, version, outcome, at=at, consumers=moved)
        collected = [v.version for v in work.versions if v.object_name in gone]
        newest = max(left, key=lambda v: v.version)
        if self.target.collects_versions:  # and what went missing (a crash after a delete)
            held = {v.version for v in left}
            collected += [e.version for e in entries if e.version not in held]
        text = history.encode(history.collected(entries, collected, at=at))
        if text != newest.history and not self.target.write_history(newest, text):
            log.info(
                "%s: %s changed meanwhile; its history is recorded with the next change",
                work.secret.name,
                newest.object_name,
            )

    def prune(self, orphans: dict[str, list[VersionInfo]], items: list[PlanItem]) -> None:
        """Delete secrets removed from the config (``prune: true``), sparing anything in use."""
        if not orphans:
            return
        by_name = {i.name: i for i in items}
        try:
            protected = self.target.protected()
        except Exception as exc:  # noqa: BLE001 - without the protected set nothing is deleted
            for name in orphans:
                by_name[name].error = f"not pruned: {describe(exc)}"
                by_name[name].error_kind = "target"
            return
        for name, versions in orphans.items():
            item = by_name[name]
            for version in versions:
                problem = self._prune_one(version, protected)
                if problem is None:
                    item.deleted.append(version.object_name)
                else:
                    item.error, item.error_kind = problem, "target"

    def _prune_one(self, version: VersionInfo, protected: set[str]) -> str | None:
        if version.object_name in protected:
            return f"{version.object_name} is still referenced; not deleted"
        try:
            deleted = self.target.delete_version(version)
        except Exception as exc:  # noqa: BLE001 - retried next cycle
            return f"can't delete {version.object_name}: {describe(exc)}"
        return None if deleted else f"{version.object_name} is in use; not deleted"


def _ledger(work: Work, versions: Sequence[VersionInfo]) -> history.Ledger:
    """The secret's ledger as the target holds it; what can't be read is logged, and the
    write that follows replaces it."""
    ledger = history.latest(versions)
    if ledger.problem:
        log.warning(
            "%s: %s", work.secret.name, ledger.problem, extra=fields(secret=work.secret.name)
        )
    return ledger


def _subject(work: Work) -> tuple[VersionInfo, history.EntryOutcome] | None:
    """The version this cycle's swap was about, and how it stands: the failed newest one
    with its mark, or the current one."""
    failed, current = work.failed, work.current
    newer = failed is not None and (current is None or failed.version > current.version)
    if failed is not None and failed.rollout is not None and newer:
        return failed, failed.rollout.state
    if current is None:
        return None
    if work.item.error is not None:
        return current, "failed"
    if work.item.outcome == "waiting-window":
        return current, "waiting-window"
    if stale_consumers(work) or work.pending:
        return current, "rolling-out"
    return current, "converged"


def _now_on_current(work: Work, touched: set[str]) -> None:
    """After a roll, the consumers it touched reference the secret's ``current`` (unless
    their orchestrator moved them back, which the target's repoint finds out by itself)."""
    assert work.current is not None
    on = frozenset({work.current.object_name})
    work.consumers = [
        replace(c, refs={**c.refs, work.secret.name: on})
        if c.label in touched and c.refs.get(work.secret.name)
        else c
        for c in work.consumers
    ]
    work.pending = []
