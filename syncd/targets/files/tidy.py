"""Putting the directory in order: the stable links, old generations, crash leftovers.

A swap ends with these steps, and ``repair()`` runs them at the start of every writing cycle,
so a run killed anywhere (between the ``..data`` switch and the cleanup, in the middle of
removing a generation) is finished by the next one, even when nothing changed upstream.
Each step writes only when there is something to fix, and counts that write first.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from collections.abc import Callable

from syncd.errors import TargetError
from syncd.targets.files.fsdir import Dir
from syncd.targets.files.settings import DATA_LINK, GENERATION, STATE_FILE, TMP_PREFIX
from syncd.targets.files.state import parse_state

log = logging.getLogger("syncd.targets.files")

Count = Callable[[str], None]


def relink(root: Dir, name: str, points_to: str, *, reserved: bool = False) -> None:
    """Point ``root/name`` at ``points_to`` with one atomic rename of a new symlink."""
    tmp = f"{TMP_PREFIX}{secrets.token_hex(6)}"
    root.symlink(tmp, points_to, reserved=True)
    root.rename(tmp, name, reserved=reserved)


def generations(root: Dir) -> list[str]:
    """Every generation folder, oldest first (their names are UTC timestamps)."""
    return [
        e.name
        for e in root.entries()
        if GENERATION.fullmatch(e.name) and e.is_dir(follow_symlinks=False)
    ]


def remove_leftovers(root: Dir, current: str | None, count: Count) -> None:
    """Temporary folders, files and links of an interrupted run (here and in the current
    generation, where a state update writes its temporary file)."""
    for name in root.names():
        if name.startswith(TMP_PREFIX):
            count("repair")
            root.remove(name, reserved=True)
    if current is not None:
        with root.sub(current, reserved=True) as folder:
            for name in folder.names():
                if name.startswith(TMP_PREFIX):
                    count("repair")
                    folder.remove(name, reserved=True)


def restore_data_link(root: Dir, instance: str, count: Count) -> None:
    """``..data`` pointing at a generation that is gone: point it at the newest complete one
    of this installation (or remove it when no generation is left), so readers find files
    again. A directory whose newest generation is another installation's is refused."""
    target = root.readlink(DATA_LINK, reserved=True)
    if target is None or not GENERATION.fullmatch(target) or root.lstat(target, reserved=True):
        return
    for candidate in reversed(generations(root)):
        try:
            with root.sub(candidate, reserved=True) as folder:
                raw = folder.read(STATE_FILE, reserved=True)
            state = parse_state(raw, where=root.where(candidate), generation=candidate)
        except (OSError, TargetError):
            continue
        state.check_owner(root, instance)
        log.warning(
            "%s pointed at a missing generation; back to %s", root.where(DATA_LINK), candidate
        )
        count("repair")
        relink(root, DATA_LINK, candidate, reserved=True)
        return
    count("repair")
    root.unlink(DATA_LINK, reserved=True)


def prune_generations(root: Dir, current: str | None, history: int, count: Count) -> None:
    """Keep the current generation and the ``history`` newest before it; remove the rest
    (including a newer one a crash left before it became current)."""
    found = generations(root)
    older = [g for g in found if current is not None and g < current]
    keep = set(older[len(older) - history :] if history else []) | {current}
    for name in found:
        if name not in keep:
            count("prune")
            root.remove(name, reserved=True)


def fix_links(root: Dir, present: set[str], count: Count) -> None:
    """``root/<name>`` -> ``..data/<name>`` for every file of the current generation, and no
    such link for a name that left it. Anything else in the directory is never touched."""
    entries = {e.name: e for e in root.entries() if not e.name.startswith("..")}
    for name in sorted(present):
        entry = entries.get(name)
        if entry is None:
            count("link")
            relink(root, name, f"{DATA_LINK}/{name}")
        elif not _ours(root, entry):
            log.warning("%s is not syncd's link; leaving it alone", root.where(name))
    for name, entry in entries.items():
        if name not in present and _ours(root, entry):
            count("unlink")
            root.unlink(name)


def _ours(root: Dir, entry: os.DirEntry[str]) -> bool:
    return entry.is_symlink() and root.readlink(entry.name) == f"{DATA_LINK}/{entry.name}"


def occupied(root: Dir, name: str) -> bool:
    """Whether ``root/name`` is taken by something that isn't syncd's link for it."""
    info = root.lstat(name)
    if info is None:
        return False
    return not stat.S_ISLNK(info.st_mode) or root.readlink(name) != f"{DATA_LINK}/{name}"
