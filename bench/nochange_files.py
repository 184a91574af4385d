"""Bench: a no-change cycle over 10,000 secrets, file provider into the files target.

Prints the cold sync and the no-change cycle side by side: wall time, target writes (must be
0 when nothing changed) and provider reads (a no-change cycle should only ``stat`` the file).
Also times one cycle after a single value changed.
Run: ``.venv/bin/python bench/nochange_files.py [--secrets N]``.
"""

from __future__ import annotations

import argparse
import secrets
import tempfile
import time
from pathlib import Path

import yaml

from syncd.config import load_config
from syncd.engine import CycleResult, Engine


def run(engine: Engine) -> tuple[float, CycleResult]:
    start = time.perf_counter()
    result = engine.run_cycle()
    return time.perf_counter() - start, result


def row(label: str, seconds: float, result: CycleResult, before: dict[str, dict[str, int]]) -> str:
    calls = {
        op: n - before.get("local", {}).get(op, 0)
        for op, n in result.calls.get("local", {}).items()
    }
    changed = sum(1 for i in result.items if i.action in ("create", "update"))
    return (
        f"{label:<22} {seconds:>9.3f} {result.target_writes:>13} {calls.get('read', 0):>14}"
        f" {calls.get('stat', 0):>14} {changed:>8}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--secrets", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        values = {f"key_{i:05d}": secrets.token_urlsafe(24) for i in range(args.secrets)}
        (root / "keys.yaml").write_text(yaml.safe_dump(values))
        config = {
            "providers": {"local": {"type": "file", "path": "keys.yaml"}},
            "target": {"type": "files", "directory": "out"},
            "secrets": [{"name": k, "from": {"provider": "local", "key": k}} for k in values],
        }
        (root / "syncd.yaml").write_text(yaml.safe_dump(config))
        start = time.perf_counter()
        cfg = load_config(root / "syncd.yaml")
        load_time = time.perf_counter() - start
        engine = Engine(cfg)
        print(f"{args.secrets} secrets; config load {load_time:.3f}s")
        header = ("cycle", "wall s", "target writes", "provider reads", "provider stats", "changed")
        print("{:<22} {:>9} {:>13} {:>14} {:>14} {:>8}".format(*header))
        before = engine.calls.snapshot()
        seconds, result = run(engine)
        print(row("cold sync", seconds, result, before))
        before = result.calls
        seconds, result = run(engine)
        print(row("no change (same proc)", seconds, result, before))
        fresh = Engine(load_config(root / "syncd.yaml"))
        seconds, result = run(fresh)
        print(row("no change (new proc)", seconds, result, {}))
        values["key_00000"] = secrets.token_urlsafe(24)
        (root / "keys.yaml").write_text(yaml.safe_dump(values))
        before = engine.calls.snapshot()
        seconds, result = run(engine)
        print(row("one value changed", seconds, result, before))


if __name__ == "__main__":
    main()
