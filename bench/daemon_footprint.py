"""Daemon memory and CPU: RSS idle and with 1,000 (and 10,000) secrets, CPU per no-change cycle.

The daemon syncs N keys of a file provider into a files target. RSS is read from
``/proc/PID/status`` two seconds after the first cycle finished; per-secret growth is the
least-squares slope through the measured points. CPU per no-change cycle is the daemon's
process CPU time (user + system, all threads) across one cycle asked for with ``POST /sync``
and seen complete on ``/metrics`` (``syncd_cycle_duration_seconds_count``), less the CPU of
the scrapes that watched it (one scrape's CPU is measured first, with the daemon idle), the
median of ``CPU_CYCLES`` cycles. Scrapes are sequential, ``POLL`` seconds apart: a scrape of
10,000 secrets' series takes long, and overlapping ones would each hold a server thread.
Baseline: the RSS of a bare ``python -c "import time; time.sleep(30)"``
measured in the same run. Goal: RSS < 100 MB at 10,000 secrets.

    .venv/bin/python bench/daemon_footprint.py [--rows] [--full]
"""

from __future__ import annotations

import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.calls_common import output, parse_args  # noqa: E402
from bench.rows import Row, note  # noqa: E402

#: No-change cycles timed for CPU at each size.
CPU_CYCLES = 5
#: RSS goal at 10,000 secrets.
GOAL_MB = 100.0
#: How long a first cycle may take before the bench gives up.
FIRST_CYCLE_TIMEOUT = 600.0
#: Seconds between two scrapes of /metrics while waiting for a cycle.
POLL = 0.5
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Footprint:
    """One daemon's RSS after its first cycle and its CPU seconds per no-change cycle."""

    count: int
    rss_mb: float
    cpu_s: list[float]
    scrape_s: float


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` (every thread), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_project(root: Path, count: int, port: int) -> Path:
    """A config syncing ``count`` generated keys, with a listener and ``POST /sync``."""
    values = {f"key_{i:05d}": secrets.token_urlsafe(24) for i in range(count)}
    (root / "keys.yaml").write_text(yaml.safe_dump(values))
    (root / "token").write_text(secrets.token_urlsafe(32))
    (root / "token").chmod(0o600)
    doc = {
        "providers": {"local": {"type": "file", "path": "keys.yaml"}},
        "target": {"type": "files", "directory": "out"},
        "daemon": {"listen": f"127.0.0.1:{port}", "trigger": {"token_file": "token"}},
        "secrets": [{"name": k, "from": {"provider": "local", "key": k}} for k in values],
    }
    path = root / "syncd.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def cycles_done(port: int) -> int:
    """``syncd_cycle_duration_seconds_count`` from the daemon's ``/metrics`` (0 before any)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=120) as answer:
            text = answer.read().decode()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("syncd_cycle_duration_seconds_count"):
            return int(float(line.split()[-1]))
    return 0


def wait_cycles(port: int, at_least: int, proc: subprocess.Popen[bytes]) -> int:
    """Wait until ``at_least`` cycles have finished; how many scrapes that took."""
    deadline = time.monotonic() + FIRST_CYCLE_TIMEOUT
    scrapes = 1
    while cycles_done(port) < at_least:
        if proc.poll() is not None:
            sys.exit(f"the daemon exited with {proc.returncode}")
        if time.monotonic() > deadline:
            sys.exit(f"no cycle {at_least} within {FIRST_CYCLE_TIMEOUT:.0f}s")
        time.sleep(POLL)
        scrapes += 1
    return scrapes


def scrape_cpu(port: int, pid: int) -> float:
    """The daemon's CPU seconds for one /metrics scrape while idle (median of three)."""
    costs = []
    for _ in range(3):
        before = cpu_seconds(pid)
        cycles_done(port)
        costs.append(cpu_seconds(pid) - before)
    return statistics.median(costs)


def trigger(port: int, token: str) -> None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/sync",
        method="POST",
        headers={"Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=10):
        pass


@contextmanager
def process(*argv: str) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def daemon(count: int) -> Footprint:
    """Start a daemon over ``count`` secrets: RSS after its first cycle, CPU per quiet cycle."""
    note(f"daemon: {count:,} secrets")
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        path = write_project(Path(tmp), count, port)
        token = (Path(tmp) / "token").read_text()
        with process(sys.executable, "-m", "syncd", "--config", str(path)) as proc:
            wait_cycles(port, 1, proc)
            time.sleep(2)  # idle after the first cycle
            rss = rss_mb(proc.pid)
            scrape = scrape_cpu(port, proc.pid)
            cpu = []
            for done in range(2, 2 + CPU_CYCLES):
                before = cpu_seconds(proc.pid)
                trigger(port, token)
                scrapes = wait_cycles(port, done, proc)
                cpu.append(max(0.0, cpu_seconds(proc.pid) - before - scrapes * scrape))
    note(f"  RSS {rss:.1f} MB, CPU per no-change cycle {statistics.median(cpu):.3f}s")
    return Footprint(count, rss, cpu, scrape)


def bare_python_mb() -> float:
    with process(sys.executable, "-c", "import time; time.sleep(30)") as proc:
        time.sleep(1)
        return rss_mb(proc.pid)


def slope_kib(points: list[Footprint]) -> float:
    """Least-squares RSS growth per secret, in KiB."""
    xs, ys = [p.count for p in points], [p.rss_mb * 1024 for p in points]
    return statistics.linear_regression(xs, ys).slope


def rows(points: list[Footprint], bare: float) -> list[Row]:
    found = []
    for p in points:
        label = "idle (1 secret)" if p.count == 1 else f"{p.count:,} secrets"
        goal = p.count == 10_000
        found.append(
            Row(
                group="Daemon footprint",
                what=f"daemon RSS, {label}, after the first cycle",
                syncd=round(p.rss_mb, 1),
                unit="MB",
                baseline='python -c "import time; time.sleep(30)"',
                baseline_value=round(bare, 1),
                goal=f"< {GOAL_MB:.0f} MB" if goal else "",
                met=p.rss_mb < GOAL_MB if goal else None,
                note="file provider, files target",
            )
        )
    slope = slope_kib(points)
    idle = points[0].rss_mb
    at_10k = [p for p in points if p.count == 10_000]
    projected = idle + slope * 10_000 / 1024
    found.append(
        Row(
            group="Daemon footprint",
            what="daemon RSS growth per secret",
            syncd=round(slope, 2),
            unit="KiB/secret",
            note=f"least squares over {', '.join(f'{p.count:,}' for p in points)} secrets"
            + ("" if at_10k else f"; projects {projected:.0f} MB at 10,000 (--full measures it)"),
        )
    )
    for p in points:
        found.append(
            Row(
                group="Daemon footprint",
                what=f"CPU per no-change cycle, {p.count:,} secret{'s' if p.count > 1 else ''}",
                syncd=round(statistics.median(p.cpu_s), 3),
                unit="CPU s",
                note=f"median of {len(p.cpu_s)} cycles asked for with POST /sync "
                f"(all: {', '.join(f'{c:.2f}' for c in p.cpu_s)}), less {p.scrape_s:.2f}s per "
                f"/metrics scrape that watched it; clock tick {1 / TICKS:.2f}s",
            )
        )
    return found


def main() -> None:
    args = parse_args(__doc__)
    counts = (1, *args.counts)
    bare = bare_python_mb()
    points = [daemon(count) for count in counts]
    output(rows(points, bare), args.rows)


if __name__ == "__main__":
    main()
