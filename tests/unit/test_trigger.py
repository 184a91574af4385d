"""``POST /sync``: the bearer token, what a request may name, how requests merge, the leader
rule, and the listener's method rules (HEAD like GET, 405 with Allow); also ``/metrics``'
build info and the absence of ``_created`` series.

Every daemon here refreshes once an hour, so a value that changes upstream reaches the
files target within a test only because a request asked for it.
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from syncd.config import load_config
from syncd.daemon import Daemon
from syncd.endpoints import MAX_BODY
from syncd.engine import Engine
from syncd.errors import ConfigError
from syncd.trigger import MAX_NAMES, SyncQueue
from tests.conftest import new_value, running_daemons, wait_until

Answer = tuple[int, dict[str, str], bytes]


def trigger_config(
    write_config: Any,
    tmp_path: Path,
    *,
    values: dict[str, str],
    trigger: bool = True,
    token: str | None = None,
    **extra: Any,
) -> Path:
    """Two secrets on the file provider into the files target, refreshed hourly, with
    ``daemon.trigger`` reading ``token`` from a file beside the config (unless off)."""
    daemon: dict[str, Any] = {"listen": "127.0.0.1:0"}
    if trigger:
        (tmp_path / "token").write_text(f"{token}\n" if token is not None else "")
        daemon["trigger"] = {"token_file": "token"}
    secrets = extra.pop("secrets", None) or [
        {"name": name, "from": {"provider": "local", "key": name}} for name in values
    ]
    return write_config(
        values=values, secrets=secrets, defaults={"refresh": "1h"}, daemon=daemon, **extra
    )


def request(
    daemon: Daemon,
    method: str,
    path: str,
    *,
    token: str | None = None,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> Answer:
    """One request on its own connection: status, headers (lowercased names), body."""
    host, port = daemon.address
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        conn.request(method, path, body=body, headers=sent)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def post(daemon: Daemon, path: str = "/sync", **kwargs: Any) -> tuple[int, dict[str, Any]]:
    status, headers, body = request(daemon, "POST", path, **kwargs)
    assert headers["content-type"] == "application/json"
    return status, json.loads(body)


def target_value(tmp_path: Path, name: str) -> str | None:
    path = tmp_path / "out" / name
    return path.read_text() if path.exists() else None


def idle(daemon: Daemon) -> bool:
    """No cycle running and no requested run waiting."""
    jobs = [job for job in daemon.scheduler.get_jobs() if job.id.startswith("sync:")]
    return daemon.health.running_since is None and not jobs


@pytest.fixture
def running():
    with running_daemons(stop_within=30) as start:
        yield start


@pytest.fixture
def cycles(monkeypatch: pytest.MonkeyPatch) -> list[list[str] | None]:
    """The ``names`` of every writing cycle any engine runs (None: every secret)."""
    seen: list[list[str] | None] = []
    real = Engine.run_cycle

    def counted(engine: Engine, **kwargs: Any) -> Any:
        names = kwargs.get("names")
        seen.append(None if names is None else sorted(names))
        return real(engine, **kwargs)

    monkeypatch.setattr(Engine, "run_cycle", counted)
    return seen


def started_synced(running: Any, path: Path, tmp_path: Path, values: dict[str, str]) -> Daemon:
    """A running daemon whose first cycle wrote ``values``."""
    daemon = running(path)
    wait_until(
        "the first cycle",
        lambda: all(target_value(tmp_path, k) == v for k, v in values.items()) and idle(daemon),
    )
    return daemon


def rotate(tmp_path: Path, values: dict[str, str]) -> dict[str, str]:
    """New upstream values for every key in ``values``."""
    fresh = {key: new_value() for key in values}
    (tmp_path / "keys.yaml").write_text(yaml.safe_dump(fresh))
    return fresh


# --------------------------------------------------------------------------- the token


def test_a_request_without_the_right_token_is_401_and_runs_nothing(
    write_config, tmp_path, running, cycles
):
    token = new_value()
    values = {"alpha": new_value()}
    path = trigger_config(write_config, tmp_path, values=values, token=token)
    daemon = started_synced(running, path, tmp_path, values)
    before = len(cycles)
    status, headers, body = request(daemon, "POST", "/sync")
    assert status == 401
    assert headers["www-authenticate"] == 'Bearer realm="syncd"'
    assert json.loads(body)["message"] == "a bearer token is needed"
    for wrong in (token + "x", token[:-1], "", f"Basic {token}"):
        auth = wrong if wrong.startswith("Basic") else f"Bearer {wrong}"
        status, headers, _ = request(daemon, "POST", "/sync", headers={"Authorization": auth})
        assert status == 401, wrong
        assert headers["www-authenticate"].startswith("Bearer realm=")
    assert (
        'syncd_sync_requests_total{result="unauthorized"} 5.0'
        in request(daemon, "GET", "/metrics")[2].decode()
    )
    assert len(cycles) == before


def test_the_right_token_syncs_every_secret_now(write_config, tmp_path, running, canary):
    token = new_value()
    values = {"alpha": new_value(), "beta": new_value()}
    path = trigger_config(write_config, tmp_path, values=values, token=token)
    daemon = started_synced(running, path, tmp_path, values)
    fresh = {"alpha": canary, "beta": new_value()}
    (tmp_path / "keys.yaml").write_text(yaml.safe_dump(fresh))
    status, headers, body = request(
        daemon, "POST", "/sync", token=token, headers={"Content-Type": "application/json"}
    )
    assert status == 202
    assert json.loads(body) == {
        "apiVersion": "syncd.io/v1",
        "kind": "SyncRequest",
        "secrets": ["alpha", "beta"],
    }
    assert int(headers["content-length"]) == len(body)
    wait_until(
        "the new values in the target",
        lambda: all(target_value(tmp_path, k) == v for k, v in fresh.items()),
    )
    assert canary not in body.decode()


def test_a_rotated_token_counts_at_once(write_config, tmp_path, running):
    old = new_value()
    values = {"alpha": new_value()}
    daemon = running(trigger_config(write_config, tmp_path, values=values, token=old))
    assert post(daemon, token=old)[0] == 202
    new = new_value()
    (tmp_path / "token").write_text(new)
    assert post(daemon, token=old)[0] == 401
    assert post(daemon, token=new)[0] == 202


def test_an_empty_token_file_refuses_every_request_with_503(
    write_config, tmp_path, running, caplog, cycles
):
    values = {"alpha": new_value()}
    caplog.set_level(logging.INFO, logger="syncd")
    daemon = started_synced(
        running, trigger_config(write_config, tmp_path, values=values), tmp_path, values
    )
    before = len(cycles)
    for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Bearer x" * 4}):
        status, answer = post(daemon, headers=headers)
        assert status == 503, headers
        assert "token file is not usable" in answer["message"]
    problems = [r for r in caplog.records if "is empty" in r.getMessage()]
    assert len(problems) == 1, "a broken token file is logged once, not once per request"
    assert problems[0].levelno == logging.ERROR
    assert str(tmp_path / "token") in problems[0].getMessage()
    (tmp_path / "token").unlink()
    assert post(daemon)[0] == 503
    assert any("can't be read" in r.getMessage() for r in caplog.records)
    token = new_value()
    (tmp_path / "token").write_text(token)
    assert post(daemon, token=token)[0] == 202
    assert any("holds a token again" in r.getMessage() for r in caplog.records)
    wait_until("the requested cycle", lambda: len(cycles) > before and idle(daemon))
    assert len(cycles) == before + 1


@pytest.mark.parametrize(
    ("content", "problem"),
    [("short", "shorter than 16"), ("has spaces in it, a lot", "characters a bearer token")],
)
def test_a_token_file_that_holds_no_token_is_refused(
    write_config, tmp_path, running, caplog, content, problem
):
    values = {"alpha": new_value()}
    daemon = running(trigger_config(write_config, tmp_path, values=values, token=content))
    caplog.set_level(logging.ERROR, logger="syncd")
    assert post(daemon, token=content.replace(" ", ""))[0] == 503
    assert any(problem in r.getMessage() for r in caplog.records)


def test_the_token_never_reaches_a_log(write_config, tmp_path, running, caplog):
    token = new_value()  # also a leak canary: the harness searches every record for it
    caplog.set_level(logging.DEBUG)
    values = {"alpha": new_value()}
    path = trigger_config(write_config, tmp_path, values=values, token=token)
    daemon = started_synced(running, path, tmp_path, values)
    assert post(daemon, token=token + "x")[0] == 401
    assert post(daemon, f"/sync?token={token}", token=token)[0] == 400
    assert post(daemon, f"/sync?secret={token}", token=token)[0] == 404
    assert post(daemon, token=token)[0] == 202
    assert request(daemon, "GET", f"/healthz?{token}")[0] == 200
    wait_until("the requested cycle", lambda: idle(daemon))
    http_lines = [r for r in caplog.records if r.name == "syncd.http"]
    assert http_lines, "the access log is on at debug: the test must see it"
    assert [r for r in caplog.records if r.name == "syncd.trigger" or "POST /sync" in r.message]
    for record in caplog.records:
        assert token not in record.getMessage(), record.name
    assert token not in caplog.text


# --------------------------------------------------------------------------- what to sync


def test_secret_query_syncs_only_the_named_secret(write_config, tmp_path, running, cycles):
    token = new_value()
    values = {"alpha": new_value(), "beta": new_value()}
    path = trigger_config(write_config, tmp_path, values=values, token=token)
    daemon = started_synced(running, path, tmp_path, values)
    fresh = rotate(tmp_path, values)
    status, answer = post(daemon, "/sync?secret=alpha&secret=alpha", token=token)
    assert status == 202
    assert answer["secrets"] == ["alpha"]
    wait_until("alpha's new value", lambda: target_value(tmp_path, "alpha") == fresh["alpha"])
    wait_until("the requested cycle to end", lambda: idle(daemon))
    assert target_value(tmp_path, "beta") == values["beta"]
    assert cycles[-1] == ["alpha"]


def test_a_name_a_for_each_makes_syncs_only_that_secret(write_config, tmp_path, running, cycles):
    token = new_value()
    made = {"one": new_value(), "two": new_value()}
    (tmp_path / "made.yaml").write_text(yaml.safe_dump(made))
    values = {"alpha": new_value()}
    path = trigger_config(
        write_config,
        tmp_path,
        values=values,
        token=token,
        providers={
            "local": {"type": "file", "path": "keys.yaml"},
            "made": {"type": "file", "path": "made.yaml"},
        },
        secrets=[
            {"name": "alpha", "from": {"provider": "local", "key": "alpha"}},
            {"name": "app_{key}", "for_each": {"provider": "made"}},
        ],
    )
    daemon = started_synced(
        running, path, tmp_path, {**values, "app_one": made["one"], "app_two": made["two"]}
    )
    fresh = {"one": new_value(), "two": new_value()}
    (tmp_path / "made.yaml").write_text(yaml.safe_dump(fresh))
    status, answer = post(daemon, "/sync?secret=app_one", token=token)
    assert (status, answer["secrets"]) == (202, ["app_one"])
    wait_until("app_one's new value", lambda: target_value(tmp_path, "app_one") == fresh["one"])
    wait_until("the requested cycle to end", lambda: idle(daemon))
    assert cycles[-1] == ["app_one"]
    assert target_value(tmp_path, "app_two") == made["two"]
    status, answer = post(daemon, "/sync?secret=app_three", token=token)
    assert (status, answer["unknown"]) == (404, ["app_three"])
    # a key new upstream: the template's own name lists the source again
    (tmp_path / "made.yaml").write_text(yaml.safe_dump({**fresh, "three": made["one"]}))
    status, answer = post(daemon, "/sync?secret=app_%7Bkey%7D", token=token)
    assert (status, answer["secrets"]) == (202, ["app_{key}"])
    wait_until("app_three", lambda: target_value(tmp_path, "app_three") == made["one"])
    wait_until("the requested cycle to end", lambda: idle(daemon))
    assert target_value(tmp_path, "app_two") == fresh["two"]
    assert post(daemon, "/sync?secret=app_three", token=token)[0] == 202


def test_unknown_secrets_are_404_and_named(write_config, tmp_path, running, cycles):
    token = new_value()
    values = {"alpha": new_value()}
    path = trigger_config(write_config, tmp_path, values=values, token=token)
    daemon = started_synced(running, path, tmp_path, values)
    before = len(cycles)
    status, answer = post(daemon, "/sync?secret=alpha&secret=nope&secret=a%0Ab", token=token)
    assert status == 404
    assert answer["unknown"] == ["nope", "a\nb"]
    assert answer["message"] == "unknown secrets: nope, a\nb"
    assert answer["kind"] == "Status" and answer["code"] == 404
    assert len(cycles) == before


@pytest.mark.parametrize(
    "query",
    [
        "other=1",
        "secret=",
        "secret",
        "secret=%ff",
        "secret=" + "a" * 254,
        "&".join(["secret=a"] * (MAX_NAMES + 1)),
    ],
)
def test_a_query_it_does_not_take_is_400(write_config, tmp_path, running, query):
    token = new_value()
    daemon = running(trigger_config(write_config, tmp_path, values={"a": new_value()}, token=token))
    status, answer = post(daemon, f"/sync?{query}", token=token)
    assert status == 400
    assert "a" * 50 not in answer["message"]


def test_without_a_trigger_block_sync_is_404(write_config, tmp_path, running, cycles):
    values = {"alpha": new_value()}
    path = trigger_config(write_config, tmp_path, values=values, trigger=False)
    daemon = started_synced(running, path, tmp_path, values)
    before = len(cycles)
    for method in ("POST", "GET", "HEAD", "PUT"):
        status, _, body = request(daemon, method, "/sync", token=new_value())
        assert status == 404, method
        assert body == (b"" if method == "HEAD" else b"not found\n")
    assert len(cycles) == before


def test_a_reload_turns_the_trigger_on_and_off(write_config, tmp_path, running):
    values = {"alpha": new_value()}
    path = trigger_config(write_config, tmp_path, values=values, trigger=False)
    daemon = running(path)
    token = new_value()
    assert request(daemon, "POST", "/sync", token=token)[0] == 404
    on = trigger_config(write_config, tmp_path, values=values, token=token)
    wait_until("the reload", lambda: daemon.trigger is not None)
    assert post(daemon, token=token)[0] == 202
    doc = yaml.safe_load(on.read_text())
    del doc["daemon"]["trigger"]
    on.write_text(yaml.safe_dump(doc))
    wait_until("the reload", lambda: daemon.trigger is None)
    assert request(daemon, "POST", "/sync", token=token)[0] == 404


def test_a_replica_that_is_not_the_leader_is_503(write_config, tmp_path, running, cycles):
    class Follower:
        is_leader = False

        def stop(self) -> None:
            """The daemon stops its elector at the end."""

    token = new_value()
    values = {"alpha": new_value()}
    path = trigger_config(write_config, tmp_path, values=values, token=token)
    daemon = started_synced(running, path, tmp_path, values)
    before = len(cycles)
    daemon.elector = Follower()  # type: ignore[assignment]
    status, answer = post(daemon, token=token)
    assert status == 503
    assert "not the leader" in answer["message"]
    assert len(cycles) == before


# --------------------------------------------------------------------------- merging


def test_requests_while_one_is_queued_make_one_cycle(write_config, tmp_path, running, cycles):
    token = new_value()
    values = {"alpha": new_value(), "beta": new_value(), "gamma": new_value()}
    path = trigger_config(write_config, tmp_path, values=values, token=token)
    daemon = started_synced(running, path, tmp_path, values)
    before = len(cycles)
    busy, release = threading.Event(), threading.Event()

    def hold_the_worker() -> None:
        busy.set()
        release.wait(30)

    daemon.scheduler.add_job(hold_the_worker, id="hold")
    assert busy.wait(10)
    answers: list[int] = []
    queries = ["secret=alpha", "secret=beta", "secret=alpha&secret=beta"] * 4

    def send(query: str) -> None:
        answers.append(post(daemon, f"/sync?{query}", token=token)[0])

    threads = [threading.Thread(target=send, args=(q,)) for q in queries]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert answers == [202] * len(queries)
    release.set()
    wait_until("the requested cycle", lambda: len(cycles) > before and idle(daemon))
    assert cycles[before:] == [["alpha", "beta"]]
    metrics = request(daemon, "GET", "/metrics")[2].decode()
    assert 'syncd_sync_requests_total{result="accepted"} 1.0' in metrics
    assert f'syncd_sync_requests_total{{result="merged"}} {len(queries) - 1}.0' in metrics


def test_a_request_during_a_requested_run_gets_a_run_of_its_own(
    write_config, tmp_path, running, cycles, monkeypatch
):
    token = new_value()
    values = {"alpha": new_value(), "beta": new_value()}
    path = trigger_config(write_config, tmp_path, values=values, token=token)
    daemon = started_synced(running, path, tmp_path, values)
    before = len(cycles)
    inside, release = threading.Event(), threading.Event()
    real = daemon.run_group

    def slow(*args: Any, **kwargs: Any) -> None:
        inside.set()
        release.wait(30)
        real(*args, **kwargs)

    monkeypatch.setattr(daemon, "run_group", slow)
    assert post(daemon, "/sync?secret=alpha", token=token)[0] == 202
    assert inside.wait(10)
    assert post(daemon, "/sync?secret=beta", token=token)[0] == 202
    release.set()
    wait_until("both requested cycles", lambda: len(cycles) >= before + 2 and idle(daemon))
    assert cycles[before:] == [["alpha"], ["beta"]]


def test_the_queue_merges_names_and_everything_wins():
    queue = SyncQueue()
    assert queue.take() == []
    assert queue.add(["b"]) is True
    assert queue.add(["a", "b"]) is False
    assert queue.take() == ["a", "b"]
    assert queue.add(["a"]) is True
    assert queue.add(None) is False
    assert queue.add(["c"]) is False
    assert queue.take() is None
    assert queue.take() == []


# --------------------------------------------------------------------------- methods, bodies


def test_head_answers_like_get_without_the_body(write_config, tmp_path, running):
    values = {"alpha": new_value()}
    path = trigger_config(write_config, tmp_path, values=values, token=new_value())
    daemon = started_synced(running, path, tmp_path, values)
    for target in ("/metrics", "/healthz", "/readyz", "/sync", "/nope", "/healthz?x=1"):
        get_status, get_headers, get_body = request(daemon, "GET", target)
        head_status, head_headers, head_body = request(daemon, "HEAD", target)
        assert head_status == get_status, target
        get_headers.pop("date"), head_headers.pop("date")
        assert head_headers == get_headers, target
        assert int(head_headers["content-length"]) == len(get_body) > 0, target
        assert head_body == b"", target
    assert request(daemon, "GET", "/sync")[1]["allow"] == "POST"


def test_other_methods_are_405_with_allow(write_config, tmp_path, running, cycles):
    token = new_value()
    values = {"alpha": new_value()}
    path = trigger_config(write_config, tmp_path, values=values, token=token)
    daemon = started_synced(running, path, tmp_path, values)
    before = len(cycles)
    for method, target, allow in [
        ("PUT", "/sync", "POST"),
        ("DELETE", "/sync", "POST"),
        ("PATCH", "/sync", "POST"),
        ("PUT", "/metrics", "GET, HEAD"),
        ("POST", "/metrics", "GET, HEAD"),
        ("POST", "/healthz", "GET, HEAD"),
        ("DELETE", "/", "GET, HEAD"),
        ("OPTIONS", "/readyz", "GET, HEAD"),
    ]:
        status, headers, _ = request(daemon, method, target, token=token)
        assert (status, headers.get("allow")) == (405, allow), (method, target)
    assert len(cycles) == before


def test_bodies_are_ignored_and_bounded(write_config, tmp_path, running):
    token = new_value()
    daemon = running(trigger_config(write_config, tmp_path, values={"a": new_value()}, token=token))
    assert post(daemon, token=token, body=b'{"secrets": ["nope"]}')[0] == 202
    status, _, _ = request(daemon, "POST", "/sync", token=token, body=b"x" * MAX_BODY)
    assert status == 202
    big = {"Content-Length": str(10 * MAX_BODY)}
    assert request(daemon, "POST", "/sync", token=token, headers=big)[0] == 413
    bad = {"Content-Length": "-1"}
    assert request(daemon, "POST", "/sync", token=token, headers=bad)[0] == 400
    chunked = {"Transfer-Encoding": "chunked"}
    assert request(daemon, "POST", "/sync", token=token, headers=chunked, body=b"")[0] == 411


# --------------------------------------------------------------------------- metrics


def test_metrics_have_build_info_and_no_created_series(write_config, tmp_path, running):
    values = {"alpha": new_value()}
    path = trigger_config(write_config, tmp_path, values=values, token=new_value())
    daemon = started_synced(running, path, tmp_path, values)
    text = request(daemon, "GET", "/metrics")[2].decode()
    assert "syncd_syncs_total{" in text and "syncd_cycle_duration_seconds_count" in text
    assert "_created" not in text
    (info,) = [line for line in text.splitlines() if line.startswith("syncd_build_info{")]
    assert 'version="' in info and 'python="' in info and info.endswith(" 1.0")


# --------------------------------------------------------------------------- the config


def test_the_trigger_block_is_strict(write_config, tmp_path):
    path = trigger_config(write_config, tmp_path, values={"a": new_value()}, token=new_value())
    assert load_config(path).daemon.trigger is not None
    doc = yaml.safe_load(path.read_text())
    for trigger, message in [
        ({"token_file": "token", "token": "x" * 20}, "unknown key"),
        ({}, "required key is missing"),
        ({"token_file": ""}, "at least 1 character"),
    ]:
        doc["daemon"]["trigger"] = trigger
        path.write_text(yaml.safe_dump(doc))
        with pytest.raises(ConfigError) as info:
            load_config(path)
        assert any(message in issue.message for issue in info.value.issues), trigger
