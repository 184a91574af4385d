"""The ``files`` target: secrets as files in a directory (sidecar mode, CI, local use).

The whole set is swapped atomically the way Kubernetes projected volumes do it::

    out/
      ..2026_11_29_13_45_00.123456/    one generation: every secret, plus ..syncd.json (labels)
      ..data -> ..2026_11_29_13_45_00.123456
      openai_api_key -> ..data/openai_api_key
      ..syncd-key                      the fingerprint HMAC key (0400)

A new generation is written in a temporary folder, fsynced and renamed into place; then a
new ``..data`` symlink is renamed over the old one. ``out/<name>`` never changes, so a reader
sees either the old set or the new one, never a missing or half-written file. Old
generations beyond ``history`` are removed afterwards; leftovers of an interrupted run
(``..tmp-*``) are removed by the next one.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import shutil
import stat
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import Field, WithJsonSchema, field_validator

from syncd.config import SecretSpec, style_key
from syncd.envfile import render_env
from syncd.errors import TargetError
from syncd.fingerprint import KEY_BYTES
from syncd.model import NewVersion, VersionInfo
from syncd.targets.base import Target, TargetConfig, TargetContext, kubernetes_only

DATA_LINK = "..data"
STATE_FILE = "..syncd.json"
KEY_FILE = "..syncd-key"
TMP_PREFIX = "..tmp-"
GEN_PREFIX = ".."
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,254}$")
#: Bundle outputs may be dotfiles (``.env``) but never start with ``..`` (syncd's own names).
_OUTPUT_NAME = re.compile(r"^(?!\.\.)[A-Za-z0-9_.][A-Za-z0-9._-]{0,254}$")


class FilesTargetConfig(TargetConfig):
    """``{type: files, directory: ./out}``."""

    type: Literal["files"]
    directory: str = Field(description="Where the files go, relative to the config file.")
    mode: Annotated[
        int,
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "string", "pattern": "^0?[0-7]{3}$"},
                    {"type": "integer", "minimum": 1, "maximum": 511},
                ]
            }
        ),
    ] = Field(0o400, description="File mode, e.g. '0400' (octal string) or 256.")
    owner: int | str | None = Field(None, description="File owner (uid or user name).")
    group: int | str | None = Field(None, description="File group (gid or group name).")
    env_file: str | None = Field(
        None, description="Also write every value as KEY=value lines to this file (Compose)."
    )
    yaml_file: str | None = Field(
        None, description="Also write every value as a flat YAML mapping (SECRETS_FILE)."
    )
    history: int = Field(1, ge=0, description="Previous generations kept for rollback.")

    @field_validator("mode", mode="before")
    @classmethod
    def _octal(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                return int(value, 8)
            except ValueError as exc:
                raise ValueError(f"mode {value!r} is not an octal number like '0400'") from exc
        return value

    @field_validator("mode")
    @classmethod
    def _mode_range(cls, value: int) -> int:
        if not 0 < value <= 0o777:
            raise ValueError("mode must be between 0001 and 0777")
        return value

    @field_validator("env_file", "yaml_file")
    @classmethod
    def _plain_name(cls, value: str | None) -> str | None:
        if value is not None and not _OUTPUT_NAME.match(value):
            raise ValueError(f"{value!r} must be a plain file name inside the directory")
        return value


def _env_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name).upper()


class FilesTarget(Target[FilesTargetConfig]):
    """Writes each secret as ``directory/<name>`` (a bundle without ``format`` as a folder)."""

    type_name: ClassVar[str] = "files"
    config_model: ClassVar[type[TargetConfig]] = FilesTargetConfig
    has_consumers: ClassVar[bool] = False
    collects_versions: ClassVar[bool] = False

    def __init__(self, config: FilesTargetConfig, *, context: TargetContext) -> None:
        super().__init__(config, context=context)
        self.root = (context.base_dir / os.path.expanduser(config.directory)).absolute()
        self.uid = _resolve_id(config.owner, "user")
        self.gid = _resolve_id(config.group, "group")

    @classmethod
    def validate_spec(cls, spec: SecretSpec[Any], config: TargetConfig) -> list[str]:
        """Names must be plain file names; consumers don't apply to files."""
        assert isinstance(config, FilesTargetConfig)
        problems = []
        if not _NAME.match(spec.name):
            problems.append(
                f"name {spec.name!r} can't be a file name (letters, digits, '.', '_', '-'; "
                "not starting with '.')"
            )
        elif spec.name in (config.env_file, config.yaml_file):
            problems.append(f"name {spec.name!r} collides with the env_file/yaml_file output")
        if spec.data is not None and spec.format is None:
            problems.extend(
                f"data key {key!r} can't be a file name"
                for key in spec.data
                if not _NAME.match(style_key(key, spec.key_style))
            )
        if spec.consumers != "auto":
            problems.append("the files target has no consumers; remove 'consumers'")
        problems.extend(kubernetes_only(spec))
        return problems

    # ------------------------------------------------------------------ key

    def load_key(self) -> bytes | None:
        """Read ``..syncd-key`` if a previous run created it."""
        path = self.root / KEY_FILE
        try:
            key = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise TargetError(f"can't read {path}: {exc.strerror}") from exc
        if len(key) != KEY_BYTES:
            raise TargetError(
                f"{path} is damaged (expected {KEY_BYTES} bytes); remove it to rotate"
            )
        return key

    def store_key(self, key: bytes) -> None:
        """Create ``..syncd-key`` (0400) atomically."""
        self._ensure_root()
        self._write_atomic(self.root / KEY_FILE, key, mode=0o400)
        self.count_write("store_key")

    # ------------------------------------------------------------------ state

    def _state(self) -> dict[str, Any]:
        path = self.root / DATA_LINK / STATE_FILE
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {"secrets": {}}
        except OSError as exc:
            raise TargetError(f"can't read {path}: {exc.strerror}") from exc
        try:
            state: dict[str, Any] = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TargetError(f"{path} is damaged: {exc.msg}") from exc
        return state

    def list_versions(self, names: Sequence[str]) -> dict[str, list[VersionInfo]]:
        """The current generation's labels; also repairs leftovers of an interrupted run."""
        del names
        self.count_read("read_state")
        self._repair()
        result: dict[str, list[VersionInfo]] = {}
        for name, entry in self._state().get("secrets", {}).items():
            result[name] = [
                VersionInfo(
                    secret=name,
                    version=int(entry["version"]),
                    object_name=f"{name}-v{entry['version']}",
                    fingerprint=entry["fingerprint"],
                    keys=dict(entry.get("keys", {})),
                    source=entry.get("source", ""),
                    created_at=entry.get("created_at", ""),
                )
            ]
        return result

    def _repair(self) -> None:
        """Remove temporary folders and links an interrupted run left, and missing links."""
        if not self.root.is_dir():
            return
        for entry in os.scandir(self.root):
            if entry.name.startswith(TMP_PREFIX):
                self.count_write("repair")
                _remove(Path(entry.path))
        data = self.root / DATA_LINK
        if data.is_dir():
            self._link_names(sorted(os.listdir(data)))

    # ------------------------------------------------------------------ write

    def create_versions(self, items: Sequence[NewVersion]) -> dict[str, VersionInfo | TargetError]:
        """Write one new generation holding every secret, then swap ``..data`` to it."""
        try:
            return self._swap(items)
        except OSError as exc:
            error = TargetError(f"can't write {self.root}: {exc.strerror or exc}")
            return {item.secret: error for item in items}

    def delete_version(self, version: VersionInfo) -> bool:
        """Drop a secret from the set (``prune: true``): a new generation without it."""
        try:
            self._swap([], removed=version.secret)
        except OSError as exc:
            raise TargetError(f"can't write {self.root}: {exc.strerror or exc}") from exc
        return True

    def _swap(
        self, items: Sequence[NewVersion], *, removed: str | None = None
    ) -> dict[str, VersionInfo | TargetError]:
        self._ensure_root()
        state = self._state()
        entries: dict[str, Any] = state.setdefault("secrets", {})
        entries.pop(removed or "", None)
        old_gen = self.root / DATA_LINK
        stamp = datetime.now(UTC).strftime("%Y_%m_%d_%H_%M_%S.%f")
        tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=self.root))
        changed = {item.secret: item for item in items}
        # unchanged secrets are carried over from the current generation as hard links:
        # files are never modified in place, so sharing inodes is safe and costs no I/O
        for name in entries:
            if name not in changed:
                src = old_gen / name
                if src.is_dir():
                    shutil.copytree(src, tmp / name, copy_function=self._carry)
                elif src.exists():
                    self._carry(src, tmp / name)
        for item in items:
            self._write_secret(tmp, item)
            entries[item.secret] = {
                "version": item.version,
                "fingerprint": item.fingerprint,
                "keys": item.keys,
                "source": item.source,
                "created_at": item.created_at,
            }
        self._write_bundles(tmp, entries)
        self._write_file(
            tmp / STATE_FILE, json.dumps(state, indent=2, sort_keys=True).encode(), 0o444
        )
        self._chown(tmp)
        os.chmod(tmp, 0o755)  # noqa: S103 - readers traverse it; each file carries its own mode
        _fsync_dir(tmp)
        gen = self.root / f"{GEN_PREFIX}{stamp}"
        os.rename(tmp, gen)
        self._relink(DATA_LINK, gen.name)
        _fsync_dir(self.root)
        names = sorted(p for p in os.listdir(gen) if p != STATE_FILE)
        self._link_names(names)
        self.count_write("swap")
        self._prune_generations(keep=gen.name)
        self._unlink_stale(gen.name)
        return {item.secret: item.stored_as(f"{item.secret}-v{item.version}") for item in items}

    def _write_secret(self, folder: Path, item: NewVersion) -> None:
        if len(item.data) == 1 and item.secret in item.data:
            self._write_file(folder / item.secret, item.data[item.secret], self.config.mode)
            return
        sub = folder / item.secret
        sub.mkdir(mode=0o755)
        for key, value in item.data.items():
            self._write_file(sub / key, value, self.config.mode)

    def _write_bundles(self, folder: Path, entries: dict[str, Any]) -> None:
        if not (self.config.env_file or self.config.yaml_file):
            return
        values: dict[str, str] = {}
        for name in sorted(entries):
            path = folder / name
            files = sorted(path.iterdir()) if path.is_dir() else [path]
            for file in files:
                key = file.name if path.is_dir() else name
                values[key] = file.read_bytes().decode("utf-8", errors="replace")
        if self.config.env_file:
            text = render_env({_env_name(k): v for k, v in values.items()})
            self._write_file(folder / self.config.env_file, text.encode(), self.config.mode)
        if self.config.yaml_file:
            text = yaml.safe_dump(values, default_flow_style=False, sort_keys=True)
            self._write_file(folder / self.config.yaml_file, text.encode(), self.config.mode)

    def _carry(self, src: str | Path, dst: str | Path) -> None:
        """Hard-link an unchanged file into the new generation, fixing its mode if changed."""
        os.link(src, dst)
        if stat.S_IMODE(os.stat(dst).st_mode) != self.config.mode:
            os.chmod(dst, self.config.mode)

    def _write_file(self, path: Path, data: bytes, mode: int) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(path, mode)

    def _write_atomic(self, path: Path, data: bytes, *, mode: int) -> None:
        tmp = path.with_name(f"{TMP_PREFIX}{path.name}")
        tmp.unlink(missing_ok=True)
        self._write_file(tmp, data, mode)
        os.rename(tmp, path)
        _fsync_dir(path.parent)

    def _relink(self, name: str, points_to: str) -> None:
        """Point ``root/name`` at ``points_to`` with one atomic rename of a new symlink."""
        link = self.root / name
        if link.is_symlink() and os.readlink(link) == points_to:
            return
        tmp = self.root / f"{TMP_PREFIX}link-{name}"
        tmp.unlink(missing_ok=True)
        os.symlink(points_to, tmp)
        os.rename(tmp, link)

    def _link_names(self, names: Sequence[str]) -> None:
        for name in names:
            if name == STATE_FILE:
                continue
            link = self.root / name
            if not link.is_symlink():
                if link.exists():
                    raise TargetError(f"{link} exists and is not managed by syncd; move it away")
                self._relink(name, f"{DATA_LINK}/{name}")
                self.count_write("link")

    def _prune_generations(self, *, keep: str) -> None:
        gens = sorted(
            e.name
            for e in os.scandir(self.root)
            if e.is_dir(follow_symlinks=False)
            and e.name.startswith(GEN_PREFIX)
            and not e.name.startswith(TMP_PREFIX)
            and e.name != keep
        )
        doomed = gens[: max(0, len(gens) - self.config.history)]
        for name in doomed:
            _remove(self.root / name)
            self.count_write("prune")

    def _unlink_stale(self, current: str) -> None:
        """Remove ``root/<name>`` links whose target left the current generation."""
        present = set(os.listdir(self.root / current))
        for entry in os.scandir(self.root):
            if entry.is_symlink() and entry.name != DATA_LINK:
                target = os.readlink(entry.path)
                if target.startswith(f"{DATA_LINK}/") and target.split("/", 1)[1] not in present:
                    os.unlink(entry.path)

    def _ensure_root(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def _chown(self, folder: Path) -> None:
        if self.uid is None and self.gid is None:
            return
        uid = -1 if self.uid is None else self.uid
        gid = -1 if self.gid is None else self.gid
        for path in [folder, *folder.rglob("*")]:
            os.chown(path, uid, gid, follow_symlinks=False)


def _resolve_id(value: int | str | None, kind: str) -> int | None:
    if value is None or isinstance(value, int):
        return value
    if value.isdigit():
        return int(value)
    try:
        return pwd.getpwnam(value).pw_uid if kind == "user" else grp.getgrnam(value).gr_gid
    except KeyError as exc:
        raise TargetError(f"files target: unknown {kind} {value!r}") from exc


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
