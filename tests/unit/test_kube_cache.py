"""The watch-fed cache's informer against a scripted client: listing, events, expiry and
relisting, waiting for this process's own writes, falling back when it can't be sure, and
the views it keeps (never a Secret's data)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from syncd.kube import RESOURCES, ApiError, _events
from syncd.targets.kubernetes import cache as cache_module
from syncd.targets.kubernetes.cache import Informer
from syncd.targets.kubernetes.views import secret_metadata, workload
from tests.conftest import wait_until

END = object()


def obj(name: str, version: int, **labels: str) -> dict[str, Any]:
    return {
        "kind": "Secret",
        "metadata": {"name": name, "resourceVersion": str(version), "labels": labels},
    }


class FakeClient:
    """Pages come from ``listings`` (one list per call); each watch reads ``events`` until
    ``END``, an ``ApiError`` put there is raised from the stream."""

    def __init__(self, *listings: tuple[int, list[dict[str, Any]]]) -> None:
        self.listings = list(listings)
        self.events: queue.Queue[Any] = queue.Queue()
        self.watched_from: list[str] = []

    def pages(self, resource: Any, namespace: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        version, items = self.listings.pop(0) if len(self.listings) > 1 else self.listings[0]
        yield {"metadata": {"resourceVersion": str(version)}, "items": list(items)}

    def watch(self, resource: Any, namespace: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        self.watched_from.append(kwargs["resource_version"])
        while True:
            event = self.events.get(timeout=10)
            if event is END:
                return
            if isinstance(event, Exception):
                raise event
            yield event


@pytest.fixture(name="fast")
def fast_fixture(monkeypatch: pytest.MonkeyPatch) -> None:
    """Short waits, so a read that can't be answered gives up quickly."""
    monkeypatch.setattr(cache_module, "CATCH_UP", 0.3)
    monkeypatch.setattr(cache_module, "SYNC_WAIT", 0.3)
    monkeypatch.setattr(cache_module, "RETRY_FIRST", 0.01)


def started(client: FakeClient, **kwargs: Any) -> tuple[Informer[Any], threading.Event]:
    stop = threading.Event()
    informer: Informer[Any] = Informer(
        client,  # type: ignore[arg-type]
        RESOURCES["Secret"],
        "ns",
        keep=lambda o: o["metadata"]["name"],
        stop=stop,
        **kwargs,
    )
    informer.start()
    return informer, stop


def names(informer: Informer[Any]) -> list[str] | None:
    return informer.items()


def test_listing_then_events_keep_the_items(fast: None) -> None:
    client = FakeClient((5, [obj("b", 3), obj("a", 4)]))
    informer, stop = started(client)
    try:
        assert names(informer) == ["a", "b"]
        client.events.put({"type": "ADDED", "object": obj("c", 6)})
        client.events.put({"type": "DELETED", "object": obj("a", 7)})
        client.events.put({"type": "BOOKMARK", "object": obj("", 9)})
        wait_until("events applied", lambda: informer.stats["events"] == 3)
        assert names(informer) == ["b", "c"]
        client.events.put(END)  # the server ends the watch: reopened from the last version
        wait_until("watch reopened", lambda: len(client.watched_from) == 2)
        assert client.watched_from == ["5", "9"]
        assert informer.stats["lists"] == 1
    finally:
        stop.set()
        client.events.put(END)


