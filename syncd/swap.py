"""The write side of a cycle, one explicit step at a time: record moved source ids, create
new versions, repoint consumers, wait for them to converge, collect old versions, prune.

The planner (``syncd.engine``) decides; this module only executes, in this order, and every
step is one a crash may interrupt: the next cycle plans again from what the target holds,
so a version created but not yet used is repointed to, a consumer repointed but not yet
converged is waited for, and versions left beyond ``keep`` are collected. Nothing here
deletes what a consumer references, or what the target says something can still fall back
to (``Target.protected``).

A failed swap (consumers that took the update and didn't converge) is not retried at once:
the secret waits 30 s, doubling up to 30 min, jittered. That schedule lives in this process
only. An update that never landed (the API was away) is an ordinary target error, retried on
the daemon's backoff.
"""

from __future__ import annotations

import logging
import random
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from syncd.errors import TargetError
from syncd.model import Consumer, PlanItem, VersionInfo
from syncd.targets.base import Target
from syncd.work import Work, describe, is_transient, stale_consumers

log = logging.getLogger("syncd.swap")

#: Retry a failed swap after 30 s, doubling up to 30 min, with +-20% jitter.
BACKOFF_BASE = 30.0
BACKOFF_CAP = 1800.0


@dataclass
class _Backoff:
    failures: int = 0
    until: float = 0.0


class Swap:
    """Executes the writes a plan decided, against one target."""

    def __init__(self, target: Target[Any], *, clock: Callable[[], float] = time.monotonic) -> None:
        self.target = target
        self.clock = clock
        self._backoff: dict[str, _Backoff] = {}

    def retry_in(self, name: str) -> float | None:
        """Seconds until a secret whose swap failed may be repointed again, or ``None``."""
        backoff = self._backoff.get(name)
        if backoff is None or backoff.until <= self.clock():
            return None
        return backoff.until - self.clock()

    def apply(
        self,
        works: Sequence[Work],
        *,
        orphans: dict[str, list[VersionInfo]],
        items: list[PlanItem],
    ) -> None:
        """Every step, in order; each secret's failure stops only that secret."""
        self.record_sources(works)
        self.create(works)
        converged, moved = self.repoint_and_wait(works)
        self.collect(works, converged, moved)
        self.prune(orphans, items)

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
        pending = [w for w in works if w.new is not None and w.item.error is None]
        if not pending:
            return
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
                work.versions.append(result)
                work.current = result
                work.new = None
                log.info("created %s version %d", work.secret.name, result.version)
            else:
                work.fail(
                    f"can't create version: {result or 'target returned nothing'}",
                    "target",
                    transient=is_transient(result),
                )

    def repoint_and_wait(self, works: Sequence[Work]) -> tuple[set[str], set[str]]:
        """Repoint each stale consumer once (all its secrets together), then wait for all.

        Returns the secrets whose consumers all run the current version, and the labels of
        the consumers that moved and converged this cycle.
        """
        swaps: dict[str, dict[str, VersionInfo]] = defaultdict(dict)
        consumers: dict[str, Consumer] = {}
        secrets_of: dict[str, set[str]] = defaultdict(set)
        for work in works:
            if work.item.error is not None or work.current is None:
                continue
            for consumer in stale_consumers(work):
                consumers[consumer.label] = consumer
                secrets_of[consumer.label].add(work.secret.name)
                for obj in consumer.refs.get(work.secret.name, ()):
                    if obj != work.current.object_name:
                        swaps[consumer.label][obj] = work.current
        by_name = {w.secret.name: w for w in works}
        failed: set[str] = set()
        moved: set[str] = set()
        repointed: list[Consumer] = []
        for label, consumer in consumers.items():
            try:
                self.target.repoint(consumer, swaps[label])
                repointed.append(consumer)
            except Exception as exc:  # noqa: BLE001 - this consumer's secrets fail, others go on
                # the update never landed (an API error): the daemon's own backoff retries it;
                # the swap schedule below is for consumers that took the update and failed
                for name in secrets_of[label]:
                    by_name[name].fail(
                        f"can't repoint {label}: {describe(exc)}",
                        "target",
                        transient=is_transient(exc),
                    )
        if repointed:
            timeout = max(by_name[n].secret.timeout for c in repointed for n in secrets_of[c.label])
            try:
                results = self.target.wait_converged(repointed, timeout=timeout)
            except Exception as exc:  # noqa: BLE001
                results = {c.label: TargetError(describe(exc)) for c in repointed}  # type: ignore[misc]
            for consumer in repointed:
                error = results.get(consumer.label)
                if error is None:
                    moved.add(consumer.label)
                else:
                    for name in secrets_of[consumer.label]:
                        by_name[name].fail(
                            f"{consumer.label} did not converge: {error}", "convergence"
                        )
                        failed.add(name)
        for name in failed:
            backoff = self._backoff.setdefault(name, _Backoff())
            backoff.failures += 1
            delay = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (backoff.failures - 1))
            backoff.until = self.clock() + delay * random.uniform(0.8, 1.2)  # noqa: S311
        ok = set()
        for work in works:
            if work.item.error is None and work.current is not None:
                self._backoff.pop(work.secret.name, None)
                ok.add(work.secret.name)
        return ok, moved

    def collect(self, works: Sequence[Work], converged: set[str], moved: set[str]) -> None:
        if not self.target.collects_versions:
            return
        candidates = {
            w.secret.name: self._gc_candidates(w, moved)
            for w in works
            if w.secret.name in converged
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
                    else:
                        log.info("keeping %s: still in use (not yet)", version.object_name)
                except Exception as exc:  # noqa: BLE001 - GC retries next cycle
                    log.warning("can't delete %s: %s", version.object_name, describe(exc))

    @staticmethod
    def _gc_candidates(work: Work, moved: set[str]) -> list[VersionInfo]:
        """Versions older than the current one beyond ``keep`` that no consumer references.

        A consumer that moved to the current version this cycle no longer references what it
        had; every other consumer's references are spared whatever the target says.
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
