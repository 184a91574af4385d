"""The kubernetes target's settings and naming rules, checked offline.

Everything here runs without a cluster: ``syncd check`` uses it at config load, and the engine
again at run time for every name and key a source supplies, so the rules live in one place.
Logical names map to DNS-1123 Secret names (``openai_api_key`` -> ``openai-api-key-v3``);
that mapping is lossy (``a_b`` and ``a-b`` both become ``a-b``), so ``collisions`` refuses two
secrets whose Secret names could ever meet, whatever their versions.
"""

from __future__ import annotations

import re
import string
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, field_validator

from syncd.config import SecretSpec
from syncd.duration import Duration
from syncd.leader import LeaderElection
from syncd.targets.base import DEFAULT_INSTANCE, TargetConfig

DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
#: A logical name: what the DNS mapping can carry without surprises.
_LOGICAL = re.compile(r"^[A-Za-z0-9._-]+$")
_KIND = re.compile(r"^[A-Z][A-Za-z0-9]{0,62}$")
_SELECTOR = re.compile(r"^[A-Za-z0-9./_-]+=[A-Za-z0-9._-]*$")
_TYPE = re.compile(r"^[A-Za-z0-9][-A-Za-z0-9_./]{0,252}$")
MAX_NAME = 253
#: The version used to check that every version's name stays valid (long enough for decades).
SAMPLE_VERSION = 999999
DEFAULT_KEY_SECRET = "syncd-fingerprint-key"  # noqa: S105 - a Secret's name, not a password
#: Consumer kinds a ``consumers:`` entry may name without discovery.
BUILTIN_CONSUMERS = ("Deployment", "StatefulSet", "DaemonSet", "CronJob")

REQUIRED_KEYS = {
    "kubernetes.io/dockerconfigjson": {".dockerconfigjson"},
    "kubernetes.io/dockercfg": {".dockercfg"},
    "kubernetes.io/tls": {"tls.crt", "tls.key"},
    "kubernetes.io/basic-auth": set(),
    "kubernetes.io/ssh-auth": {"ssh-privatekey"},
}
#: Types the API server fills in or manages itself: syncd can't own their data.
REFUSED_TYPES = {"kubernetes.io/service-account-token", "bootstrap.kubernetes.io/token"}


class KubernetesTargetConfig(TargetConfig):
    """``{type: kubernetes, namespace: pmoves-prod}``."""

    type: Literal["kubernetes"]
    namespace: str = Field("default", description="Default namespace for secrets (and the key).")
    namespaces: list[str] = Field(
        default_factory=list, description="Other namespaces secrets may name with 'namespace:'."
    )
    kubeconfig: str | None = Field(
        None, description="kubeconfig file (default: in-cluster, else $KUBECONFIG/~/.kube/config)."
    )
    context: str | None = Field(None, description="kubeconfig context.")
    naming: str = Field("{name}-v{version}", description="Versioned Secret name template.")
    key_secret: str | None = Field(
        None,
        description="Secret holding the fingerprint HMAC key (default: syncd-fingerprint-key, "
        "or syncd-fingerprint-key-<instance> for a named instance).",
    )
    poll_interval: Duration = Field(1.0, gt=0, description="How often rollouts are checked.")
    custom_workloads: list[str] = Field(
        default_factory=lambda: ["rollouts.argoproj.io"],
        description="Custom resources with pod templates (resource.group, as kubectl names "
        "them): repointed, waited for and scanned before garbage collection when the cluster "
        "serves them.",
    )
    qps: float = Field(
        100.0,
        gt=0,
        allow_inf_nan=False,
        description="Requests a second to the API server, on average (client-go's "
        "--kube-api-qps); Events count too, the leader Lease's renewals don't.",
    )
    burst: int = Field(
        200,
        ge=1,
        description="Requests that may go at once before 'qps' holds them back "
        "(client-go's --kube-api-burst).",
    )
    concurrency: int = Field(
        8,
        ge=1,
        le=64,
        description="Versions created at once (a cold sync of many secrets), within 'qps'.",
    )
    leader_election: LeaderElection = Field(default_factory=LeaderElection)
    watch: bool = Field(
        True,
        description="In the daemon, keep version Secrets' metadata and the workloads in a "
        "watch-fed cache, so a cycle with nothing to do makes no API request (needs the "
        "'watch' verb); false lists them every cycle. syncd --once always lists.",
    )

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        return _check_namespace(value)

    @field_validator("namespaces")
    @classmethod
    def _namespaces(cls, value: list[str]) -> list[str]:
        return [_check_namespace(v) for v in value]

    @field_validator("naming")
    @classmethod
    def _naming(cls, value: str) -> str:
        fields = [f for _, f, _, _ in string.Formatter().parse(value) if f is not None]
        if fields.count("version") != 1 or "name" not in fields:
            raise ValueError("naming must contain {name} and exactly one {version}")
        if set(fields) - {"name", "version"}:
            raise ValueError("naming may only use {name} and {version}")
        return value

    @field_validator("key_secret")
    @classmethod
    def _key_secret(cls, value: str | None) -> str | None:
        if value is not None and (not DNS1123.match(value) or len(value) > MAX_NAME):
            raise ValueError(f"key_secret {value!r} is not a valid Secret name")
        return value

    @field_validator("custom_workloads")
    @classmethod
    def _custom(cls, value: list[str]) -> list[str]:
        for entry in value:
            plural, _, group = entry.partition(".")
            if not DNS_LABEL.match(plural) or "." not in group or not DNS1123.match(group):
                raise ValueError(
                    f"custom workload {entry!r} must be resource.group, e.g. rollouts.argoproj.io"
                )
        return value

    def key_secret_for(self, instance: str) -> str:
        """The fingerprint key's Secret: one per installation."""
        if self.key_secret is not None:
            return self.key_secret
        if instance == DEFAULT_INSTANCE:
            return DEFAULT_KEY_SECRET
        return f"{DEFAULT_KEY_SECRET}-{instance}"


