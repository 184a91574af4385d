"""Bench: upstream change -> Kubernetes Secret written -> Deployment converged, minus the
Deployment's own rollout time: syncd's overhead per rotation, p50 and p99.

syncd runs as the daemon (``python -m syncd``) on a file provider; a rotation rewrites the
provider's file, then either sends ``POST /sync`` at once (trigger mode) or waits for the
30 s refresh (refresh mode). It ends when the consumer Deployment's template names the new
``app-vN`` and the rollout is complete (what ``kubectl rollout status`` waits for), as seen
by polling the API every 50 ms. Each syncd rotation is paired with the same repoint by hand
on an identical Deployment (create the Secret, patch the volume, wait for the rollout): the
consumer's own rollout time. Overhead = syncd's time - the paired by-hand time.

In refresh mode the time until the refresh fires is by design (uniform over 0-30 s, the
upstream change lands at a random moment), so the overhead there is counted from the start
of the cycle that picked the change up (its end, seen on ``/metrics``, minus its duration);
the end-to-end time is in the note. An overhead below zero means syncd's rollout finished
sooner than the paired one by hand: the cluster's own rollout time varies by a few tenths of
a second, which is also why the by-hand rollouts are measured beside every rotation.

Rotations: 20 with ``POST /sync``; 3 at the 30 s refresh (20 with ``--full``).

    scripts/backends up kubernetes
    .venv/bin/python bench/propagation.py [--rows] [--full]
"""

from __future__ import annotations

import argparse
import random
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.rows import Row, note  # noqa: E402
from bench.syncd_daemon import Daemon, wait_for  # noqa: E402
from bench.table import Report, percentile  # noqa: E402
from tests.backends import require_env  # noqa: E402
from tests.integration.kube_health import SECRET_VOLUME, secret_pod_spec  # noqa: E402
from tests.integration.kube_util import deployment, rolled_out  # noqa: E402

GROUP = "Propagation"
GOAL = 1.0
#: How long one rollout may take before the bench gives up.
ROLLOUT_TIMEOUT = 120.0
REFRESH = 30


class Cluster:
    """The test cluster's namespace for this bench, with the two identical Deployments."""

    def __init__(self, namespace: str) -> None:
        env = require_env("kubernetes")
        from kubernetes import client, config

        config.load_kube_config(config_file=env["KUBECONFIG"])
        self.kubeconfig = env["KUBECONFIG"]
        self.api: Any = client
        self.core = client.CoreV1Api()
        self.apps = client.AppsV1Api()
        self.ns = namespace

    def secret_of(self, name: str) -> str:
        """The Secret the Deployment's template mounts now."""
        template = self.apps.read_namespaced_deployment(name, self.ns).spec.template
        volume = next(v for v in template.spec.volumes if v.name == SECRET_VOLUME)
        return str(volume.secret.secret_name)

    def converged_on(self, name: str, secret: str) -> bool:
        """The Deployment mounts ``secret`` and its rollout is complete."""
        return self.secret_of(name) == secret and rolled_out(self.api, self.ns, name)

    def create_deployment(self, name: str, secret: str) -> None:
        manifest = deployment(name, secret_pod_spec(secret), replicas=2)
        self.apps.create_namespaced_deployment(self.ns, manifest)
        wait_for(f"{name} ready", lambda: self.converged_on(name, secret), ROLLOUT_TIMEOUT)

    def create_secret(self, name: str) -> None:
        body = {"metadata": {"name": name}, "stringData": {"value": secrets.token_urlsafe(24)}}
        self.core.create_namespaced_secret(self.ns, body)

    def repoint_by_hand(self, name: str, secret: str) -> float:
        """Seconds to create ``secret``, point the Deployment at it and see it rolled out."""
        start = time.monotonic()
        self.create_secret(secret)
        patch = {
            "spec": {
                "template": {
                    "spec": {"volumes": [{"name": SECRET_VOLUME, "secret": {"secretName": secret}}]}
                }
            }
        }
        self.apps.patch_namespaced_deployment(name, self.ns, patch)
        end = wait_for(
            f"{name} on {secret}", lambda: self.converged_on(name, secret), ROLLOUT_TIMEOUT
        )
        return end - start


def cycle_seconds(daemon: Daemon) -> float:
    """The summed duration of the daemon's cycles so far."""
    return daemon.metrics().get(("syncd_cycle_duration_seconds_sum", ()), 0.0)


