"""Swarm's naming rules, and how a logical secret name becomes a version's object name.

A name may come from a provider (a ``for_each`` key) and is then hostile input: every rule
Swarm applies is applied here first, at ``syncd check`` and again at run time, so a bad name
fails its own secret with a sentence instead of reaching Docker. The rules are swarmkit's
(``validateConfigOrSecretAnnotations``, ``validateAnnotations``), including one that is easy
to miss: Swarm compares secret names ignoring case, so ``API_KEY-v1`` and ``api_key-v1`` are
the same object.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath

#: Swarm secret and config names: at most 64 characters of this pattern.
MAX_NAME = 64
NAME_RE = re.compile(r"[a-zA-Z0-9]+(?:[a-zA-Z0-9-_.]*[a-zA-Z0-9])?")
#: Swarm service names: a DNS label with '_' allowed, at most 63 characters.
MAX_SERVICE_NAME = 63
SERVICE_NAME_RE = re.compile(r"[a-zA-Z0-9](?:[-_]*[a-zA-Z0-9]+)*")
NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
HASH_CHARS = 8
#: An object name depends on its version only through the version's digit count (the
#: shortening of long names leaves room for the digits), so one version per digit count
#: stands for every version up to ten million.
SAMPLE_VERSIONS = tuple(10**n for n in range(7))
#: Where Swarm mounts secrets in a container.
SECRETS_DIR = PurePosixPath("/run/secrets")
DEFAULT_KEY_CONFIG = "syncd-fingerprint-key"


def shown(name: str) -> str:
    """A name as an error message shows it: quoted, escaped, and cut when very long."""
    if len(name) <= 80:
        return repr(name)
    return f"{name[:60]!r}... ({len(name)} characters)"


def valid_object_name(name: str) -> bool:
    """Whether Swarm accepts ``name`` for a secret or config."""
    return len(name) <= MAX_NAME and NAME_RE.fullmatch(name) is not None


def object_name(naming: str, name: str, version: int) -> str:
    """The secret name of one version, at most 64 characters.

    A name that would be longer keeps as much of the logical name as fits, plus a short hash
    of the whole logical name, so two long names that share a prefix never collide.
    """
    full = naming.format(name=name, version=version)
    if len(full) <= MAX_NAME:
        return full
    fixed = len(naming.format(name="", version=version))
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:HASH_CHARS]
    room = MAX_NAME - fixed - HASH_CHARS - 1
    if room < 1:
        raise ValueError(f"naming template {naming!r} leaves no room for the name")
    return naming.format(name=f"{name[:room]}-{digest}", version=version)


def name_problem(naming: str, name: str, reserved: Mapping[str, str] | None = None) -> str | None:
    """Why ``name`` can't become a Swarm secret name under ``naming``, or ``None``.

    Checks the whole logical name, not only what survives the shortening of a long one, so a
    bad character past the cut is refused too. ``reserved`` maps lowercased names this
    installation uses for itself to the reason.
    """
    if not name:
        return "the secret name is empty"
    bad = sorted(set(name) - NAME_CHARS)
    if bad:
        chars = ", ".join(repr(c) for c in bad[:5])
        return (
            f"name {shown(name)} can't be made a Swarm secret name: {chars} not allowed "
            "(use letters, digits, '-', '_' and '.')"
        )
    unshortened = naming.format(name=name, version=1)
    try:
        candidate = object_name(naming, name, 1)
    except ValueError as exc:
        return str(exc)
    if NAME_RE.fullmatch(unshortened) is None or not valid_object_name(candidate):
        return (
            f"name {shown(name)} can't be made a Swarm secret name ({shown(unshortened)}): "
            "a Swarm name starts and ends with a letter or digit"
        )
    reason = (reserved or {}).get(name.lower())
    if reason is not None:
        return f"name {shown(name)} is reserved: {reason}"
    return None


def service_name_problem(name: str) -> str | None:
    """Why ``name`` can't be a Swarm service name (a ``consumers:`` entry), or ``None``."""
    if len(name) > MAX_SERVICE_NAME or SERVICE_NAME_RE.fullmatch(name) is None:
        return (
            f"consumer {shown(name)} is not a valid Swarm service name (letters, digits, '-' "
            f"and '_', starting and ending with a letter or digit, at most {MAX_SERVICE_NAME})"
        )
    return None


def reserved_names(*, key_config: str | None, key_file: str | None) -> dict[str, str]:
    """Logical names this installation keeps for itself, lowercased, with the reason.

    The key config's name, so nobody mistakes a secret for the key; and, when the key file
    is a mounted Swarm secret (``/run/secrets/NAME``), that secret's name: ``consumers: auto``
    treats a service using an unmanaged secret named like a logical secret as its consumer,
    and would repoint syncd's own service away from its key.
    """
    reserved = {
        (key_config or DEFAULT_KEY_CONFIG).lower(): "it is the name of the Swarm config that "
        "holds the fingerprint key (target.key_config)"
    }
    if key_file is not None:
        path = PurePosixPath(key_file)
        if path.parent == SECRETS_DIR:
            reserved[path.name.lower()] = (
                "the fingerprint key is mounted from a Swarm secret of that name (target.key_file)"
            )
    return reserved


def collisions(naming: str, names: Sequence[str]) -> list[tuple[int, str]]:
    """Secrets whose versions would land on one Swarm object, as ``(index, sentence)``.

    Names are compared as Swarm compares them, ignoring case; long names are compared after
    shortening. Names that ``name_problem`` refuses are skipped (reported there).
    """
    first: dict[str, tuple[int, str]] = {}
    problems: list[tuple[int, str]] = []
    for index, name in enumerate(names):
        if name_problem(naming, name) is not None:
            continue
        for version in SAMPLE_VERSIONS:
            candidate = object_name(naming, name, version)
            other, other_name = first.setdefault(candidate.lower(), (index, name))
            if other != index:
                problems.append(
                    (
                        index,
                        f"secrets {shown(other_name)} and {shown(name)} would both be stored "
                        f"as the Swarm secret {shown(candidate)} (Swarm names ignore case); "
                        "rename one",
                    )
                )
                break
    return problems


__all__ = [
    "DEFAULT_KEY_CONFIG",
    "MAX_NAME",
    "NAME_RE",
    "SECRETS_DIR",
    "collisions",
    "name_problem",
    "object_name",
    "reserved_names",
    "service_name_problem",
    "shown",
    "valid_object_name",
]
