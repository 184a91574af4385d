"""The files target's settings and naming rules, which ``syncd check`` and every cycle share.

Names and keys reach this target from the config and, at run time, from sources (``for_each``
keys, ``data_from`` keys, CHIT labels, AWS ``find`` matches): all of them are hostile input.
The rules here are the complete ones: what passes them is a plain file name that can't escape
the directory, can't take one of syncd's own ``..`` names, and lands on its own line of the
``env_file`` and its own key of the ``yaml_file``.
"""

from __future__ import annotations

import grp
import pwd
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import Field, WithJsonSchema, field_validator, model_validator

from syncd.config import SecretSpec
from syncd.duration import Duration
from syncd.targets.base import TargetConfig

#: syncd's own names in the directory all start with ``..``, which no secret, key or output
#: file may: a source can never overwrite or shadow them.
RESERVED_PREFIX = ".."
DATA_LINK = "..data"
STATE_FILE = "..syncd.json"
KEY_FILE = "..syncd-key"
LOCK_FILE = "..syncd.lock"
TMP_PREFIX = "..tmp-"
#: A generation folder: ``..2026_11_29_13_45_00.123456`` (``-N`` if that name was taken).
GENERATION = re.compile(r"\.\.\d{4}(?:_\d{2}){5}\.\d{6}(?:-\d+)?")
MAX_NAME_BYTES = 255
DEFAULT_MODE = 0o400
DEFAULT_MAX_BYTES = 1024 * 1024
_WRITABLE = 0o022
_MAX_ID = 2**32 - 2

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,254}")
#: env_file/yaml_file may be dotfiles (``.env``) but never start with ``..``
_OUTPUT_NAME = re.compile(r"(?!\.\.)[A-Za-z0-9_.][A-Za-z0-9._-]{0,254}")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MODE = re.compile(r"0?[0-7]{3}")
_SHOWN = 64
_NAME_RULE = "1-255 ASCII letters, digits, '.', '_' or '-', not starting with '.'"


