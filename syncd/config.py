"""The config file: YAML, validated with pydantic, with errors that point at file and line.

Loading happens in two passes so that plugins own their settings. Pass one validates the
shape every config shares (``providers``, ``target``, ``defaults``, ``secrets``) with each
provider block, the target block and each reference kept loose. Pass two validates every
provider block and reference against the model of its plugin, and asks the target whether
it can hold each secret. Every problem from both passes is reported with its path
(``secrets[2].from.provider``) and YAML line, and nothing is written when there is one.

``${VAR}`` and ``${VAR:-default}`` expand environment variables in every string (``$$`` is a
literal ``$``). No field holds a secret value: credentials are given as files or environment
variables read by the providers themselves.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Generic, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from providers.base import Provider, ProviderConfig, Ref
from syncd.errors import ConfigError, ConfigIssue
from syncd.registry import PluginError, provider_class, target_class
from syncd.targets.base import Target, TargetConfig

_DURATION = re.compile(r"(?P<n>\d+(?:\.\d+)?)(?P<unit>ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: object) -> float:
    """``"90s"``, ``"5m"``, ``"1h30m"`` or a number of seconds, as seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 30s, 5m or 1h")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        pos, total = 0, 0.0
        for match in _DURATION.finditer(text):
            if match.start() != pos:
                break
            total += float(match["n"]) * _UNITS[match["unit"]]
            pos = match.end()
        if text and pos == len(text):
            return total
    raise ValueError(f"{value!r} is not a duration (use e.g. 30s, 5m, 1h30m)")


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": r"^(\d+(\.\d+)?(ms|s|m|h|d))+$"},
            ],
            "description": "Seconds, or a duration like 30s, 5m, 1h30m.",
        }
    ),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Defaults(_Strict):
    """Settings every secret inherits unless it sets its own."""

    refresh: Duration = Field(300.0, description="How often to check the source (e.g. 5m).")
    keep: int = Field(3, ge=0, description="Old versions kept for rollback after a swap.")
    timeout: Duration = Field(300.0, description="How long to wait for consumers to converge.")


class DaemonSettings(_Strict):
    """How the long-running daemon schedules, backs off and serves its HTTP endpoints."""

    listen: str | None = Field(
        "127.0.0.1:9102",
        description="host:port for /metrics, /healthz and /readyz (null: no HTTP server).",
    )
    jitter: float = Field(0.1, ge=0, le=0.5, description="Refresh jitter, a fraction of it.")
    backoff_min: Duration = Field(10.0, description="First retry delay after a failure.")
    backoff_max: Duration = Field(600.0, description="Longest retry delay after failures.")
    stall_margin: Duration = Field(
        120.0, description="/healthz fails when a cycle is overdue by more than this."
    )
    ready_grace: Duration = Field(
        300.0, description="/readyz fails when secrets have been failing for longer than this."
    )
    watch_config: bool = Field(True, description="Reload when the config file changes.")


class _LooseBlock(BaseModel):
    """A plugin block in pass one: only ``type`` is checked, the rest waits for pass two."""

    model_config = ConfigDict(extra="allow", frozen=True)

    type: str


class _LooseRef(BaseModel):
    """A reference in pass one: only ``provider`` is checked."""

    model_config = ConfigDict(extra="allow", frozen=True)

    provider: str


RefT = TypeVar("RefT", bound=BaseModel)
ProviderT = TypeVar("ProviderT", bound=BaseModel)
TargetT = TypeVar("TargetT", bound=BaseModel)

Format = Literal["env", "yaml", "json"]
TEMPLATE_KEY = "{key}"
KeyStyle = Literal["as-is", "snake", "upper", "kebab"]


def style_key(key: str, style: KeyStyle) -> str:
    """``OPENAI_API_KEY`` / ``openai_api_key`` / ``openai-api-key`` in the chosen style."""
    if style == "as-is":
        return key
    words = [w for w in re.split(r"[^A-Za-z0-9]+", key) if w]
    if style == "upper":
        return "_".join(words).upper()
    return ("-" if style == "kebab" else "_").join(words).lower()