def run_mode(cluster: Cluster, folder: Path, *, refresh: bool, rotations: int) -> dict[str, Any]:
    """``rotations`` syncd rotations, each paired with one by hand; the timings."""
    tag = "r" if refresh else "t"
    keys = folder / "keys.yaml"

    def upstream() -> None:
        keys.write_text(yaml.safe_dump({"token": secrets.token_urlsafe(24)}))

    upstream()
    doc = {
        "providers": {"local": {"type": "file", "path": "keys.yaml"}},
        "target": {"type": "kubernetes", "namespace": cluster.ns, "kubeconfig": cluster.kubeconfig},
        "defaults": {"refresh": f"{REFRESH}s" if refresh else "1h", "timeout": "2m"},
        "daemon": {"jitter": 0},
        "secrets": [{"name": f"app{tag}", "from": {"provider": "local", "key": "token"}}],
    }
    ours, theirs = f"syncd-{tag}", f"manual-{tag}"
    out: dict[str, Any] = {"e2e": [], "in_cycle": [], "manual": []}
    with Daemon(folder, doc) as daemon:
        daemon.wait_cycles(1)
        cluster.create_deployment(ours, f"app{tag}-v1")
        cluster.create_secret(f"manual{tag}-v1")
        cluster.create_deployment(theirs, f"manual{tag}-v1")
        for version in range(2, rotations + 2):
            done = daemon.cycles()
            spent = cycle_seconds(daemon)
            if refresh:
                time.sleep(random.uniform(0, REFRESH - 5))  # the change comes at any moment
            start = time.monotonic()
            upstream()
            if not refresh:
                daemon.post_sync()
            target = f"app{tag}-v{version}"
            converged = wait_for(
                f"{ours} on {target}",
                lambda target=target: cluster.converged_on(ours, target),
                REFRESH + ROLLOUT_TIMEOUT,
            )
            ended = daemon.wait_cycles(done + 1)
            if daemon.cycles() != done + 1:
                raise SystemExit("more than one syncd cycle ran during one rotation")
            began = ended - (cycle_seconds(daemon) - spent)
            out["e2e"].append(converged - start)
            out["in_cycle"].append(converged - max(began, start))
            out["manual"].append(cluster.repoint_by_hand(theirs, f"manual{tag}-v{version}"))
            note(
                f"propagation ({'refresh' if refresh else 'POST /sync'}) v{version}: "
                f"syncd {out['e2e'][-1]:.2f} s, by hand {out['manual'][-1]:.2f} s"
            )
    return out


def add_rows(
    report: Report, label: str, ours: list[float], manual: list[float], extra: str
) -> None:
    """p50 and p99 of syncd's overhead over the paired by-hand rollouts."""
    overhead = [a - b for a, b in zip(ours, manual, strict=True)]
    rollout = statistics.median(manual)
    for name, q in (("p50", 0.5), ("p99", 0.99)):
        value = percentile(overhead, q)
        report.add(
            Row(
                GROUP,
                f"Kubernetes Deployment (2 replicas), {label}: overhead {name}",
                value,
                "s",
                "the Deployment's own rollout by hand, p50",
                rollout,
                f"< {GOAL:.0f} s",
                value < GOAL,
                f"{len(overhead)} rotations; {extra}",
            )
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", action="store_true", help="print JSON rows for bench/run")
    parser.add_argument("--full", action="store_true", help="20 rotations at the 30 s refresh too")
    parser.add_argument("--rotations", type=int, default=20, help="with POST /sync")
    args = parser.parse_args()
    report = Report(as_rows=args.rows)
    cluster = Cluster(f"prop-{uuid.uuid4().hex[:6]}")
    cluster.core.create_namespace({"metadata": {"name": cluster.ns}})
    try:
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "trigger").mkdir()
            (Path(tmp) / "refresh").mkdir()
            timings = run_mode(
                cluster, Path(tmp) / "trigger", refresh=False, rotations=args.rotations
            )
            add_rows(
                report,
                "POST /sync",
                timings["e2e"],
                timings["manual"],
                "from the upstream write, the POST sent right after it",
            )
            rotations = 20 if args.full else 3
            timings = run_mode(cluster, Path(tmp) / "refresh", refresh=True, rotations=rotations)
            e2e = ", ".join(f"{s:.1f}" for s in timings["e2e"])
            add_rows(
                report,
                f"{REFRESH} s refresh",
                timings["in_cycle"],
                timings["manual"],
                "from the start of the refresh cycle that saw the change; end to end "
                f"(with the wait for the refresh) {e2e} s"
                + ("" if args.full else "; 20 with --full"),
            )
    finally:
        cluster.core.delete_namespace(cluster.ns)
    report.close()


if __name__ == "__main__":
    main()
