"""The ledger of a secret's versions (``syncd history NAME``), kept in the target itself.

Each entry says which upstream version (a value-free source reference) became which target
version, when, which consumers were moved to it, how its rollout ended and when its object
was collected. The ledger rides on the secret's newest version object (a Kubernetes
annotation, a Swarm label, the files target's state file): a new version is created carrying
it, and the write side updates the outcome there. Old objects can then be collected without
losing their entries, and every instance and CI job that reads the target reads the same
ledger; nothing is kept locally.

What a target hands back is hostile input: anyone who may write the objects may put garbage
or a huge text there. ``decode`` checks every field, skips what it doesn't understand and says
so in ``Ledger.problem``; it never raises. ``encode`` bounds what syncd writes: the newest
``MAX_ENTRIES`` entries, every text cut to a size, and the whole within ``MAX_BYTES``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal, get_args

from syncd.model import VersionInfo

if TYPE_CHECKING:
    from syncd.config import Config

#: The stored shape; a ledger of another format is ignored (and rewritten by the next swap).
FORMAT = 1
#: Entries kept: the oldest go first.
MAX_ENTRIES = 50
#: The encoded ledger's largest size: well inside a Kubernetes object's 256 KiB of
#: annotations beside syncd's others, and a Swarm label.
MAX_BYTES = 32 * 1024
#: Consumer labels kept per entry (the others are counted in ``consumers_omitted``).
MAX_CONSUMERS = 5
#: The longest source summary and consumer label kept (longer ones are cut).
MAX_TEXT = 240
#: A stored text larger than this is not even parsed.
_MAX_READ = 2 * MAX_BYTES
_STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
_MAX_VERSION = 10**9

#: How a version's swap went: ``rolling-out`` consumers are being moved (or wait for a
#: retry); ``converged`` every consumer moved to it runs it (or it has none);
#: ``waiting-window`` consumers wait for the rotation window; ``failed`` the swap stopped on
#: an error (retried next cycle); the others are the rollout marks (``syncd.model``).
EntryOutcome = Literal[
    "rolling-out", "converged", "waiting-window", "failed", "rolling-back", "rolled-back", "held"
]
OUTCOMES: tuple[str, ...] = get_args(EntryOutcome)
_UNSETTLED = ("rolling-out", "waiting-window", "failed")


@dataclass(frozen=True)
class Entry:
    """One target version in the ledger: never a value, only names, versions and times."""

    version: int
    #: the upstream reference(s) it was made from, ``provider:ref@version``
    source: str
    created_at: str
    outcome: EntryOutcome
    #: when the outcome was recorded
    at: str
    consumers: tuple[str, ...] = ()
    #: consumers moved to it beyond the ``MAX_CONSUMERS`` named (at least this many)
    consumers_omitted: int = 0
    #: when its object was deleted (or syncd first found it gone), ``""`` while it exists
    collected_at: str = ""

    def to_json(self) -> dict[str, object]:
        return {
            "version": self.version,
            "source": self.source,
            "created_at": self.created_at,
            "outcome": self.outcome,
            "at": self.at,
            "consumers": list(self.consumers),
            "consumers_omitted": self.consumers_omitted,
            "collected_at": self.collected_at or None,
        }


@dataclass(frozen=True)
class Ledger:
    """The entries read back, oldest first, and why some (or all) were ignored."""

    entries: tuple[Entry, ...] = ()
    problem: str | None = None
    #: the object it was read from
    object_name: str | None = None


@dataclass(frozen=True)
class _Problem:
    """Why a stored text is no ledger at all."""

    reason: str


def encode(entries: Iterable[Entry]) -> str:
    """The stored text: the newest ``MAX_ENTRIES`` entries, the oldest dropped until it fits
    ``MAX_BYTES``."""
    kept = sorted(entries, key=lambda e: e.version)[-MAX_ENTRIES:]
    while True:
        body = {"format": FORMAT, "entries": [_stored(e) for e in kept]}
        text = json.dumps(body, sort_keys=True, separators=(",", ":"))
        if len(text.encode()) <= MAX_BYTES or not kept:
            return text
        kept = kept[1:]


def _stored(entry: Entry) -> dict[str, object]:
    body: dict[str, object] = {
        "version": entry.version,
        "source": _cut(entry.source),
        "created_at": entry.created_at,
        "outcome": entry.outcome,
        "at": entry.at,
    }
    if entry.consumers:
        body["consumers"] = [_cut(c) for c in entry.consumers[:MAX_CONSUMERS]]
    omitted = entry.consumers_omitted + max(0, len(entry.consumers) - MAX_CONSUMERS)
    if omitted:
        body["consumers_omitted"] = omitted
    if entry.collected_at:
        body["collected_at"] = entry.collected_at
    return body


def _cut(text: str) -> str:
    """``text`` printable (escaped where it isn't: a name a source supplied may hold a
    newline) and at most ``MAX_TEXT`` long, so ``decode`` accepts what ``encode`` wrote."""
    if not text.isprintable():
        text = text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def decode(text: str, *, where: str = "") -> Ledger:
    """The ledger in ``text``; anything not understood is left out and named in ``problem``
    (a text that is no ledger at all gives no entries). Never raises."""
    if not text:
        return Ledger(object_name=where or None)
    found = _parse(text)
    if isinstance(found, _Problem):
        return Ledger(problem=f"{_on(where)}{found.reason}; ignored", object_name=where or None)
    entries, bad = found
    problem = None
    if bad:
        problem = (
            f"{_on(where)}{bad} ledger entr{'y' if bad == 1 else 'ies'} not understood; ignored"
        )
    return Ledger(tuple(entries), problem, where or None)


def _on(where: str) -> str:
    return f"the history on {where}: " if where else "the history: "


def _parse(text: str) -> tuple[list[Entry], int] | _Problem:
    if len(text) > _MAX_READ:
        return _Problem(f"{len(text)} characters, more than syncd writes ({MAX_BYTES} bytes)")
    try:
        body = json.loads(text)
    except (ValueError, RecursionError):
        return _Problem("not JSON")
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        return _Problem(f"not a ledger of format {FORMAT}")
    raw = body.get("entries")
    if not isinstance(raw, list):
        return _Problem("no list of entries")
    by_version: dict[int, Entry] = {}
    bad = 0
    for item in raw:
        entry = _entry(item)
        if entry is None:
            bad += 1
        else:
            by_version[entry.version] = entry
    entries = sorted(by_version.values(), key=lambda e: e.version)
    bad += max(0, len(entries) - MAX_ENTRIES)
    return entries[-MAX_ENTRIES:], bad


def _entry(item: object) -> Entry | None:
    """One stored entry, or ``None`` when any field is not what syncd writes."""
    if not isinstance(item, dict):
        return None
    version = item.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        return None
    if not 1 <= version <= _MAX_VERSION or item.get("outcome") not in OUTCOMES:
        return None
    texts = [item.get(k, "") for k in ("source", "created_at", "at", "collected_at")]
    consumers = item.get("consumers", [])
    omitted = item.get("consumers_omitted", 0)
    if not all(_plain(t) for t in texts) or not isinstance(consumers, list):
        return None
    if len(consumers) > MAX_CONSUMERS or not all(_plain(c) for c in consumers):
        return None
    if not isinstance(omitted, int) or isinstance(omitted, bool) or not 0 <= omitted <= 10**6:
        return None
    source, created, at, collected = (str(t) for t in texts)
    if not all(_STAMP.fullmatch(t) or not t for t in (created, at, collected)):
        return None
    return Entry(
        version=version,
        source=source,
        created_at=created,
        outcome=item["outcome"],
        at=at,
        consumers=tuple(str(c) for c in consumers),
        consumers_omitted=omitted,
        collected_at=collected,
    )


def unsettled(text: str) -> bool:
    """Whether a stored ledger may hold a swap still to be finished (``rolling-out``,
    ``waiting-window``, ``failed``): a cheap look at the text, so a quiet cycle decodes
    only those."""
    return any(f'"outcome":"{outcome}"' in text for outcome in _UNSETTLED)


def _plain(text: object) -> bool:
    """A bounded, printable string (no newline or escape that could forge an output line)."""
    return isinstance(text, str) and len(text) <= MAX_TEXT and text.isprintable()


def latest(versions: Sequence[VersionInfo], shown_as: dict[str, str] | None = None) -> Ledger:
    """The ledger of a secret: the one on its newest version object that carries a readable
    one (an older object keeps the copy it was created with). A newer object whose ledger was
    unreadable is named in ``problem``."""
    problems: list[str] = []
    for version in sorted(versions, key=lambda v: v.version, reverse=True):
        if not version.history:
            continue
        where = (shown_as or {}).get(version.object_name, version.object_name)
        ledger = decode(version.history, where=where)
        if ledger.entries or ledger.problem is None:
            if ledger.problem:
                problems.append(ledger.problem)
            return replace(ledger, problem="; ".join(problems) or None)
        problems.append(ledger.problem)
    return Ledger(problem="; ".join(problems) or None)


def summary(source: str) -> str:
    """A stored source reference (JSON ``{key: provider:ref@version}``) as one short line:
    the distinct references, sorted; syncd's own ``~`` bookkeeping left out."""
    try:
        parts = json.loads(source) if source else {}
    except ValueError:
        return _cut(source)
    if not isinstance(parts, dict):
        return _cut(str(parts))
    refs = sorted({str(v) for k, v in parts.items() if not str(k).startswith("~")})
    text = ", ".join(refs)
    if len(text) <= MAX_TEXT:
        return text
    shown: list[str] = []
    for ref in refs:
        rest = len(refs) - len(shown) - 1
        if len(", ".join([*shown, ref])) + len(f" (+{rest} more)") > MAX_TEXT:
            break
        shown.append(ref)
    return _cut(f"{', '.join(shown)} (+{len(refs) - len(shown)} more)")


