"""A ``python -m syncd`` daemon for benches: started on a config, driven with ``POST /sync``,
read through ``/metrics``.

Benches that measure what the daemon does (rather than one ``Engine`` cycle) need the real
process: it is the one that keeps caches between cycles. Cycles are counted with the
``syncd_cycle_duration_seconds`` histogram, and target requests with
``syncd_provider_calls_total{provider="target-read"|"target"}``, so a bench reads exactly what
an operator's Prometheus would.
"""

from __future__ import annotations

import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from syncd.targets.base import TARGET_COUNTER, TARGET_READS

#: How long a daemon may take to finish its first cycle or a triggered one.
CYCLE_TIMEOUT = 300.0


def free_port() -> int:
    """A port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(what: str, check: Callable[[], bool], timeout: float, every: float = 0.05) -> float:
    """Poll ``check`` until true; the monotonic time it became true. Exits the bench on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return time.monotonic()
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


class Daemon:
    """One syncd daemon on ``doc`` (a config dict), with the listener and ``POST /sync`` on."""

    def __init__(self, folder: Path, doc: dict[str, Any]) -> None:
        self.port = free_port()
        self.token = secrets.token_urlsafe(32)
        token_file = folder / "trigger-token"
        token_file.write_text(self.token)
        token_file.chmod(0o600)
        doc = {
            **doc,
            "daemon": {
                **doc.get("daemon", {}),
                "listen": f"127.0.0.1:{self.port}",
                "trigger": {"token_file": token_file.name},
            },
        }
        self.config = folder / "syncd-daemon.yaml"
        self.config.write_text(yaml.safe_dump(doc, sort_keys=False))
        self.log = folder / "syncd-daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Daemon:
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "syncd", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def _alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            lines = self.log.read_text(errors="replace").splitlines()[-5:]
            raise SystemExit(f"syncd daemon exited {self.proc.returncode}: " + " / ".join(lines))

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample on ``/metrics``, by name and sorted labels (empty before it listens)."""
        self._alive()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
                text = r.read().decode()
        except OSError:
            return {}
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def cycles(self) -> int:
        """Cycles the daemon finished."""
        return int(self.metrics().get(("syncd_cycle_duration_seconds_count", ()), 0))

    def target_calls(self) -> tuple[int, int]:
        """(target reads, target writes) made so far, all operations and statuses."""
        reads = writes = 0.0
        for (name, labels), value in self.metrics().items():
            if name != "syncd_provider_calls_total":
                continue
            provider = dict(labels).get("provider")
            if provider == TARGET_READS:
                reads += value
            elif provider == TARGET_COUNTER:
                writes += value
        return int(reads), int(writes)

    def target_reads(self) -> dict[str, int]:
        """Target reads made so far, by operation."""
        ops: dict[str, int] = {}
        for (name, labels), value in self.metrics().items():
            fields = dict(labels)
            if name == "syncd_provider_calls_total" and fields.get("provider") == TARGET_READS:
                op = fields.get("operation", "")
                ops[op] = ops.get(op, 0) + int(value)
        return ops

    def wait_cycles(self, n: int, timeout: float = CYCLE_TIMEOUT) -> float:
        """Wait until ``n`` cycles have finished; when that was seen."""
        return wait_for(f"syncd cycle {n}", lambda: self.cycles() >= n, timeout)

    def post_sync(self) -> None:
        """``POST /sync`` for every secret (the cycle runs on the daemon's worker)."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/sync",
            method="POST",
            headers={"Authorization": f"Bearer {self.token}"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def sync(self) -> None:
        """Trigger one cycle and wait until it finished."""
        before = self.cycles()
        self.post_sync()
        self.wait_cycles(before + 1)
