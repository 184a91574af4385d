"""Bench: cold sync throughput into each target, and how its time grows with N.

syncd: one cycle of a fresh ``Engine`` (what ``--once`` runs, without the interpreter's
start-up) creates N secrets from a file provider into an empty namespace, swarm or folder.
Baseline, in the same run, right after: the naive way with the target's own client, one
object at a time (Kubernetes: ``create_namespaced_secret``; Swarm: ``create_secret``; files:
write and fsync each file). Time against N is fitted as ``time ~ N^k`` (least squares on
log-log) over the sizes measured; ``k <= 1`` is linear or better. The naive creates are
linear by construction, so when their own k comes out above 1.1 the machine's load changed
between the sizes (it is shared): syncd then counts as linear when it grew no faster than
they did in the same run.

Sizes: 100 and 1,000; ``--full`` adds 10,000 (about 3.5 minutes for Kubernetes alone on the
test machine, which is why the default run leaves it out).

    scripts/backends up kubernetes swarm
    .venv/bin/python bench/cold_sync.py [--rows] [--full] [--targets files swarm kubernetes]
"""

from __future__ import annotations

import argparse
import math
import os
import secrets
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.rows import Row, note  # noqa: E402
from bench.table import Report  # noqa: E402
from syncd.config import load_config  # noqa: E402
from syncd.engine import CycleResult, Engine  # noqa: E402
from syncd.targets.base import TARGET_READS  # noqa: E402
from tests.backends import require_env  # noqa: E402

GROUP = "Cold sync"
REQUESTS = "Target requests"
#: The label on the Events syncd writes.
EVENTS_LABEL = "app.kubernetes.io/managed-by=syncd"
#: Slack on the fitted exponent before "linear" counts as missed: a few points on a shared
#: machine are noisy.
LINEAR = 1.1

#: A naive cold sync: writes every value, one at a time.
Naive = Callable[[dict[str, str]], None]
#: What else syncd wrote in the target during its cold sync, for the row's note ('' if nothing).
Extra = Callable[[], str]
#: What a target gives a measurement: syncd's ``target:`` block, the naive way, the extras.
Place = tuple[dict[str, Any], Naive, Extra]


def fit_exponent(points: list[tuple[int, float]]) -> float:
    """``k`` of ``seconds ~ N^k``, least squares on log N / log seconds."""
    xs = [math.log(n) for n, _ in points]
    ys = [math.log(max(s, 1e-6)) for _, s in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )


def fresh_cycle(config: Path) -> tuple[float, CycleResult]:
    """One cycle of a new engine on ``config`` (what ``--once`` runs): seconds and result."""
    engine = Engine(load_config(config))
    try:
        start = time.perf_counter()
        result = engine.run_cycle()
        seconds = time.perf_counter() - start
    finally:
        engine.close()
    if not result.ok:
        errors = [i.error for i in result.items if i.error][:3]
        raise SystemExit(f"syncd cycle failed: {errors}")
    return seconds, result


