"""Progress lines while syncd waits for consumers to converge.

A rollout wait can last minutes (``timeout``, 5 minutes by default); silence for that long
looks like a hang. Each target's wait loop reports what it sees per consumer; a line is
logged when that changes, and at least every ``EVERY`` seconds while it doesn't.
"""

from __future__ import annotations

import logging
import time

from syncd.display import shown
from syncd.logs import fields

log = logging.getLogger("syncd.progress")

#: Seconds between two lines about a consumer whose state didn't change.
EVERY = 30.0


class WaitProgress:
    """Says ``waiting for Deployment/web: 1 of 3 updated replicas (12 s of 300 s)``."""

    def __init__(self, timeout: float, *, what: str = "waiting for") -> None:
        self._started = time.monotonic()
        self._timeout = timeout
        self._what = what
        self._said: dict[str, tuple[str, float]] = {}

    def note(self, label: str, detail: str) -> None:
        """``label``'s state is ``detail`` now; log it if it changed or was said long ago."""
        now = time.monotonic()
        said = self._said.get(label)
        if said is not None and said[0] == detail and now - said[1] < EVERY:
            return
        self._said[label] = (detail, now)
        log.info(
            "%s %s: %s (%.0f s of %.0f s)",
            self._what,
            shown(label),
            detail,
            now - self._started,
            self._timeout,
            extra=fields(consumer=label),
        )
