"""``syncd status``: what the target holds and what its consumers run, read from the target.

Everything here comes from the target's own objects (version labels and annotations, the
rollout marks, the consumers' references), so any machine that can read the target sees the
same answer as the daemon, with no provider contacted and nothing written. What only a
running daemon knows (a provider failing since when) is on its ``/readyz`` and metrics.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from syncd.config import Config, Secret, SecretSpec
from syncd.engine import Engine
from syncd.errors import TargetError
from syncd.model import Consumer, VersionInfo
from syncd.window import Window


@dataclass
class ConsumerStatus:
    """One consumer of a secret: the versions it references, and whether it has settled."""

    label: str
    versions: list[int]
    current: bool
    unconverged: str | None = None
    missing: bool = False
    #: put back on old versions again after syncd repointed it: left there (GitOps)
    reverted: bool = False


@dataclass
class SecretStatus:
    """One secret as the target has it."""

    name: str
    version: int | None = None
    object_name: str | None = None
    source: dict[str, str] = field(default_factory=dict)
    created_at: str | None = None
    #: every stored version, oldest first: ``{version, object, created_at, rollout}``
    versions: list[dict[str, object]] = field(default_factory=list)
    consumers: list[ConsumerStatus] = field(default_factory=list)
    #: versions whose rollout failed: ``{version, state, at}``
    failed: list[dict[str, object]] = field(default_factory=list)
    #: why consumers are not (yet) on the current version, one reason each
    waiting: list[str] = field(default_factory=list)
    #: ``in sync``, ``rolling out``, ``failed``, ``no version``, ``not in config``
    state: str = "in sync"
    error: str | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "version": self.version,
            "object": self.object_name,
            "source": self.source,
            "created_at": self.created_at,
            "state": self.state,
            "versions": self.versions,
            "consumers": [
                {
                    "consumer": c.label,
                    "versions": c.versions,
                    "current": c.current,
                    "unconverged": c.unconverged,
                    "missing": c.missing,
                    "reverted": c.reverted,
                }
                for c in self.consumers
            ],
            "failed_versions": self.failed,
            "waiting": self.waiting,
            "error": self.error,
        }


def status(config: Config, *, names: list[str] | None = None) -> list[SecretStatus]:
    """Each secret of this installation the target holds or the config declares."""
    engine = Engine(config)
    try:
        target = engine.target
        stored = target.list_versions([s.name for s in config.secrets])
        specs = _specs(config, stored)
        chosen = sorted(n for n in specs if names is None or n in names)
        found: dict[str, list[Consumer] | TargetError] = {}
        if target.has_consumers:
            live = [s.spec for n in chosen if (s := specs[n]) is not None]
            found = target.find_consumers(live, {n: stored.get(n, []) for n in chosen})
        return [
            _one(n, specs[n], stored.get(n, []), found.get(n, []), target.reference_name)
            for n in chosen
        ]
    finally:
        engine.close()


def _specs(config: Config, stored: dict[str, list[VersionInfo]]) -> dict[str, Secret | None]:
    """Each name's config entry: its own, or the ``for_each`` whose name template made it
    (matched on the name, so no source is listed); ``None``: it left the config."""
    declared = {s.name: s for s in config.secrets if s.spec.for_each is None}
    templates = [(_pattern(s.spec), s) for s in config.secrets if s.spec.for_each is not None]
    found: dict[str, Secret | None] = dict(declared)
    for name in stored:
        if name in found:
            continue
        template = next((s for p, s in templates if p.fullmatch(name)), None)
        if template is not None:
            spec = template.spec.model_copy(update={"name": name, "for_each": None})
            found[name] = replace(template, spec=spec, refs={}, source=None)
        else:
            found[name] = None
    return found


def _pattern(spec: SecretSpec[Any]) -> re.Pattern[str]:
    head, _, tail = spec.name.partition("{key}")
    return re.compile(re.escape(head) + ".+" + re.escape(tail))


def _one(
    name: str,
    secret: Secret | None,
    versions: list[VersionInfo],
    consumers: list[Consumer] | TargetError,
    shown_as: Callable[[VersionInfo], str],
) -> SecretStatus:
    versions = sorted(versions, key=lambda v: v.version)
    result = SecretStatus(name)
    result.versions = [
        {
            "version": v.version,
            "object": shown_as(v),
            "created_at": v.created_at or None,
            "rollout": v.rollout.state if v.rollout else None,
        }
        for v in versions
    ]
    result.failed = [
        {"version": v.version, "state": v.rollout.state, "at": v.rollout.at}
        for v in versions
        if v.rollout is not None
    ]
    healthy = [v for v in versions if v.rollout is None]
    current = healthy[-1] if healthy else None
    if current is not None:
        result.version, result.object_name = current.version, shown_as(current)
        result.created_at = current.created_at or None
        result.source = _source(current.source)
    by_object = {v.object_name: v.version for v in versions}
    if isinstance(consumers, TargetError):
        result.error = f"can't list consumers: {consumers}"
        consumers = []
    for consumer in consumers:
        refs = consumer.refs.get(name, frozenset())
        on = sorted(by_object.get(obj, 0) for obj in refs)
        revert = consumer.reverted.get(name)
        result.consumers.append(
            ConsumerStatus(
                consumer.label,
                on,
                current is not None and refs == {current.object_name},
                consumer.unconverged,
                consumer.missing,
                revert is not None
                and revert.again
                and current is not None
                and revert.to == current.object_name,
            )
        )
    result.state, result.waiting = _state(result, secret, versions, current)
    return result


def _state(
    result: SecretStatus,
    secret: Secret | None,
    versions: list[VersionInfo],
    current: VersionInfo | None,
) -> tuple[str, list[str]]:
    waiting = []
    for consumer in result.consumers:
        if consumer.missing:
            waiting.append(f"{consumer.label} doesn't exist (yet)")
        elif consumer.unconverged:
            waiting.append(f"{consumer.label} has not converged: {consumer.unconverged}")
        elif consumer.reverted:
            waiting.append(
                f"{consumer.label} runs {_names(consumer.versions)}: its manifest put it back "
                "again after syncd repointed it, so syncd leaves it there "
                "(docs/kubernetes.md#gitops)"
            )
        elif not consumer.current and consumer.versions:
            waiting.append(f"{consumer.label} runs {_names(consumer.versions)}")
    window: Window | None = secret.window if secret is not None else None
    now = datetime.now().astimezone()
    if window is not None and waiting and not window.is_open(now):
        waiting.append(f"the rotation window opens at {window.next_open(now).isoformat()}")
    if secret is None:
        return "not in config", waiting
    if versions and versions[-1].rollout is not None:
        return "failed", waiting
    if current is None:
        return "no version", waiting
    return ("rolling out" if waiting else "in sync"), waiting


def _names(versions: list[int]) -> str:
    return ", ".join(f"v{v}" if v else "an unmanaged object" for v in versions)


def _source(text: str) -> dict[str, str]:
    """The stored source reference (JSON ``{key: provider:ref@version}``) as a mapping."""
    if not text:
        return {}
    try:
        parsed = json.loads(text)
    except ValueError:
        return {"": text}
    if isinstance(parsed, dict):
        # "~" keys are syncd's own bookkeeping (the template, settings), not sources
        return {str(k): str(v) for k, v in parsed.items() if not str(k).startswith("~")}
    return {"": str(parsed)}