def _check_namespace(value: str) -> str:
    if not DNS_LABEL.match(value) or len(value) > 63:
        raise ValueError(f"{value!r} is not a valid namespace name")
    return value


def _map(text: str) -> str:
    """Lowercase, and every character DNS-1123 can't hold becomes ``-`` (one for one)."""
    return re.sub(r"[^a-z0-9.-]", "-", text.lower())


def dns_name(name: str) -> str:
    """A logical name as a DNS-1123 name: lowercase, ``_`` and other characters to ``-``."""
    return _map(name).strip("-.")


def version_name(naming: str, secret: str, version: int) -> str:
    """The Secret name of one version of a versioned secret."""
    return dns_name(naming.format(name=secret, version=version))


@dataclass(frozen=True)
class NameSet:
    """Every Secret name a secret can ever use in one namespace: one fixed name (in-place)
    or ``prefix + <version> + suffix`` for every version >= 1."""

    namespace: str
    fixed: str | None = None
    prefix: str = ""
    suffix: str = ""

    def regex(self) -> re.Pattern[str]:
        """Matches exactly the names of this set."""
        if self.fixed is not None:
            return re.compile(re.escape(self.fixed))
        return re.compile(re.escape(self.prefix) + "[1-9][0-9]*" + re.escape(self.suffix))

    def describe(self) -> str:
        """``a-b-v<N>`` or the fixed name."""
        return self.fixed if self.fixed is not None else f"{self.prefix}<N>{self.suffix}"


def names_of(spec: SecretSpec[Any], config: KubernetesTargetConfig) -> NameSet:
    """The Secret names ``spec`` lands on.

    ``dns_name`` maps character by character and then strips ``-``/``.`` at both ends; the
    version digits are never stripped, so the prefix and suffix around them can be mapped
    on their own.
    """
    namespace = spec.namespace or config.namespace
    if spec.strategy == "in-place":
        return NameSet(namespace, fixed=dns_name(spec.name))
    before, _, after = config.naming.partition("{version}")
    return NameSet(
        namespace,
        prefix=_map(before.format(name=spec.name)).lstrip("-."),
        suffix=_map(after.format(name=spec.name)).rstrip("-."),
    )


def overlap(a: NameSet, b: NameSet) -> bool:
    """Whether some name belongs to both sets (exact, not a heuristic).

    For two versioned sets every candidate string is built from ``a``'s shape: characters
    where ``b`` has a fixed character take it, the rest of ``a``'s version is ``1``; the
    alignment repeats once both versions are longer than all the fixed parts together.
    """
    if a.namespace != b.namespace:
        return False
    if a.fixed is not None or b.fixed is not None:
        fixed, other = (a, b) if a.fixed is not None else (b, a)
        assert fixed.fixed is not None
        return bool(other.regex().fullmatch(fixed.fixed))
    ra, rb = a.regex(), b.regex()
    for n in range(1, len(a.prefix + a.suffix + b.prefix + b.suffix) + 2):
        total = len(a.prefix) + n + len(a.suffix)
        m = total - len(b.prefix) - len(b.suffix)
        if m < 1:
            continue
        digits = []
        for pos in range(len(a.prefix), len(a.prefix) + n):
            if pos < len(b.prefix):
                digits.append(b.prefix[pos])
            elif pos >= len(b.prefix) + m:
                digits.append(b.suffix[pos - len(b.prefix) - m])
            else:
                digits.append("1")
        candidate = a.prefix + "".join(digits) + a.suffix
        if ra.fullmatch(candidate) and rb.fullmatch(candidate):
            return True
    return False