class SecretSpec(_Strict, Generic[RefT]):
    """One logical secret: a single value (``from``) or a bundle of keys (``data``)."""

    name: str = Field(min_length=1, description="Logical name; versions are <name>-v<N>.")
    from_: RefT | None = Field(None, alias="from", description="Where the single value comes from.")
    data: dict[str, RefT] | None = Field(None, description="A bundle: key -> where it comes from.")
    data_from: RefT | None = Field(
        None,
        description="A bundle of every key a source holds (kubectl --from-env-file).",
    )
    for_each: RefT | None = Field(
        None,
        description="One secret per key a source holds (AWS: per secret 'find' matches); "
        "'name' is a template with {key}.",
    )
    key_style: KeyStyle = Field(
        "as-is",
        description="Rename bundle keys (or the {key} of for_each): snake (openai_api_key), "
        "upper (OPENAI_API_KEY) or kebab (openai-api-key).",
    )
    format: Format | None = Field(
        None, description="Render the bundle into one value (env, yaml or json)."
    )
    refresh: Duration | None = None
    keep: int | None = Field(None, ge=0)
    timeout: Duration | None = None
    consumers: Literal["auto"] | list[str] = Field(
        "auto", description="Who uses this secret: 'auto' (found by reference) or names."
    )
    namespace: str | None = Field(
        None, description="Kubernetes: the namespace (default: the target's namespace)."
    )
    type: str | None = Field(
        None,
        description="Kubernetes Secret type: Opaque (default), kubernetes.io/dockerconfigjson, "
        "kubernetes.io/tls, ...",
    )
    strategy: Literal["versioned", "in-place"] = Field(
        "versioned",
        description="versioned: new immutable <name>-v<N> per change, consumers repointed. "
        "in-place: one stable object updated, consumers restarted (Kubernetes).",
    )

    @model_validator(mode="after")
    def _one_source(self) -> SecretSpec[RefT]:
        given = [
            self.from_ is not None,
            self.data is not None,
            self.data_from is not None,
            self.for_each is not None,
        ]
        if given.count(True) != 1:
            raise ValueError(
                "give exactly one of 'from' (one value), 'data' (a bundle), 'data_from' "
                "(every key of a source as one bundle) or 'for_each' (a secret per key)"
            )
        if (self.for_each is not None) != (TEMPLATE_KEY in self.name):
            raise ValueError(
                f"'for_each' needs a name template with {TEMPLATE_KEY} (and only it does)"
            )
        if self.for_each is not None and self.format is not None:
            raise ValueError("'format' renders a bundle; for_each makes single values")
        if self.data is not None and not self.data:
            raise ValueError("'data' needs at least one key")
        if self.from_ is not None and self.format is not None:
            raise ValueError("'format' renders a bundle; it needs 'data' or 'data_from'")
        if self.from_ is not None and self.key_style != "as-is":
            raise ValueError(
                "'key_style' renames bundle keys; it needs 'data', 'data_from' or 'for_each'"
            )
        return self

    @property
    def is_bundle(self) -> bool:
        """A bundle of keys (``data`` or ``data_from``) rather than one value."""
        return self.from_ is None and self.for_each is None

    def named(self, key: str) -> str:
        """A ``for_each`` secret's name for one source key."""
        return self.name.replace(TEMPLATE_KEY, style_key(key, self.key_style))


class ConfigFile(_Strict, Generic[RefT, ProviderT, TargetT]):
    """The whole config file."""

    extends: str | None = Field(
        None,
        description="A base config this one refines (mappings merge, secrets merge by name).",
    )
    providers: dict[str, ProviderT] = Field(description="Named secret sources.")
    target: TargetT = Field(description="Where secrets are written (one per config).")
    defaults: Defaults = Field(default_factory=Defaults)
    daemon: DaemonSettings = Field(default_factory=DaemonSettings)
    prune: bool = Field(
        False,
        description="Delete managed secrets that are no longer in this config (never on errors).",
    )
    secrets: list[SecretSpec[RefT]] = Field(description="The secrets to sync.")


@dataclass(frozen=True)
class Secret:
    """A validated secret with defaults applied and references resolved to provider models."""

    spec: SecretSpec[Any]
    refs: dict[str, Ref]
    #: for ``data_from`` / ``for_each``: the reference whose keys are listed each cycle
    source: Ref | None
    refresh: float
    keep: int
    timeout: float

    @property
    def name(self) -> str:
        """The logical name."""
        return self.spec.name

    @property
    def single(self) -> bool:
        """Whether this is a one-value secret (``from``) rather than a bundle."""
        return self.spec.from_ is not None


@dataclass(frozen=True)
class Config:
    """A loaded, fully validated config."""

    path: Path
    providers: dict[str, tuple[type[Provider[Any, Any]], ProviderConfig]]
    target: tuple[type[Target[Any]], TargetConfig]
    secrets: list[Secret]
    defaults: Defaults
    daemon: DaemonSettings
    prune: bool
    raw: dict[str, Any] = field(repr=False)

    @property
    def base_dir(self) -> Path:
        """Relative paths in the config are relative to the config file."""
        return self.path.parent


# --------------------------------------------------------------------------- YAML + ${VAR}

