"""A watch-fed cache of what a daemon's cycles read, so a cycle with nothing to do makes no
API request at all.

One ``Informer`` per kind and namespace lists once (version Secrets as metadata only) and
then follows the server's watch in a thread of its own, as client-go's informers do: a watch
the server ends is reopened from the last resourceVersion seen, one that expired (410 Gone)
lists again, one that fails waits a jittered, doubling pause and tries again. What is kept
is a view of each object (``views``), never a Secret's data.

A cache may only answer when it is right, so a reader falls back to a plain listing (and the
cycle's requests show it) whenever it can't be sure:

- before the first listing finished, or while the watch is down (unreachable, forbidden);
- until the stream has caught up with this process's own writes: every create, update,
  patch and delete the target's client makes is noted (``written``), and a read waits for
  its event (a resourceVersion at least the write's; a deleted name gone) for up to
  ``CATCH_UP`` seconds. Otherwise the cycle after a swap could still see the old state.

The scan before a deletion (``Consumers.protected``) never reads the cache: a version is
deleted only on what the cluster answers at that moment. Which custom workload kinds are
served is refreshed every ``DISCOVERY_TTL`` seconds here, in the background, not in a cycle.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from syncd.kube import ApiError, KubeClient, Resource, interrupt

log = logging.getLogger("syncd.targets.kubernetes")

T = TypeVar("T")

#: How long a read waits for the first listing of a kind, in seconds.
SYNC_WAIT = 10.0
#: How long a read waits for the stream to show this process's own writes, in seconds.
CATCH_UP = 5.0
#: The first pause after a failed watch, and the longest one (seconds).
RETRY_FIRST, RETRY_MAX = 1.0, 30.0
#: How long a watch refused by RBAC (401, 403) waits before asking again, in seconds.
FORBIDDEN_PAUSE = 300.0
#: How often the served custom workload kinds are discovered again, in seconds.
DISCOVERY_TTL = 600.0
#: An expectation that the named object is gone (a delete answers without a version).
GONE = -1


class Expired(Exception):
    """The watch's resourceVersion is too old (410 Gone): list again."""


def _version(value: Any) -> int | None:
    """A resourceVersion as a number. The API calls them opaque; every server syncd knows
    (etcd's revisions) writes integers, and anything else makes the cache list instead."""
    return int(value) if isinstance(value, str) and value.isdigit() else None


