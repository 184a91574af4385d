"""The config file: YAML, validated with pydantic, with errors that point at file and line.

Loading happens in two passes so that plugins own their settings. Pass one validates the
shape every config shares (``providers``, ``target``, ``defaults``, ``secrets``) with each
provider block, the target block and each reference kept loose. Pass two validates every
provider block and reference against the model of its plugin, and asks the target whether
it can hold each secret (and the whole set). Every problem from both passes is reported with
its path (``secrets[2].from.provider``) and YAML line, and nothing is written when there is
one. Reading the YAML itself (strict scalars, no tags, bounded aliases, ``${VAR}``,
``extends``) is ``syncd.config_yaml``'s job.

No field holds a secret value: credentials are given as files or environment variables read
by the providers themselves.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from providers.base import Provider, ProviderConfig, Ref
from syncd.config_keys import did_you_mean
from syncd.config_yaml import Loc, Reader, format_loc, load_tree
from syncd.duration import Duration, Share
from syncd.errors import ConfigError, ConfigIssue
from syncd.registry import PluginError, provider_class, target_class
from syncd.targets.base import DEFAULT_INSTANCE, Target, TargetConfig
from syncd.template import SecretTemplate, TemplateError, compile_template, name_lines
from syncd.window import Window

_INSTANCE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
MAX_INSTANCE = 40


OnFailure = Literal["rollback", "hold"]
#: ``settle`` for a secret in a ``group`` that says nothing else.
GROUP_SETTLE = 10.0
#: No secret waits longer than this for related edits (a cycle holds the target meanwhile).
MAX_SETTLE = 300.0


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Defaults(_Strict):
    """Settings every secret inherits unless it sets its own."""

    refresh: Duration = Field(
        300.0, ge=1, description="How often to check the source (e.g. 5m; at least 1s)."
    )
    keep: int = Field(3, ge=0, le=1000, description="Old versions kept for rollback after a swap.")
    timeout: Duration = Field(
        300.0, gt=0, description="How long to wait for consumers to converge."
    )
    max_shrink: Share = Field(
        0.5,
        description="for_each/data_from: the largest share of its keys a source may lose in one "
        "cycle; a listing that lost more (or came back empty) is an error and nothing is pruned. "
        "1 allows any shrink, even to nothing.",
    )
    on_failure: OnFailure = Field(
        "rollback",
        description="When consumers don't converge on a new version within 'timeout': "
        "rollback (repoint them to the previous version and never try the failed one again) "
        "or hold (leave them as they are and report).",
    )
    window: Window | None = Field(
        None,
        description="When consumers may be restarted; outside it new versions are created "
        "but consumers are not repointed (default: always).",
    )
    settle: Duration | None = Field(
        None,
        le=MAX_SETTLE,
        description="How long to wait after a secret's first upstream change for related "
        "edits before swapping (default: 0, or 10s for a secret in a group).",
    )


class TriggerSettings(_Strict):
    """``daemon.trigger``: ``POST /sync`` on the listener starts a cycle now.

    The token lives in a file, never in the config (no config field holds a secret), and
    the file is read on every request so a rotated token counts at once.
    """

    token_file: str = Field(
        min_length=1,
        description="File holding the bearer token callers send (relative to the config "
        "file). Read on every request; empty or unreadable: every request answers 503.",
    )


class DaemonSettings(_Strict):
    """How the long-running daemon schedules, backs off and serves its HTTP endpoints."""

    listen: str | None = Field(
        "127.0.0.1:9102",
        description="host:port for /metrics, /healthz and /readyz (null or '': no HTTP server).",
    )
    jitter: float = Field(
        0.1, ge=0, le=0.5, allow_inf_nan=False, description="Refresh jitter, a fraction of it."
    )
    backoff_min: Duration = Field(10.0, gt=0, description="First retry delay after a failure.")
    backoff_max: Duration = Field(600.0, gt=0, description="Longest retry delay after failures.")
    stall_margin: Duration = Field(
        120.0, description="/healthz fails when a cycle is overdue by more than this."
    )
    ready_grace: Duration = Field(
        300.0, description="/readyz fails when secrets have been failing for longer than this."
    )
    watch_config: bool = Field(True, description="Reload when the config file changes.")
    trigger: TriggerSettings | None = Field(
        None,
        description="POST /sync on the listener starts a cycle now, for all secrets or the "
        "ones named by ?secret= (needs a bearer token); off unless given.",
    )

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str | None) -> str | None:
        return check_listen(value)

    @model_validator(mode="after")
    def _backoff_order(self) -> DaemonSettings:
        if self.backoff_min > self.backoff_max:
            raise ValueError(
                f"backoff_min ({self.backoff_min:g}s) is longer than backoff_max "
                f"({self.backoff_max:g}s)"
            )
        return self


_LISTEN = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]*):(?P<port>[0-9]{1,5})$")


def check_listen(value: str | None) -> str | None:
    """``host:port`` (``[::1]:9102``; ``:9102`` every address; port 0 any free one); off: None."""
    if value is None or value == "":
        return None
    match = _LISTEN.match(value)
    if match is None or int(match["port"]) > 65535:
        raise ValueError(
            f"listen {value!r} is not host:port (e.g. 127.0.0.1:9102, :9102 or [::1]:9102)"
        )
    return value


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
#: Names a template gives meaning to: no ``data`` key of a templated secret may take one.
RESERVED_NAMES = frozenset({"range"})
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
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
    rename: (
        dict[Annotated[str, Field(min_length=1)], Annotated[str, Field(min_length=1)]] | None
    ) = Field(
        None,
        description="Rename bundle keys, after key_style: {OPENAI_API_KEY: openai-key}.",
    )
    format: Format | None = Field(
        None, description="Render the bundle into one value (env, yaml or json)."
    )
    template: str | None = Field(
        None,
        description="Render the 'data' keys into one value with a Jinja2 template: "
        "'postgres://{{ user }}:{{ password | urlencode }}@{{ host }}/app'.",
    )
    template_file: str | None = Field(
        None,
        description="Like 'template', from a file (relative to the config file, inside its "
        "directory): a whole app.ini or config.json.",
    )
    refresh: Annotated[Duration, Field(ge=1)] | Literal["never"] | None = Field(
        None,
        description="How often to check the source; 'never' syncs once and then leaves the "
        "secret alone (a bootstrap token).",
    )
    keep: int | None = Field(None, ge=0, le=1000)
    timeout: Duration | None = Field(None, gt=0)
    max_shrink: Share | None = None
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
    on_failure: OnFailure | None = None
    window: Window | None = None
    group: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][-A-Za-z0-9_.]{0,62}$",
        description="Secrets that change together upstream (a user and its password): their "
        "edits settle together and every consumer of the group is swapped in one update.",
    )
    settle: Duration | None = Field(None, le=MAX_SETTLE)

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
        if self.rename is not None and not self.is_bundle:
            raise ValueError("'rename' renames bundle keys; it needs 'data' or 'data_from'")
        self._check_template()
        if self.refresh == "never":
            if self.data_from is not None or self.for_each is not None:
                raise ValueError(
                    "'refresh: never' needs 'from' or 'data': a listing is read every cycle"
                )
            if self.group is not None:
                raise ValueError("'refresh: never' can't join a group: it is never swapped")
        if self.data is not None and not self.templated:
            self._check_renamed(list(self.data))
        return self

    def _check_template(self) -> None:
        if self.template is not None and self.template_file is not None:
            raise ValueError("give 'template' or 'template_file', not both")
        if not self.templated:
            return
        if self.data is None:
            raise ValueError(
                "a template renders the keys of 'data' into one value; it needs 'data'"
            )
        if self.format is not None:
            raise ValueError("give 'format' or a template, not both: each renders the bundle")
        if self.key_style != "as-is" or self.rename is not None:
            raise ValueError(
                "a template names the 'data' keys itself: 'key_style' and 'rename' don't apply"
            )
        bad = [key for key in self.data if not _NAME.match(key) or key in RESERVED_NAMES]
        if bad:
            raise ValueError(
                f"with a template, 'data' keys are template names: {', '.join(map(repr, bad))} "
                "can't be one (letters, digits and '_', not starting with a digit; not "
                f"{', '.join(sorted(RESERVED_NAMES))})"
            )

    def _check_renamed(self, keys: list[str]) -> None:
        """Known keys: every ``rename`` entry names one, and no two keys land on one name."""
        styled = {style_key(key, self.key_style): key for key in keys}
        unknown = sorted(set(self.rename or {}) - set(styled))
        if unknown:
            raise ValueError(
                f"'rename' names {', '.join(map(repr, unknown))}, which 'data' doesn't make "
                "(rename applies after key_style)"
            )
        owners: dict[str, str] = {}
        for key in sorted(keys):
            out = self.output_key(key)
            if out in owners:
                raise ValueError(f"keys {owners[out]!r} and {key!r} both become {out!r}")
            owners[out] = key

    @property
    def templated(self) -> bool:
        """Whether a ``template``/``template_file`` renders this secret."""
        return self.template is not None or self.template_file is not None

    @property
    def renders_one(self) -> bool:
        """Whether a bundle is rendered into one value named after the secret (``format`` or
        a template) rather than stored key by key."""
        return self.format is not None or self.templated

    def output_key(self, key: str) -> str:
        """A bundle key as stored: ``key_style`` first, then ``rename``."""
        styled = style_key(key, self.key_style)
        return (self.rename or {}).get(styled, styled)

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
    instance: str = Field(
        DEFAULT_INSTANCE,
        description="This installation's name. Every object syncd writes carries it and syncd "
        "sees only its own installation's objects, so several installations can share one "
        "Swarm, namespace or directory. Lowercase letters, digits and '-'.",
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

    @field_validator("instance")
    @classmethod
    def _instance(cls, value: str) -> str:
        if not _INSTANCE.match(value) or len(value) > MAX_INSTANCE:
            raise ValueError(
                f"instance {value!r} must be lowercase letters, digits and '-' "
                f"(starting and ending with a letter or digit, at most {MAX_INSTANCE})"
            )
        return value


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
    max_shrink: float
    on_failure: OnFailure = "rollback"
    window: Window | None = None
    #: the group's name; a secret without one is a group of its own
    group: str | None = None
    settle: float = 0.0
    #: ``template``/``template_file``, compiled: renders the bundle into one value
    template: SecretTemplate | None = None
    #: ``refresh: never``: synced once, then left alone
    once: bool = False

    @property
    def name(self) -> str:
        """The logical name."""
        return self.spec.name

    @property
    def cutover(self) -> str:
        """The set this secret is swapped with: its group, or itself alone."""
        return f"group {self.group}" if self.group else self.name

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
    instance: str
    #: every file this config was read from (itself, then its ``extends`` bases)
    files: tuple[Path, ...] = ()

    @property
    def base_dir(self) -> Path:
        """Relative paths in the config are relative to the config file."""
        return self.path.parent


# --------------------------------------------------------------------------- validation


def _add_validation_issues(
    reader: Reader, exc: ValidationError, model: Any, prefix: Loc = ()
) -> None:
    """One issue per pydantic error; an unknown key gets the nearest key ``model`` accepts
    at that place."""
    for err in exc.errors(include_url=False):
        loc = (*prefix, *err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key" + did_you_mean(model, err["loc"])
        elif err["type"] == "missing":
            message = "required key is missing"
        reader.issue(loc, message)


def load_config(path: str | Path, *, env: dict[str, str] | None = None) -> Config:
    """Load and fully validate a config file, or raise ``ConfigError`` listing every problem."""
    path = Path(path).absolute()
    data, reader, files = load_tree(path, dict(os.environ) if env is None else env)
    if not isinstance(data, dict):
        raise ConfigError([ConfigIssue(str(path), "", "config must be a mapping at the top level")])
    try:
        loose = ConfigFile[_LooseRef, _LooseBlock, _LooseBlock].model_validate(data)
    except ValidationError as exc:
        _add_validation_issues(reader, exc, ConfigFile[_LooseRef, _LooseBlock, _LooseBlock])
        raise ConfigError(reader.issues) from exc

    providers = _validate_providers(reader, loose)
    target = _validate_target(reader, loose)
    templates: list[Path] = []
    secrets = _validate_secrets(reader, loose, providers, target, templates)
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
        instance=loose.instance,
        files=(*files, *templates),
    )


def _plugin_block(
    reader: Reader, block: _LooseBlock, loc: Loc, kind: str
) -> tuple[type[Any], Any] | None:
    try:
        cls = provider_class(block.type) if kind == "provider" else target_class(block.type)
    except PluginError as exc:
        reader.issue((*loc, "type"), str(exc))
        return None
    missing = cls.unavailable()
    if missing is not None:
        reader.issue((*loc, "type"), missing)
        return None
    try:
        return cls, cls.config_model.model_validate(block.model_dump())
    except ValidationError as exc:
        _add_validation_issues(reader, exc, cls.config_model, loc)
        return None


def _validate_providers(
    reader: Reader, loose: ConfigFile[_LooseRef, _LooseBlock, _LooseBlock]
) -> dict[str, tuple[type[Provider[Any, Any]], ProviderConfig]]:
    result = {}
    for name, block in loose.providers.items():
        validated = _plugin_block(reader, block, ("providers", name), "provider")
        if validated is not None:
            result[name] = validated
    return result


def _validate_target(
    reader: Reader, loose: ConfigFile[_LooseRef, _LooseBlock, _LooseBlock]
) -> tuple[type[Target[Any]], TargetConfig] | None:
    return _plugin_block(reader, loose.target, ("target",), "target")


def _validate_secrets(
    reader: Reader,
    loose: ConfigFile[_LooseRef, _LooseBlock, _LooseBlock],
    providers: dict[str, tuple[type[Provider[Any, Any]], ProviderConfig]],
    target: tuple[type[Target[Any]], TargetConfig] | None,
    templates: list[Path],
) -> list[Secret]:
    """Every secret resolved; the template files read are added to ``templates``."""
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
        template = _template(reader, spec, loc, templates)
        if len(refs) == len(raw_refs) and (template is not None or not spec.templated):
            defaults = loose.defaults
            source = refs.pop("", None)
            secrets.append(
                Secret(
                    spec=spec,
                    refs=refs,
                    source=source,
                    refresh=(spec.refresh if isinstance(spec.refresh, float) else defaults.refresh),
                    keep=spec.keep if spec.keep is not None else defaults.keep,
                    timeout=spec.timeout if spec.timeout is not None else defaults.timeout,
                    max_shrink=(
                        spec.max_shrink if spec.max_shrink is not None else defaults.max_shrink
                    ),
                    on_failure=spec.on_failure or defaults.on_failure,
                    window=spec.window if spec.window is not None else defaults.window,
                    group=spec.group,
                    settle=_settle(spec, defaults),
                    template=template,
                    once=spec.refresh == "never",
                )
            )
    _check_groups(reader, secrets, seen)
    if target is not None:
        placed = [(seen[s.name], s.spec) for s in secrets]
        for index, problem in target[0].validate_set([spec for _, spec in placed], target[1]):
            reader.issue(("secrets", placed[index][0]), problem)
    return secrets


#: The largest template file read (a config's app.ini, not a data file).
MAX_TEMPLATE_BYTES = 256 * 1024


def _template(
    reader: Reader, spec: SecretSpec[Any], loc: Loc, templates: list[Path]
) -> SecretTemplate | None:
    """The secret's template compiled, every name it reads checked against ``data``; an
    issue (and ``None``) when it can't be read or compiled or reads an unknown name."""
    where: Loc = (*loc, "template" if spec.template is not None else "template_file")
    file, line = reader.where(where)
    written = f"{file}:{line}" if line else file
    if spec.template is not None:
        source, origin = spec.template, f"{written} ({format_loc(where)})"
    elif spec.template_file is not None:
        path = _template_path(reader, spec.template_file, where)
        if path is None:
            return None
        templates.append(path)
        text = _read_template(reader, path, where)
        if text is None:
            return None
        source, origin = text, f"{path} ({format_loc(where)} in {written})"
    else:
        return None
    try:
        compiled = compile_template(source, origin)
    except TemplateError as exc:
        reader.issue(where, str(exc))
        return None
    unknown = sorted(compiled.variables - set(spec.data or {}))
    if unknown:
        lines = name_lines(source)
        for name in unknown:
            reader.issue(
                where,
                f"template {origin}, line {lines.get(name, '?')}: {name!r} is not a key of "
                f"'data' (keys: {', '.join(sorted(spec.data or {}))})",
            )
        return None
    return compiled


