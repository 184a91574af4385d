"""``syncd retry``: clear a failed version's rollout mark so the next cycle tries it again.

A version whose consumers did not converge is marked on its own object (``Target.mark``:
``rolled-back``, ``held`` or ``rolling-back``) and never tried again; only a new upstream
value makes a new attempt. Once an operator has fixed the cause (a bad readiness probe, a
missing key the app wants), clearing the mark of the secret's newest version makes it the
current version again, and the next cycle repoints the consumers to it and waits, like any
rollout (and marks it again if it fails again).

Only the newest version counts: an older marked version was replaced by a newer value and
clearing it would try nothing. Only this installation's versions are listed and written
(the target's listing and ``mark`` both check the owner). Nothing is read from a provider.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from syncd.config import Config
from syncd.display import shown
from syncd.engine import Engine
from syncd.model import VersionInfo
from syncd.redact import REDACTOR
from syncd.work import describe


@dataclass
class Retried:
    """What ``retry`` did (or, dry, would do) for one named secret."""

    name: str
    #: the newest version, when there is one
    version: int | None = None
    #: its rollout state before (``rolled-back``, ``held``, ``rolling-back``), if marked
    state: str | None = None
    cleared: bool = False
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The document's entry: exactly these fields, under their own names."""
        return asdict(self)


def retry(config: Config, names: list[str], *, dry_run: bool) -> list[Retried]:
    """Clear the mark of each named secret's newest version; one result per name, in order.

    A target that can't be listed raises (``SyncdError``, or the SDK's error), and nothing
    was written then.
    """
    engine = Engine(config)
    target = engine.target
    try:
        with target.exclusive():
            stored = target.list_versions([s.name for s in config.secrets])
            declared = {s.name for s in config.secrets}
            results = []
            for name in dict.fromkeys(names):
                versions = stored.get(name, [])
                if versions:
                    results.append(_one(engine, name, versions, dry_run=dry_run))
                elif name in declared:
                    results.append(Retried(name, error="has no version in the target yet"))
                else:
                    message = f"no secret named {name!r} in {config.path}, nor in the target"
                    results.append(Retried(name, error=message))
            return results
    finally:
        engine.close()


def _one(engine: Engine, name: str, versions: list[VersionInfo], *, dry_run: bool) -> Retried:
    """Clear (``dry_run``: only look at) the mark of the newest of ``versions``."""
    result = Retried(name)
    newest = max(versions, key=lambda v: v.version)
    result.version = newest.version
    if newest.rollout is None:
        result.error = f"v{newest.version} is not marked failed (nothing to clear)"
        return result
    result.state = newest.rollout.state
    if dry_run:
        return result
    try:
        engine.target.mark(newest, None)
    except Exception as exc:  # noqa: BLE001 - this secret fails, the others go on
        result.error = REDACTOR.redact(
            f"can't clear the mark of v{newest.version}: {describe(exc)}"
        )
        return result
    result.cleared = True
    engine.target.record(
        newest,
        "RetryRequested",
        f"the {result.state} mark of version {newest.version} of {shown(name)} was cleared "
        "(syncd retry); the next cycle rolls it out again",
    )
    return result
