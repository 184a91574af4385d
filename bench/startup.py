"""Start-up: ``syncd --once`` to its first provider call, and ``syncd --help``, beside bare python.

``--once`` start-up is the time from just before the process is spawned to the timestamp of
the engine's first ``provider NAME: versions ...`` debug line (one file-provider secret,
``--dry-run``, JSON logs). ``--help`` is the wall time of the whole process. Each is measured
``RUNS`` times interleaved pairwise with a bare ``python -c pass`` (so load on this shared
machine hits both alike), and the medians are reported. Goals: --once < 0.25 s, --help < 0.15 s.

The children compile to bytecode once (a warm-up run) into a temporary ``PYTHONPYCACHEPREFIX``
and use it, as an installed syncd does: a ``PYTHONDONTWRITEBYTECODE`` in the environment would
otherwise make every run compile syncd from source.

    .venv/bin/python bench/startup.py [--rows]
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.calls_common import output, parse_args  # noqa: E402
from bench.rows import Row, note  # noqa: E402

#: Runs of each command (and of the baseline beside it).
RUNS = 7
ONCE_GOAL = 0.25
HELP_GOAL = 0.15


def write_project(root: Path) -> Path:
    """A config with one file-provider secret."""
    (root / "keys.yaml").write_text(yaml.safe_dump({"key": "bench-value"}))
    doc = {
        "providers": {"local": {"type": "file", "path": "keys.yaml"}},
        "target": {"type": "files", "directory": "out"},
        "daemon": {"listen": None},
        "secrets": [{"name": "key", "from": {"provider": "local", "key": "key"}}],
    }
    path = root / "syncd.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def child_env(cache: Path) -> dict[str, str]:
    """This environment, writing and reading bytecode under ``cache``."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return {**env, "PYTHONPYCACHEPREFIX": str(cache)}


def first_call_seconds(path: Path, env: dict[str, str]) -> float:
    """Seconds from spawning ``syncd --once`` to its first provider call, from its own log."""
    start = time.time()
    run = subprocess.run(
        [
            *(sys.executable, "-m", "syncd", "--config", str(path), "--once", "--dry-run"),
            *("--log-format", "json", "--log-level", "debug"),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env=env,
    )
    for line in run.stderr.splitlines():
        doc = json.loads(line)
        if doc["logger"] == "syncd.engine" and doc["message"].startswith("provider "):
            return datetime.fromisoformat(doc["time"]).timestamp() - start
    raise SystemExit(f"no provider call logged:\n{run.stderr}")


def wall_seconds(*argv: str, env: dict[str, str]) -> float:
    """Wall time of one process run to its end."""
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, cwd=ROOT, env=env)
    return time.perf_counter() - start


def paired(measure: Callable[[], float], env: dict[str, str]) -> tuple[list[float], list[float]]:
    """``RUNS`` of ``measure`` and of bare ``python -c pass``, alternating, after a warm-up."""
    measure()
    ours, bare = [], []
    for _ in range(RUNS):
        bare.append(wall_seconds(sys.executable, "-c", "pass", env=env))
        ours.append(measure())
    return ours, bare


def row(what: str, ours: list[float], bare: list[float], goal: float, how: str) -> Row:
    median = statistics.median(ours)
    return Row(
        group="Start-up",
        what=what,
        syncd=round(median, 3),
        unit="s",
        baseline="python -c pass",
        baseline_value=round(statistics.median(bare), 3),
        goal=f"< {goal} s",
        met=median < goal,
        note=f"median of {RUNS} runs interleaved with the baseline; {how}; "
        f"syncd runs: {', '.join(f'{s:.3f}' for s in sorted(ours))}",
    )


def main() -> None:
    args = parse_args(__doc__)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_project(Path(tmp))
        env = child_env(Path(tmp) / "pycache")
        note("syncd --once")
        once = paired(lambda: first_call_seconds(path, env), env)
        note("syncd --help")
        helped = paired(lambda: wall_seconds(sys.executable, "-m", "syncd", "--help", env=env), env)
    rows = [
        row(
            "syncd --once: start to first provider call",
            *once,
            ONCE_GOAL,
            "one file-provider secret, --dry-run, time of its first 'provider' debug log line",
        ),
        row("syncd --help: wall time", *helped, HELP_GOAL, "whole process"),
    ]
    output(rows, args.rows)


if __name__ == "__main__":
    main()
