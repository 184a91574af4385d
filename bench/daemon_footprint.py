"""Bench: daemon memory and one-shot start-up.

Prints the daemon's RSS at idle (one secret) and with 1,000 secrets after its first cycle,
and how long ``syncd --once`` takes from process start to its first provider call (read
from its own debug log), beside the bare interpreter start-up for scale.
Targets: RSS under 100 MB at 1,000 secrets, start-up under 1 s.
Run: ``.venv/bin/python bench/daemon_footprint.py``.
"""

from __future__ import annotations

import json
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import yaml


def write_project(root: Path, count: int) -> Path:
    values = {f"key_{i:04d}": secrets.token_urlsafe(24) for i in range(count)}
    (root / "keys.yaml").write_text(yaml.safe_dump(values))
    doc = {
        "providers": {"local": {"type": "file", "path": "keys.yaml"}},
        "target": {"type": "files", "directory": "out"},
        "daemon": {"listen": None},
        "secrets": [{"name": k, "from": {"provider": "local", "key": k}} for k in values],
    }
    path = root / "syncd.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def daemon_rss(count: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        path = write_project(root, count)
        proc = subprocess.Popen(
            [sys.executable, "-m", "syncd", "--config", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            last = root / "out" / f"key_{count - 1:04d}"
            deadline = time.monotonic() + 120
            while not last.exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(2)  # idle after the first cycle
            return rss_mb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def first_call_seconds(path: Path) -> float:
    start = time.time()
    run = subprocess.run(
        [
            *(sys.executable, "-m", "syncd", "--config", str(path), "--once", "--dry-run"),
            *("--log-format", "json", "--log-level", "debug"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    for line in run.stderr.splitlines():
        doc = json.loads(line)
        if doc["logger"] == "syncd.engine" and doc["message"].startswith("provider "):
            return datetime.fromisoformat(doc["time"]).timestamp() - start
    raise RuntimeError(f"no provider call logged:\n{run.stderr}")


def bare_python_seconds() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - start


def main() -> None:
    idle, loaded = daemon_rss(1), daemon_rss(1000)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_project(Path(tmp), 1)
        starts = [first_call_seconds(path) for _ in range(5)]
    bare = statistics.median(bare_python_seconds() for _ in range(5))
    print(f"{'measure':<42} {'value':>10}  target")
    print(f"{'daemon RSS, idle (1 secret)':<42} {idle:>7.1f} MB")
    print(f"{'daemon RSS, 1,000 secrets after a cycle':<42} {loaded:>7.1f} MB  < 100 MB")
    start = statistics.median(starts)
    print(f"{'syncd --once start to first provider call':<42} {start:>8.3f} s  < 1 s")
    print(f"{'bare python start (for scale)':<42} {bare:>8.3f} s")


if __name__ == "__main__":
    main()
