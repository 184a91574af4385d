"""What the commands print: the plan as people read it, and JSON documents for programs.

Every JSON document starts with ``apiVersion`` and ``kind``, like a Kubernetes object, so a
script can tell which shape it holds and a later syncd can change the shape under a new
``apiVersion`` without breaking it. Nothing here ever sees a value: plan items carry names,
versions, key names and messages that were redacted where they were made.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from typing import TYPE_CHECKING, Any

from syncd.display import shown
from syncd.model import ROLLOUT_STATES

if TYPE_CHECKING:
    from syncd.engine import CycleResult
    from syncd.history import SecretHistory
    from syncd.model import PlanItem
    from syncd.status import SecretStatus

#: The schema version of every JSON document syncd prints.
API_VERSION = "syncd.io/v1"

_SYMBOL = {
    "create": "+",
    "update": "~",
    "repoint": ">",
    "delete": "-",
    "import": "*",
    "unchanged": "=",
    "error": "!",
}
#: A swap that didn't simply converge has its own symbol in the plan.
_OUTCOME_SYMBOL = {
    "rolled-back": "<",
    "rolling-back": "<",
    "held": "#",
    "waiting-window": "@",
    "settled": "&",
}


def document(kind: str, body: dict[str, Any]) -> dict[str, Any]:
    """``body`` under the schema header."""
    return {"apiVersion": API_VERSION, "kind": kind, **body}


def print_json(kind: str, body: dict[str, Any]) -> None:
    print(json.dumps(document(kind, body), indent=2))


def print_errors(items: list[PlanItem]) -> None:
    """One ``error:`` line per failed secret on stderr, saying whether it may pass."""
    for item in items:
        if item.error:
            hint = " (transient: retried)" if item.transient else ""
            print(f"error: {shown(item.name)}: {item.error}{hint}", file=sys.stderr)


def print_result(result: CycleResult, *, verbose: bool) -> None:
    """The plan (or what a cycle did): changed and failed secrets, then one summary line;
    ``verbose`` lists the unchanged ones too, so 5,000 secrets don't bury one change."""
    for item in result.items:
        if verbose or _worth_a_line(item):
            print(_line(item, dry_run=result.dry_run))
            for note in item.notes:
                print(f"    note: {note}")
    print(summary(result.items, dry_run=result.dry_run))


def _worth_a_line(item: PlanItem) -> bool:
    return item.action != "unchanged" or bool(item.outcome or item.notes or item.deleted)


def _line(item: PlanItem, *, dry_run: bool) -> str:
    verb = "would " if dry_run else ""
    symbol = _OUTCOME_SYMBOL.get(item.outcome or "", _SYMBOL[item.action])
    line = f"{symbol} {shown(item.name)}: "
    if item.outcome in ROLLOUT_STATES:
        line += f"v{item.failed_version} {item.outcome}" + (
            f" (serving v{item.version})" if item.version else ""
        )
    elif item.action == "error":
        line += "failed" + (f" (serving v{item.version})" if item.version else "")
    else:
        line += "unchanged" if item.action == "unchanged" else f"{verb}{item.action}"
        if item.version is not None:
            line += f" v{item.version}"
    if item.changed_keys and item.action in ("create", "update"):
        line += f" (keys: {', '.join(item.changed_keys)})"
    if item.consumers:
        line += f" (consumers: {', '.join(item.consumers)})"
    if item.deleted:
        line += f" (deleted: {', '.join(item.deleted)})"
    if item.outcome == "waiting-window":
        line += f" (waiting for window until {item.until})"
    elif item.outcome == "rolling-back" and item.until:
        line += f" (retrying at {item.until})"
    return line


def summary(items: list[PlanItem], *, dry_run: bool) -> str:
    """``plan: 3 to create, 1 to update, 0 to delete, 4,996 unchanged`` (or, applied,
    ``done: 3 created, ...``), plus repoints and failures when there are any."""
    counts: Counter[str] = Counter(i.action for i in items)
    words = (
        ("create", "to create", "created"),
        ("update", "to update", "updated"),
        ("delete", "to delete", "deleted"),
    )
    parts = [f"{counts[a]:,} {planned if dry_run else done}" for a, planned, done in words]
    parts.append(f"{counts['unchanged']:,} unchanged")
    if counts["repoint"]:
        parts.append(f"{counts['repoint']:,} {'to repoint' if dry_run else 'repointed'}")
    if counts["import"]:
        parts.append(f"{counts['import']:,} imported")
    if counts["error"]:
        parts.append(f"{counts['error']:,} failed")
    return f"{'plan' if dry_run else 'done'}: {', '.join(parts)}"


def print_status(found: list[SecretStatus]) -> None:
    """One line per secret (name, version, created, state), then what it's about: its
    consumers with the versions they run, failed versions, why consumers wait."""
    if not found:
        print("no secrets")
        return
    width = max(len(shown(s.name)) for s in found)
    for s in found:
        version = f"v{s.version}" if s.version is not None else "-"
        print(f"{shown(s.name):<{width}}  {version:<5} {s.created_at or '-':<20}  {s.state}")
        for key, ref in sorted(s.source.items()):
            print(f"    source: {f'{key}: ' if key else ''}{ref}")
        for consumer in s.consumers:
            runs = ", ".join(f"v{v}" if v else "unmanaged" for v in consumer.versions) or "-"
            print(f"    consumer {consumer.label}: {runs}")
        for failed in s.failed:
            print(f"    v{failed['version']} {failed['state']} at {failed['at']}")
        for reason in s.waiting:
            print(f"    waiting: {reason}")
        if s.error:
            print(f"    error: {s.error}")


def print_history(found: SecretHistory) -> None:
    """A heading naming the secret and the object holding its ledger, then one row per
    version, oldest first: when it was made, how its rollout ended and when, when it was
    collected, the consumers moved to it and the upstream version it was made from."""
    entries = found.ledger.entries
    where = f" (on {shown(found.ledger.object_name)})" if found.ledger.object_name else ""
    print(f"{shown(found.name)}: {len(entries)} version{'s' * (len(entries) != 1)}{where}")
    if not entries:
        print("no history recorded yet (it starts with the next version syncd makes)")
        return
    rows = [("VERSION", "CREATED", "OUTCOME", "AT", "COLLECTED", "CONSUMERS", "SOURCE")]
    for e in entries:
        moved = ", ".join(shown(c) for c in e.consumers) or "-"
        if e.consumers_omitted:
            moved += f" (+{e.consumers_omitted})"
        rows.append(
            (
                f"v{e.version}",
                e.created_at or "-",
                e.outcome,
                e.at or "-",
                e.collected_at or "-",
                moved,
                shown(e.source) if e.source else "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        padded = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)]
        print("  ".join([*padded, row[-1]]))


def result_body(result: CycleResult) -> dict[str, Any]:
    """The body of the ``CycleResult`` / ``Plan`` documents (never a value or fingerprint)."""
    body = result.to_json()
    body["summary"] = summary(result.items, dry_run=result.dry_run).split(": ", 1)[1]
    return body
