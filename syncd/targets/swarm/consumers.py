"""Which services consume which secrets, whether their rollout is stuck, and doctor's checks.

Everything here works on one service listing (``GET /services``), which already carries each
service's spec, previous spec and ``UpdateStatus``: finding consumers, judging convergence
and diagnosing ``*_FILE`` variables cost no request per service.
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any

from syncd.config import Defaults, SecretSpec
from syncd.model import Consumer, Finding, VersionInfo
from syncd.targets.swarm.names import SECRETS_DIR

log = logging.getLogger("syncd.targets.swarm")

#: How long an update may run before a consumer counts as stuck, for a secret without its
#: own ``timeout`` (the target doesn't see ``defaults.timeout``; this is its default).
DEFAULT_STUCK_AFTER: float = Defaults.model_fields["timeout"].default
#: How alike a ``*_FILE`` variable's file name and a mounted file's name must be (difflib's
#: ratio) before doctor suggests the one for the other.
CLOSE_MATCH = 0.8
_MESSAGE_CHARS = 200
_FRACTION = re.compile(r"(\.\d{6})\d+")


def secret_refs(spec: Mapping[str, Any] | None) -> set[str]:
    """The secret names a service spec references."""
    container = ((spec or {}).get("TaskTemplate") or {}).get("ContainerSpec") or {}
    return {ref["SecretName"] for ref in container.get("Secrets") or [] if ref.get("SecretName")}


def _started(status: Mapping[str, Any]) -> datetime | None:
    """``UpdateStatus.StartedAt`` (RFC 3339 with nanoseconds), or ``None``."""
    text = str(status.get("StartedAt") or "")
    try:
        return datetime.fromisoformat(_FRACTION.sub(r"\1", text).replace("Z", "+00:00"))
    except ValueError:
        return None


def rollout_problem(service: Mapping[str, Any], *, stuck_after: float, now: datetime) -> str | None:
    """Why ``service`` has not converged on the spec it runs, from its ``UpdateStatus``.

    ``paused``, ``rollback_started`` and ``rollback_paused`` have not converged (an update
    failed and was stopped, or the old spec is being put back). ``updating`` is a rollout in
    progress and counts only once it has run longer than ``stuck_after`` (the secret's
    convergence timeout): ``start-first`` with a host-mode port, or a placement nobody can
    satisfy, stays ``updating`` forever. ``completed`` and ``rollback_completed`` have
    converged: the service runs its current spec (after a rollback, the old one, whose
    references a cycle then sees as stale). A service never updated has no status.
    """
    status = service.get("UpdateStatus") or {}
    state = str(status.get("State") or "")
    message = " ".join(str(status.get("Message") or "").split())[:_MESSAGE_CHARS]
    detail = f" ({message})" if message else ""
    if state == "paused":
        return f"its update is paused{detail}"
    if state == "rollback_started":
        return f"it is rolling back{detail}"
    if state == "rollback_paused":
        return f"its rollback is paused{detail}"
    if state == "updating":
        started = _started(status)
        if started is None:
            return None
        age = (now - started).total_seconds()
        if age > stuck_after:
            return (
                f"its update has been running for {age:.0f}s, longer than the secret's "
                f"timeout ({stuck_after:g}s)"
            )
    return None


def consumers_of(
    services: Sequence[Mapping[str, Any]],
    specs: Sequence[SecretSpec[Any]],
    versions: Mapping[str, list[VersionInfo]],
    *,
    managed: set[str],
    now: datetime,
) -> dict[str, list[Consumer]]:
    """The consumers of each secret in one service listing.

    A service is a consumer of a secret when its current spec references one of this
    installation's versions of it (``versions``), or an unmanaged secret named exactly like
    the logical secret (a hand-made ``openai_api_key``), which adopts existing setups.
    ``managed`` holds every managed secret's lowercased name, of every installation: a
    secret another installation (or another of this one's secrets) manages is never taken
    for a hand-made one. A service named in ``consumers:`` (ignoring case, as Swarm does) that
    doesn't exist is returned with ``missing=True``.
    """
    interest: dict[str, set[str]] = {}
    for spec in specs:
        objects = {v.object_name for v in versions.get(spec.name, [])}
        if spec.name.lower() not in managed:
            objects.add(spec.name)
        interest[spec.name] = objects
    by_name: dict[str, tuple[Mapping[str, Any], Consumer]] = {}
    for service in services:
        name = str((service.get("Spec") or {}).get("Name", ""))
        referenced = secret_refs(service.get("Spec"))
        refs = {
            secret: frozenset(referenced & objects)
            for secret, objects in interest.items()
            if referenced & objects
        }
        # Swarm service names ignore case, like secret names
        by_name[name.lower()] = (service, Consumer(kind="service", name=name, refs=refs))
    result: dict[str, list[Consumer]] = {}
    for spec in specs:
        after = spec.timeout if spec.timeout is not None else DEFAULT_STUCK_AFTER
        if spec.consumers == "auto":
            users = [by_name[n] for n in sorted(by_name) if spec.name in by_name[n][1].refs]
            result[spec.name] = [_judged(e, stuck_after=after, now=now) for e in users]
            continue
        listed = []
        for name in spec.consumers:
            entry = by_name.get(name.lower())
            if entry is None:
                listed.append(Consumer(kind="service", name=name, missing=True))
                continue
            if spec.name not in entry[1].refs:
                log.warning(
                    "service %s is listed as a consumer of %s but references no version of "
                    "it; add one with docker service update --secret-add",
                    name,
                    spec.name,
                )
            listed.append(_judged(entry, stuck_after=after, now=now))
        result[spec.name] = listed
    return result


def _judged(
    entry: tuple[Mapping[str, Any], Consumer], *, stuck_after: float, now: datetime
) -> Consumer:
    """The consumer with its rollout judged against one secret's timeout."""
    service, consumer = entry
    return replace(consumer, unconverged=rollout_problem(service, stuck_after=stuck_after, now=now))


# ---------------------------------------------------------------------- doctor


def mount_path(ref: Mapping[str, Any]) -> str:
    """Where a service's secret reference appears in the container."""
    name = str((ref.get("File") or {}).get("Name") or ref.get("SecretName", ""))
    return name if name.startswith("/") else f"{SECRETS_DIR}/{name}"


def file_findings(
    services: Sequence[Mapping[str, Any]],
    *,
    ours: Callable[[Mapping[str, Any]], bool],
    logical: set[str],
    current: Mapping[str, str],
) -> list[Finding]:
    """``*_FILE`` variables pointing under /run/secrets at a file no secret provides.

    Only this installation's services are looked at (``ours``), and any service whose
    variable names one of its secrets' file names (``logical``): the one that forgot to
    mount it. ``current`` maps a logical name to its current version's object name, for
    the fix.
    """
    folded = {name.lower() for name in logical}
    findings = []
    for service in services:
        spec = service.get("Spec") or {}
        name = str(spec.get("Name", "?"))
        container = (spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}
        mounted = {mount_path(ref) for ref in container.get("Secrets") or []}
        for entry in container.get("Env") or []:
            var, _, path = str(entry).partition("=")
            if not var.endswith("_FILE") or not path.startswith(f"{SECRETS_DIR}/"):
                continue
            file = PurePosixPath(path).name
            if path in mounted or not (ours(service) or file.lower() in folded):
                continue
            findings.append(_missing_file(name, var, path, mounted, current.get(file)))
    return findings


def _missing_file(
    service: str, var: str, path: str, mounted: set[str], current: str | None
) -> Finding:
    """The finding for one variable; the fix suggests a mounted file only when its *file
    name* is close (the shared /run/secrets/ prefix makes any two paths look alike)."""
    by_file: dict[str, str] = {}
    for mount in sorted(mounted):
        by_file.setdefault(PurePosixPath(mount).name, mount)
    close = difflib.get_close_matches(PurePosixPath(path).name, by_file, n=1, cutoff=CLOSE_MATCH)
    if close:
        fix = f"set {var}={by_file[close[0]]} (a secret is mounted there)"
    else:
        target = path.removeprefix(f"{SECRETS_DIR}/")
        source = current or "<secret>"
        fix = f"docker service update --secret-add source={source},target={target} {service}"
    return Finding(
        subject=f"service/{service}",
        problem=f"{var}={path} but no secret is mounted at {path}",
        fix=fix,
    )