class Informer(Generic[T]):
    """One kind in one namespace: a listing, then the watch that keeps it current."""

    def __init__(
        self,
        client: KubeClient,
        resource: Resource,
        namespace: str,
        *,
        keep: Callable[[dict[str, Any]], T],
        wanted: Callable[[dict[str, Any]], bool] = lambda obj: True,
        selector: str | None = None,
        metadata_only: bool = False,
        stop: threading.Event | None = None,
    ) -> None:
        self.client = client
        self.resource = resource
        self.namespace = namespace
        self._keep = keep
        #: whether a written object is one this informer holds (its selector, client-side)
        self._wanted = wanted
        self._selector = selector
        self._metadata_only = metadata_only
        self._stop = stop or threading.Event()
        self._changed = threading.Condition()
        self._items: dict[str, T] = {}
        #: the newest resourceVersion the stream (or the listing) has shown, as a number
        self._seen = 0
        self._synced = False
        #: why the cache can't answer now (None: it can)
        self.down: str | None = "not listed yet"
        #: this process's writes the stream hasn't shown yet: name -> version, or GONE
        self._expected: dict[str, int] = {}
        #: counts for tests and the bench: lists, watches opened, events applied, 410s
        self.stats = {"lists": 0, "watches": 0, "events": 0, "expired": 0}
        self._thread: threading.Thread | None = None
        #: the watch answer being read, so ``close`` and ``resync`` can end it
        self._response: Any = None
        #: set by ``resync``: list again before watching on
        self._relist = False

    @property
    def label(self) -> str:
        """``Deployment/ns`` for logs."""
        return f"{self.resource.kind}/{self.namespace}"

    def start(self) -> None:
        """Follow the kind in a daemon thread (it ends with ``stop``)."""
        self._thread = threading.Thread(target=self.run, name=f"watch {self.label}", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        """Whether its thread still runs."""
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout: float) -> None:
        """Wait for the thread to end after ``stop``."""
        if self._thread is not None:
            self._thread.join(timeout)

    # ------------------------------------------------------------------ the stream

    def run(self) -> None:
        """List, watch, reopen, relist, until stopped."""
        version: str | None = None
        pause = RETRY_FIRST
        warned = False
        while not self._stop.is_set():
            opened, events = time.monotonic(), self.stats["events"]
            try:
                if self._relist:
                    self._relist, version = False, None
                if version is None:
                    version = self._list()
                for event in self.client.watch(
                    self.resource,
                    self.namespace,
                    resource_version=version,
                    selector=self._selector,
                    metadata_only=self._metadata_only,
                    opened=self._opened,
                ):
                    if self._stop.is_set():
                        return
                    version = self._apply(event) or version
                    pause, warned = RETRY_FIRST, False
                self.stats["watches"] += 1
                if events == self.stats["events"] and time.monotonic() - opened < RETRY_FIRST:
                    self._stop.wait(pause)  # a watch that ends at once (a proxy): no busy loop
                    pause = min(RETRY_MAX, pause * 2)
            except Expired:
                self.stats["expired"] += 1
                log.debug("watch of %s expired; listing again", self.label)
                version = None
            except ApiError as exc:
                if self._stop.is_set():
                    return
                if self._relist:  # ``resync`` cut the watch short
                    continue
                if exc.status == 410:
                    self.stats["expired"] += 1
                    version = None
                    continue
                self._mark_down(str(exc))
                if not warned:
                    log.warning(
                        "can't watch %s (%s); cycles list it instead until the watch works",
                        self.label,
                        exc,
                    )
                    warned = True
                if exc.status in (401, 403):
                    pause = max(pause, FORBIDDEN_PAUSE)  # RBAC changes slowly: ask seldom
                self._stop.wait(pause * random.uniform(0.5, 1.0))  # noqa: S311
                pause = min(max(RETRY_MAX, pause), pause * 2)

    def _opened(self, response: Any) -> None:
        self._response = response
        if self._stop.is_set():
            interrupt(response)

    def interrupt(self) -> None:
        """Cut the open watch short (after ``stop``, so the thread ends now)."""
        if self._response is not None:
            interrupt(self._response)

    def resync(self, why: str) -> None:
        """Distrust the items and list again: the server refused a write in a way that
        says they are stale (a create of a name the cache doesn't hold), as a stream that
        silently stopped would leave them. Readers list until the new listing is in."""
        log.info("%s: %s; listing it again", self.label, why)
        with self._changed:
            self.down = why
            self._relist = True
        self.interrupt()

    def _list(self) -> str:
        """Replace the items with a fresh listing; the resourceVersion to watch from."""
        items: dict[str, T] = {}
        version = ""
        pages = self.client.pages(
            self.resource,
            self.namespace,
            selector=self._selector,
            metadata_only=self._metadata_only,
        )
        for page in pages:
            version = str((page.get("metadata") or {}).get("resourceVersion") or "")
            for obj in page["items"]:
                name = (obj.get("metadata") or {}).get("name")
                if isinstance(name, str):
                    items[name] = self._keep(obj)
        seen = _version(version)
        with self._changed:
            self.stats["lists"] += 1
            self._items = items
            self._seen = max(self._seen, seen or 0)
            if seen is None:
                self._expected.clear()  # nothing can be compared: readers list instead
            self._synced = True
            self.down = None if seen is not None else "resourceVersions aren't numbers"
            self._settle()
        return version

    def _apply(self, event: dict[str, Any]) -> str | None:
        """One event into the items; the resourceVersion to resume from."""
        kind, obj = event.get("type"), event["object"]
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise Expired
            raise ApiError(_int(obj.get("code")), str(obj.get("reason") or ""), _message(obj))
        meta = obj.get("metadata") or {}
        version, name = meta.get("resourceVersion"), meta.get("name")
        if not isinstance(version, str) or not isinstance(name, str):
            return None
        with self._changed:
            if kind in ("ADDED", "MODIFIED"):
                obj.setdefault("kind", self.resource.kind)
                if obj["kind"] != self.resource.kind:  # a metadata-only object
                    obj["kind"] = self.resource.kind
                self._items[name] = self._keep(obj)
            elif kind == "DELETED":
                self._items.pop(name, None)
            elif kind != "BOOKMARK":
                return None
            self.stats["events"] += 1
            self._seen = max(self._seen, _version(version) or 0)
            self.down = None
            self._settle()
        return version

    def _mark_down(self, why: str) -> None:
        with self._changed:
            self.down = why

    def _settle(self) -> None:
        """Drop the expectations the stream has met, and wake readers (lock held)."""
        for name, version in list(self._expected.items()):
            if (version == GONE and name not in self._items) or 0 <= version <= self._seen:
                del self._expected[name]
        self._changed.notify_all()

    # ------------------------------------------------------------------ readers

    def written(self, name: str, obj: dict[str, Any] | None) -> None:
        """This process wrote ``name`` (``obj`` as the server answered; None: deleted)."""
        with self._changed:
            if obj is None:
                self._expected[name] = GONE
            elif self._wanted(obj):
                version = _version((obj.get("metadata") or {}).get("resourceVersion"))
                if version is None:
                    self.down = "a write answered with a resourceVersion that isn't a number"
                    return
                self._expected[name] = max(version, self._expected.get(name, 0))
            self._settle()

    def items(self, clock: Callable[[], float] = time.monotonic) -> list[T] | None:
        """The current items by name, or None when the cache can't be sure of them (the
        caller lists instead); waits a little for a first listing and for own writes."""
        start = clock()
        with self._changed:
            while True:
                if not self._synced:
                    limit = SYNC_WAIT
                elif self.down is not None:
                    return None
                elif not self._expected:
                    return [self._items[k] for k in sorted(self._items)]
                else:
                    limit = CATCH_UP
                left = start + limit - clock()
                if left <= 0:
                    log.debug("%s: the watch is behind; listing instead", self.label)
                    self._expected.clear()
                    return None
                self._changed.wait(left)


