"""What a cycle does with each secret's consumers, once its values are planned: repoint
them, finish a rollback, wait for the rotation window, wait again for a rollout a crash
interrupted, or report a version whose rollout failed; and a group swaps as one.

The planner (``syncd.engine``) calls this for every secret; the write side
(``syncd.swap``) then does what the ``Work`` says (``repoint``, ``rollback``, ``pending``).
Nothing here writes: a dry run plans exactly what a real cycle would do.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import datetime

from syncd.model import ROLLOUT_STATES
from syncd.swap import parse_stamp, previous_healthy, report, stamp
from syncd.work import Work, reverted_again, stale_consumers

log = logging.getLogger("syncd.engine")


class RolloutPlanner:
    """Decides the consumer side of each secret's swap."""

    def __init__(self, *, now: Callable[[], datetime], converged: set[str]) -> None:
        #: wall time: windows and the retry times stored in the target
        self.now = now
        #: versions this process saw converge (``Swap.converged``)
        self.converged = converged
        #: ``--ignore-window``: repoint outside rotation windows too
        self.ignore_window = False
        #: (consumer, secret, version) whose second revert this process already warned of
        self.warned_reverts: set[tuple[str, str, str]] = set()

    def plan(self, work: Work) -> None:
        """What this cycle does with the secret's consumers: repoint them, finish a
        rollback, wait for the window, or report a failed version."""
        stale = stale_consumers(work)
        work.item.consumers = sorted(c.label for c in stale)
        self._left_reverted(work)
        if work.new is None and work.failed is not None and work.failed.rollout is not None:
            self._failed(work, bool(stale))
            return
        if not stale:
            if work.new is None:
                self._unconverged(work)
            return
        if self._outside_window(work) or work.new is not None:
            return
        work.item.action = "repoint"
        current = work.current.object_name if work.current else None
        for consumer in stale:
            revert = consumer.reverted.get(work.secret.name)
            if revert is not None and revert.to == current:
                log.warning(
                    "%s was put back on %s after syncd repointed it to %s (a GitOps sync or "
                    "helm upgrade re-applying its manifest?); repointing it once more, and "
                    "leaving it as it is if that happens again. %s",
                    consumer.label,
                    ", ".join(sorted(revert.old)),
                    revert.to,
                    revert.fix,
                )
            elif consumer.refs.get(work.secret.name):
                log.warning(
                    "%s references an old version of %s; repointing it",
                    consumer.label,
                    work.secret.name,
                )

    def _left_reverted(self, work: Work) -> None:
        """Consumers reverted again to the same old version are left on it: a note each
        cycle, a warning once per process (what they reference is never collected: it is
        one of their references)."""
        for consumer in reverted_again(work):
            revert = consumer.reverted[work.secret.name]
            old = ", ".join(sorted(revert.old))
            work.item.notes.append(
                f"{consumer.label} was put back on {old} again after syncd repointed it to "
                f"{revert.to}: left as it is, so it doesn't roll out back and forth. "
                f"{revert.fix}"
            )
            key = (consumer.label, work.secret.name, revert.to)
            if key not in self.warned_reverts:
                self.warned_reverts.add(key)
                log.warning("%s stays on %s: reverted again. %s", consumer.label, old, revert.fix)

    def _failed(self, work: Work, stale: bool) -> None:
        """The newest version failed: report it, and finish a rollback that is due."""
        failed = work.failed
        assert failed is not None and failed.rollout is not None
        rollout = failed.rollout
        work.why = f"v{failed.version} did not converge (at {rollout.at})"
        if rollout.state == "held" or work.current is None:
            work.repoint = False
            report(
                work,
                "held",
                f"{work.why}; consumers are left as they are (on_failure: hold). "
                f"v{failed.version} is not tried again; a new upstream value is",
            )
            return
        if rollout.state == "rolled-back" and not stale:
            work.repoint = False
            report(
                work,
                "rolled-back",
                f"{work.why} and was rolled back to v{work.current.version}; "
                f"v{failed.version} is not tried again, a new upstream value is",
            )
            return
        retry = parse_stamp(rollout.retry_at) if rollout.retry_at else None
        if retry is not None and retry > self.now():
            work.repoint = False
            report(
                work,
                "rolling-back",
                f"rolling v{failed.version} back to v{work.current.version}: attempt "
                f"{rollout.attempts} did not converge; retrying at {rollout.retry_at}",
                until=rollout.retry_at,
            )
            return
        work.rollback = True
        report(work, "rolling-back", f"{work.why}; rolling back to v{work.current.version}")

    def _unconverged(self, work: Work) -> None:
        """A consumer on the current version whose rollout failed or hasn't finished.

        Right after a swap this process didn't see through (a crash or a restart during the
        wait) it is waited for again, and a failure is the swap's failure: rolled back or
        held. Otherwise it is reported every cycle, not only in the cycle that repointed it,
        and not rolled back (its trouble is not this version's)."""
        left = reverted_again(work)  # their rollout is of an old version, not this one
        stuck = [
            c
            for c in work.consumers
            if c.unconverged and c.refs.get(work.secret.name) and c not in left
        ]
        if not stuck or work.current is None:
            return
        detail = "; ".join(f"{c.label}: {c.unconverged}" for c in stuck)
        if self._interrupted(work):
            work.pending = stuck
            work.item.notes.append(
                f"waiting for the rollout of v{work.current.version} an earlier run started "
                f"({detail})"
            )
            return
        work.fail(
            f"consumers have not converged on v{work.current.version}: {detail}",
            "convergence",
        )

    def _interrupted(self, work: Work) -> bool:
        """Whether the current version's rollout is one a run of syncd started and didn't
        see through: the version is younger than twice the secret's timeout, this process
        never saw it converge, and there is a version to go back to."""
        current = work.current
        if (
            current is None
            or work.secret.spec.strategy != "versioned"
            or current.object_name in self.converged
            or previous_healthy(work, current.version) is None
        ):
            return False
        created = parse_stamp(current.created_at)
        if created is None:
            return False
        return (self.now() - created).total_seconds() < 2 * work.secret.timeout

    def _outside_window(self, work: Work) -> bool:
        """Outside its rotation window, a secret's consumers wait (a new version is still
        created: that restarts nothing)."""
        window = work.secret.window
        if window is None or self.ignore_window:
            return False
        now = self.now()
        if window.is_open(now):
            return False
        opens = stamp(window.next_open(now))
        work.repoint = False
        work.item.outcome, work.item.until = "waiting-window", opens
        work.item.notes.append(
            f"waiting for window until {opens} ({window.describe()}): consumers are repointed then"
        )
        return True

    def plan_groups(self, works: Sequence[Work]) -> None:
        """A group swaps as one: while a member can't (its source failed), no member's
        consumers are repointed, so none runs a new user with an old password."""
        members: dict[str, list[Work]] = defaultdict(list)
        for work in works:
            if work.secret.group:
                members[work.secret.group].append(work)
        for group, group_works in members.items():
            broken = sorted(
                w.secret.name
                for w in group_works
                if w.item.error is not None and w.item.outcome not in ROLLOUT_STATES
            )
            if not broken:
                continue
            for work in group_works:
                if work.item.error is None and work.repoint and not work.rollback:
                    work.repoint = False
                    if work.item.consumers or work.new is not None:
                        work.item.notes.append(
                            f"group {group}: consumers wait until {', '.join(broken)} can be "
                            "swapped too"
                        )
