"""The ``FilesTarget`` class: the target interface on top of the layout, lock and swap.

Reading (``list_versions``, ``load_key``, ``syncd names``, a dry run) never writes: it only
reads links and the state file. Every write (a swap, the key, a source update, repair) holds
the directory lock, taken for the whole cycle by ``exclusive()`` or, for a write outside a
cycle, for that write alone.
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

from syncd.config import SecretSpec
from syncd.errors import TargetError
from syncd.fingerprint import KEY_BYTES
from syncd.model import NewVersion, VersionInfo
from syncd.targets.base import Target, TargetConfig, TargetContext, kubernetes_only
from syncd.targets.files.fsdir import Dir
from syncd.targets.files.generation import Owner, Swap
from syncd.targets.files.lock import DirectoryLock
from syncd.targets.files.settings import (
    DEFAULT_MODE,
    KEY_FILE,
    STATE_FILE,
    TMP_PREFIX,
    FilesTargetConfig,
    clash_problems,
    output_keys,
    shown,
    spec_problems,
)
from syncd.targets.files.state import State, read_state
from syncd.targets.files.tidy import (
    fix_links,
    log,
    prune_generations,
    remove_leftovers,
    restore_data_link,
)


class FilesTarget(Target[FilesTargetConfig]):
    """Writes each secret as ``directory/<name>`` (a bundle without ``format`` as a folder)."""

    type_name: ClassVar[str] = "files"
    config_model: ClassVar[type[TargetConfig]] = FilesTargetConfig
    has_consumers: ClassVar[bool] = False
    collects_versions: ClassVar[bool] = False

    def __init__(self, config: FilesTargetConfig, *, context: TargetContext) -> None:
        super().__init__(config, context=context)
        self.root = (context.base_dir / os.path.expanduser(config.directory)).absolute()
        self._held: Dir | None = None
        #: secret -> (version, fingerprint, source): references to store (``update_source``)
        self._sources: dict[str, tuple[int, str, str]] = {}

    # ------------------------------------------------------------------ rules

    @classmethod
    def validate_spec(cls, spec: SecretSpec[Any], config: TargetConfig) -> list[str]:
        """Names and keys must be plain file names that can't take syncd's own ``..`` names,
        and land on their own ``env_file``/``yaml_file`` lines; consumers don't apply."""
        assert isinstance(config, FilesTargetConfig)
        problems = spec_problems(spec, config)
        if spec.consumers != "auto":
            problems.append("the files target has no consumers; remove 'consumers'")
        problems.extend(kubernetes_only(spec))
        return problems

    @classmethod
    def validate_set(
        cls, specs: Sequence[SecretSpec[Any]], config: TargetConfig
    ) -> list[tuple[int, str]]:
        """Two secrets whose files would share an ``env_file`` variable or ``yaml_file`` key."""
        assert isinstance(config, FilesTargetConfig)
        index_of: dict[str, int] = {}
        keys_of: dict[str, list[str]] = {}
        for index, spec in enumerate(specs):
            keys = output_keys(spec)
            if keys is not None:
                index_of[spec.name], keys_of[spec.name] = index, keys
        problems = clash_problems(keys_of, config, across_only=True)
        return [(index_of[name], sentence) for name in problems for sentence in problems[name]]

    def prepare(self) -> None:
        """The directory must be a writable folder (or creatable), and an owner or group
        other than syncd's own needs root: found now rather than at the first write."""
        if self.root.exists() and not self.root.is_dir():
            raise TargetError(f"{self.root} exists and is not a directory")
        if self.root.is_dir() and not os.access(self.root, os.W_OK | os.X_OK):
            raise TargetError(f"{self.root} is not writable by uid {os.geteuid()}")
        if os.geteuid() == 0:
            return
        if self.config.owner is not None and self.config.owner != os.geteuid():
            raise TargetError(
                f"owner {self.config.owner}: only root can give files away (syncd runs as uid "
                f"{os.geteuid()}); drop 'owner' or run syncd as root"
            )
        groups = {os.getegid(), *os.getgroups()}
        if self.config.group is not None and self.config.group not in groups:
            raise TargetError(
                f"group {self.config.group}: syncd (uid {os.geteuid()}) is not a member; "
                "drop 'group' or add syncd's user to it"
            )

    def max_value_bytes(self) -> int:
        """The configured ``max_bytes`` (a bigger secret fails its write)."""
        return self.config.max_bytes

    def stored_settings(self, spec: SecretSpec[Any]) -> dict[str, str]:
        """How the files are stored, besides their bytes: editing one writes a new version."""
        del spec
        settings: dict[str, str] = {}
        if self.config.mode != DEFAULT_MODE:
            settings["mode"] = f"{self.config.mode:04o}"
        if self.config.owner is not None:
            settings["owner"] = str(self.config.owner)
        if self.config.group is not None:
            settings["group"] = str(self.config.group)
        if self.config.env_file is not None:
            settings["env_file"] = self.config.env_file
        if self.config.yaml_file is not None:
            settings["yaml_file"] = self.config.yaml_file
        return settings

    # ------------------------------------------------------------------ holding the directory

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the directory lock for a writing cycle (see ``lock``).

        A directory that doesn't exist yet holds nothing to protect: it isn't created just to
        be locked (a cycle that ends up writing nothing leaves no trace), and each write of
        this cycle then takes the lock for itself.
        """
        if self._held is not None or not self.root.is_dir():
            yield
            return
        with self._locked(create=False) as root:
            self._held = root
            try:
                yield
                self._flush_sources(root)
            finally:
                self._held = None
                self._sources.clear()

    def _flush_sources(self, root: Dir) -> None:
        """Store the source references collected during the cycle that no swap stored. A
        failure only costs a read next cycle, so it is logged, never turned into an error."""
        if not self._sources:
            return
        try:
            self._store_sources(root)
        except (OSError, TargetError) as exc:
            log.warning("can't record new source versions in %s: %s", self.root, exc)

    @contextmanager
    def _writing(self) -> Iterator[Dir]:
        """The open directory, under the lock: the cycle's, or one taken for this write."""
        if self._held is not None:
            yield self._held
            return
        with self._locked(create=True) as root:
            yield root

    @contextmanager
    def _locked(self, *, create: bool) -> Iterator[Dir]:
        try:
            root = Dir.open(self.root)
            if root is None and create:
                self.count_write("mkdir")
                self.root.mkdir(parents=True, exist_ok=True)
                root = Dir.open(self.root)
        except OSError as exc:
            raise _os_error("open", self.root, exc) from exc
        if root is None:
            raise TargetError(f"{self.root} vanished while syncd was opening it")
        with root:
            try:
                lock = DirectoryLock.acquire(
                    root,
                    timeout=self.config.lock_timeout,
                    count_create=lambda: self.count_write("create_lock"),
                )
            except OSError as exc:
                raise _os_error("lock", self.root, exc) from exc
            try:
                yield root
            finally:
                lock.release()

    def repair(self) -> None:
        """Finish what an interrupted run left: temporary files, a ``..data`` pointing at a
        removed generation, generations beyond ``history``, missing or stale links."""
        if not self.root.is_dir():
            return
        try:
            self._repair()
        except OSError as exc:
            raise _os_error("repair", self.root, exc) from exc

    def _repair(self) -> None:
        with self._writing() as root:
            restore_data_link(root, self.context.instance, self.count_write)
            state = read_state(root)
            state.check_owner(root, self.context.instance)
            remove_leftovers(root, state.generation, self.count_write)
            prune_generations(root, state.generation, self.config.history, self.count_write)
            present: set[str] = set()
            if state.generation is not None:
                with root.sub(state.generation, reserved=True) as current:
                    present = set(current.names()) - {STATE_FILE}
            fix_links(root, present, self.count_write)

    # ------------------------------------------------------------------ key

    def load_key(self) -> bytes | None:
        """Read ``..syncd-key`` if a previous run created it (never writes)."""
        try:
            root = Dir.open(self.root)
        except OSError as exc:
            raise _os_error("read", self.root, exc) from exc
        if root is None:
            return None
        with root:
            try:
                key = root.read(KEY_FILE, reserved=True)
            except FileNotFoundError:
                return None
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise TargetError(
                        f"{root.where(KEY_FILE)} is a symlink; syncd only uses a key file it "
                        "created itself: remove the link (or put the real file there)"
                    ) from None
                raise TargetError(f"can't read {root.where(KEY_FILE)}: {exc.strerror}") from exc
        if len(key) != KEY_BYTES:
            raise TargetError(
                f"{root.where(KEY_FILE)} is {len(key)} bytes, not {KEY_BYTES}: it is damaged. "
                "Restore it from a backup, or remove it: the next run then creates a new key "
                "and writes every secret once more as a new version (same values)"
            )
        return key

    def store_key(self, key: bytes) -> None:
        """Create ``..syncd-key`` (0400) atomically, never replacing one that exists."""
        with self._writing() as root:
            self.count_write("store_key")
            tmp = f"{TMP_PREFIX}{secrets.token_hex(8)}"
            root.write_new(tmp, key, mode=0o400, reserved=True)
            try:
                created = root.link_new(KEY_FILE, tmp)
            finally:
                root.unlink(tmp, reserved=True)
            root.fsync()
        if not created:
            raise TargetError(
                f"{root.where(KEY_FILE)} appeared while this run created one; run again"
            )

    # ------------------------------------------------------------------ state

    def list_versions(self, names: Sequence[str]) -> dict[str, list[VersionInfo]]:
        """The current generation's labels (read only: leftovers wait for ``repair``)."""
        del names
        self.count_read("read_state")
        try:
            root = Dir.open(self.root)
            if root is None:
                return {}
            with root:
                state = read_state(root)
        except OSError as exc:
            raise _os_error("read", self.root, exc) from exc
        state.check_owner(root, self.context.instance)
        return state.versions()

    # ------------------------------------------------------------------ write

    def create_versions(self, items: Sequence[NewVersion]) -> dict[str, VersionInfo | TargetError]:
        """One new generation holding every secret that can be written; each other fails
        alone and keeps its previous files."""
        try:
            with self._writing() as root:
                return self._swap(root).run(items)
        except (OSError, TargetError) as exc:
            error = exc if isinstance(exc, TargetError) else _os_error("write", self.root, exc)
            return {item.secret: error for item in items}
        finally:
            if self.created is not None:
                self.created(len(items))

    def delete_version(self, version: VersionInfo) -> bool:
        """Drop a secret from the set (``prune: true``): a new generation without it."""
        try:
            with self._writing() as root:
                self._swap(root).run([], removed=version.secret)
        except OSError as exc:
            raise _os_error("write", self.root, exc) from exc
        return True

    def update_source(self, version: VersionInfo, source: str) -> bool:
        """Record a new source reference for an unchanged version, without a new generation.

        Inside a writing cycle the references are collected and stored together, in the
        cycle's swap or (no swap) in one atomic rewrite of the state file when the cycle ends:
        one source file moving gives every secret from it a new reference, and one state
        rewrite per secret would make that cycle quadratic. Outside a cycle the state file is
        rewritten at once.
        """
        self._sources[version.secret] = (version.version, version.fingerprint, source)
        if self._held is None:
            try:
                with self._writing() as root:
                    return self._store_sources(root)
            except OSError as exc:
                raise _os_error("write", self.root, exc) from exc
        return True

    def _store_sources(self, root: Dir) -> bool:
        """Rewrite the current state file with the collected source references (atomically);
        whether any still applied."""
        state = read_state(root)
        state.check_owner(root, self.context.instance)
        matched, changed = self._apply_sources(state)
        if changed and state.generation is not None:
            self.count_write("update_source")
            with root.sub(state.generation, reserved=True) as current:
                current.replace(
                    STATE_FILE,
                    state.encode(self.context.instance),
                    mode=0o444,
                    tmp=f"{TMP_PREFIX}{secrets.token_hex(8)}",
                )
        return matched

    def _apply_sources(self, state: State) -> tuple[bool, bool]:
        """Put the collected references into ``state`` where the version is still the one
        they were meant for, and forget them; whether any applied, and whether any changed."""
        matched = changed = False
        for name, (version, fingerprint, source) in self._sources.items():
            entry = state.secrets.get(name)
            if entry is None or (entry["version"], entry["fingerprint"]) != (version, fingerprint):
                continue
            matched = True
            if entry.get("source") != source:
                entry["source"] = source
                changed = True
        self._sources.clear()
        return matched, changed

    def _swap(self, root: Dir) -> Swap:
        state = read_state(root)
        state.check_owner(root, self.context.instance)
        self._apply_sources(state)
        return Swap(
            root=root,
            state=state,
            config=self.config,
            owner=self._owner(),
            instance=self.context.instance,
            count=self.count_write,
        )

    def _owner(self) -> Owner:
        if self.config.owner is None and self.config.group is None:
            return None
        uid = -1 if self.config.owner is None else self.config.owner
        gid = -1 if self.config.group is None else self.config.group
        return uid, gid


def _os_error(what: str, root: os.PathLike[str], exc: OSError) -> TargetError:
    """An OS error as a sentence naming the directory (and the entry, when there is one)."""
    entry = f" ({shown(os.path.basename(exc.filename))})" if isinstance(exc.filename, str) else ""
    return TargetError(f"can't {what} {root}{entry}: {exc.strerror or exc}")
