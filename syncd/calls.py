"""Counting of every call syncd makes to a provider or a target.

Counts feed ``--output json`` now and the Prometheus metrics later; listeners let the metrics
module observe calls without providers knowing it exists.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable

Listener = Callable[[str, str, str], None]


class CallCounter:
    """Thread-safe ``{component: {operation: count}}`` counter (providers fetch concurrently)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: defaultdict[str, defaultdict[str, int]] = defaultdict(
            lambda: defaultdict(int)
        )
        self._listeners: list[Listener] = []

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(component, operation, status)`` on every counted call."""
        self._listeners.append(listener)

    def count(self, component: str, operation: str, n: int = 1, *, status: str = "ok") -> None:
        """Record ``n`` calls of ``operation`` by ``component``."""
        with self._lock:
            self._counts[component][operation] += n
        for listener in self._listeners:
            listener(component, operation, status)

    def snapshot(self) -> dict[str, dict[str, int]]:
        """A plain copy of the counts, sorted for stable output."""
        with self._lock:
            return {c: dict(sorted(ops.items())) for c, ops in sorted(self._counts.items())}

    def total(self, component: str | None = None) -> int:
        """Sum of all counts, or of one component's."""
        snap = self.snapshot()
        if component is not None:
            return sum(snap.get(component, {}).values())
        return sum(sum(ops.values()) for ops in snap.values())
