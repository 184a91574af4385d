"""Soak: a real ``syncd --config`` daemon rotating file-provider secrets into a files target
every second while readers read every file without pause.

What must hold for the whole run (``soak_seconds``: 45 s by default, ``--soak-minutes N``):

- every read succeeds and returns a whole value that was written: never a missing, empty,
  half-written or unknown file, in a reader thread or in a reader process;
- no reader ever sees a file go back to an older value;
- the daemon keeps up (most rotations are seen) and ends on the last values written;
- the daemon's RSS, open file descriptors and threads stay flat after a warm-up: sampled
  five times a second, the median of the last five seconds is at most 10% above the median
  of the warm-up's last five (a median, because a cycle holds a few descriptors while it
  writes), and ``/metrics`` has the same series at the end as after the warm-up.

Values carry their rotation number (``name:000012:<random>``), which is how "back in time"
is seen; the reader process reports hashes of what it read, never the values.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tests.conftest import new_value, wait_until

SINGLES = ["api_key", "db-password", "token.v2", "cert_pem"]
BUNDLE_KEYS = ["user", "pass"]
#: Every file a reader reads, relative to the target directory.
FILES = [*SINGLES, *(f"bundle/{key}" for key in BUNDLE_KEYS)]
#: Share of the run (at least 10 s) before resources and series are taken as the baseline.
WARM_UP = 0.25
GROWTH = 0.10
#: Seconds of samples each median is taken over.
WINDOW = 5.0

READER = r"""
import hashlib, json, os, sys, time
out, stop, names = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
last = dict.fromkeys(names, -1)
seen = {name: set() for name in names}
reads, failures = 0, []
while time.time() < stop:
    for name in names:
        try:
            with open(os.path.join(out, name), "rb") as f:
                data = f.read()
        except OSError as exc:
            failures.append(f"{name}: {type(exc).__name__}")
            continue
        reads += 1
        parts = data.split(b":")
        number = int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None
        if number is None:
            failures.append(f"{name}: a read of {len(data)} bytes that is no value")
        elif number < last[name]:
            failures.append(f"{name}: {number} after {last[name]}")
        else:
            last[name] = number
        seen[name].add(hashlib.sha256(data).hexdigest())
    time.sleep(0.002)
print(json.dumps({"reads": reads, "failures": failures[:20],
                  "seen": {n: sorted(s) for n, s in seen.items()}}))
"""


@dataclass
class Rotation:
    """What the writer wrote: every value of every file, with its rotation number."""

    written: dict[str, dict[str, int]] = field(default_factory=lambda: {f: {} for f in FILES})
    last: dict[str, str] = field(default_factory=dict)
    count: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next(self, source: Path) -> None:
        """New values for every file, known to the readers before the source has them."""
        values = {name: f"{name}:{self.count:06d}:{new_value()}" for name in FILES}
        with self.lock:
            for name, value in values.items():
                self.written[name][value] = self.count
            self.last = values
            self.count += 1
        keys = {name.replace("bundle/", "bundle-"): value for name, value in values.items()}
        partial = source.with_suffix(".partial")
        partial.write_text(yaml.safe_dump(keys))
        os.replace(partial, source)

    def number(self, name: str, value: str) -> int | None:
        with self.lock:
            return self.written[name].get(value)


def write_config(root: Path, port: int) -> Path:
    secrets = [{"name": n, "from": {"provider": "local", "key": n}} for n in SINGLES]
    bundle = {key: {"provider": "local", "key": f"bundle-{key}"} for key in BUNDLE_KEYS}
    config = {
        "providers": {"local": {"type": "file", "path": "keys.yaml"}},
        "target": {"type": "files", "directory": "out", "history": 2},
        "defaults": {"refresh": "1s"},
        "daemon": {"listen": f"127.0.0.1:{port}", "watch_config": False},
        "secrets": [*secrets, {"name": "bundle", "data": bundle}],
    }
    path = root / "syncd.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def resources(pid: int) -> dict[str, int]:
    """RSS (kB), threads and open descriptors of a process, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = dict(line.split(":", 1) for line in status if ":" in line)
    return {
        "rss_kb": int(fields["VmRSS"].split()[0]),
        "threads": int(fields["Threads"]),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
    }


class Monitor(threading.Thread):
    """Samples a process's resources five times a second until stopped."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[tuple[float, dict[str, int]]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.2):
            self.samples.append((time.monotonic(), resources(self.pid)))

    def median(self, start: float, end: float) -> dict[str, float]:
        window = [sample for at, sample in self.samples if start <= at <= end]
        assert len(window) >= 5, f"{len(window)} samples between {start:.1f} and {end:.1f}"
        return {key: statistics.median(s[key] for s in window) for key in window[0]}


def series(port: int) -> set[str]:
    """The names and labels of every sample ``/metrics`` has (values left out)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {line.rsplit(" ", 1)[0] for line in text.splitlines() if not line.startswith("#")}