class FilesTargetConfig(TargetConfig):
    """``{type: files, directory: ./out}``."""

    type: Literal["files"]
    directory: str = Field(description="Where the files go, relative to the config file.")
    mode: Annotated[
        int, WithJsonSchema({"type": "string", "pattern": "^0?[0-7]{3}$", "default": "0400"})
    ] = Field(
        DEFAULT_MODE,
        description="File mode as a quoted octal string, e.g. '0440'. Group/other write bits "
        "need allow_writable_mode.",
    )
    allow_writable_mode: bool = Field(
        False, description="Allow a mode with group or other write bits (e.g. '0660')."
    )
    owner: Annotated[
        int | None, WithJsonSchema({"anyOf": [{"type": "integer"}, {"type": "string"}]})
    ] = Field(
        None,
        description="File owner: a uid (kept as is) or a user name resolved when the config loads.",
    )
    group: Annotated[
        int | None, WithJsonSchema({"anyOf": [{"type": "integer"}, {"type": "string"}]})
    ] = Field(
        None,
        description="File group: a gid (kept as is) or a group name resolved when the config "
        "loads.",
    )
    env_file: str | None = Field(
        None, description="Also write every value as KEY=value lines to this file (Compose)."
    )
    yaml_file: str | None = Field(
        None, description="Also write every value as a flat YAML mapping (SECRETS_FILE)."
    )
    history: int = Field(1, ge=0, le=100, description="Previous generations kept for rollback.")
    max_bytes: int = Field(
        DEFAULT_MAX_BYTES,
        ge=1,
        description="The largest secret (all its files together) in bytes; a bigger one fails "
        "alone.",
    )
    lock_timeout: Duration = Field(
        10.0,
        ge=0,
        description="How long a run waits for another syncd writing the same directory.",
    )

    @field_validator("mode", mode="before")
    @classmethod
    def _octal(cls, value: object) -> object:
        """A YAML integer is always a mistake: ``mode: 400`` is decimal 400 (``-rw--w----``)."""
        if isinstance(value, bool) or not isinstance(value, str):
            raise ValueError(_integer_mode(value))
        if not _MODE.fullmatch(value):
            raise ValueError(f"mode {value!r} is not an octal mode like '0400'")
        mode = int(value, 8)
        if mode == 0:
            raise ValueError("mode '0000' makes the files unreadable; use e.g. '0400'")
        return mode

    @field_validator("owner", mode="before")
    @classmethod
    def _user(cls, value: object) -> object:
        return _resolve_id(value, "user")

    @field_validator("group", mode="before")
    @classmethod
    def _group(cls, value: object) -> object:
        return _resolve_id(value, "group")

    @field_validator("env_file", "yaml_file")
    @classmethod
    def _plain_name(cls, value: str | None) -> str | None:
        if value is not None and not _OUTPUT_NAME.fullmatch(value):
            raise ValueError(
                f"{value!r} must be a plain file name inside the directory (letters, digits, "
                "'.', '_', '-'; not starting with '..')"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> FilesTargetConfig:
        if self.mode & _WRITABLE and not self.allow_writable_mode:
            raise ValueError(
                f"mode '{self.mode:04o}' lets group or other users write the secret files; "
                "use e.g. '0440', or set allow_writable_mode: true if that is intended"
            )
        if self.env_file is not None and self.env_file == self.yaml_file:
            raise ValueError(f"env_file and yaml_file are both {self.env_file!r}")
        return self

    @property
    def outputs(self) -> tuple[str, ...]:
        """The aggregate files (``env_file``, ``yaml_file``) this target writes, if any."""
        return tuple(n for n in (self.env_file, self.yaml_file) if n is not None)


def _integer_mode(value: object) -> str:
    """What to write instead of a YAML number: its digits as octal text, and (when the number
    is a valid mode in decimal, as older releases read it) that mode too."""
    text = str(value)
    if _MODE.fullmatch(text):
        hint = f"'0{text}'" if len(text) == 3 else f"'{text}'"
        if isinstance(value, int) and 0 < value <= 0o777 and f"{value:04o}" != hint.strip("'"):
            hint += f" (or '{value:04o}' if {text} was meant in decimal)"
    elif isinstance(value, int) and 0 < value <= 0o777:
        hint = f"'{value:04o}'"
    else:
        hint = "'0400'"
    return f"mode {text} is a YAML number, not octal text: quote it: mode: {hint}"


def _resolve_id(value: object, kind: Literal["user", "group"]) -> int | None:
    """A numeric id as is (it may exist only in the container that reads the files); a name
    resolved here, so an unknown one is a config error rather than a crash at the first write."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"{'owner' if kind == 'user' else 'group'} must be a name or a number")
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, int):
        if not 0 <= value <= _MAX_ID:
            raise ValueError(f"{kind} id {value} is out of range")
        return value
    try:
        return pwd.getpwnam(value).pw_uid if kind == "user" else grp.getgrnam(value).gr_gid
    except KeyError:
        raise ValueError(
            f"unknown {kind} {value!r} on this machine: create it, or give the numeric "
            f"{'uid' if kind == 'user' else 'gid'}"
        ) from None


# --------------------------------------------------------------------------- naming rules


def shown(name: str) -> str:
    """A name for a message: quoted and escaped (a newline can't forge a log line), and cut
    short when long."""
    if len(name) <= _SHOWN:
        return repr(name)
    return f"{name[:32]!r}... ({len(name)} characters)"


def name_problem(name: str, what: str) -> str | None:
    """Why ``name`` can't be a file in the directory (``what`` says which name it is)."""
    if _NAME.fullmatch(name):
        return None
    return f"{what} {shown(name)} can't be a file name here ({_NAME_RULE})"


def env_name(key: str) -> str:
    """The ``env_file`` variable for a file: ``openai-api.key`` -> ``OPENAI_API_KEY``."""
    return re.sub(r"[^A-Za-z0-9_]", "_", key).upper()


def output_keys(spec: SecretSpec[Any]) -> list[str] | None:
    """The files ``spec`` makes (each is one ``env_file`` line and ``yaml_file`` key); ``None``
    while they depend on a source listing (``data_from``, a ``for_each`` template)."""
    if spec.renders_one:
        return [spec.name]
    if spec.data_from is not None or spec.for_each is not None:
        return None
    if spec.data is not None:
        keys = [spec.output_key(key) for key in spec.data]
        return [spec.name] if keys == [spec.name] else keys
    return [spec.name]


def spec_problems(spec: SecretSpec[Any], config: FilesTargetConfig) -> list[str]:
    """Every naming problem of one secret: its name, its keys, and its outputs' lines."""
    problems: list[str] = []
    problem = name_problem(spec.name, "name")
    if problem is not None:
        problems.append(problem)
    elif spec.name in config.outputs:
        problems.append(f"name {shown(spec.name)} collides with the env_file/yaml_file output")
    if spec.data is not None and not spec.renders_one:
        bad = [
            shown(key) if styled == key else f"{shown(key)} (as {shown(styled)})"
            for key, styled in ((k, spec.output_key(k)) for k in spec.data)
            if not _NAME.fullmatch(styled)
        ]
        if bad:
            problems.append(f"data keys {', '.join(bad)} can't be file names ({_NAME_RULE})")
    keys = output_keys(spec)
    if keys is not None and not problems:
        problems.extend(clash_problems({spec.name: keys}, config).get(spec.name, []))
    return problems


def clash_problems(
    keys_of: Mapping[str, Sequence[str]], config: FilesTargetConfig, *, across_only: bool = False
) -> dict[str, list[str]]:
    """Secrets whose files would share an ``env_file`` variable or ``yaml_file`` key (or make
    a variable no env file can hold), by secret name, each sentence naming every side.

    ``across_only`` leaves out what concerns one secret alone (its own ``validate_spec``
    reports that), so a config check says each problem once.
    """
    problems: dict[str, list[str]] = {}
    outputs: list[tuple[str, str, Callable[[str], str]]] = []
    if config.env_file is not None:
        outputs.append(("env_file", config.env_file, env_name))
    if config.yaml_file is not None:
        outputs.append(("yaml_file", config.yaml_file, _same))
    for label, filename, mapped in outputs:
        owners: dict[str, list[tuple[str, str]]] = {}
        for secret, key in _pairs(keys_of):
            owners.setdefault(mapped(key), []).append((secret, key))
        for line, sides in owners.items():
            secrets = list(dict.fromkeys(secret for secret, _ in sides))
            if label == "env_file" and not ENV_NAME.fullmatch(line) and not across_only:
                for secret, key in sides:
                    problems.setdefault(secret, []).append(
                        f"{_side(secret, key)} makes {label} variable {shown(line)}, which "
                        "can't start with a digit; rename it"
                    )
            if len(sides) < 2 or (across_only and len(secrets) < 2):
                continue
            named = [_side(secret, key) for secret, key in sides]
            listed = f"{', '.join(named[:-1])} and {named[-1]}"
            sentence = f"{label} {filename}: {listed} all become {shown(line)}; rename them"
            if len(sides) == 2:
                sentence = f"{label} {filename}: {listed} both become {shown(line)}; rename one"
            for secret in secrets:
                problems.setdefault(secret, []).append(sentence)
    return problems


def _pairs(keys_of: Mapping[str, Sequence[str]]) -> Iterable[tuple[str, str]]:
    for secret in sorted(keys_of):
        for key in sorted(keys_of[secret]):
            yield secret, key


def _side(secret: str, key: str) -> str:
    return f"secret {shown(secret)}" if key == secret else f"key {shown(key)} of {shown(secret)}"


def _same(key: str) -> str:
    return key