@pytest.mark.parametrize(
    "expiry",
    [
        {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired"}},
        ApiError(410, "Expired", "too old resource version"),
    ],
    ids=["event", "status"],
)
def test_expired_watch_lists_again(fast: None, expiry: Any) -> None:
    client = FakeClient((5, [obj("a", 4)]), (20, [obj("a", 4), obj("z", 19)]))
    informer, stop = started(client)
    try:
        assert names(informer) == ["a"]
        client.events.put(expiry)
        wait_until("relisted", lambda: informer.stats["lists"] == 2)
        assert names(informer) == ["a", "z"]
        assert informer.stats["expired"] == 1
        wait_until("watching again", lambda: len(client.watched_from) == 2)
        assert client.watched_from == ["5", "20"]
    finally:
        stop.set()
        client.events.put(END)


def test_resync_distrusts_the_items_until_listed_again(fast: None) -> None:
    """A write that shows the items are stale (a create of a name they don't hold) makes
    readers list, and the informer lists again even though its watch looked healthy."""
    client = FakeClient((5, []), (9, [obj("a", 8)]))
    informer, stop = started(client)
    try:
        assert names(informer) == []
        informer.resync("Secret ns/a already exists")
        assert informer.down == "Secret ns/a already exists"
        client.events.put(ApiError(0, "Unreachable", "cut short"))  # as ``interrupt`` does
        wait_until("listed again", lambda: informer.stats["lists"] == 2)
        assert names(informer) == ["a"]
        assert client.watched_from[-1] == "9"
    finally:
        stop.set()
        client.events.put(END)


def test_a_read_waits_for_own_writes_and_gives_up_to_a_listing(fast: None) -> None:
    client = FakeClient((5, [obj("a", 4)]))
    informer, stop = started(client)
    try:
        assert names(informer) == ["a"]
        informer.written("b", obj("b", 12))
        assert names(informer) is None, "answered before the stream showed the write"
        informer.written("b", obj("b", 12))
        reader: list[Any] = []
        thread = threading.Thread(target=lambda: reader.append(names(informer)))
        thread.start()
        client.events.put({"type": "ADDED", "object": obj("b", 12)})
        thread.join(5)
        assert reader == [["a", "b"]]
        informer.written("a", None)  # a delete: answered once the name is gone
        assert names(informer) is None
        informer.written("a", None)
        client.events.put({"type": "DELETED", "object": obj("a", 13)})
        wait_until("delete seen", lambda: names(informer) == ["b"])
    finally:
        stop.set()
        client.events.put(END)


def test_writes_the_informer_never_sees_are_not_waited_for(fast: None) -> None:
    """The key Secret is outside the versions' selector: a write of it must not make every
    read wait and then list."""
    client = FakeClient((5, []))
    informer, stop = started(client, wanted=lambda o: o["metadata"]["labels"].get("v") == "1")
    try:
        assert names(informer) == []
        informer.written("key", obj("key", 30))
        assert names(informer) == []
    finally:
        stop.set()
        client.events.put(END)


def test_a_failed_watch_makes_readers_list_until_it_works_again(fast: None) -> None:
    client = FakeClient((5, [obj("a", 4)]))
    informer, stop = started(client)
    try:
        assert names(informer) == ["a"]
        client.events.put(ApiError(0, "Unreachable", "connection refused"))
        wait_until("marked down", lambda: informer.down is not None)
        assert names(informer) is None
        client.events.put({"type": "MODIFIED", "object": obj("a", 8)})
        wait_until("up again", lambda: informer.down is None)
        assert names(informer) == ["a"]
        assert client.watched_from == ["5", "5"]
    finally:
        stop.set()
        client.events.put(END)


def test_versions_that_are_not_numbers_make_readers_list(fast: None) -> None:
    client = FakeClient((5, [obj("a", 4)]))
    informer, stop = started(client)
    try:
        assert names(informer) == ["a"]
        odd = obj("b", 1)
        odd["metadata"]["resourceVersion"] = "x7"
        informer.written("b", odd)
        assert names(informer) is None
    finally:
        stop.set()
        client.events.put(END)


def test_no_first_listing_means_no_answer(fast: None) -> None:
    client = FakeClient((5, []))
    client.pages = lambda *a, **k: (_ for _ in ()).throw(ApiError(403, "Forbidden", "no"))  # type: ignore[method-assign]
    informer, stop = started(client)
    try:
        assert names(informer) is None
        wait_until("marked down", lambda: informer.down is not None and "no" in informer.down)
    finally:
        stop.set()


class Stream:
    def __init__(self, *chunks: bytes) -> None:
        self.chunks = list(chunks)

    def read1(self, amount: int) -> bytes:
        del amount
        return self.chunks.pop(0) if self.chunks else b""


def test_events_are_read_across_chunks_and_garbage_ends_the_stream() -> None:
    line = b'{"type": "ADDED", "object": {"metadata": {"name": "a"}}}\n'
    events = list(_events(Stream(line[:10], line[10:] + line[:5], line[5:])))
    assert [e["type"] for e in events] == ["ADDED", "ADDED"]
    with pytest.raises(ApiError, match="no JSON"):
        list(_events(Stream(line, b"<html>proxy error</html>\n")))
    with pytest.raises(ApiError, match="no event"):
        list(_events(Stream(b'{"type": "ADDED", "object": "x"}\n')))


def test_secret_metadata_keeps_no_value(canary: str) -> None:
    secret = {
        "kind": "PartialObjectMetadata",
        "metadata": {
            "name": "app-v1",
            "namespace": "ns",
            "resourceVersion": "3",
            "labels": {"syncd.io/role": "version"},
            "annotations": {
                "syncd.io/name": "app",
                "kubectl.kubernetes.io/last-applied-configuration": canary,
            },
            "managedFields": [{"manager": canary}],
        },
        "data": {"k": canary},
    }
    kept = secret_metadata(secret)
    assert canary not in repr(kept)
    assert kept["metadata"]["annotations"] == {"syncd.io/name": "app"}
    assert kept["kind"] == "Secret"


def test_workload_view_finds_references_restarts_and_state() -> None:
    deployment = {
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "generation": 2,
            "resourceVersion": "9",
            "labels": {"app": "web"},
            "annotations": {"syncd.io/repointed-x": "{}", "other": "y"},
        },
        "spec": {
            "replicas": 1,
            "template": {
                "metadata": {"annotations": {"syncd.io/rev-abc": "3", "note": "n"}},
                "spec": {
                    "containers": [{"name": "c", "envFrom": [{"secretRef": {"name": "s-v1"}}]}],
                    "volumes": [{"name": "v", "secret": {"secretName": "t-v2"}}],
                },
            },
        },
        "status": {"observedGeneration": 1},
    }
    view = workload(deployment, "default")
    assert view.refs == {"s-v1", "t-v2"}
    assert view.restarts == {"syncd.io/rev-abc": "3"}
    assert view.labels == {"app": "web"}
    assert view.unconverged == "waiting for the controller to observe the update"
    assert (view.kind, view.name, view.resource_version) == ("Deployment", "web", "9")