@dataclass
class Reads:
    """What one reader saw: how many reads, what went wrong, which rotations of each file."""

    reads: int = 0
    failures: list[str] = field(default_factory=list)
    seen: dict[str, set[int]] = field(default_factory=lambda: {name: set() for name in FILES})


def read_continuously(out: Path, rotation: Rotation, stop: threading.Event, into: Reads) -> None:
    """One reader thread: every file, over and over, each read checked as it happens."""
    last = dict.fromkeys(FILES, -1)
    while not stop.is_set():
        for name in FILES:
            try:
                value = (out / name).read_text()
            except OSError as exc:
                into.failures.append(f"{name}: {type(exc).__name__}")
                continue
            into.reads += 1
            number = rotation.number(name, value)
            if number is None:
                into.failures.append(f"{name}: a read of {len(value)} characters never written")
            elif number < last[name]:
                into.failures.append(f"{name}: rotation {number} after {last[name]}")
            else:
                last[name] = number
                into.seen[name].add(number)
        time.sleep(0.002)


def test_a_daemon_rotating_every_second_never_fails_a_reader(tmp_path, soak_seconds):
    port = free_port()
    config = write_config(tmp_path, port)
    out = tmp_path / "out"
    rotation = Rotation()
    rotation.next(tmp_path / "keys.yaml")
    log = (tmp_path / "daemon.log").open("w")
    daemon = subprocess.Popen(
        [sys.executable, "-m", "syncd", "--config", str(config)], stdout=log, stderr=log
    )
    stop = threading.Event()
    results = [Reads(), Reads()]
    readers = [
        threading.Thread(target=read_continuously, args=(out, rotation, stop, into))
        for into in results
    ]
    try:
        wait_until("the first sync", lambda: all((out / name).exists() for name in FILES), 30)
        end = time.time() + soak_seconds
        process = subprocess.Popen(
            [sys.executable, "-c", READER, str(out), str(end), *FILES],
            stdout=subprocess.PIPE,
            text=True,
        )
        for reader in readers:
            reader.start()
        monitor = Monitor(daemon.pid)
        monitor.start()
        warm_until = time.monotonic() + max(10.0, soak_seconds * WARM_UP)
        warm_series: set[str] = set()
        while time.time() < end:
            tick = time.monotonic()
            rotation.next(tmp_path / "keys.yaml")
            if tick >= warm_until:
                warm_series = warm_series or series(port)
            time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
        finished = time.monotonic()
        monitor.stop.set()
        end_series = series(port)
        last = dict(rotation.last)
        wait_until(
            "the daemon on the last values",
            lambda: all((out / name).read_text() == value for name, value in last.items()),
            15,
        )
        stop.set()
        for reader in readers:
            reader.join(timeout=10)
        stdout, _ = process.communicate(timeout=30)
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0, (tmp_path / "daemon.log").read_text()[-2000:]
    finally:
        stop.set()
        daemon.kill()
        daemon.wait()
        log.close()

    by_process = json.loads(stdout)
    failures = [f for r in results for f in r.failures] + by_process["failures"]
    assert failures == [], failures[:20]
    reads = sum(r.reads for r in results) + by_process["reads"]
    rotations = rotation.count
    for name in FILES:
        written = {hashlib.sha256(v.encode()).hexdigest() for v in rotation.written[name]}
        unknown = set(by_process["seen"][name]) - written
        assert not unknown, f"{name}: the reader process read {len(unknown)} values never written"
        seen = set().union(*(r.seen[name] for r in results))
        assert len(seen) >= rotations // 2, f"{name}: {len(seen)} of {rotations} rotations seen"
    warmed = monitor.median(warm_until - WINDOW, warm_until)
    final = monitor.median(finished - WINDOW, finished)
    for key, before in warmed.items():
        assert final[key] <= before * (1 + GROWTH), f"{key}: {warmed} after warm-up, then {final}"
    assert end_series == warm_series, sorted(end_series ^ warm_series)
    peak = {key: max(s[key] for _, s in monitor.samples) for key in warmed}
    print(
        f"soak {soak_seconds:.0f}s: {rotations} rotations, {reads} reads, 0 failures; daemon "
        f"after warm-up {warmed}, at the end {final}, peak {peak}; {len(end_series)} series"
    )