def record(
    entries: Sequence[Entry],
    version: VersionInfo,
    outcome: EntryOutcome,
    *,
    at: str,
    consumers: Iterable[str] = (),
) -> list[Entry]:
    """``entries`` with ``version``'s outcome set (its entry added if missing) and
    ``consumers`` added to those moved to it. The time moves only when the outcome changes,
    so recording what is already recorded changes nothing (and writes nothing)."""
    result = list(entries)
    index = next((i for i, e in enumerate(result) if e.version == version.version), None)
    if index is None:
        entry = Entry(
            version=version.version,
            source=summary(version.source),
            created_at=version.created_at if _STAMP.fullmatch(version.created_at) else "",
            outcome=outcome,
            at=at,
        )
        result.append(entry)
        index = len(result) - 1
    old = result[index]
    moved = sorted({*old.consumers, *(_cut(c) for c in consumers)})
    result[index] = replace(
        old,
        outcome=outcome,
        at=old.at if old.outcome == outcome else at,
        consumers=tuple(moved[:MAX_CONSUMERS]),
        # names left out earlier are unknown: at least as many as then, or as now
        consumers_omitted=max(old.consumers_omitted, len(moved) - MAX_CONSUMERS),
    )
    return sorted(result, key=lambda e: e.version)


def collected(entries: Sequence[Entry], versions: Iterable[int], *, at: str) -> list[Entry]:
    """``entries`` with the given versions marked collected (those not marked yet)."""
    gone = set(versions)
    return [
        replace(e, collected_at=at) if e.version in gone and not e.collected_at else e
        for e in entries
    ]


@dataclass(frozen=True)
class SecretHistory:
    """What ``syncd history NAME`` shows: the ledger and where it was read."""

    name: str
    ledger: Ledger
    #: the versions the target holds now (their objects), oldest first
    held: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "object": self.ledger.object_name,
            "held": list(self.held),
            "entries": [e.to_json() for e in self.ledger.entries],
            "problem": self.ledger.problem,
        }


def read_history(config: Config, name: str) -> SecretHistory | None:
    """``name``'s ledger, read from the target alone (no provider is contacted, nothing is
    written); ``None`` when the target holds no version of it."""
    from syncd.engine import Engine

    engine = Engine(config)
    try:
        target = engine.target
        versions = target.list_versions([s.name for s in config.secrets]).get(name)
        if not versions:
            return None
        versions = sorted(versions, key=lambda v: v.version)
        names = {v.object_name: target.reference_name(v) for v in versions}
        return SecretHistory(
            name, latest(versions, names), tuple(names[v.object_name] for v in versions)
        )
    finally:
        engine.close()