def _template_path(reader: Reader, value: str, loc: Loc) -> Path | None:
    """``template_file`` resolved against the config file that wrote it; it must stay in
    that file's directory (a ``..`` or a symlink out of it is refused)."""
    base = Path(reader.where(loc)[0]).parent.resolve()
    path = (base / value).resolve()
    if not path.is_relative_to(base):
        reader.issue(loc, f"template_file {value!r} is outside the config's directory {base}")
        return None
    return path


def _read_template(reader: Reader, path: Path, loc: Loc) -> str | None:
    try:
        with path.open("rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                reader.issue(loc, f"template_file {path} is not a regular file")
                return None
            raw = handle.read(MAX_TEMPLATE_BYTES + 1)
    except OSError as exc:
        reader.issue(loc, f"can't read template_file {path}: {exc.strerror or exc}")
        return None
    if len(raw) > MAX_TEMPLATE_BYTES:
        reader.issue(loc, f"template_file {path} is larger than {MAX_TEMPLATE_BYTES} bytes")
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        reader.issue(loc, f"template_file {path} is not UTF-8 text")
        return None


def _settle(spec: SecretSpec[Any], defaults: Defaults) -> float:
    if spec.settle is not None:
        return spec.settle
    if defaults.settle is not None:
        return defaults.settle
    return GROUP_SETTLE if spec.group else 0.0


def _check_groups(reader: Reader, secrets: Sequence[Secret], seen: dict[str, int]) -> None:
    """The secrets of one group are swapped as one: they must agree on when and how."""
    first: dict[str, Secret] = {}
    for secret in secrets:
        if secret.group is None:
            continue
        leader = first.setdefault(secret.group, secret)
        for field_name in ("window", "on_failure", "settle", "timeout"):
            mine, theirs = getattr(secret, field_name), getattr(leader, field_name)
            if mine != theirs:
                reader.issue(
                    ("secrets", seen[secret.name], field_name),
                    f"group {secret.group!r}: {field_name} differs from secret "
                    f"{leader.name!r} (secrets[{seen[leader.name]}]); the secrets of a group "
                    "are swapped together and must agree on it",
                )


def _resolve_ref(
    reader: Reader,
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
        _add_validation_issues(reader, exc, cls.ref_model, loc)
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
