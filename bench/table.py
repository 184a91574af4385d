"""Run every bench that has a ``--rows`` mode and print their rows as one markdown table.

Each script runs as its own subprocess, one after another (run side by side they would slow
each other and the baselines unevenly), with a timeout. Its stdout is read as ``rows.Row``
lines; a script that exits non-zero, times out, is missing or has no ``--rows`` mode becomes
a failed line in the table with the tail of its stderr, so nothing drops out of the table
silently. The table also goes to ``bench/RESULTS.md`` with the machine and the commit, and
into the README between the ``bench:table`` markers.

    bench/run [--full] [--only NAME...] [--timeout SECONDS] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

from bench.rows import Row, emit, parse  # noqa: E402

#: Benches the table must have a line for, even when the script is missing or not converted
#: yet; any other ``bench/*.py`` with a ``--rows`` mode is run too.
EXPECTED = (
    "calls_vault",
    "calls_aws",
    "calls_azure",
    "cold_sync",
    "nochange_files",
    "kubernetes_cycle",
    "propagation",
    "swarm_rotation",
    "daemon_footprint",
)
#: Files in bench/ that are not benches.
NOT_BENCHES = frozenset({"rows", "table", "syncd_daemon", "calls_common", "__init__"})
#: How many stderr lines a failed line shows.
TAIL_LINES = 4
#: What ``bench/run`` writes: changes there don't make the measured tree "uncommitted".
UNCOUNTED = (":!README.md", ":!bench/RESULTS.md")
README_START = "<!-- bench:table:start -->"
README_END = "<!-- bench:table:end -->"


@dataclass
class Outcome:
    """What one script gave: its rows, and why it failed (None when it did not)."""

    script: str
    rows: list[Row] = field(default_factory=list)
    failure: str | None = None
    stderr_tail: str = ""
    seconds: float = 0.0


def has_rows_mode(path: Path) -> bool:
    """Whether the script knows ``--rows`` (it says so in its own text)."""
    return "--rows" in path.read_text(encoding="utf-8")


def scripts(only: list[str]) -> list[str]:
    """The benches to run, expected ones first, in a stable order."""
    found = sorted(p.stem for p in BENCH.glob("*.py") if p.stem not in NOT_BENCHES)
    names = list(EXPECTED) + [n for n in found if n not in EXPECTED]
    return [n for n in names if not only or n in only]


def tail(text: str) -> str:
    """The last few non-empty lines of ``text``."""
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join(lines[-TAIL_LINES:])


def skipped(name: str, why: str) -> Outcome:
    """A bench that could not be run at all."""
    print(f"bench/run: {name}: FAILED ({why})", file=sys.stderr, flush=True)
    return Outcome(name, failure=why)


def run_script(name: str, *, full: bool, timeout: float, python: str) -> Outcome:
    """Run one bench in ``--rows`` mode and collect what it printed."""
    path = BENCH / f"{name}.py"
    if not path.exists():
        return skipped(name, "missing: the script does not exist")
    if not has_rows_mode(path):
        return skipped(name, "no --rows mode")
    command = [python, str(path), "--rows", *(["--full"] if full else [])]
    print(f"bench/run: {name} ...", file=sys.stderr, flush=True)
    start = time.monotonic()
    try:
        done = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else exc.stderr or ""
        outcome = Outcome(name, failure=f"timed out after {timeout:.0f} s", stderr_tail=tail(err))
    else:
        out, err = done.stdout, done.stderr
        outcome = Outcome(name, stderr_tail=tail(err))
        if done.returncode != 0:
            outcome.failure = f"exit {done.returncode}"
    outcome.seconds = time.monotonic() - start
    outcome.rows = [row for line in out.splitlines() if (row := parse(line)) is not None]
    if outcome.failure is None and not outcome.rows:
        outcome.failure = "printed no rows"
    print(
        f"bench/run: {name}: {len(outcome.rows)} rows in {outcome.seconds:.0f} s"
        + (f", FAILED ({outcome.failure})" if outcome.failure else ""),
        file=sys.stderr,
        flush=True,
    )
    return outcome


def number(value: float, unit: str) -> str:
    """``value`` with its unit, with as many digits as its size deserves."""
    if value == int(value) and abs(value) < 1e9:
        text = f"{int(value):,}"
    elif abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 1:
        text = f"{value:.2f}"
    else:
        text = f"{value:.3f}"
    return f"{text} {unit}".strip()


def cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return text.replace("|", "\\|").replace("\n", "<br>")


def markdown(outcomes: list[Outcome]) -> str:
    """One table: rows grouped by their group (in first-seen order), failures at the end."""
    header = "| group | what | syncd | baseline | ratio | goal | met | note |"
    lines = [header, "|---|---|---|---|---|---|---|---|"]
    rows = [row for outcome in outcomes for row in outcome.rows]
    groups = list(dict.fromkeys(row.group for row in rows))
    for group in groups:
        for row in (r for r in rows if r.group == group):
            baseline = row.baseline
            if row.baseline_value is not None:
                baseline = f"{baseline}: {number(row.baseline_value, row.unit)}"
            ratio = "" if row.ratio is None else f"{row.ratio:.2f}x"
            if row.ratio is not None and 0 < abs(row.ratio) < 0.01:
                ratio = f"{row.ratio:.1g}x"
            met = {True: "yes", False: "**no**", None: ""}[row.met]
            cells = [
                row.group,
                row.what,
                number(row.syncd, row.unit),
                baseline,
                ratio,
                row.goal,
                met,
                row.note,
            ]
            lines.append("| " + " | ".join(cell(c) for c in cells) + " |")
    for outcome in outcomes:
        if outcome.failure is not None:
            note = outcome.stderr_tail or "(no stderr)"
            cells = [
                "failed",
                f"bench/{outcome.script}.py: {outcome.failure}",
                "",
                "",
                "",
                "",
                "**no**",
                note,
            ]
            lines.append("| " + " | ".join(cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0-1), interpolated; the max for p99 of fewer than 100 samples."""
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    low = int(k)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


