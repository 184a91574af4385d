"""Prometheus metrics for the daemon (prometheus-client), in a registry of their own.

Labels carry secret names, provider names and operations; never a value or fingerprint.
"""

from __future__ import annotations

import platform
import threading
import time

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from syncd import __version__
from syncd.engine import CycleResult
from syncd.model import ROLLOUT_STATES

_RESULTS = {
    "create": "created",
    "update": "updated",
    "unchanged": "unchanged",
    "repoint": "repointed",
    "delete": "deleted",
    "import": "imported",
    "error": "error",
}


class Metrics:
    """Every metric the daemon exports."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # ``*_created`` series only double every counter and histogram: nothing alerts on
        # them. The switch is process-wide and read on every scrape; syncd's registry is
        # the only one it serves.
        disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped upstream
        self.registry = registry or CollectorRegistry()
        #: the last rendering and when it started, shared by scrapes that waited for it
        self._rendered: tuple[float, bytes] | None = None
        self._render_lock = threading.Lock()
        r = self.registry
        self.build_info = Gauge(
            "syncd_build_info",
            "Always 1; the labels say which syncd and Python run.",
            ["version", "python"],
            registry=r,
        )
        self.build_info.labels(__version__, platform.python_version()).set(1)
        self.syncs = Counter(
            "syncd_syncs", "Secret syncs by result.", ["secret", "result"], registry=r
        )
        self.provider_calls = Counter(
            "syncd_provider_calls",
            "Calls to providers and the target.",
            ["provider", "operation", "status"],
            registry=r,
        )
        self.swap_seconds = Histogram(
            "syncd_swap_duration_seconds",
            "Time from the start of a cycle to converged consumers, for cycles that swapped.",
            ["secret"],
            buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
            registry=r,
        )
        self.cycle_seconds = Histogram(
            "syncd_cycle_duration_seconds", "Duration of reconcile cycles.", registry=r
        )
        self.last_success = Gauge(
            "syncd_last_success_timestamp_seconds",
            "When each secret was last in sync.",
            ["secret"],
            registry=r,
        )
        self.version = Gauge(
            "syncd_secret_version", "Current version number of each secret.", ["secret"], registry=r
        )
        self.convergence_failures = Counter(
            "syncd_convergence_failures",
            "Swaps whose consumers did not converge.",
            ["secret"],
            registry=r,
        )
        self.rollbacks = Counter(
            "syncd_rollbacks",
            "Rollbacks that moved consumers back to the previous version and converged.",
            ["secret"],
            registry=r,
        )
        self.failed_versions = Gauge(
            "syncd_failed_versions",
            "1 while a secret's newest version is one whose rollout failed (rolled back, held "
            "or rolling back): it is not tried again until the upstream value changes.",
            ["secret"],
            registry=r,
        )
        self.waiting_window = Gauge(
            "syncd_waiting_for_window",
            "1 while a secret's consumers wait for its rotation window.",
            ["secret"],
            registry=r,
        )
        self.expiry = Gauge(
            "syncd_secret_expiry_timestamp_seconds",
            "When a secret's key expires at its source (Unix time): the earliest of the "
            "source's expiry metadata and the notAfter of PEM certificates in the value.",
            ["secret", "key"],
            registry=r,
        )
        #: the keys each secret has an expiry series for, to remove the ones that go away
        self._expiring: dict[str, set[str]] = {}
        self.leader = Gauge("syncd_leader", "1 when this instance may write.", registry=r)
        self.config_loaded = Gauge(
            "syncd_config_loaded", "1 when a valid config is loaded.", registry=r
        )
        self.config_reloads = Counter(
            "syncd_config_reloads", "Config reloads by result.", ["result"], registry=r
        )
        self.sync_requests = Counter(
            "syncd_sync_requests",
            "POST /sync requests by result (accepted, merged, unauthorized, unavailable, "
            "not-leader, unknown, invalid).",
            ["result"],
            registry=r,
        )

    def exposition(self) -> bytes:
        """The text format of every metric, for ``/metrics``.

        One rendering at a time: at 10,000 secrets one takes seconds of CPU, and scrapes
        that each rendered their own would pile up (one thread per request). A scrape that
        waited for a rendering which started after it arrived takes that one's output, so
        what it gets is never older than the scrape.
        """
        arrived = time.monotonic()
        with self._render_lock:
            if self._rendered is not None and self._rendered[0] >= arrived:
                return self._rendered[1]
            started = time.monotonic()
            data = generate_latest(self.registry)
            self._rendered = (started, data)
            return data

    def count_call(self, component: str, operation: str, status: str) -> None:
        """A ``CallCounter`` listener."""
        self.provider_calls.labels(component, operation, status).inc()

    def observe_cycle(self, result: CycleResult, *, seconds: float, now: float) -> None:
        """Record one cycle's outcome per secret."""
        self.cycle_seconds.observe(seconds)
        for item in result.items:
            self.syncs.labels(item.name, _RESULTS[item.action]).inc()
            if item.error is None:
                self.last_success.labels(item.name).set(now)
                if item.version is not None:
                    self.version.labels(item.name).set(item.version)
                if item.action in ("create", "update", "repoint"):
                    self.swap_seconds.labels(item.name).observe(seconds)
            elif item.error_kind == "convergence":
                self.convergence_failures.labels(item.name).inc()
            if item.rollback_done:
                self.rollbacks.labels(item.name).inc()
            failed = item.outcome in ROLLOUT_STATES
            self.failed_versions.labels(item.name).set(1 if failed else 0)
            self.waiting_window.labels(item.name).set(item.outcome == "waiting-window")
            if item.error is None:  # a failed secret keeps the expiry last seen
                self._set_expiry(item.name, item.expires)

    def _set_expiry(self, name: str, expires: dict[str, float]) -> None:
        """Export ``expires`` as the secret's expiry series, removing keys it no longer has."""
        for key in self._expiring.get(name, set()) - set(expires):
            self.expiry.remove(name, key)
        for key, when in expires.items():
            self.expiry.labels(name, key).set(when)
        if expires:
            self._expiring[name] = set(expires)
        else:
            self._expiring.pop(name, None)

    def forget(self, names: set[str]) -> None:
        """Drop every series of these secrets (they left the config or their source)."""
        for metric in (
            self.last_success,
            self.version,
            self.convergence_failures,
            self.rollbacks,
            self.failed_versions,
            self.waiting_window,
        ):
            for name in names:
                try:
                    metric.remove(name)
                except KeyError:
                    continue
        for name in names:
            self._set_expiry(name, {})
            for result in _RESULTS.values():
                try:
                    self.syncs.remove(name, result)
                except KeyError:
                    continue
            try:
                self.swap_seconds.remove(name)
            except KeyError:
                continue
