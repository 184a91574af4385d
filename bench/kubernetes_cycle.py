"""Bench: Kubernetes API requests and writes in a no-change cycle of the daemon.

The daemon (``python -m syncd`` with ``POST /sync``) keeps what it learnt between cycles, so a
no-change cycle in it should need no request at all once its cache is warm; it is measured on
``/metrics`` over one triggered cycle after a warm-up one, exactly as Prometheus would see it,
at 1,000 secrets (``--full``: also 10,000). A new process (``--once``)
starts cold; ``bench/cold_sync.py`` measures that cycle for every target.

Baseline: the naive controller, which GETs every Secret each refresh (N requests).

    scripts/backends up kubernetes
    .venv/bin/python bench/kubernetes_cycle.py [--rows] [--full]
"""

from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.rows import Row, note  # noqa: E402
from bench.syncd_daemon import Daemon  # noqa: E402
from bench.table import Report  # noqa: E402
from tests.backends import require_env  # noqa: E402

GROUP = "Target requests"
NAIVE = "naive: GET every Secret"


def project(folder: Path, namespace: str, kubeconfig: str, n: int) -> dict[str, Any]:
    """``n`` secrets from a file provider into ``namespace``: the config, its files written."""
    values = {f"bench-{i:05d}": secrets.token_urlsafe(24) for i in range(n)}
    (folder / "keys.yaml").write_text(yaml.safe_dump(values))
    doc = {
        "providers": {"local": {"type": "file", "path": "keys.yaml"}},
        "target": {"type": "kubernetes", "namespace": namespace, "kubeconfig": kubeconfig},
        "defaults": {"refresh": "1h"},
        "secrets": [{"name": k, "from": {"provider": "local", "key": k}} for k in values],
    }
    (folder / "syncd.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return doc


def daemon_rows(report: Report, folder: Path, namespace: str, kubeconfig: str, n: int) -> None:
    """Requests and writes of one no-change cycle in a warm daemon."""
    doc = project(folder, namespace, kubeconfig, n)
    with Daemon(folder, doc) as daemon:
        note(f"kubernetes daemon: cold sync of {n:,} secrets")
        daemon.wait_cycles(1)
        daemon.sync()  # warm-up: the first no-change cycle may still fill caches
        reads, writes = daemon.target_calls()
        ops = daemon.target_reads()
        daemon.sync()
        after_reads, after_writes = daemon.target_calls()
        delta = {op: k - ops.get(op, 0) for op, k in daemon.target_reads().items()}
    by_op = ", ".join(f"{op}={k}" for op, k in sorted(delta.items()) if k)
    what = f"Kubernetes, {n:,} secrets, no-change cycle, daemon (warm)"
    report.add(
        Row(
            GROUP,
            f"{what}: requests",
            after_reads - reads,
            "requests",
            NAIVE,
            float(n),
            "0",
            after_reads == reads,
            f"one POST /sync cycle after a warm-up one, /metrics target-read: {by_op or 'none'}",
        )
    )
    report.add(
        Row(
            GROUP,
            f"{what}: writes",
            after_writes - writes,
            "writes",
            goal="0",
            met=after_writes == writes,
            note="/metrics target writes over the same cycle",
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", action="store_true", help="print JSON rows for bench/run")
    parser.add_argument("--full", action="store_true", help="also 10,000 secrets")
    args = parser.parse_args()
    env = require_env("kubernetes")
    from kubernetes import client, config

    config.load_kube_config(config_file=env["KUBECONFIG"])
    core = client.CoreV1Api()
    report = Report(as_rows=args.rows)
    for n in [1000, *([10_000] if args.full else [])]:
        ns = f"bench-{uuid.uuid4().hex[:6]}"
        core.create_namespace({"metadata": {"name": ns}})
        try:
            with tempfile.TemporaryDirectory() as tmp:
                daemon_rows(report, Path(tmp), ns, env["KUBECONFIG"], n)
        finally:
            core.delete_namespace(ns)
    report.close()


if __name__ == "__main__":
    main()
