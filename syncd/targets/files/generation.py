"""Building one generation: every secret of the set, swapped in with one ``rename``.

Each secret is checked and written on its own. One that can't be (a bad name, too big, its
name taken by a file syncd doesn't manage, a value the ``env_file`` can't hold, a clash with
another secret's ``env_file`` line, a write that fails) fails alone: it keeps its previous
files, carried over like every unchanged secret, and the others land in the new generation.

Unchanged secrets are carried over as hard links: files are never modified in place, so
sharing inodes is safe and costs no I/O.
"""

from __future__ import annotations

import secrets
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import yaml

from syncd import history
from syncd.envfile import parse_env, render_env
from syncd.errors import TargetError
from syncd.model import NewVersion, VersionInfo
from syncd.targets.files.fsdir import Dir
from syncd.targets.files.settings import (
    DATA_LINK,
    ENV_NAME,
    STATE_FILE,
    TMP_PREFIX,
    FilesTargetConfig,
    clash_problems,
    env_name,
    name_problem,
    shown,
)
from syncd.targets.files.state import State, parse_state
from syncd.targets.files.tidy import (
    Count,
    fix_links,
    generations,
    log,
    occupied,
    prune_generations,
    relink,
)

Owner = tuple[int, int] | None


def is_single(item: NewVersion) -> bool:
    """One value is one file (``directory/<name>``); a bundle is a folder of files."""
    return list(item.data) == [item.secret]


def entry_keys(name: str, entry: Mapping[str, Any]) -> list[str]:
    """The files a stored secret has (its data keys), which are its output lines."""
    return [str(k) for k in entry.get("keys", {})] or [name]


