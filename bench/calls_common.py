"""What the provider-call benches share: the engine they drive, one measured cycle, their rows.

Each ``calls_*`` script seeds N secrets in its backend, runs syncd's engine for a first, a
no-change and a one-change cycle, and compares syncd's calls (from its own call counter: every
HTTP attempt and page, what the provider bills and throttles) with two baselines:

- one read per secret per refresh, what External Secrets Operator does: N calls a cycle;
- the floor: the fewest calls the provider's API allows for "did anything change?" (plus one
  read per changed secret), worked out per provider in its script.

The goal is syncd within ``FLOOR_GOAL`` of the floor. From the same counts the monthly API bill
at a one-minute refresh follows (``cost_rows``).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.rows import Row, emit, note  # noqa: E402
from syncd.config import load_config  # noqa: E402
from syncd.engine import Engine  # noqa: E402

#: syncd's calls may be at most this many times the floor.
FLOOR_GOAL = 1.1
#: Refreshes a month at one a minute: 30 days x 1,440 minutes.
REFRESHES_PER_MONTH = 30 * 1440
#: Secret counts measured: by default, and with ``--full``.
DEFAULT_COUNTS = (1000,)
FULL_COUNTS = (1000, 10_000)
#: The cycles measured, in order (the change is made before the last one).
CYCLES = ("first sync", "no change", "one change")


@dataclass(frozen=True)
class Cycle:
    """One measured engine cycle: calls by operation and wall time."""

    label: str
    ops: dict[str, int]
    seconds: float

    @property
    def total(self) -> int:
        """Every call the cycle made."""
        return sum(self.ops.values())


@dataclass(frozen=True)
class Floor:
    """The fewest calls a cycle needs: ``listing`` pages to see what changed, one read per change.

    ``how`` says where the number comes from (for the row note).
    """

    listing: int
    how: str
    reads_per_change: int = 1

    def calls(self, cycle: str) -> int:
        """The floor of a no-change or one-change cycle."""
        return self.listing + (self.reads_per_change if cycle == "one change" else 0)


@dataclass(frozen=True)
class Price:
    """A provider's list price per 10,000 calls (None: no per-call price), and its source."""

    per_10k: float | None
    source: str


def parse_args(doc: str, extra: Callable[[argparse.ArgumentParser], None] | None = None) -> Any:
    """``--rows`` (print JSON rows), ``--full`` (also 10,000 secrets), ``--count N`` (only N)."""
    parser = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    parser.add_argument("--rows", action="store_true", help="print JSON rows for bench/run")
    parser.add_argument("--full", action="store_true", help="also measure 10,000 secrets")
    parser.add_argument("--count", type=int, help="measure only this many secrets")
    if extra:
        extra(parser)
    args = parser.parse_args()
    args.counts = (args.count,) if args.count else FULL_COUNTS if args.full else DEFAULT_COUNTS
    return args


def engine(workdir: Path, providers: dict[str, Any], secrets: list[dict[str, Any]]) -> Engine:
    """An engine syncing ``secrets`` into a files target under ``workdir``."""
    doc = {
        "providers": providers,
        "target": {"type": "files", "directory": str(workdir / "out")},
        "secrets": secrets,
    }
    path = workdir / "syncd.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return Engine(load_config(path))


def run_cycles(eng: Engine, provider: str, change: Callable[[], None]) -> list[Cycle]:
    """The first, no-change and one-change cycles (``change`` runs before the last)."""
    cycles = []
    for label in CYCLES:
        if label == "one change":
            change()
        before = eng.calls.snapshot().get(provider, {})
        started = time.monotonic()
        result = eng.run_cycle()
        seconds = time.monotonic() - started
        if not result.ok:
            sys.exit(f"{label} cycle failed: {[i.error for i in result.items if i.error][:3]}")
        after = result.calls.get(provider, {})
        ops = {op: n - before.get(op, 0) for op, n in after.items() if n - before.get(op, 0)}
        cycles.append(Cycle(label, ops, seconds))
        note(f"  {label}: {sum(ops.values())} calls in {seconds:.2f}s")
    return cycles