class Cache:
    """The informers of one target: version Secrets and workloads per namespace."""

    def __init__(self, client: KubeClient) -> None:
        self.client = client
        self._stop = threading.Event()
        self._informers: dict[tuple[str, str], Informer[Any]] = {}
        self._lock = threading.Lock()

    def add(self, informer: Informer[Any]) -> None:
        """Start following one kind in one namespace (once)."""
        key = (informer.resource.kind, informer.namespace)
        with self._lock:
            if key in self._informers:
                return
            self._informers[key] = informer
        informer.start()

    @property
    def stop(self) -> threading.Event:
        """Set when the cache closes; informers end with it."""
        return self._stop

    def get(self, kind: str, namespace: str) -> Informer[Any] | None:
        """The informer of a kind in a namespace, when there is one."""
        with self._lock:
            return self._informers.get((kind, namespace))

    def items(self, kinds: Iterable[str], namespace: str) -> list[Any] | None:
        """Every item of ``kinds`` in ``namespace``, kind by kind; None when any of them
        can't answer (or isn't followed)."""
        found: list[Any] = []
        for kind in kinds:
            informer = self.get(kind, namespace)
            items = informer.items() if informer is not None else None
            if items is None:
                return None
            found.extend(items)
        return found

    def resync(self, kind: str, namespace: str, why: str) -> None:
        """``Informer.resync`` of one kind in one namespace, when it is followed."""
        informer = self.get(kind, namespace)
        if informer is not None:
            informer.resync(why)

    def written(self, resource: Resource, namespace: str, name: str, obj: Any) -> None:
        """Route a write of the target's client to the informer that will see it."""
        informer = self.get(resource.kind, namespace)
        if informer is not None:
            informer.written(name, obj)

    def informers(self) -> list[Informer[Any]]:
        """Every informer, for tests and the bench."""
        with self._lock:
            return list(self._informers.values())

    def close(self) -> None:
        """Stop every informer and end its watch, then release the connections."""
        self._stop.set()
        for informer in self.informers():
            informer.interrupt()
        for informer in self.informers():
            informer.join(2.0)
        self.client.close()


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _message(status: dict[str, Any]) -> str:
    return f"watch ended: {str(status.get('message') or status.get('reason') or 'error')[:300]}"