@dataclass
class Swap:
    """One new generation for ``items`` on top of ``state`` (without ``removed``)."""

    root: Dir
    state: State
    config: FilesTargetConfig
    owner: Owner
    instance: str
    count: Count
    failed: dict[str, TargetError] = field(default_factory=dict)

    def run(
        self, items: Sequence[NewVersion], *, removed: str | None = None
    ) -> dict[str, VersionInfo | TargetError]:
        """Write what can be written, switch ``..data`` to it, and tidy up."""
        old = {n: e for n, e in self.state.secrets.items() if n != removed}
        planned: dict[str, NewVersion] = {}
        taken = [n for n in self.config.outputs if occupied(self.root, n)]
        if taken:
            error = TargetError(
                f"{self.root.where(taken[0])} exists and is not managed by syncd, so the "
                "env_file/yaml_file can't be put there; move it away"
            )
            return dict.fromkeys((item.secret for item in items), error)
        for item in items:
            problem = self._problem(item)
            if problem is None:
                planned[item.secret] = item
            else:
                self.failed[item.secret] = TargetError(f"{self.root.where(item.secret)}: {problem}")
        self._drop_clashes(old, planned, None)
        dropping = removed is not None and removed in self.state.secrets
        if not planned and not dropping:
            return dict(self.failed)
        self.count("swap")
        tmp_name = f"{TMP_PREFIX}{secrets.token_hex(8)}"
        with self.root.mkdir(tmp_name, owner=self.owner, reserved=True) as tmp:
            written = self._write_all(tmp, planned)
            if len(written) < len(planned):
                self._drop_clashes(old, written, tmp)
            if not written and not dropping:
                tmp.close()
                self.root.remove(tmp_name, reserved=True)
                return dict(self.failed)
            entries = self._carry(tmp, old, written)
            self._mark_collected(entries)
            self._write_outputs(tmp, entries, written)
            state = State(None, self.instance, entries)
            tmp.write_new(STATE_FILE, state.encode(self.instance), mode=0o444, reserved=True)
            tmp.fsync()
            present = set(tmp.names()) - {STATE_FILE}
        generation = self._generation_name()
        self.root.rename(tmp_name, generation, reserved=True)
        relink(self.root, DATA_LINK, generation, reserved=True)
        self.root.fsync()
        results: dict[str, VersionInfo | TargetError] = dict(self.failed)
        try:
            fix_links(self.root, present, self.count)
            prune_generations(self.root, generation, self.config.history, self.count)
        except OSError as exc:
            error = TargetError(
                f"written in {self.root.where(generation)}, but can't finish linking: "
                f"{exc.strerror or exc}; the next run repairs it"
            )
            results.update(dict.fromkeys(written, error))
            return results
        results.update({n: item.stored_as(f"{n}-v{item.version}") for n, item in written.items()})
        return results

    # ------------------------------------------------------------------ checks

    def _problem(self, item: NewVersion) -> str | None:
        """Why ``item`` can't be written (the config-time rules again, for any item)."""
        problem = name_problem(item.secret, "name")
        if problem is not None:
            return problem
        if item.secret in self.config.outputs:
            return "the name collides with the env_file/yaml_file output"
        if not is_single(item):
            for key in item.data:
                problem = name_problem(key, "key")
                if problem is not None:
                    return problem
        size = sum(len(v) for v in item.data.values())
        if size > self.config.max_bytes:
            return f"the value is {size} bytes, more than max_bytes ({self.config.max_bytes})"
        if occupied(self.root, item.secret):
            return "exists and is not managed by syncd; move it away"
        for key, value in sorted(item.data.items()):
            problem = self._output_problem(key, value)
            if problem is not None:
                return f"key {shown(key)}: {problem}" if key != item.secret else problem
        return None

    def _output_problem(self, key: str, value: bytes) -> str | None:
        """Whether the value survives the env_file/yaml_file byte for byte (never saying it)."""
        if not self.config.outputs:
            return None
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            return f"the value is not UTF-8 text, so it can't go into {self._outputs()}"
        if self.config.env_file is not None:
            variable = env_name(key)
            if parse_env(render_env({variable: text})) != {variable: text}:
                return (
                    f"env_file {self.config.env_file} can't hold the value as it is (it would "
                    "read back changed)"
                )
        if self.config.yaml_file is not None:
            dumped = yaml.safe_dump({key: text}, allow_unicode=True)
            if yaml.safe_load(dumped) != {key: text}:
                return (
                    f"yaml_file {self.config.yaml_file} can't hold the value as it is (it would "
                    "read back changed)"
                )
        return None

    def _outputs(self) -> str:
        return " and ".join(
            f"{label} {name}"
            for label, name in (
                ("env_file", self.config.env_file),
                ("yaml_file", self.config.yaml_file),
            )
            if name is not None
        )

    def _drop_clashes(
        self, old: Mapping[str, Any], planned: dict[str, NewVersion], tmp: Dir | None
    ) -> None:
        """Fail every new secret whose output lines clash (with a kept one or each other);
        a failed one keeps its old lines, so repeat until nothing new clashes."""
        if not self.config.outputs:
            return
        while True:
            keys_of = {n: entry_keys(n, e) for n, e in old.items() if n not in planned}
            keys_of.update({n: list(item.data) for n, item in planned.items()})
            problems = clash_problems(keys_of, self.config)
            bad = [n for n in problems if n in planned]
            if not bad:
                return
            for name in bad:
                self.failed[name] = TargetError("; ".join(problems[name]))
                del planned[name]
                if tmp is not None:
                    tmp.remove(name)

    # ------------------------------------------------------------------ writing

    def _write_all(self, tmp: Dir, planned: Mapping[str, NewVersion]) -> dict[str, NewVersion]:
        written: dict[str, NewVersion] = {}
        for name, item in planned.items():
            try:
                self._write(tmp, item)
            except (OSError, TargetError) as exc:
                tmp.remove(name)
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                self.failed[name] = TargetError(f"can't write {self.root.where(name)}: {reason}")
                continue
            written[name] = item
        return written

    def _write(self, tmp: Dir, item: NewVersion) -> None:
        mode = self.config.mode
        if is_single(item):
            tmp.write_new(item.secret, item.data[item.secret], mode=mode, owner=self.owner)
            return
        with tmp.mkdir(item.secret, owner=self.owner) as folder:
            for key, value in sorted(item.data.items()):
                folder.write_new(key, value, mode=mode, owner=self.owner)
            folder.fsync()

    def _carry(
        self, tmp: Dir, old: Mapping[str, Any], written: Mapping[str, NewVersion]
    ) -> dict[str, Any]:
        """The new state: carried entries (their files hard-linked) and the written ones."""
        entries: dict[str, Any] = {}
        carried = [n for n in old if n not in written]
        if carried and self.state.generation is not None:
            with self.root.sub(self.state.generation, reserved=True) as previous:
                for name in carried:
                    if self._carry_one(previous, tmp, name):
                        entries[name] = old[name]
        for name, item in written.items():
            entries[name] = {
                "version": item.version,
                "fingerprint": item.fingerprint,
                "keys": item.keys,
                "source": item.source,
                "created_at": item.created_at,
            }
            if item.history:
                entries[name]["history"] = item.history
            if item.certificates:
                entries[name]["certificates"] = item.certificates
        return entries

    def _mark_collected(self, entries: Mapping[str, Any]) -> None:
        """Mark collected, in each secret's ledger, the versions no generation keeps once the
        new one is current and the old ones beyond ``history`` are pruned (this write prunes
        them). Nothing is marked when a kept generation can't be read."""
        found = generations(self.root)
        kept: dict[str, set[int]] = {}
        for generation in found[len(found) - self.config.history :] if self.config.history else []:
            try:
                with self.root.sub(generation, reserved=True) as folder:
                    raw = folder.read(STATE_FILE, reserved=True)
                state = parse_state(raw, where=generation, generation=generation)
            except (OSError, TargetError):
                return
            for name, entry in state.secrets.items():
                kept.setdefault(name, set()).add(entry["version"])
        at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        for name, entry in entries.items():
            if not entry.get("history"):
                continue
            ledger = history.decode(str(entry["history"]))
            alive = kept.get(name, set()) | {entry["version"]}
            gone = [e.version for e in ledger.entries if e.version not in alive]
            if any(not e.collected_at for e in ledger.entries if e.version in gone):
                entry["history"] = history.encode(history.collected(ledger.entries, gone, at=at))

    def _carry_one(self, previous: Dir, tmp: Dir, name: str) -> bool:
        info = previous.lstat(name)
        if info is None:
            log.warning("%s is missing; it is written again next cycle", previous.where(name))
            return False
        if not stat.S_ISDIR(info.st_mode):
            tmp.link_from(previous, name)
            return True
        with previous.sub(name) as source, tmp.mkdir(name, owner=self.owner) as folder:
            for key in source.names():
                folder.link_from(source, key)
        return True

    def _write_outputs(
        self, tmp: Dir, entries: Mapping[str, Any], written: Mapping[str, NewVersion]
    ) -> None:
        """``env_file`` and ``yaml_file`` from every secret's files. A line that two secrets
        kept from before would share is left out (new versions that clash fail, saying so)."""
        if not self.config.outputs:
            return
        texts: list[tuple[str, str]] = []
        for name in sorted(entries):
            data = written[name].data if name in written else self._stored(tmp, name)
            texts.extend(
                (key, value.decode("utf-8", errors="replace")) for key, value in data.items()
            )
        mode = self.config.mode
        if self.config.env_file is not None:
            variables = _unique(texts, env_name, "env_file")
            body = render_env({k: v for k, v in variables.items() if ENV_NAME.fullmatch(k)})
            tmp.write_new(self.config.env_file, body.encode(), mode=mode, owner=self.owner)
        if self.config.yaml_file is not None:
            body = yaml.safe_dump(
                _unique(texts, str, "yaml_file"), default_flow_style=False, allow_unicode=True
            )
            tmp.write_new(self.config.yaml_file, body.encode(), mode=mode, owner=self.owner)

    @staticmethod
    def _stored(tmp: Dir, name: str) -> dict[str, bytes]:
        info = tmp.lstat(name)
        if info is None or not stat.S_ISDIR(info.st_mode):
            return {name: tmp.read(name)}
        with tmp.sub(name) as folder:
            return {key: folder.read(key) for key in folder.names()}

    def _generation_name(self) -> str:
        stamp = datetime.now(UTC).strftime("..%Y_%m_%d_%H_%M_%S.%f")
        name, n = stamp, 0
        while self.root.lstat(name, reserved=True) is not None:
            n += 1
            name = f"{stamp}-{n}"
        return name


def _unique(
    texts: Sequence[tuple[str, str]], line: Callable[[str], str], label: str
) -> dict[str, str]:
    """``{line: text}`` for the lines exactly one file makes."""
    groups: dict[str, list[str]] = {}
    for key, text in texts:
        groups.setdefault(line(key), []).append(text)
    clashing = sorted(k for k, group in groups.items() if len(group) > 1)
    if clashing:
        log.warning("left out of the %s (clashing): %s", label, ", ".join(clashing))
    return {k: group[0] for k, group in groups.items() if len(group) == 1}
