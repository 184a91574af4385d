"""Progress while syncd works: a cycle's counts, and lines while consumers converge.

A cold sync of thousands of secrets takes a while, and the engine reports how far it is as
counts (``ProgressHook``: a stage, how many are done, of how many) without knowing who
listens; the CLI draws a bar from them on a terminal (``syncd.cli.bar``). The counts carry
no name and no value.

A rollout wait can last minutes (``timeout``, 5 minutes by default); silence for that long
looks like a hang. Each target's wait loop reports what it sees per consumer; a line is
logged when that changes, and at least every ``EVERY`` seconds while it doesn't.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from syncd.display import shown
from syncd.logs import fields

log = logging.getLogger("syncd.progress")

#: Seconds between two lines about a consumer whose state didn't change.
EVERY = 30.0

#: ``hook(stage, done, total)``: ``done`` of ``total`` items of ``stage`` are finished.
ProgressHook = Callable[[str, int, int], None]
#: The stages of a cycle, in order: references whose version was asked for (counted per
#: provider answer), references whose value was read (per provider answer), versions
#: written (per version where the target writes one at a time).
CHECKING = "checking sources"
FETCHING = "fetching values"
CREATING = "creating versions"


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
