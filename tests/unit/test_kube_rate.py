"""The kubernetes target's request rate and concurrency: the token bucket (on a virtual clock,
so no test sleeps), a ``Retry-After`` holding back every thread's requests, and versions
created ``concurrency`` at a time through the real client and target code, against a fake
API server that answers as the real one does."""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from syncd.calls import CallCounter
from syncd.errors import NotLeaderError, TargetError
from syncd.kube import ApiError, KubeClient
from syncd.model import NewVersion, VersionInfo
from syncd.ratelimit import TokenBucket
from syncd.targets.base import TARGET_COUNTER, TargetContext
from syncd.targets.kubernetes.naming import KubernetesTargetConfig
from syncd.targets.kubernetes.target import KubernetesTarget
from tests.conftest import new_value


class Clock:
    """Virtual time for a ``TokenBucket``: a sleep moves it on at once, to the moment the
    sleeping thread asked for (the time it last read plus the sleep), never backwards."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []
        self._read: dict[int, float] = {}
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            self._read[threading.get_ident()] = self.now
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.slept.append(seconds)
            wake = self._read.get(threading.get_ident(), self.now) + seconds
            self.now = max(self.now, wake)


def bucket(qps: float, burst: int, clock: Clock) -> TokenBucket:
    return TokenBucket(qps, burst, clock=clock, sleep=clock.sleep)


def send_times(limiter: TokenBucket, clock: Clock, n: int) -> list[float]:
    """When each of ``n`` requests in a row was let through."""
    times = []
    for _ in range(n):
        limiter.acquire()
        times.append(round(clock(), 6))
    return times


# ---------------------------------------------------------------------- the token bucket


def test_a_burst_goes_at_once_then_qps_spaces_the_rest() -> None:
    clock = Clock()
    limiter = bucket(10, 3, clock)
    assert send_times(limiter, clock, 6) == [0.0, 0.0, 0.0, 0.1, 0.2, 0.3]


def test_an_idle_bucket_refills_up_to_the_burst_only() -> None:
    clock = Clock()
    limiter = bucket(10, 3, clock)
    send_times(limiter, clock, 3)
    clock.now += 60.0  # idle for a minute: three tokens, not six hundred
    assert send_times(limiter, clock, 5) == [60.0, 60.0, 60.0, 60.1, 60.2]


def test_a_long_run_takes_what_qps_and_burst_say() -> None:
    clock = Clock()
    limiter = bucket(50, 10, clock)
    times = send_times(limiter, clock, 300)
    assert times[-1] == pytest.approx((300 - 10) / 50)
    # in no window of one second did more than qps + burst requests go
    assert all(sum(1 for t in times if start <= t < start + 1.0) <= 50 + 10 for start in set(times))


def test_threads_sharing_a_bucket_each_get_a_slot_of_their_own() -> None:
    """Time stands still, so each request sleeps exactly until its slot: a slot given twice
    (a race) would show as a repeated sleep."""
    frozen = SimpleNamespace(slept=[], lock=threading.Lock())

    def sleep(seconds: float) -> None:
        with frozen.lock:
            frozen.slept.append(round(seconds, 6))

    limiter = TokenBucket(100, 5, clock=lambda: 0.0, sleep=sleep)
    start = threading.Barrier(8)

    def worker() -> None:
        start.wait()
        for _ in range(25):
            limiter.acquire()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(frozen.slept) == [round(k / 100, 6) for k in range(1, 200 - 5 + 1)]


def test_a_pause_holds_the_bucket_and_it_starts_empty_after() -> None:
    clock = Clock()
    limiter = bucket(10, 5, clock)
    limiter.pause(2.0)
    assert send_times(limiter, clock, 3) == [2.0, 2.1, 2.2]


def test_a_request_waiting_for_its_slot_when_a_pause_begins_waits_for_the_pause() -> None:
    clock = Clock()

    def sleep(seconds: float) -> None:
        if not clock.slept:  # while this request sleeps, another one is answered 429
            limiter.pause(5.0)
        clock.sleep(seconds)

    limiter = TokenBucket(1, 1, clock=clock, sleep=sleep)
    limiter.acquire()  # the burst is spent: the next slot is at 1s
    limiter.acquire()
    assert clock() == 5.0


def test_a_shorter_pause_never_shortens_a_longer_one() -> None:
    clock = Clock()
    limiter = bucket(math.inf, 1, clock)
    limiter.pause(4.0)
    limiter.pause(1.0)
    assert send_times(limiter, clock, 2) == [4.0, 4.0]


@pytest.mark.parametrize(("qps", "burst"), [(0, 1), (-1, 1), (math.nan, 1), (1, 0)])
def test_a_bucket_that_would_never_send_is_refused(qps: float, burst: int) -> None:
    with pytest.raises(ValueError, match="qps > 0 and burst >= 1"):
        TokenBucket(qps, burst)


# ---------------------------------------------------------------------- a fake API server

_COLLECTION = re.compile(r"^/api/v1/namespaces/([^/]+)/secrets$")


@dataclass
class Server:
    """Stands in for ``DynamicClient``: creates Secrets as the API server does (namespace
    and resourceVersion filled in, 409 for a name taken) and answers what ``refuse`` says
    for a request first. Records every request it was sent, with the clock's time."""

    clock: Callable[[], float] = lambda: 0.0
    refuse: Callable[[str, str, Any], tuple[int, dict[str, str]] | None] = lambda m, p, b: None
    seen: list[tuple[float, str, str]] = field(default_factory=list)
    secrets: dict[str, dict[str, Any]] = field(default_factory=dict)
    hook: Callable[[str], None] = lambda name: None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def request(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        del params
        with self.lock:
            self.seen.append((self.clock(), method, path))
        refused = self.refuse(method, path, body)
        if refused is not None:
            status, headers = refused
            error = ApiException(status=status, reason="Refused")
            error.body = json.dumps({"reason": "Refused", "message": f"scripted {status}"})
            error.headers = headers
            raise error
        namespace = _COLLECTION.match(path)
        if method == "POST" and namespace:
            name = body["metadata"]["name"]
            self.hook(name)
            with self.lock:
                if name in self.secrets:
                    raise ApiException(status=409, reason="AlreadyExists")
                stored = json.loads(json.dumps(body))
                stored["metadata"].update(namespace=namespace[1], resourceVersion="1")
                self.secrets[name] = stored
            return SimpleNamespace(data=json.dumps(stored).encode())
        return SimpleNamespace(data=b"{}")

    def posts(self) -> list[str]:
        return [path for _, method, path in self.seen if method == "POST"]


def client(
    server: Server, limiter: TokenBucket, on_call: Callable[[str, bool], None]
) -> KubeClient:
    return KubeClient(None, server, on_call, "https://api.test", limiter)


# ---------------------------------------------------------------------- the client


def test_every_attempt_takes_a_token_and_passes_the_guard_after_its_wait() -> None:
    """Retries are requests too: each one waits for the bucket, and the guard (``on_call``)
    is asked after that wait, right before the attempt goes out."""
    clock = Clock()
    answers = iter([(429, {"Retry-After": "0"}), (503, {"Retry-After": "0"}), None])
    server = Server(clock=clock, refuse=lambda m, p, b: next(answers))
    guarded: list[float] = []
    kube = client(server, bucket(10, 1, clock), lambda op, write: guarded.append(clock()))
    kube.request("GET", "/api/v1/namespaces/ns/secrets", operation="list_secret")
    assert [round(t, 6) for t, _, _ in server.seen] == [0.0, 0.1, 0.2]
    assert [round(t, 6) for t in guarded] == [0.0, 0.1, 0.2]


def test_a_retry_after_holds_back_the_other_threads_requests() -> None:
    """Thread A is answered 429 ``Retry-After: 3``; while it waits, another thread's
    request (to another object) waits as long, and nothing reaches the server meanwhile."""
    clock = Clock()
    throttled = threading.Event()
    release = threading.Event()

    def refuse(method: str, path: str, body: Any) -> tuple[int, dict[str, str]] | None:
        del method, body
        if path.endswith("/a") and not throttled.is_set():
            return 429, {"Retry-After": "3"}
        return None

    def sleep(seconds: float) -> None:
        if threading.current_thread().name == "a":  # A waits out its Retry-After here
            throttled.set()
            release.wait(10)
        clock.sleep(seconds)

    server = Server(clock=clock, refuse=refuse)
    kube = client(server, TokenBucket(100, 10, clock=clock, sleep=sleep), lambda op, write: None)
    a = threading.Thread(
        target=kube.request,
        args=("GET", "/api/v1/namespaces/ns/secrets/a"),
        kwargs={"operation": "get_secret"},
        name="a",
    )
    a.start()
    assert throttled.wait(10)
    kube.request("GET", "/api/v1/namespaces/ns/secrets/b", operation="get_secret")
    release.set()
    a.join(10)
    # A took the first slot after the pause (3.0s), B the next (3.01s at 100 qps: the
    # bucket starts empty); A, held in its sleep, went out once B had moved the clock on
    assert [(round(t, 6), p.rsplit("/", 1)[1]) for t, _, p in server.seen] == [
        (0.0, "a"),
        (3.01, "b"),
        (3.01, "a"),
    ]


def test_a_retry_after_longer_than_allowed_is_cut_and_the_last_refusal_raised() -> None:
    clock = Clock()
    server = Server(clock=clock, refuse=lambda m, p, b: (429, {"Retry-After": "3600"}))
    kube = client(server, bucket(100, 10, clock), lambda op, write: None)
    with pytest.raises(ApiError, match="429"):
        kube.request("GET", "/api/v1/namespaces/ns/secrets/a", operation="get_secret")
    # 10s per wait at most (MAX_RETRY_AFTER), 20s in all (RETRY_BUDGET): three attempts
    assert [t for t, _, _ in server.seen] == [0.0, 10.0, 20.0]
    # the last refusal's Retry-After still holds for the next request, though its own ended
    server.refuse = lambda m, p, b: None
    kube.request("GET", "/api/v1/namespaces/ns/secrets/b", operation="get_secret")
    assert server.seen[-1][0] == 30.0


# ---------------------------------------------------------------------- parallel creates


@dataclass
class Rig:
    target: KubernetesTarget
    server: Server
    calls: CallCounter
    created: list[tuple[int, int]]


def rig(tmp_path: Path, server: Server, *, concurrency: int) -> Rig:
    calls = CallCounter()
    config = KubernetesTargetConfig(type="kubernetes", namespace="ns", concurrency=concurrency)
    target = KubernetesTarget(config, context=TargetContext(tmp_path, calls))
    target._client = client(server, TokenBucket(math.inf, 1), target._count)
    created: list[tuple[int, int]] = []
    target.created = lambda n: created.append((threading.get_ident(), n))
    return Rig(target, server, calls, created)


def item(name: str) -> NewVersion:
    return NewVersion(
        name, 1, {"value": new_value().encode()}, "fp", {}, "file:keys.yaml", "2026-12-02T00:00:00Z"
    )


def test_creates_run_concurrency_at_a_time_and_each_item_gets_its_own_result(
    tmp_path: Path,
) -> None:
    """The first eight creates meet at a barrier, which only eight creates in flight at once
    can pass; never more than eight are; every item's result is its own version."""
    flight = SimpleNamespace(now=0, most=0, lock=threading.Lock())
    meet = threading.Barrier(8, timeout=10)

    def hook(name: str) -> None:
        with flight.lock:
            flight.now += 1
            flight.most = max(flight.most, flight.now)
        if name < "s-008":
            meet.wait()
        with flight.lock:
            flight.now -= 1

    setup = rig(tmp_path, Server(hook=hook), concurrency=8)
    names = [f"s-{i:03d}" for i in range(40)]
    results = setup.target.create_versions([item(n) for n in names])
    assert sorted(results) == names
    for name, result in results.items():
        assert isinstance(result, VersionInfo), result
        assert (result.secret, result.object_name) == (name, f"ns/{name}-v1")
    assert flight.most == 8
    assert sorted(setup.server.secrets) == [f"{n}-v1" for n in names]
    assert setup.calls.snapshot()[TARGET_COUNTER] == {"create_secret": 40}
    assert {ident for ident, _ in setup.created} == {threading.get_ident()}
    assert sum(n for _, n in setup.created) == 40


def test_a_bad_item_fails_alone(tmp_path: Path) -> None:
    def refuse(method: str, path: str, body: Any) -> tuple[int, dict[str, str]] | None:
        del method, path
        return (422, {}) if body["metadata"]["name"] == "bad-v1" else None

    setup = rig(tmp_path, Server(refuse=refuse), concurrency=4)
    results = setup.target.create_versions([item(n) for n in ("a", "bad", "c", "d", "e")])
    assert isinstance(results["bad"], ApiError) and results["bad"].status == 422
    assert sorted(n for n, r in results.items() if isinstance(r, VersionInfo)) == [
        "a",
        "c",
        "d",
        "e",
    ]
    assert sum(n for _, n in setup.created) == 5


def test_a_lost_lease_stops_the_creates_not_yet_started(tmp_path: Path) -> None:
    """The guard lets five writes through, then refuses: the creates in flight are refused
    by their own guard check, no new one is started, and every item not created gets the
    guard's error (a transient one: the next leader creates them)."""
    setup = rig(tmp_path, Server(), concurrency=4)
    asked = SimpleNamespace(n=0, lock=threading.Lock())

    def guard() -> None:
        with asked.lock:
            asked.n += 1
            if asked.n > 5:
                raise NotLeaderError("not writing: this process does not hold the lease")

    setup.target.write_guard = guard
    results = setup.target.create_versions([item(f"s-{i:02d}") for i in range(30)])
    made = [n for n, r in results.items() if isinstance(r, VersionInfo)]
    refused = [r for r in results.values() if isinstance(r, NotLeaderError)]
    assert len(made) == 5 and len(setup.server.posts()) == 5
    assert len(refused) == 25 and len(results) == 30
    # the first refusal stops new creates: at most the other three in flight ask again
    assert asked.n <= 5 + 4
    assert sum(n for _, n in setup.created) == 30


def test_an_unexpected_error_is_raised_once_the_creates_in_flight_are_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in one create is raised as the one-at-a-time loop raises it (the swap then fails
    every item of the call); no new create starts after it, none is left running."""
    setup = rig(tmp_path, Server(), concurrency=4)
    real = setup.target.versions.create

    def create(new: NewVersion, **kwargs: Any) -> VersionInfo:
        if new.secret == "s-05":
            raise KeyError("a bug")
        return real(new, **kwargs)

    monkeypatch.setattr(setup.target.versions, "create", create)
    with pytest.raises(KeyError, match="a bug"):
        setup.target.create_versions([item(f"s-{i:02d}") for i in range(30)])
    sent = len(setup.server.posts())
    assert 5 <= sent <= 5 + 3
    assert not [t for t in threading.enumerate() if t.name.startswith("syncd-create")]
    assert len(setup.server.posts()) == sent


def test_one_at_a_time_keeps_the_order_of_the_items(tmp_path: Path) -> None:
    setup = rig(tmp_path, Server(), concurrency=1)
    names = ["c", "a", "b"]
    setup.target.create_versions([item(n) for n in names])
    assert setup.server.posts() == ["/api/v1/namespaces/ns/secrets"] * 3
    assert list(setup.server.secrets) == ["c-v1", "a-v1", "b-v1"]


def test_a_target_error_from_a_create_is_the_items_result_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup = rig(tmp_path, Server(), concurrency=2)
    monkeypatch.setattr(
        setup.target.versions,
        "create",
        lambda new, **kwargs: (_ for _ in ()).throw(TargetError(f"no room for {new.secret}")),
    )
    results = setup.target.create_versions([item("a"), item("b")])
    assert {n: str(r) for n, r in results.items()} == {"a": "no room for a", "b": "no room for b"}
