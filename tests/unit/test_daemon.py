"""The daemon: scheduling groups, no overlap, backoff, reload, stop, metrics and health."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime

import pytest
import yaml

from syncd.daemon import Daemon
from syncd.engine import CycleResult
from syncd.errors import SyncdError
from syncd.model import PlanItem
from tests.conftest import new_value, running_daemons, wait_until


def daemon_config(write_config, world_name: str | None = None, **extra):
    target = {"type": "memory", "world": world_name} if world_name else None
    return write_config(
        values={"fast": new_value(), "slow": new_value()},
        target=target,
        secrets=[
            {"name": "fast", "from": {"provider": "local", "key": "fast"}, "refresh": "1s"},
            {"name": "slow", "from": {"provider": "local", "key": "slow"}, "refresh": "1h"},
        ],
        daemon={"listen": "127.0.0.1:0", **extra.pop("daemon", {})},
        **extra,
    )


def get(daemon: Daemon, path: str) -> tuple[int, str]:
    host, port = daemon.address
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
def running(write_config):
    with running_daemons(stop_within=30) as start:
        yield start


def test_one_job_per_refresh_group_with_jitter(write_config):
    daemon = Daemon(daemon_config(write_config, daemon={"jitter": 0.2}))
    assert daemon.groups() == {1.0: ["fast"], 3600.0: ["slow"]}
    daemon.schedule()
    jobs = {job.id: job for job in daemon.scheduler.get_jobs()}
    assert set(jobs) == {"group:1", "group:3600"}
    assert jobs["group:3600"].trigger.jitter == pytest.approx(720)
    assert jobs["group:3600"].args == (3600.0, ["slow"])


def test_scheduler_never_drops_or_overlaps_runs(write_config):
    daemon = Daemon(daemon_config(write_config))
    defaults = daemon.scheduler._job_defaults
    assert defaults == {"coalesce": True, "max_instances": 1, "misfire_grace_time": None}


def test_cycles_never_overlap(write_config, world, running, monkeypatch):
    from tests.unit.memory_target import WORLDS, MemoryTarget

    name = next(n for n, w in WORLDS.items() if w is world)
    active = 0
    peak = 0
    lock = threading.Lock()
    real = MemoryTarget.list_versions

    def slow_list(self, names):
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.3)
        with lock:
            active -= 1
        return real(self, names)

    monkeypatch.setattr(MemoryTarget, "list_versions", slow_list)
    path = write_config(
        values={"a": new_value(), "b": new_value()},
        target={"type": "memory", "world": name},
        secrets=[
            {"name": "a", "from": {"provider": "local", "key": "a"}, "refresh": "1s"},
            {"name": "b", "from": {"provider": "local", "key": "b"}, "refresh": "2s"},
        ],
        daemon={"listen": "127.0.0.1:0"},
    )
    daemon = running(path)
    wait_until("1.5s of cycles", lambda: daemon.metrics.cycle_seconds._sum.get() > 1.5)
    assert peak == 1


def test_backoff_is_exponential_capped_and_jittered(write_config):
    daemon = Daemon(daemon_config(write_config, daemon={"backoff_min": 10, "backoff_max": 60}))
    delays = [daemon.backoff("x") for _ in range(6)]
    for delay, ceiling in zip(delays, [10, 20, 40, 60, 60, 60], strict=True):
        assert 0.8 * ceiling <= delay <= ceiling


def test_failure_schedules_its_own_retry(write_config, tmp_path):
    path = daemon_config(write_config)
    daemon = Daemon(path)
    daemon.scheduler.start(paused=True)
    try:
        (tmp_path / "keys.yaml").write_text(yaml.safe_dump({"fast": new_value()}))
        daemon.run_group(3600.0, ["slow"])
        job = daemon.scheduler.get_job("retry:slow")
        assert job is not None and job.args == (None, ["slow"])
        assert "slow" in daemon.health.failing_since
    finally:
        daemon.scheduler.shutdown(wait=False)


@pytest.mark.parametrize(
    ("kind", "transient", "slow"),
    [
        ("provider", True, False),
        ("provider", False, True),
        ("input", False, True),
        ("target", False, False),  # an API that is away comes back without anyone acting
        ("convergence", False, False),
    ],
)
def test_a_failure_that_needs_a_fix_waits_the_slow_end_of_the_schedule(
    write_config, monkeypatch, kind, transient, slow
):
    """``transient`` drives the retry: a failure that may pass by itself steps up from
    ``backoff_min``; a provider's or the input's that won't waits ``backoff_max`` at once,
    and ``/readyz`` says which failing secrets need a fix."""
    daemon = Daemon(daemon_config(write_config, daemon={"backoff_min": 10, "backoff_max": 600}))
    failed = PlanItem("slow", "error", error="it failed", error_kind=kind, transient=transient)
    monkeypatch.setattr(
        daemon.engine, "run_cycle", lambda **_: CycleResult([failed], {}, target_writes=0)
    )
    daemon.scheduler.start(paused=True)
    try:
        before = datetime.now().astimezone()
        for _ in range(3):  # repeated failures: a transient one keeps stepping up
            daemon.run_group(3600.0, ["slow"])
        job = daemon.scheduler.get_job("retry:slow")
        assert job is not None
        wait = (job.next_run_time - before).total_seconds()
        if slow:
            assert 0.8 * 600 - 1 <= wait <= 600 + 1, wait
        else:
            assert 0.8 * 40 - 1 <= wait <= 40 + 1, wait  # the third step: 10, 20, 40
        unready = daemon.health.unready(now=time.monotonic() + 10**6, grace=1)
        assert unready is not None and ("slow (needs a fix)" in unready) is slow, unready
    finally:
        daemon.scheduler.shutdown(wait=False)


def test_reload_validates_first_and_keeps_old_config(write_config, caplog):
    path = daemon_config(write_config)
    daemon = Daemon(path)
    daemon.scheduler.start(paused=True)
    try:
        good = path.read_text()
        path.write_text(good.replace("name: slow", "name: slow\n  colour: red"))
        assert daemon.reload() is False
        assert "config reload refused" in caplog.text and "unknown key" in caplog.text
        assert [s.name for s in daemon.config.secrets] == ["fast", "slow"]
        doc = yaml.safe_load(good)
        doc["secrets"] = doc["secrets"][:1]
        path.write_text(yaml.safe_dump(doc))
        assert daemon.reload() is True
        assert [s.name for s in daemon.config.secrets] == ["fast"]
        assert reloads(daemon) == {"error": 1.0, "ok": 1.0}
    finally:
        daemon.scheduler.shutdown(wait=False)


def reloads(daemon: Daemon) -> dict[str, float]:
    """``syncd_config_reloads_total`` by result."""
    return {
        s.labels["result"]: s.value
        for m in daemon.metrics.registry.collect()
        if m.name == "syncd_config_reloads"
        for s in m.samples
        if s.name.endswith("_total")
    }


def test_changed_config_file_is_picked_up(write_config, running):
    path = daemon_config(write_config)
    daemon = running(path)
    doc = yaml.safe_load(path.read_text())
    doc["secrets"] = doc["secrets"][:1]
    path.write_text(yaml.safe_dump(doc))
    wait_until("the reload", lambda: [s.name for s in daemon.config.secrets] == ["fast"])


def test_stop_lets_the_running_cycle_finish(write_config, world, monkeypatch):
    from tests.unit.memory_target import WORLDS, MemoryTarget

    name = next(n for n, w in WORLDS.items() if w is world)
    path = daemon_config(write_config, name)
    real = MemoryTarget.create_versions
    entered = threading.Event()

    def slow_create(self, items):
        entered.set()
        time.sleep(1.0)
        return real(self, items)

    monkeypatch.setattr(MemoryTarget, "create_versions", slow_create)
    daemon = Daemon(path)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    assert entered.wait(10)
    daemon.stop_event.set()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert sorted(world.objects) == ["fast-v1", "slow-v1"]


def test_metrics_endpoint_and_read_only(write_config, running, canary, tmp_path):
    path = daemon_config(write_config)
    (tmp_path / "keys.yaml").write_text(yaml.safe_dump({"fast": canary, "slow": canary + "2"}))
    daemon = running(path)
    # a sample line, not the HELP line, which is there before any cycle ran
    wait_until(
        "both secrets synced",
        lambda: all(
            f'syncd_secret_version{{secret="{name}"}}' in get(daemon, "/metrics")[1]
            for name in ("fast", "slow")
        ),
    )
    status, body = get(daemon, "/metrics")
    assert status == 200
    assert 'syncd_syncs_total{result="created",secret="fast"} 1.0' in body
    assert 'syncd_provider_calls_total{operation="read",provider="local",status="ok"}' in body
    assert 'syncd_secret_version{secret="slow"} 1.0' in body
    assert "syncd_leader 1.0" in body
    assert canary not in body
    host, port = daemon.address
    request = urllib.request.Request(f"http://{host}:{port}/metrics", method="POST", data=b"x")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=5)
    assert info.value.code == 405


def test_healthz_fails_when_the_loop_stalls(write_config):
    now = [1000.0]
    daemon = Daemon(
        daemon_config(write_config, daemon={"stall_margin": 30, "jitter": 0.1}),
        clock=lambda: now[0],
    )
    daemon.schedule()
    assert daemon.healthz() is None
    now[0] += 1 * 1.1 + 29
    assert daemon.healthz() is None
    now[0] += 2
    assert "overdue" in (daemon.healthz() or "")
    daemon.run_group(1.0, ["fast"])
    daemon.health.intervals[3600.0] = now[0]
    assert daemon.healthz() is None


def test_readyz_fails_after_grace_of_failing(write_config, tmp_path):
    now = [1000.0]
    daemon = Daemon(daemon_config(write_config, daemon={"ready_grace": 60}), clock=lambda: now[0])
    daemon.scheduler.start(paused=True)
    try:
        (tmp_path / "keys.yaml").unlink()
        daemon.run_group(1.0, ["fast"])
        assert daemon.readyz() is None  # failing, but within grace
        now[0] += 61
        assert "failing for over 60s: fast" in (daemon.readyz() or "")
    finally:
        daemon.scheduler.shutdown(wait=False)


def test_port_in_use_is_a_clear_error(write_config):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        daemon = Daemon(daemon_config(write_config), listen=f"127.0.0.1:{port}")
        with pytest.raises(
            SyncdError, match=f"can't listen on 127.0.0.1:{port}: Address already in use"
        ):
            daemon.start_http()


def test_sighup_reloads_a_running_process(write_config, tmp_path):
    path = daemon_config(write_config, daemon={"watch_config": False, "listen": None})
    proc = subprocess.Popen(
        [sys.executable, "-m", "syncd", "--config", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until("the first sync", (tmp_path / "out" / "slow").exists)
        doc = yaml.safe_load(path.read_text())
        doc["secrets"][1]["name"] = "renamed"
        path.write_text(yaml.safe_dump(doc))
        os.kill(proc.pid, signal.SIGHUP)
        wait_until("the reloaded config", (tmp_path / "out" / "renamed").exists)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        proc.kill()
        _, err = proc.communicate()
    assert "received SIGHUP" in err and "config reloaded: 2 secrets" in err


def test_the_daemon_honours_prune_like_once(write_config, world):
    """prune: true in the daemon deletes a secret that left the config, as --once does."""
    from tests.unit.memory_target import WORLDS

    name = next(n for n, w in WORLDS.items() if w is world)
    path = daemon_config(write_config, name, prune=True)
    daemon = Daemon(path)
    daemon.scheduler.start(paused=True)
    try:
        daemon.run_group(1.0, ["fast"], prune=True)
        daemon.run_group(3600.0, ["slow"])
        assert sorted(world.objects) == ["fast-v1", "slow-v1"]
        doc = yaml.safe_load(path.read_text())
        doc["secrets"] = doc["secrets"][:1]
        path.write_text(yaml.safe_dump(doc))
        assert daemon.reload()
        jobs = {job.id: job for job in daemon.scheduler.get_jobs()}
        assert jobs["group:1"].kwargs == {"prune": True}
        daemon.run_group(1.0, ["fast"], prune=True)
        assert sorted(world.objects) == ["fast-v1"]
    finally:
        daemon.scheduler.shutdown(wait=False)


def test_a_reload_whose_target_cant_be_built_keeps_the_old_engine(write_config, world):
    from tests.unit.memory_target import WORLDS

    name = next(n for n, w in WORLDS.items() if w is world)
    path = daemon_config(write_config, name)
    daemon = Daemon(path)
    daemon.scheduler.start(paused=True)
    try:
        engine = daemon.engine
        doc = yaml.safe_load(path.read_text())
        doc["target"]["broken"] = True
        path.write_text(yaml.safe_dump(doc))
        assert daemon.reload() is False
        assert daemon.engine is engine  # still running the previous config
        assert "memory target is broken" in (daemon.readyz() or "")
        daemon.run_group(1.0, ["fast"])
        assert "fast-v1" in world.objects
        doc["target"]["broken"] = False
        path.write_text(yaml.safe_dump(doc))
        assert daemon.reload() is True
        assert daemon.readyz() is None
        assert reloads(daemon) == {"error": 1.0, "ok": 1.0}
    finally:
        daemon.scheduler.shutdown(wait=False)


def test_metric_series_of_removed_secrets_are_dropped(write_config, world):
    from tests.unit.memory_target import WORLDS

    name = next(n for n, w in WORLDS.items() if w is world)
    path = daemon_config(write_config, name)
    daemon = Daemon(path)
    daemon.scheduler.start(paused=True)
    try:
        daemon.schedule()
        daemon.run_group(1.0, ["fast"])
        daemon.run_group(3600.0, ["slow"])
        text = generate(daemon)
        assert 'syncd_last_success_timestamp_seconds{secret="slow"}' in text
        doc = yaml.safe_load(path.read_text())
        doc["secrets"] = doc["secrets"][:1]
        path.write_text(yaml.safe_dump(doc))
        assert daemon.reload()
        daemon.run_group(1.0, ["fast"])
        text = generate(daemon)
        assert 'secret="slow"' not in text
        assert 'syncd_last_success_timestamp_seconds{secret="fast"}' in text
    finally:
        daemon.scheduler.shutdown(wait=False)


def generate(daemon: Daemon) -> str:
    from prometheus_client import generate_latest

    return generate_latest(daemon.metrics.registry).decode()


def test_convergence_failures_are_counted_by_kind_not_by_message(write_config, world, tmp_path):
    from tests.unit.memory_target import WORLDS, Service

    name = next(n for n, w in WORLDS.items() if w is world)
    path = daemon_config(write_config, name)
    daemon = Daemon(path)
    daemon.scheduler.start(paused=True)
    try:
        daemon.run_group(1.0, ["fast"])
        world.services["web"] = Service("web", refs={"fast-v1"}, unconverged="update paused")
        daemon.run_group(1.0, ["fast"])
        assert 'syncd_convergence_failures_total{secret="fast"} 1.0' in generate(daemon)
        (tmp_path / "keys.yaml").unlink()  # a provider error is no convergence failure
        daemon.run_group(3600.0, ["slow"])
        assert 'syncd_convergence_failures_total{secret="slow"}' not in generate(daemon)
    finally:
        daemon.scheduler.shutdown(wait=False)


def test_head_answers_like_get_and_other_methods_are_405(write_config, running):
    daemon = running(daemon_config(write_config))
    host, port = daemon.address
    head = urllib.request.Request(f"http://{host}:{port}/healthz", method="HEAD")
    with urllib.request.urlopen(head, timeout=5) as resp:
        assert resp.status == 200 and resp.read() == b""
    for method in ("OPTIONS", "PUT", "DELETE", "PATCH", "TRACE"):
        request = urllib.request.Request(f"http://{host}:{port}/healthz", method=method)
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=5)
        assert info.value.code == 405, method
        assert info.value.headers["Allow"] == "GET, HEAD"


def test_an_edited_extends_base_reloads(write_config, running, tmp_path):
    path = daemon_config(write_config)
    doc = yaml.safe_load(path.read_text())
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({"defaults": {"keep": 1}}))
    doc["extends"] = "base.yaml"
    path.write_text(yaml.safe_dump(doc))
    daemon = running(path)
    assert daemon.config.defaults.keep == 1
    base.write_text(yaml.safe_dump({"defaults": {"keep": 2}}))
    wait_until("the reload of the base", lambda: daemon.config.defaults.keep == 2)