def syncd_cold(
    folder: Path, target: dict[str, Any], values: dict[str, str], instance: str
) -> tuple[float, CycleResult]:
    """Seconds a fresh engine's cycle takes to create ``values`` in ``target``; then the result
    of a second fresh engine's cycle, which finds nothing to do."""
    (folder / "keys.yaml").write_text(yaml.safe_dump(values))
    doc = {
        "instance": instance,
        "providers": {"local": {"type": "file", "path": "keys.yaml"}},
        "target": target,
        "secrets": [{"name": k, "from": {"provider": "local", "key": k}} for k in values],
    }
    (folder / "syncd.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    seconds, _ = fresh_cycle(folder / "syncd.yaml")
    return seconds, fresh_cycle(folder / "syncd.yaml")[1]


def nothing() -> str:
    """No extras: syncd wrote only the secrets."""
    return ""


def timed(naive: Naive, values: dict[str, str]) -> float:
    start = time.perf_counter()
    naive(values)
    return time.perf_counter() - start


@contextmanager
def files_target(folder: Path, prefix: str) -> Iterator[Place]:
    """The files target into ``folder/out``; naive: write and fsync each file in ``naive/``."""
    naive_dir = folder / "naive"
    naive_dir.mkdir()

    def naive(values: dict[str, str]) -> None:
        for name, value in values.items():
            fd = os.open(naive_dir / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, value.encode())
                os.fsync(fd)
            finally:
                os.close(fd)

    yield {"type": "files", "directory": str(folder / "out")}, naive, nothing


@contextmanager
def kubernetes_target(folder: Path, prefix: str) -> Iterator[Place]:
    """Two fresh namespaces: syncd's, and the naive creates'. Both deleted afterwards."""
    env = require_env("kubernetes")
    from kubernetes import client, config

    config.load_kube_config(config_file=env["KUBECONFIG"])
    core = client.CoreV1Api()
    ours, theirs = f"cold-{uuid.uuid4().hex[:6]}", f"naive-{uuid.uuid4().hex[:6]}"
    for ns in (ours, theirs):
        core.create_namespace({"metadata": {"name": ns}})

    def naive(values: dict[str, str]) -> None:
        for name, value in values.items():
            core.create_namespaced_secret(
                theirs, {"metadata": {"name": name}, "stringData": {"value": value}}
            )

    def events() -> str:
        """The Events syncd wrote beside its Secrets: its requests, not counted as the
        target's (one create each)."""
        written = core.list_namespaced_event(ours, label_selector=EVENTS_LABEL).items
        return (
            f"; syncd also wrote {len(written):,} Events (one create each); qps 1000 so the "
            "row measures syncd, not its default limit (100 qps: about 50 secrets/s)"
        )

    try:
        yield (
            {
                "type": "kubernetes",
                "namespace": ours,
                "kubeconfig": env["KUBECONFIG"],
                "qps": 1000,
                "burst": 1000,
            },
            naive,
            events,
        )
    finally:
        for ns in (ours, theirs):
            core.delete_namespace(ns)


@contextmanager
def swarm_target(folder: Path, prefix: str) -> Iterator[Place]:
    """The test swarm; everything named with this run's ``prefix`` is removed afterwards."""
    env = require_env("swarm")
    import docker

    api: Any = docker.APIClient(base_url=env["DOCKER_HOST"], version="auto")

    def naive(values: dict[str, str]) -> None:
        for name, value in values.items():
            api.create_secret(f"naive-{name}", value.encode())

    try:
        yield (
            {"type": "swarm", "docker_host": env["DOCKER_HOST"], "key_config": f"{prefix}-key"},
            naive,
            nothing,
        )
    finally:
        for secret in api.secrets(filters={"name": prefix}) + api.secrets(
            filters={"name": f"naive-{prefix}"}
        ):
            try:
                api.remove_secret(secret["ID"])
            except docker.errors.APIError as exc:
                note(f"could not remove Swarm secret {secret['ID']}: {exc}")
        for cfg in api.configs(filters={"name": prefix}):
            api.remove_config(cfg["ID"])
        api.close()


TARGETS = {"files": files_target, "swarm": swarm_target, "kubernetes": kubernetes_target}
LABELS = {"files": "files", "swarm": "Swarm", "kubernetes": "Kubernetes"}
NAIVE = {
    "files": "naive: write + fsync each file",
    "swarm": "naive: create_secret one by one",
    "kubernetes": "naive: create_namespaced_secret one by one",
}
#: What a naive no-change cycle costs: one request per secret.
NAIVE_NO_CHANGE = {
    "files": "naive: read every file",
    "swarm": "naive: inspect every secret",
    "kubernetes": "naive: GET every Secret",
}


def no_change_rows(
    report: Report, target: str, n: int, result: CycleResult, first: int | None
) -> int:
    """Requests and writes of the no-change cycle; its request count (for the next size)."""
    ops = result.calls.get(TARGET_READS, {})
    reads = sum(ops.values())
    by_op = ", ".join(f"{op}={k}" for op, k in sorted(ops.items()) if k)
    what = f"{LABELS[target]}, {n:,} secrets, no-change cycle, new process (as --once)"
    reference = "the reference size" if first is None else f"{first} at the first size"
    report.add(
        Row(
            REQUESTS,
            f"{what}: requests",
            reads,
            "requests",
            NAIVE_NO_CHANGE[target],
            float(n),
            "doesn't grow with N",
            None if first is None else reads <= first,
            f"{reference}; {by_op or 'none'}",
        )
    )
    report.add(
        Row(
            REQUESTS,
            f"{what}: writes",
            result.target_writes,
            "writes",
            goal="0",
            met=result.target_writes == 0,
        )
    )
    return reads


def measure(report: Report, target: str, sizes: list[int], note_text: str) -> None:
    """Throughput rows at each size, then the fitted exponents."""
    ours: list[tuple[int, float]] = []
    theirs: list[tuple[int, float]] = []
    first: int | None = None
    for n in sizes:
        prefix = f"cold{secrets.token_hex(3)}"
        values = {f"{prefix}-{i:05d}": secrets.token_urlsafe(24) for i in range(n)}
        instance = f"bench-{prefix}"
        place = TARGETS[target]
        with tempfile.TemporaryDirectory() as tmp, place(Path(tmp), prefix) as (spec, naive, extra):
            note(f"cold sync: {target}, {n:,} secrets")
            seconds, again = syncd_cold(Path(tmp), spec, values, instance)
            extras = extra()
            baseline = timed(naive, values)
        reads = no_change_rows(report, target, n, again, first)
        first = reads if first is None else first
        ours.append((n, seconds))
        theirs.append((n, baseline))
        report.add(
            Row(
                GROUP,
                f"{LABELS[target]}, {n:,} secrets: throughput",
                n / seconds,
                "secrets/s",
                NAIVE[target],
                n / baseline,
                note=f"syncd {seconds:.2f} s, naive {baseline:.2f} s; higher is better{extras}",
            )
        )
    k, naive_k = fit_exponent(ours), fit_exponent(theirs)
    span = " / ".join(f"{n:,}" for n in sizes)
    report.add(
        Row(
            GROUP,
            f"{LABELS[target]}: exponent k of time ~ N^k over {span}",
            k,
            "",
            f"{NAIVE[target]}'s k",
            naive_k,
            f"<= {LINEAR} (linear), or <= the naive's k",
            k <= max(LINEAR, naive_k),
            note_text,
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", action="store_true", help="print JSON rows for bench/run")
    parser.add_argument("--full", action="store_true", help="also 10,000 secrets")
    parser.add_argument("--targets", nargs="+", choices=list(TARGETS), default=list(TARGETS))
    args = parser.parse_args()
    report = Report(as_rows=args.rows)
    for target in args.targets:
        sizes = [100, 1000, *([10_000] if args.full else [])]
        text = "least squares on log-log" + ("" if args.full else "; 10,000 with --full")
        measure(report, target, sizes, text)
    report.close()


if __name__ == "__main__":
    main()