def pages(count: int, size: int) -> int:
    """List pages for ``count`` items at ``size`` a page (at least one: an empty list is a call)."""
    return max(1, math.ceil(count / size))


def ops_text(ops: dict[str, int]) -> str:
    """``ListSecrets 10, GetSecretValue 1``: a cycle's calls by operation."""
    return ", ".join(f"{op} {n}" for op, n in sorted(ops.items())) or "none"


def call_rows(
    provider: str, count: int, cycles: list[Cycle], floor: Floor, limits: str = ""
) -> list[Row]:
    """Two rows per steady cycle: syncd against one read per secret, and against the floor."""
    rows: list[Row] = []
    for cycle in cycles:
        if cycle.label == "first sync":
            continue
        measured = f"{ops_text(cycle.ops)} in {cycle.seconds:.2f}s"
        same = Row(
            group="Provider calls",
            what=f"{provider}, {count:,} secrets, {cycle.label}",
            syncd=cycle.total,
            unit="calls/cycle",
        )
        best = floor.calls(cycle.label)
        rows += [
            replace(
                same,
                baseline="one read per secret (External Secrets Operator)",
                baseline_value=count,
                note=f"syncd: {measured}",
            ),
            replace(
                same,
                baseline="floor",
                baseline_value=best,
                goal=f"<= {FLOOR_GOAL}x floor",
                met=cycle.total <= FLOOR_GOAL * best,
                note="; ".join(
                    part for part in (f"floor: {floor.how}", limits, f"syncd: {measured}") if part
                ),
            ),
        ]
    return rows


def cost_rows(
    provider: str, price: Price, measured: dict[int, int], counts: tuple[int, ...]
) -> list[Row]:
    """Monthly cost at a one-minute refresh for N=1,000 and 10,000, syncd vs one read per secret.

    ``measured`` maps a secret count to syncd's no-change calls per cycle. A count that was not
    measured (10,000 without ``--full``) is projected from the largest measured one: syncd's
    no-change calls are list pages, which grow in proportion to N.
    """
    rows = []
    largest = max(measured)
    for count in counts:
        if count in measured:
            calls, how = measured[count], "measured no-change cycle"
        else:
            calls = math.ceil(measured[largest] * count / largest)
            how = (
                f"projected from the {largest:,}-secret run "
                "(list pages grow with N; --full measures it)"
            )
        month, naive = calls * REFRESHES_PER_MONTH, count * REFRESHES_PER_MONTH
        basis = f"{calls:,} calls/cycle x {REFRESHES_PER_MONTH:,} refreshes/month ({how})"
        if price.per_10k is None:
            syncd, baseline, unit = float(month), float(naive), "calls/month"
        else:
            syncd = round(month * price.per_10k / 10_000, 2)
            baseline = round(naive * price.per_10k / 10_000, 2)
            unit = "USD/month"
        rows.append(
            Row(
                group="Monthly API cost",
                what=f"{provider}, {count:,} secrets, 1-minute refresh",
                syncd=syncd,
                unit=unit,
                baseline="one read per secret (External Secrets Operator)",
                baseline_value=baseline,
                note=f"{price.source}; syncd: {basis}; baseline: {count:,} reads/cycle",
            )
        )
    return rows


def output(rows: list[Row], as_rows: bool) -> None:
    """JSON rows for ``bench/run``, or the same rows as a markdown table for a person."""
    if as_rows:
        for row in rows:
            emit(row)
        return
    print("| group | what | syncd | baseline | ratio | goal | met | note |")
    print("|---|---|---:|---:|---:|---|---|---|")
    for row in rows:
        ratio = f"{row.ratio:.3g}x" if row.ratio is not None else "-"
        base = f"{row.baseline_value:,.6g} ({row.baseline})" if row.baseline else "-"
        met = {True: "yes", False: "NO", None: "-"}[row.met]
        print(
            f"| {row.group} | {row.what} | {row.syncd:,.6g} {row.unit} | {base} | {ratio} "
            f"| {row.goal or '-'} | {met} | {row.note} |"
        )
