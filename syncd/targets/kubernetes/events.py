"""Kubernetes Events on the workloads and version Secrets syncd touches.

``kubectl describe deploy web`` then shows what syncd did (``Repointed``, ``Converged``,
``RolledBack``, ...) the way it shows a controller's work. Events are core/v1 Events, as
``kubectl describe`` lists them, deduplicated like the kubelet's: one Event per object,
reason and message, whose ``count`` and ``lastTimestamp`` grow when it happens again.

They are best effort: an Event that can't be written (RBAC without ``events``, an API
server busy) never fails a swap; it is logged once. They go through a client of their own,
not counted as a target write, so a cycle's ``target_writes`` still says what changed; an
Event only follows a step that passed the leader guard.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from syncd.kube import RESOURCES, ApiError, KubeClient, Resource
from syncd.redact import REDACTOR

log = logging.getLogger("syncd.targets.kubernetes")

EVENT = Resource("Event", "", "v1", "events")
#: What the Events name as their source (``kubectl get events`` shows it).
COMPONENT = "syncd"
#: The API server refuses longer messages.
MAX_MESSAGE = 1024


@dataclass(frozen=True)
class Subject:
    """The object an Event is about."""

    kind: str
    namespace: str
    name: str
    api_version: str = ""


def _api_version(kind: str) -> str:
    """``apps/v1`` for a built-in kind syncd knows (``kube.RESOURCES``); '' for others (a
    custom workload), which the API server accepts."""
    resource = RESOURCES.get(kind)
    if resource is None:
        return ""
    return f"{resource.group}/{resource.version}" if resource.group else resource.version


class Events:
    """Writes deduplicated Events; never raises."""

    def __init__(self, client: Callable[[], KubeClient], *, instance: str) -> None:
        self._client = client
        self._instance = instance
        self._warned = False

    def emit(self, subject: Subject, reason: str, message: str, *, warning: bool = False) -> None:
        """Record that ``reason`` happened to ``subject`` (a ``Warning`` when ``warning``)."""
        text = REDACTOR.redact(message)[:MAX_MESSAGE]
        key = f"{subject.kind}/{subject.namespace}/{subject.name}/{reason}/{text}"
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        name = f"{subject.name[:200]}.syncd-{digest}"
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        try:
            client = self._client()
            try:
                client.create(
                    EVENT,
                    subject.namespace,
                    self._body(subject, name, reason, text, now=now, warning=warning),
                )
                return
            except ApiError as exc:
                if exc.status != 409:
                    raise
            # it happened before: count it on the Event there is (most are new: one request)
            existing = client.get(EVENT, subject.namespace, name) or {}
            client.patch(
                EVENT,
                subject.namespace,
                name,
                {"count": int(existing.get("count") or 1) + 1, "lastTimestamp": now},
            )
        except Exception as exc:  # noqa: BLE001 - an Event must never fail a swap
            self._failed(exc)

    def _body(
        self, subject: Subject, name: str, reason: str, text: str, *, now: str, warning: bool
    ) -> dict[str, object]:
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": name,
                "namespace": subject.namespace,
                "labels": {"app.kubernetes.io/managed-by": "syncd"},
            },
            "involvedObject": {
                "apiVersion": subject.api_version or _api_version(subject.kind),
                "kind": subject.kind,
                "namespace": subject.namespace,
                "name": subject.name,
            },
            "reason": reason,
            "message": text,
            "type": "Warning" if warning else "Normal",
            "count": 1,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "source": {"component": COMPONENT},
            "reportingComponent": f"syncd.io/{COMPONENT}",
            "reportingInstance": self._instance[:128],
        }

    def _failed(self, exc: Exception) -> None:
        if not self._warned:
            log.warning(
                "can't record Kubernetes Events (%s); syncd goes on without them (the chart's "
                "RBAC grants events create, get and patch)",
                exc,
            )
            self._warned = True
        else:
            log.debug("can't record an Event: %s", exc)