class Report:
    """Where a bench puts its rows: printed as JSON at once with ``--rows`` (so a later crash
    keeps them), else gathered and printed as a markdown table for a person at the end."""

    def __init__(self, *, as_rows: bool) -> None:
        self.as_rows = as_rows
        self.rows: list[Row] = []

    def add(self, row: Row) -> None:
        """One measured row."""
        self.rows.append(row)
        if self.as_rows:
            emit(row)

    def close(self) -> None:
        """Print the table (nothing more to do with ``--rows``)."""
        if not self.as_rows:
            print(markdown([Outcome("this bench", rows=self.rows)]), end="")


def commit() -> str:
    """The commit measured, marked when the tree had uncommitted changes (other than the
    files ``bench/run`` itself writes)."""
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *UNCOUNTED],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return f"{head or 'unknown'}{' (with uncommitted changes)' if dirty else ''}"


def machine() -> str:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    return (
        f"{platform.system()} {platform.release()}, {os.cpu_count()} CPUs ({cpu}), "
        f"Python {platform.python_version()}"
    )


def results_document(table: str, *, full: bool, wall: float) -> str:
    """``bench/RESULTS.md``: how, where and on what the table was measured, then the table."""
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        "# Benchmark results\n\n"
        f"Written by `bench/run{' --full' if full else ''}`; do not edit by hand.\n\n"
        f"- when: {when}\n- commit: {commit()}\n- machine: {machine()}\n"
        f"- wall time: {wall:.0f} s\n\n"
        "Each ratio is syncd over its baseline, both measured in the same run.\n\n"
        f"{table}"
    )


def update_readme(table: str, wall: float, full: bool) -> None:
    """Put the table between the README's markers (left alone when they are missing)."""
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(README_START) + ".*?" + re.escape(README_END), re.S)
    if not pattern.search(text):
        print("bench/run: README.md has no bench:table markers; not updated", file=sys.stderr)
        return
    block = (
        f"{README_START}\n"
        f"Latest `bench/run{' --full' if full else ''}` ({commit()}, {wall:.0f} s wall; "
        f"machine and date in [bench/RESULTS.md](bench/RESULTS.md)):\n\n{table}{README_END}"
    )
    readme.write_text(pattern.sub(lambda _: block, text), encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="add the 10,000-secret rows")
    parser.add_argument("--only", nargs="+", default=[], metavar="NAME", help="bench names")
    parser.add_argument(
        "--timeout", type=float, default=None, help="seconds per script (300; 1800 with --full)"
    )
    parser.add_argument(
        "--no-write", action="store_true", help="print only; leave RESULTS.md and README alone"
    )
    args = parser.parse_args()
    timeout = args.timeout or (1800.0 if args.full else 300.0)
    start = time.monotonic()
    outcomes = [
        run_script(name, full=args.full, timeout=timeout, python=sys.executable)
        for name in scripts(args.only)
    ]
    wall = time.monotonic() - start
    table = markdown(outcomes)
    print(table, end="")
    print(f"\nwall time: {wall:.0f} s", file=sys.stderr)
    if not args.no_write:
        (BENCH / "RESULTS.md").write_text(
            results_document(table, full=args.full, wall=wall), encoding="utf-8"
        )
        update_readme(table, wall, args.full)
    return 1 if any(o.failure for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