def collisions(
    specs: Sequence[SecretSpec[Any]], config: KubernetesTargetConfig
) -> list[tuple[int, str]]:
    """Secrets that could land on one Secret name, reported on the later one.

    Candidates are found through a prefix index (two names can only meet when one set's
    fixed start is a start of the other's), so a thousand secrets cost a thousand lookups,
    not a million comparisons; each candidate pair is then checked exactly.
    """
    sets = [names_of(spec, config) for spec in specs]
    starts: dict[tuple[str, str], list[int]] = defaultdict(list)
    for index, names in enumerate(sets):
        starts[(names.namespace, names.fixed if names.fixed is not None else names.prefix)].append(
            index
        )
    problems: list[tuple[int, str]] = []
    reported: set[int] = set()
    for index, names in enumerate(sets):
        start = names.fixed if names.fixed is not None else names.prefix
        for length in range(len(start) + 1):
            for other in starts.get((names.namespace, start[:length]), ()):
                if other == index:
                    continue
                later, earlier = max(index, other), min(index, other)
                if later in reported or not overlap(sets[later], sets[earlier]):
                    continue
                reported.add(later)
                problems.append(
                    (
                        later,
                        f"{specs[later].name!r} ({sets[later].describe()}) and "
                        f"{specs[earlier].name!r} ({sets[earlier].describe()}) can land on the "
                        f"same Secret name in namespace {names.namespace}; rename one of them",
                    )
                )
    return sorted(problems)


def consumer_pattern(text: str) -> bool:
    """``NAME``, ``Kind/NAME`` or a label selector ``app=web[,tier=x]``."""
    if "=" in text:
        return all(_SELECTOR.match(p) for p in text.split(","))
    kind, _, name = text.rpartition("/")
    return (not kind or bool(_KIND.match(kind))) and bool(DNS1123.match(name))


def spec_problems(spec: SecretSpec[Any], config: KubernetesTargetConfig) -> list[str]:
    """Names, keys, types and namespaces Kubernetes accepts for ``spec``."""
    problems = []
    if not _LOGICAL.match(spec.name) or not dns_name(spec.name):
        problems.append(
            f"name {spec.name!r} can't be a Kubernetes Secret name: use letters, digits, "
            "'-', '_' and '.'"
        )
    else:
        names = names_of(spec, config)
        full = names.fixed or f"{names.prefix}{SAMPLE_VERSION}{names.suffix}"
        if len(full) > MAX_NAME:
            versions = "" if names.fixed else f" at version {SAMPLE_VERSION}"
            problems.append(
                f"name {spec.name!r} makes a Secret name of {len(full)} characters{versions}; "
                f"Kubernetes allows {MAX_NAME}: shorten it by {len(full) - MAX_NAME}"
            )
        elif not DNS1123.match(full):
            problems.append(f"name {spec.name!r} can't be made a valid Kubernetes Secret name")
    keys = [spec.output_key(k) for k in spec.data or {}]
    if spec.from_ is not None or spec.renders_one:
        keys = [spec.name]
    problems.extend(
        f"key {key!r} is not a valid Secret key (letters, digits, '-', '_', '.'; not '.', "
        "'..' or starting with '..'; at most 253)"
        for key in keys
        if not _KEY.match(key) or len(key) > MAX_NAME or key.startswith("..") or key == "."
    )
    if spec.type is not None:
        if not _TYPE.match(spec.type):
            problems.append(f"type {spec.type!r} is not a Secret type")
        elif spec.type in REFUSED_TYPES:
            problems.append(f"type {spec.type} is managed by Kubernetes itself; syncd can't own it")
    required = REQUIRED_KEYS.get(spec.type or "", set())
    missing = sorted(required - set(keys))
    if missing and spec.data_from is None:
        problems.append(f"type {spec.type} needs the key(s) {', '.join(missing)}")
    namespace = spec.namespace or config.namespace
    if namespace not in {config.namespace, *config.namespaces}:
        problems.append(
            f"namespace {namespace!r} is not the target's namespace or in its 'namespaces'"
        )
    if isinstance(spec.consumers, list):
        problems.extend(
            f"consumer {c!r}: use NAME, Kind/NAME (e.g. Deployment/web, CronJob/report) "
            "or a label selector like app=web"
            for c in spec.consumers
            if not consumer_pattern(c)
        )
    return problems