#: libyaml's parser when PyYAML was built with it (50x faster on a 10,000-secret config).
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_VAR = re.compile(r"\$(?:\$|\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\})")
Loc = tuple[str | int, ...]


class _Reader:
    """Builds plain data from a YAML node tree, remembering each path's line number."""

    def __init__(self, filename: str, env: dict[str, str]) -> None:
        self.filename = filename
        self.env = env
        #: where each path was written: (file, line); files differ once ``extends`` merged
        self.lines: dict[Loc, tuple[str, int]] = {}
        self.issues: list[ConfigIssue] = []

    def issue(self, loc: Loc, message: str) -> None:
        file, line = self.where(loc)
        self.issues.append(ConfigIssue(file, format_loc(loc), message, line))

    def where(self, loc: Loc) -> tuple[str, int | None]:
        for end in range(len(loc), -1, -1):
            if loc[:end] in self.lines:
                return self.lines[loc[:end]]
        return self.filename, None

    def mark(self, loc: Loc, node: yaml.Node) -> None:
        self.lines[loc] = (self.filename, node.start_mark.line + 1)

    def read(self, node: yaml.Node, loc: Loc, loader: yaml.SafeLoader) -> Any:
        self.mark(loc, node)
        if isinstance(node, yaml.MappingNode):
            result: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key = loader.construct_object(key_node)
                if not isinstance(key, str):
                    self.mark((*loc, str(key)), key_node)
                    self.issue((*loc, str(key)), f"key {key!r} must be a string")
                    continue
                if key in result:
                    self.mark((*loc, key), key_node)
                    self.issue((*loc, key), "duplicate key")
                    continue
                result[key] = self.read(value_node, (*loc, key), loader)
            return result
        if isinstance(node, yaml.SequenceNode):
            return [self.read(child, (*loc, i), loader) for i, child in enumerate(node.value)]
        value = loader.construct_object(node)
        return self.expand(value, loc) if isinstance(value, str) else value

    def expand(self, text: str, loc: Loc) -> str:
        def substitute(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            name, default = match.group(1), match.group(2)
            if name in self.env:
                return self.env[name]
            if default is not None:
                return default
            self.issue(loc, f"environment variable {name} is not set (use ${{{name}:-default}})")
            return ""

        return _VAR.sub(substitute, text)


def format_loc(loc: Loc) -> str:
    """``('secrets', 2, 'from', 'provider')`` -> ``secrets[2].from.provider``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _read_yaml(path: Path, env: dict[str, str]) -> tuple[Any, _Reader]:
    reader = _Reader(str(path), env)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            [ConfigIssue(str(path), "", f"can't read config: {exc.strerror}")]
        ) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([ConfigIssue(str(path), "", "config is not UTF-8 text")]) from exc
    loader = _LOADER(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise ConfigError([ConfigIssue(str(path), "", "config is empty")])
        data = reader.read(node, (), loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([ConfigIssue(str(path), "", f"invalid YAML: {problem}", line)]) from exc
    finally:
        loader.dispose()
    return data, reader


# --------------------------------------------------------------------------- extends

MAX_EXTENDS = 10


def _load_tree(path: Path, env: dict[str, str], chain: tuple[Path, ...]) -> tuple[Any, _Reader]:
    """Read ``path``; when it says ``extends: base.yaml``, merge it over that base.

    Mappings merge key by key, ``secrets`` merge by ``name`` (an overlay entry refines the
    base entry of the same name, new names are appended), any other value is replaced.
    Errors keep pointing at the file and line where each value was written.
    """
    data, reader = _read_yaml(path, env)
    if reader.issues:
        raise ConfigError(reader.issues)
    if not isinstance(data, dict) or "extends" not in data:
        return data, reader
    parent_name = data.pop("extends")
    if not isinstance(parent_name, str) or not parent_name:
        reader.issue(("extends",), "must be the path of a base config file")
        raise ConfigError(reader.issues)
    parent = (path.parent / parent_name).resolve()
    if parent in (*chain, path.resolve()) or len(chain) >= MAX_EXTENDS:
        reader.issue(
            ("extends",), f"{parent} extends itself (loop: {' -> '.join(map(str, chain))})"
        )
        raise ConfigError(reader.issues)
    base, base_reader = _load_tree(parent, env, (*chain, path.resolve()))
    merged = _Reader(str(path), env)
    merged.lines[()] = (str(path), 1)
    result = _merge(
        base, data, base_lines=base_reader.lines, over_lines=reader.lines, loc=(), into=merged
    )
    return result, merged


def _moved(lines: dict[Loc, tuple[str, int]], old: Loc, new: Loc, into: _Reader) -> None:
    """Copy the line of ``old`` and everything under it to ``new``."""
    size = len(old)
    for loc, where in lines.items():
        if loc[:size] == old:
            into.lines[new + loc[size:]] = where


def _merge(
    base: Any,
    over: Any,
    *,
    base_lines: dict[Loc, tuple[str, int]],
    over_lines: dict[Loc, tuple[str, int]],
    loc: Loc,
    into: _Reader,
) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        into.lines[loc] = over_lines.get(loc, base_lines.get(loc, (into.filename, 1)))
        result: dict[str, Any] = {}
        for key in base.keys() | over.keys():
            sub = (*loc, key)
            if key in base and key in over:
                result[key] = _merge(
                    base[key],
                    over[key],
                    base_lines=base_lines,
                    over_lines=over_lines,
                    loc=sub,
                    into=into,
                )
            elif key in base:
                result[key] = base[key]
                _moved(base_lines, sub, sub, into)
            else:
                result[key] = over[key]
                _moved(over_lines, sub, sub, into)
        return {k: result[k] for k in [*base, *(k for k in over if k not in base)]}
    if loc == ("secrets",) and isinstance(base, list) and isinstance(over, list):
        return _merge_secrets(base, over, base_lines=base_lines, over_lines=over_lines, into=into)
    _moved(over_lines, loc, loc, into)
    return over


def _merge_secrets(
    base: list[Any],
    over: list[Any],
    *,
    base_lines: dict[Loc, tuple[str, int]],
    over_lines: dict[Loc, tuple[str, int]],
    into: _Reader,
) -> list[Any]:
    into.lines[("secrets",)] = over_lines.get(("secrets",), (into.filename, 1))
    names = [s.get("name") if isinstance(s, dict) else None for s in base]
    result = list(base)
    for index in range(len(base)):
        _moved(base_lines, ("secrets", index), ("secrets", index), into)
    for index, item in enumerate(over):
        name = item.get("name") if isinstance(item, dict) else None
        if name is not None and name in names:
            at = names.index(name)
            refined = _merge(
                base[at],
                item,
                base_lines=base_lines,
                over_lines=_shifted(over_lines, index, at),
                loc=("secrets", at),
                into=into,
            )
            result[at] = refined
        else:
            _moved(over_lines, ("secrets", index), ("secrets", len(result)), into)
            result.append(item)
    return result


def _shifted(lines: dict[Loc, tuple[str, int]], old: int, new: int) -> dict[Loc, tuple[str, int]]:
    """``lines`` with ``secrets[old]`` renumbered as ``secrets[new]``."""
    prefix = ("secrets", old)
    return {("secrets", new, *loc[2:]) if loc[:2] == prefix else loc: w for loc, w in lines.items()}


# --------------------------------------------------------------------------- validation


def _add_validation_issues(reader: _Reader, exc: ValidationError, prefix: Loc = ()) -> None:
    for err in exc.errors(include_url=False):
        loc = (*prefix, *err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        elif err["type"] == "missing":
            message = "required key is missing"
        reader.issue(loc, message)


def load_config(path: str | Path, *, env: dict[str, str] | None = None) -> Config:
    """Load and fully validate a config file, or raise ``ConfigError`` listing every problem."""
    path = Path(path).absolute()
    data, reader = _load_tree(path, dict(os.environ) if env is None else env, ())
    if not isinstance(data, dict):
        raise ConfigError([ConfigIssue(str(path), "", "config must be a mapping at the top level")])
    try:
        loose = ConfigFile[_LooseRef, _LooseBlock, _LooseBlock].model_validate(data)
    except ValidationError as exc:
        _add_validation_issues(reader, exc)
        raise ConfigError(reader.issues) from exc

    providers = _validate_providers(reader, loose)
    target = _validate_target(reader, loose)
    secrets = _validate_secrets(reader, loose, providers, target)
    if reader.issues:
        raise ConfigError(reader.issues)
    assert target is not None  # an invalid target always adds an issue
    return Config(
        path=path,
        providers=providers,
        target=target,
        secrets=secrets,
        defaults=loose.defaults,
        daemon=loose.daemon,
        prune=loose.prune,
        raw=data,
    )


def _plugin_block(
    reader: _Reader, block: _LooseBlock, loc: Loc, kind: str
) -> tuple[type[Any], Any] | None:
    try:
        cls = provider_class(block.type) if kind == "provider" else target_class(block.type)
    except PluginError as exc:
        reader.issue((*loc, "type"), str(exc))
        return None
    try:
        return cls, cls.config_model.model_validate(block.model_dump())
    except ValidationError as exc:
        _add_validation_issues(reader, exc, loc)
        return None


def _validate_providers(
    reader: _Reader, loose: ConfigFile[_LooseRef, _LooseBlock, _LooseBlock]
) -> dict[str, tuple[type[Provider[Any, Any]], ProviderConfig]]:
    result = {}
    for name, block in loose.providers.items():
        validated = _plugin_block(reader, block, ("providers", name), "provider")
        if validated is not None:
            result[name] = validated
    return result


def _validate_target(
    reader: _Reader, loose: ConfigFile[_LooseRef, _LooseBlock, _LooseBlock]
) -> tuple[type[Target[Any]], TargetConfig] | None:
    return _plugin_block(reader, loose.target, ("target",), "target")


def _validate_secrets(
    reader: _Reader,
    loose: ConfigFile[_LooseRef, _LooseBlock, _LooseBlock],
    providers: dict[str, tuple[type[Provider[Any, Any]], ProviderConfig]],
    target: tuple[type[Target[Any]], TargetConfig] | None,
) -> list[Secret]:
    secrets: list[Secret] = []
    seen: dict[str, int] = {}
    for index, spec in enumerate(loose.secrets):
        loc: Loc = ("secrets", index)
        if spec.name in seen:
            reader.issue(
                (*loc, "name"),
                f"duplicate secret name {spec.name!r} (also secrets[{seen[spec.name]}])",
            )
            continue
        seen[spec.name] = index
        if spec.from_ is not None:
            raw_refs = {spec.name: (spec.from_, (*loc, "from"))}
        elif spec.data_from is not None:
            raw_refs = {"": (spec.data_from, (*loc, "data_from"))}
        elif spec.for_each is not None:
            raw_refs = {"": (spec.for_each, (*loc, "for_each"))}
        else:
            raw_refs = {k: (r, (*loc, "data", k)) for k, r in (spec.data or {}).items()}
        refs: dict[str, Ref] = {}
        for key, (raw, ref_loc) in raw_refs.items():
            ref = _resolve_ref(reader, raw, ref_loc, loose, providers)
            if ref is not None:
                refs[key] = ref
        if target is not None:
            # a for_each template is checked as one generated secret would be
            sample = spec.model_copy(
                update={"name": spec.named("sample"), "for_each": None, "from_": spec.for_each}
            )
            checked = sample if spec.for_each is not None else spec
            for problem in target[0].validate_spec(checked, target[1]):
                reader.issue(loc, problem)
        if len(refs) == len(raw_refs):
            defaults = loose.defaults
            source = refs.pop("", None)
            secrets.append(
                Secret(
                    spec=spec,
                    refs=refs,
                    source=source,
                    refresh=spec.refresh if spec.refresh is not None else defaults.refresh,
                    keep=spec.keep if spec.keep is not None else defaults.keep,
                    timeout=spec.timeout if spec.timeout is not None else defaults.timeout,
                )
            )
    return secrets


def _resolve_ref(
    reader: _Reader,
    raw: _LooseRef,
    loc: Loc,
    loose: ConfigFile[_LooseRef, _LooseBlock, _LooseBlock],
    providers: dict[str, tuple[type[Provider[Any, Any]], ProviderConfig]],
) -> Ref | None:
    if raw.provider not in loose.providers:
        known = ", ".join(sorted(loose.providers)) or "none defined"
        reader.issue((*loc, "provider"), f"unknown provider {raw.provider!r} (known: {known})")
        return None
    if raw.provider not in providers:
        return None  # its block already has an issue
    cls = providers[raw.provider][0]
    try:
        return cls.ref_model.model_validate(raw.model_dump())
    except ValidationError as exc:
        _add_validation_issues(reader, exc, loc)
        return None


# --------------------------------------------------------------------------- JSON Schema


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the config file, covering every provider and target available here."""
    from syncd.registry import available_provider_types, available_target_types

    provider_models = [cls.config_model for cls in available_provider_types().values()]
    target_models = [cls.config_model for cls in available_target_types().values()]
    ref_models = sorted(
        {cls.ref_model for cls in available_provider_types().values()}, key=lambda m: m.__name__
    )
    provider_union: Any = Annotated[_union(provider_models), Field(discriminator="type")]
    target_union: Any = Annotated[_union(target_models), Field(discriminator="type")]
    ref_union: Any = _union(ref_models)
    model: type[BaseModel] = ConfigFile[ref_union, provider_union, target_union]
    schema: dict[str, Any] = model.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "syncd config"
    return schema


def _union(models: Sequence[type[BaseModel]]) -> Any:
    result: Any = models[0]
    for model in models[1:]:
        result = result | model
    return result
