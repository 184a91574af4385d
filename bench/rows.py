"""The one shape every bench reports in, so ``bench/run`` can put them in one table.

A bench script run with ``--rows`` prints one JSON object per line on stdout (anything else
it prints goes to stderr), each a ``Row``: what was measured, syncd's number, the baseline
measured in the same run and their ratio, and the goal the row is read against with whether
it was met. Absolute numbers on a shared machine are noisy; the ratio to a baseline taken
minutes apart on the same machine is what a reader can compare between runs.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Row:
    """One line of the table."""

    #: The table section: "Provider calls", "Target requests", "Cold sync", ...
    group: str
    #: What this line measures, e.g. "aws-secrets-manager, 1,000 secrets, no change".
    what: str
    #: syncd's number, in ``unit``.
    syncd: float
    unit: str
    #: What syncd is compared against ("one read per secret", "floor", "python -c pass").
    baseline: str = ""
    #: The baseline's number, in the same unit (None when the row has no baseline).
    baseline_value: float | None = None
    #: The goal in words ("<= 1.1x floor", "0", "< 100 MB"), empty when there is none.
    goal: str = ""
    #: Whether the goal was met (None when there is no goal).
    met: bool | None = None
    #: Anything a reader needs to trust the number (sample size, a known emulator limit).
    note: str = ""

    @property
    def ratio(self) -> float | None:
        """syncd over the baseline (None without one, or when the baseline is zero)."""
        if self.baseline_value is None or self.baseline_value == 0:
            return None
        return self.syncd / self.baseline_value


def emit(row: Row) -> None:
    """Print one row for ``bench/run`` (``--rows`` mode), and flush so a later crash keeps it."""
    print(json.dumps({**asdict(row), "ratio": row.ratio}), flush=True)


def parse(line: str) -> Row | None:
    """A row printed by ``emit``, or None for any other line."""
    try:
        doc = json.loads(line)
    except ValueError:
        return None
    if not isinstance(doc, dict) or "group" not in doc:
        return None
    doc.pop("ratio", None)
    try:
        return Row(**doc)
    except TypeError:
        return None


def note(message: str) -> None:
    """Progress for the person running the bench: stderr, so stdout stays rows only."""
    print(message, file=sys.stderr, flush=True)
