"""A syncd daemon rotating several secrets into their consumers for a while, on the real
control plane (``--soak-minutes N`` or ``SYNCD_SOAK_MINUTES`` for a long run; 45 s by default).

One secret changes every few seconds, in turn. Each change must reach its consumer: a new
version holding the value, the Deployment repointed and rolled out. Throughout, a checker
thread watches that no pod template ever names a missing Secret, and the daemon's resident
memory, open descriptors and threads (``/proc``) stay flat after a warm-up, as does the
number of metric series. No value ever shows in its log or its metrics.
"""

from __future__ import annotations

import base64
import itertools
import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import new_value, wait_until
from tests.integration.kube_util import (  # noqa: F401 - ns, project: fixtures
    ReferenceChecker,
    container,
    deployment,
    free_port,
    ns_fixture,
    project_fixture,
    ref,
    rolled_out,
    template_secret_refs,
)

pytestmark = pytest.mark.timeout(900)

SECRETS = ("alpha", "beta", "gamma")
#: Seconds between two rotations (of different secrets, in turn).
PERIOD = 3.0
#: The share of the soak that is warm-up, excluded from the footprint comparison.
WARM_UP = 0.3
#: The most the footprint may grow after warm-up.
GROWTH = 0.10


@dataclass
class Footprint:
    """Samples of one process from ``/proc``: resident memory (kB), open fds, threads."""

    pid: int
    samples: list[tuple[float, int, int, int]] = field(default_factory=list)

    def sample(self) -> None:
        proc = Path(f"/proc/{self.pid}")
        status = dict(
            line.split(":", 1) for line in (proc / "status").read_text().splitlines() if ":" in line
        )
        rss = int(status["VmRSS"].split()[0])
        fds = len(os.listdir(proc / "fd"))
        threads = len(os.listdir(proc / "task"))
        self.samples.append((time.monotonic(), rss, fds, threads))

    def growth(self, since: float) -> dict[str, float]:
        """Growth of each measure from the first quarter of the samples after ``since`` (the
        highest value seen there) to the last quarter (the highest there)."""
        after = [s for s in self.samples if s[0] >= since]
        assert len(after) >= 8, f"only {len(after)} samples after warm-up"
        quarter = len(after) // 4
        early, late = after[:quarter], after[-quarter:]
        return {
            name: max(s[i] for s in late) / max(s[i] for s in early) - 1
            for i, name in ((1, "rss"), (2, "fds"), (3, "threads"))
        }


def _scrape(port: int) -> tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    """The daemon's ``/metrics`` text, and each series (name, labels) with its value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    series = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    return text, series


def _on(api: Any, ns: str, name: str, value: str) -> bool:
    """Whether Deployment ``name`` references a Secret holding ``value`` and rolled out."""
    template = api.AppsV1Api().read_namespaced_deployment(name, ns).spec.template
    refs = template_secret_refs(template)
    if len(refs) != 1:
        return False
    secret = api.CoreV1Api().read_namespaced_secret(refs.pop(), ns)
    return base64.b64decode(secret.data["value"]).decode() == value and rolled_out(api, ns, name)


def test_a_daemon_rotating_secrets_stays_correct_and_flat(
    api, project, ns, tmp_path, soak_seconds, canary
):
    values = {name: canary + new_value() for name in SECRETS}
    project.values(**values)
    config = project.config(
        [
            {"name": name, "data": {"value": ref(name)}, "refresh": "1s", "keep": 1}
            for name in SECRETS
        ],
        top={"daemon": {"jitter": 0.1}},
    )
    port = free_port()
    log = tmp_path / "daemon.log"
    with log.open("w") as out:
        daemon = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "syncd",
                "--config",
                str(config),
                "--listen",
                f"127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    footprint = Footprint(daemon.pid)
    latencies: list[float] = []
    rotations = dict.fromkeys(SECRETS, 0)
    try:
        for name in SECRETS:
            wait_until(f"{name}-v1", lambda name=name: _exists(api, ns, f"{name}-v1"))
            pod = {"containers": [container(envFrom=[{"secretRef": {"name": f"{name}-v1"}}])]}
            api.AppsV1Api().create_namespaced_deployment(ns, deployment(name, pod))
        for name in SECRETS:
            wait_until(f"{name} rolled out", lambda name=name: rolled_out(api, ns, name))
        with ReferenceChecker(api, ns, interval=0.2) as checker:
            started = time.monotonic()
            warmed = started + soak_seconds * WARM_UP
            baseline: set[str] | None = None
            for name in itertools.cycle(SECRETS):
                tick = time.monotonic()
                if tick - started >= soak_seconds:
                    break
                if baseline is None and tick >= warmed:
                    baseline = set(_scrape(port)[1])
                values[name] = canary + new_value()
                project.values(**values)
                rotations[name] += 1
                wait_until(
                    f"{name} converged on its new value",
                    lambda name=name: _on(api, ns, name, values[name]),
                    timeout=30,
                )
                latencies.append(time.monotonic() - tick)
                while time.monotonic() < tick + PERIOD:
                    footprint.sample()
                    time.sleep(0.25)
            footprint.sample()
            metrics, final = _scrape(port)
    finally:
        daemon.terminate()
        daemon.wait(timeout=60)
    growth = footprint.growth(warmed)
    first, last = footprint.samples[0], footprint.samples[-1]
    print(
        f"\nsoak {soak_seconds:.0f}s: {sum(rotations.values())} rotations, converged after "
        f"{min(latencies):.1f}-{max(latencies):.1f}s; RSS {first[1]}->{last[1]} kB, fds "
        f"{first[2]}->{last[2]}, threads {first[3]}->{last[3]}; growth after warm-up "
        + ", ".join(f"{k} {v:+.1%}" for k, v in growth.items())
        + f"; {len(final)} metric series (after warm-up {len(baseline or ())}); "
        f"{checker.snapshots} snapshots checked"
    )
    checker.assert_clean(min_snapshots=10)
    assert daemon.returncode == 0
    assert all(v < GROWTH for v in growth.values()), growth
    # bounded: label values come from the config and a fixed vocabulary, never from a
    # version, so later rotations add no series (a first deletion may add its operation's)
    assert baseline is not None and len(final) <= len(baseline) * (1 + GROWTH)
    for name, labels in final:
        if name == "syncd_build_info":
            continue  # one constant series whose labels are syncd's and Python's versions
        values = {k: v for k, v in labels if k != "le"}
        assert not any(c.isdigit() for v in values.values() for c in v), (name, labels)
        assert values.get("secret", SECRETS[0]) in SECRETS, (name, labels)
    text = log.read_text()
    assert canary not in text and canary not in metrics
    assert "Traceback" not in text
    failures = {k: v for k, v in final.items() if k[0] == "syncd_convergence_failures_total"}
    assert not any(failures.values()), failures
    # every rotation made exactly one version: none skipped, none twice
    versions = {dict(k[1])["secret"]: v for k, v in final.items() if k[0] == "syncd_secret_version"}
    assert versions == {name: rotations[name] + 1 for name in SECRETS}


def _exists(api: Any, ns: str, name: str) -> bool:
    return any(s.metadata.name == name for s in api.CoreV1Api().list_namespaced_secret(ns).items)
