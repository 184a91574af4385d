"""Leader election on a ``coordination.k8s.io/v1`` Lease, so only one syncd writes.

The algorithm is client-go's: the holder renews ``renewTime`` every ``renew_every``; anyone
may take the lease once ``renewTime + leaseDurationSeconds`` has passed. Every write is
guarded by the Lease's ``resourceVersion``, so two candidates can never both win. A leader
that fails to renew for a whole lease duration stops considering itself leader before a
successor can take over.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from syncd.errors import NotLeaderError
from syncd.kube import ApiError, KubeClient

log = logging.getLogger("syncd.leader")


class LeaderElection(BaseModel):
    """``leader_election:`` settings of the kubernetes target."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(False, description="Only the Lease holder writes (run >1 replica).")
    lease: str = Field("syncd-leader", description="Lease name.")
    namespace: str | None = Field(None, description="Lease namespace (default: the target's).")
    duration: float = Field(15.0, gt=1, description="Seconds a lease lasts without renewal.")
    renew_every: float = Field(2.0, gt=0, description="Seconds between renewals.")


def _now() -> datetime:
    return datetime.now(UTC)


def _format(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class LeaderElector:
    """Keeps trying to hold the Lease in a background thread; ``is_leader`` answers now."""

    def __init__(
        self,
        client: KubeClient,
        *,
        namespace: str,
        settings: LeaderElection,
        identity: str,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.settings = settings
        self.identity = identity
        self.on_change = on_change
        self._leader_until = 0.0
        self._was_leader = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def is_leader(self) -> bool:
        """True while the last successful renewal is younger than the lease duration."""
        return time.monotonic() < self._leader_until

    def check(self) -> None:
        """The write guard: raise ``NotLeaderError`` unless this process holds the lease."""
        if not self.is_leader:
            raise NotLeaderError(f"not the holder of lease {self.settings.lease}; not writing")

    def start(self) -> None:
        """Start campaigning in the background."""
        self._thread = threading.Thread(target=self._loop, name="leader", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop, and release the lease if held so a successor needn't wait out the duration."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self.is_leader:
            self._release()
        self._leader_until = 0.0

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.try_acquire_or_renew()
            except ApiError as exc:
                log.warning("leader election: %s", exc)
            self._notify()
            self._stop.wait(self.settings.renew_every)

    def _notify(self) -> None:
        leader = self.is_leader
        if leader != self._was_leader:
            self._was_leader = leader
            log.info(
                "%s leadership of lease %s", "acquired" if leader else "lost", self.settings.lease
            )
            if self.on_change is not None:
                self.on_change(leader)

    def try_acquire_or_renew(self) -> bool:
        """One round: take or renew the Lease if allowed; True when this instance holds it."""
        started = time.monotonic()
        lease = self.client.get("Lease", self.namespace, self.settings.lease)
        now = _now()
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.settings.lease},
                "spec": self._spec(now, transitions=0, acquired=now),
            }
            return self._write(self.client.create, body, started)
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity")
        renewed = _parse(spec.get("renewTime")) or _parse(spec.get("acquireTime"))
        duration = float(spec.get("leaseDurationSeconds") or self.settings.duration)
        expired = renewed is None or (now - renewed).total_seconds() > duration
        if holder and holder != self.identity and not expired:
            self._leader_until = 0.0
            return False
        transitions = int(spec.get("leaseTransitions") or 0)
        if holder == self.identity:
            acquired = _parse(spec.get("acquireTime")) or now
        else:
            acquired, transitions = now, transitions + 1
        lease["spec"] = self._spec(now, transitions=transitions, acquired=acquired)
        return self._write(self.client.replace, lease, started)

    def _spec(self, now: datetime, *, transitions: int, acquired: datetime) -> dict[str, Any]:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.settings.duration),
            "acquireTime": _format(acquired),
            "renewTime": _format(now),
            "leaseTransitions": transitions,
        }

    def _write(self, call: Callable[..., Any], body: dict[str, Any], started: float) -> bool:
        try:
            call("Lease", self.namespace, body)
        except ApiError as exc:
            if exc.status in (409, 404):
                return False  # someone else wrote first; try again next round
            raise
        # measured from before the read, so a slow round never stretches the lease
        self._leader_until = started + self.settings.duration * 0.8
        return True

    def _release(self) -> None:
        try:
            lease = self.client.get("Lease", self.namespace, self.settings.lease)
            if lease and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                lease["spec"]["holderIdentity"] = None
                lease["spec"]["renewTime"] = None
                self.client.replace("Lease", self.namespace, lease)
        except ApiError as exc:
            log.warning("couldn't release lease %s: %s", self.settings.lease, exc)
