"""Bench: no-change cycles over 10,000 secrets, file provider into the files target.

After a cold sync, a no-change cycle must write nothing to the target and read nothing from
the provider but a ``stat`` of its file, in the same process (as the daemon runs) and in a
new one (as ``--once`` runs). Also counts the writes of a cycle after one value changed.
Baseline: the naive way reads every target file (N reads) to compare it.

    .venv/bin/python bench/nochange_files.py [--rows] [--full] [--secrets N]
"""

from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.rows import Row, note  # noqa: E402
from bench.table import Report  # noqa: E402
from syncd.config import load_config  # noqa: E402
from syncd.engine import CycleResult, Engine  # noqa: E402
from syncd.targets.base import TARGET_READS  # noqa: E402

GROUP = "Target requests"


def run(engine: Engine) -> tuple[float, CycleResult, dict[str, dict[str, int]]]:
    """One cycle: seconds, result, and the calls it made (the counter is per engine)."""
    before = engine.calls.snapshot()
    start = time.perf_counter()
    result = engine.run_cycle()
    seconds = time.perf_counter() - start
    if not result.ok:
        raise SystemExit(f"cycle failed: {[i.error for i in result.items if i.error][:3]}")
    calls = {
        component: {op: k - before.get(component, {}).get(op, 0) for op, k in ops.items()}
        for component, ops in result.calls.items()
    }
    return seconds, result, calls


def no_change_rows(
    report: Report, label: str, n: int, result: CycleResult, calls: dict[str, dict[str, int]]
) -> None:
    """Writes, target reads and provider reads of one no-change cycle."""
    what = f"files, {n:,} secrets, no-change cycle, {label}"
    reads = calls.get(TARGET_READS, {})
    by_op = ", ".join(f"{op}={k}" for op, k in sorted(reads.items()) if k) or "none"
    report.add(
        Row(
            GROUP,
            f"{what}: writes",
            result.target_writes,
            "writes",
            goal="0",
            met=result.target_writes == 0,
        )
    )
    report.add(
        Row(
            GROUP,
            f"{what}: requests",
            sum(reads.values()),
            "requests",
            "naive: read every file",
            float(n),
            note=by_op,
        )
    )
    provider = calls.get("local", {})
    report.add(
        Row(
            GROUP,
            f"{what}: file provider reads",
            provider.get("read", 0),
            "reads",
            goal="0",
            met=provider.get("read", 0) == 0,
            note=f"stat calls: {provider.get('stat', 0)}",
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", action="store_true", help="print JSON rows for bench/run")
    parser.add_argument("--full", action="store_true", help="no larger size: 10,000 is default")
    parser.add_argument("--secrets", type=int, default=10_000)
    args = parser.parse_args()
    n = args.secrets
    report = Report(as_rows=args.rows)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        values = {f"key_{i:05d}": secrets.token_urlsafe(24) for i in range(n)}
        (root / "keys.yaml").write_text(yaml.safe_dump(values))
        config = {
            "providers": {"local": {"type": "file", "path": "keys.yaml"}},
            "target": {"type": "files", "directory": "out"},
            "secrets": [{"name": k, "from": {"provider": "local", "key": k}} for k in values],
        }
        (root / "syncd.yaml").write_text(yaml.safe_dump(config))
        engine = Engine(load_config(root / "syncd.yaml"))
        note(f"files: cold sync of {n:,} secrets")
        run(engine)
        _, result, calls = run(engine)
        no_change_rows(report, "same process", n, result, calls)
        fresh = Engine(load_config(root / "syncd.yaml"))
        _, result, calls = run(fresh)
        fresh.close()
        no_change_rows(report, "new process", n, result, calls)
        values["key_00000"] = secrets.token_urlsafe(24)
        (root / "keys.yaml").write_text(yaml.safe_dump(values))
        _, result, _ = run(engine)
        engine.close()
        report.add(
            Row(
                GROUP,
                f"files, {n:,} secrets, one value changed: writes",
                result.target_writes,
                "writes",
                note="a new generation of the set, swapped in with one rename",
            )
        )
    report.close()


if __name__ == "__main__":
    main()
