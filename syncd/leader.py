"""Leader election on a ``coordination.k8s.io/v1`` Lease, so only one syncd of an installation
writes at a time.

The algorithm is client-go's, including the part that makes it safe across machines: a
candidate never compares the holder's ``renewTime`` with its own wall clock (two machines'
clocks can be minutes apart). It remembers the lease record it last saw and *when it saw it
change*, on its own monotonic clock, and takes the lease only once the record has stayed the
same for the record's ``leaseDurationSeconds`` and a fresh read still shows it unchanged.
The write itself is guarded by the Lease's ``resourceVersion``, so two candidates can never
both win.

The holder may write only until ``renew_deadline`` after the *start* of its last successful
renewal (``check()``, called before every write). A successor can take over no earlier than
``duration`` after that renewal reached the API server, so the gap ``duration -
renew_deadline`` is the margin for a write in flight and for clock-rate drift. A holder that is
paused (SIGSTOP, a VM freeze, a suspended laptop) and resumed finds its deadline passed and
writes nothing until a renewal succeeds again; the clock used counts suspended time too
(``CLOCK_BOOTTIME`` where the platform has it).
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from syncd.duration import Duration
from syncd.errors import NotLeaderError
from syncd.kube import ApiError, KubeClient

log = logging.getLogger("syncd.leader")

#: The Lease of the default installation (kept so upgrades keep electing on the same object).
DEFAULT_LEASE = "syncd-leader"
_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def default_lease(instance: str, default_instance: str) -> str:
    """``syncd-leader`` for the default installation, ``syncd-leader-<instance>`` otherwise."""
    return DEFAULT_LEASE if instance == default_instance else f"{DEFAULT_LEASE}-{instance}"


class LeaderElection(BaseModel):
    """``leader_election:`` settings of the kubernetes target."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(False, description="Only the Lease holder writes (run >1 replica).")
    lease: str | None = Field(
        None,
        description="Lease name (default: syncd-leader, or syncd-leader-<instance> for a named "
        "instance).",
    )
    namespace: str | None = Field(None, description="Lease namespace (default: the target's).")
    duration: Duration = Field(
        15.0, ge=1, description="How long the lease lasts without renewal (e.g. 15s)."
    )
    renew_deadline: Duration | None = Field(
        None,
        gt=0,
        description="How long after its last renewal the holder may still write; shorter than "
        "duration (default: two thirds of it).",
    )
    renew_every: Duration = Field(2.0, gt=0, description="Time between renewals and attempts.")

    @field_validator("lease")
    @classmethod
    def _lease(cls, value: str | None) -> str | None:
        if value is not None and (not _DNS1123.match(value) or len(value) > 253):
            raise ValueError(f"lease {value!r} is not a valid Kubernetes object name")
        return value

    @property
    def deadline(self) -> float:
        """``renew_deadline``, or two thirds of ``duration``."""
        return self.renew_deadline if self.renew_deadline is not None else self.duration * 2 / 3

    @model_validator(mode="after")
    def _order(self) -> LeaderElection:
        if not self.renew_every < self.deadline < self.duration:
            raise ValueError(
                f"need renew_every ({self.renew_every:g}s) < renew_deadline "
                f"({self.deadline:g}s) < duration ({self.duration:g}s)"
            )
        return self


