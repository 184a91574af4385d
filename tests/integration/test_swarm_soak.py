"""Soak: a ``syncd --config`` daemon rotates several secrets every few seconds while two
services read them every 100 ms.

Over the run (``soak_seconds``: 45 s by default, ``--soak-minutes N`` or
``SYNCD_SOAK_MINUTES`` for longer) no read may fail and no consumer may reference a missing
secret; after a warm-up, the daemon's resident memory, open file descriptors and threads
(read from ``/proc/<pid>``) must stay flat (under 10 % growth) and its ``/metrics`` may not
grow new series; at the end the newest values are what the services read, and the daemon
stops cleanly on SIGTERM.
"""

from __future__ import annotations

import os
import signal
import socket
import statistics
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import new_value, wait_until
from tests.integration.swarm_util import (  # noqa: F401 - swarm, project: fixtures
    READ_ALL,
    Project,
    ReferenceWatch,
    Swarm,
    assert_reads_ok,
    project_fixture,
    refs,
    single,
    swarm_fixture,
)

pytestmark = pytest.mark.backend("swarm")

#: How often every secret gets a new value upstream.
ROTATE_EVERY = 3.0
#: How often the daemon's footprint is read.
SAMPLE_EVERY = 0.5
#: The share of the run that is warm-up, and of each window compared after it.
WARM_UP = 0.3
WINDOW = 0.2
#: Growth allowed between the first window after the warm-up and the last one.
MAX_GROWTH = 0.10


@dataclass(frozen=True)
class Footprint:
    """One reading of the daemon process."""

    at: float
    rss_kib: int
    fds: int
    threads: int


def footprint(pid: int, at: float) -> Footprint:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    status = dict(line.split(":", 1) for line in lines if ":" in line)
    return Footprint(
        at=at,
        rss_kib=int(status["VmRSS"].split()[0]),
        fds=len(os.listdir(f"/proc/{pid}/fd")),
        threads=int(status["Threads"]),
    )


def series(port: int) -> set[str]:
    """The daemon's metric series (name and labels of every sample line)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return {line.rsplit(" ", 1)[0] for line in text.splitlines() if line and line[0] != "#"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_daemon_rotating_secrets_stays_flat_and_readers_never_fail(
    swarm: Swarm, project: Project, soak_seconds: float
) -> None:
    names = [project.name(n) for n in ("alpha", "beta", "gamma")]
    history = {n: [new_value(f"{n[-5:]}0-")] for n in names}
    project.set_values({n: v[-1] for n, v in history.items()})
    port = free_port()
    daemon_block = {"listen": f"127.0.0.1:{port}", "backoff_min": "1s", "backoff_max": "5s"}
    config = project.config(
        [single(n) for n in names],
        keep=1,
        timeout="60s",
        extra={"defaults": {"refresh": "1s"}, "daemon": daemon_block},
    )
    assert project.cycle(config).ok
    logs = project.root / "logs"
    logs.mkdir()
    both = project.service(
        "two-files",
        secrets=[(f"{names[0]}-v1", "alpha"), (f"{names[1]}-v1", "beta")],
        command=READ_ALL,
        log_dir=logs,
        monitor=0.3,
    )
    one = project.service(
        "one-file",
        secrets=[(f"{names[2]}-v1", "gamma")],
        command=READ_ALL,
        log_dir=logs,
        monitor=0.3,
    )
    daemon_log = project.root / "daemon.log"
    daemon = project.start_syncd("--config", str(config), log=daemon_log)
    try:
        with ReferenceWatch(swarm, project.services) as watch:
            wait_until("the daemon's /metrics", lambda: series(port) if _answers(port) else None)
            samples: list[Footprint] = []
            warm: set[str] = set()
            started = time.monotonic()
            next_rotation = started + ROTATE_EVERY
            rotations = 0
            while (now := time.monotonic()) < started + soak_seconds:
                assert daemon.poll() is None, daemon_log.read_text()[-2000:]
                samples.append(footprint(daemon.pid, now - started))
                if not warm and now - started >= WARM_UP * soak_seconds:
                    warm = series(port)
                if now >= next_rotation:
                    for name in names:
                        history[name].append(new_value(f"{name[-5:]}{rotations + 1}-"))
                    project.set_values({n: v[-1] for n, v in history.items()})
                    rotations += 1
                    next_rotation += ROTATE_EVERY
                time.sleep(SAMPLE_EVERY)

            def current() -> bool:
                newest = {n: f"{n}-v{_newest(swarm, n)}" for n in names}
                return (
                    sorted(refs(swarm, both)) == sorted(newest[n] for n in names[:2])
                    and refs(swarm, one) == [newest[names[2]]]
                    and swarm.try_read_in_task(one, "/run/secrets/gamma") == history[names[2]][-1]
                    and swarm.try_read_in_task(both, "/run/secrets/alpha") == history[names[0]][-1]
                    and swarm.try_read_in_task(both, "/run/secrets/beta") == history[names[1]][-1]
                )

            wait_until("the services to run the newest values", current, timeout=60)
            end = series(port)
            watch.assert_clean(min_checks=int(soak_seconds))
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
    text = daemon_log.read_text()
    assert daemon.returncode == 0, text[-2000:]
    errors = [line for line in text.splitlines() if " ERROR " in line]
    assert not errors, errors[:5]

    every_value = {v for values in history.values() for v in values}
    assert_reads_ok(logs, every_value, at_least=int(soak_seconds * 10))
    swaps = min(_newest(swarm, n) for n in names) - 1
    assert swaps >= rotations // 2, f"{swaps} swaps for {rotations} rotations"

    def window(start: float, stop: float) -> list[Footprint]:
        chosen = [s for s in samples if start * soak_seconds <= s.at <= stop * soak_seconds]
        assert len(chosen) >= 3, f"too few samples between {start:.0%} and {stop:.0%}"
        return chosen

    early, late = window(WARM_UP, WARM_UP + WINDOW), window(1 - WINDOW, 1)
    for field in ("rss_kib", "fds", "threads"):
        before = statistics.median(getattr(s, field) for s in early)
        after = statistics.median(getattr(s, field) for s in late)
        assert after <= before * (1 + MAX_GROWTH), f"{field} grew from {before} to {after}"
    assert warm and end <= warm, f"new metric series after the warm-up: {sorted(end - warm)}"
    print(  # the numbers the report quotes (pytest -s)
        f"soak {soak_seconds:.0f}s: {rotations} rotations, {swaps} swaps; "
        + ", ".join(
            f"{f} {statistics.median(getattr(s, f) for s in early)}"
            f"->{statistics.median(getattr(s, f) for s in late)}"
            for f in ("rss_kib", "fds", "threads")
        )
        + f"; {len(warm)} -> {len(end)} metric series"
    )


def _answers(port: int) -> bool:
    try:
        series(port)
    except OSError:
        return False
    return True


def _newest(swarm: Swarm, name: str) -> int:
    listed = swarm.api.secrets(filters={"label": f"syncd.name={name}"})
    return max(int(s["Spec"]["Labels"]["syncd.version"]) for s in listed)