def elapsed_clock() -> float:
    """Seconds on a clock that never jumps and keeps counting while the machine sleeps."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    if boottime is not None:
        return time.clock_gettime(boottime)
    return time.monotonic()


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _format(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _record(spec: dict[str, Any]) -> tuple[Any, ...]:
    """What a candidate compares between reads: any change means the holder is alive."""
    return tuple(
        spec.get(k)
        for k in (
            "holderIdentity",
            "leaseDurationSeconds",
            "acquireTime",
            "renewTime",
            "leaseTransitions",
        )
    )


class LeaderElector:
    """Keeps trying to hold the Lease in a background thread; ``check()`` guards each write.

    ``clock`` measures elapsed time (expiry, deadlines); ``wall`` only stamps the record's
    ``acquireTime``/``renewTime`` for humans: it is never compared with anything.
    """

    def __init__(
        self,
        client: KubeClient,
        *,
        namespace: str,
        lease: str,
        settings: LeaderElection,
        identity: str,
        on_change: Callable[[bool], None] | None = None,
        clock: Callable[[], float] = elapsed_clock,
        wall: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.lease = lease
        self.settings = settings
        self.identity = identity
        self.on_change = on_change
        self.clock = clock
        self.wall = wall
        self._lock = threading.Lock()
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self._valid_until = -math.inf
        self._was_leader = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def is_leader(self) -> bool:
        """True while this process may write: its last renewal started less than
        ``renew_deadline`` ago."""
        with self._lock:
            return self.clock() < self._valid_until

    def check(self) -> None:
        """The write guard: raise ``NotLeaderError`` unless this process surely holds the lease."""
        with self._lock:
            left = self._valid_until - self.clock()
        if left <= 0:
            raise NotLeaderError(
                f"not writing: this process ({self.identity}) does not hold lease "
                f"{self.namespace}/{self.lease}, or can't be sure it still does"
            )

    def start(self) -> None:
        """Start campaigning in the background."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="leader", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop, and release the lease if held so a successor needn't wait out the duration."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.settings.duration)
        if self.is_leader:
            self._release()
        with self._lock:
            self._valid_until = -math.inf
        self._notify()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.try_acquire_or_renew()
            except ApiError as exc:
                log.warning("leader election on lease %s: %s", self.lease, exc)
            except Exception:  # the election thread outlives any one bad round
                log.exception("leader election on lease %s failed unexpectedly", self.lease)
            self._notify()
            self._stop.wait(self.settings.renew_every)

    def _notify(self) -> None:
        leader = self.is_leader
        if leader != self._was_leader:
            self._was_leader = leader
            log.info(
                "%s leadership of lease %s/%s",
                "acquired" if leader else "lost",
                self.namespace,
                self.lease,
            )
            if self.on_change is not None:
                self.on_change(leader)

    def try_acquire_or_renew(self) -> bool:
        """One round: take or renew the Lease if allowed; True when this process holds it."""
        started = self.clock()
        lease = self.client.get("Lease", self.namespace, self.lease)
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.lease},
                "spec": self._spec(transitions=0, acquired=None),
            }
            return self._write(self.client.create, body, started)
        spec = lease.get("spec") or {}
        record = _record(spec)
        with self._lock:
            if record != self._observed:
                self._observed, self._observed_at = record, self.clock()
            observed_at = self._observed_at
        holder = spec.get("holderIdentity") or ""
        if holder and holder != self.identity:
            duration = _seconds(spec.get("leaseDurationSeconds"), self.settings.duration)
            if self.clock() < observed_at + duration:
                with self._lock:
                    self._valid_until = -math.inf
                return False
        transitions = _seconds(spec.get("leaseTransitions"), 0)
        mine = holder == self.identity
        lease["spec"] = self._spec(
            transitions=int(transitions) if mine else int(transitions) + 1,
            acquired=spec.get("acquireTime") if mine else None,
        )
        return self._write(self.client.replace, lease, started)

    def _spec(self, *, transitions: int, acquired: str | None) -> dict[str, Any]:
        now = _format(self.wall())
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": math.ceil(self.settings.duration),
            "acquireTime": acquired or now,
            "renewTime": now,
            "leaseTransitions": transitions,
        }

    def _write(self, call: Callable[..., Any], body: dict[str, Any], started: float) -> bool:
        try:
            written = call("Lease", self.namespace, body)
        except ApiError as exc:
            if exc.status in (409, 404):
                # someone else wrote the lease first: whoever it was, it isn't ours now
                with self._lock:
                    self._valid_until = -math.inf
                return False
            raise  # 403, 5xx, unreachable: _loop logs it; the deadline ends leadership
        with self._lock:
            self._observed = _record(written.get("spec") or {})
            self._observed_at = self.clock()
            self._valid_until = started + self.settings.deadline
        return True

    def _release(self) -> None:
        try:
            lease = self.client.get("Lease", self.namespace, self.lease)
            if lease and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                lease["spec"]["holderIdentity"] = ""
                lease["spec"]["leaseDurationSeconds"] = 1
                lease["spec"]["renewTime"] = _format(self.wall())
                self.client.replace("Lease", self.namespace, lease)
        except ApiError as exc:
            log.warning("couldn't release lease %s/%s: %s", self.namespace, self.lease, exc)


def _seconds(value: Any, default: float) -> float:
    """A number from the Lease record (another writer's input), or ``default``."""
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < 1e9:
        return float(value)
    return default
