"""The ``kubernetes`` target: immutable versioned Secrets, workload repointing, rollout wait.

Each change is a new ``immutable: true`` Secret ``<name>-v<N>`` (the name mapped to DNS-1123)
carrying labels (managed-by, logical name, version, role) and annotations (logical name,
keyed fingerprint, per-key fingerprints, source reference, created-at); never a value. The
Deployments, StatefulSets and DaemonSets that reference a version are repointed by rewriting
every reference in their pod template (env ``secretKeyRef``, ``envFrom.secretRef``, secret and
projected volumes, ``imagePullSecrets``) in one guarded update, then syncd waits as
``kubectl rollout status`` does.

A version is never deleted while a ReplicaSet or ControllerRevision (what ``kubectl rollout
undo`` goes back to) or a Pod still references it: ``protected()`` scans them, which covers
exactly what the cluster keeps for rollback (``revisionHistoryLimit``).

``strategy: in-place`` is for consumers that can't be repointed (a name baked into a chart):
one stable-name Secret is updated in place and its consumers restarted through a pod-template
annotation holding the version, so they restart only when the data really changed. Its
"object names" carry the version (``ns/name@v3``) so the engine's stale-consumer logic
applies unchanged.

Object names are ``namespace/name`` so one config can span namespaces.
"""

from __future__ import annotations

import base64
import difflib
import hashlib
import json
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from syncd.config import SecretSpec, style_key
from syncd.duration import Duration
from syncd.errors import ConvergenceError, TargetError
from syncd.kube import ApiError, KubeClient
from syncd.leader import LeaderElection, LeaderElector
from syncd.model import Consumer, Finding, NewVersion, VersionInfo
from syncd.targets.base import Target, TargetConfig, TargetContext

MANAGED_BY = "app.kubernetes.io/managed-by"
ROLE = "syncd.io/role"
LABEL_NAME = "syncd.io/secret"
LABEL_VERSION = "syncd.io/version"
A_NAME = "syncd.io/name"
A_FINGERPRINT = "syncd.io/fingerprint"
A_KEYS = "syncd.io/keys"
A_SOURCE = "syncd.io/source"
A_CREATED = "syncd.io/created-at"
A_VERSION = "syncd.io/version"
#: Pod-template annotation prefix that restarts in-place consumers.
A_RESTART = "syncd.io/rev-"

WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet")
MAX_SECRET_BYTES = 1024 * 1024
MAX_UPDATE_ATTEMPTS = 5

_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_REQUIRED_KEYS = {
    "kubernetes.io/dockerconfigjson": {".dockerconfigjson"},
    "kubernetes.io/tls": {"tls.crt", "tls.key"},
    "kubernetes.io/basic-auth": set(),
    "kubernetes.io/ssh-auth": {"ssh-privatekey"},
}


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
    key_secret: str = Field(
        "syncd-fingerprint-key", description="Secret holding the fingerprint HMAC key."
    )
    poll_interval: Duration = Field(1.0, description="How often rollouts are checked.")
    leader_election: LeaderElection = Field(default_factory=LeaderElection)

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        if not _NAMESPACE.match(value) or len(value) > 63:
            raise ValueError(f"{value!r} is not a valid namespace name")
        return value

    @field_validator("naming")
    @classmethod
    def _naming(cls, value: str) -> str:
        if "{name}" not in value or "{version}" not in value:
            raise ValueError("naming must contain {name} and {version}")
        return value


def dns_name(name: str) -> str:
    """A logical name as a DNS-1123 name: lowercase, ``_`` and other characters to ``-``."""
    return re.sub(r"[^a-z0-9.-]", "-", name.lower()).strip("-.")


def label_value(name: str) -> str:
    """A label-safe form of a logical name (<= 63 chars; long names get a stable hash)."""
    value = re.sub(r"[^A-Za-z0-9_.-]", "-", name).strip("-_.")
    if len(value) > 63:
        value = value[:52].rstrip("-_.") + "-" + hashlib.sha256(name.encode()).hexdigest()[:10]
    return value


def restart_annotation(name: str) -> str:
    """The pod-template annotation that carries an in-place secret's version."""
    return A_RESTART + hashlib.sha256(name.encode()).hexdigest()[:12]


class KubernetesTarget(Target[KubernetesTargetConfig]):
    """Versioned immutable Secrets in one or more namespaces."""

    type_name: ClassVar[str] = "kubernetes"
    config_model: ClassVar[type[TargetConfig]] = KubernetesTargetConfig

    def __init__(self, config: KubernetesTargetConfig, *, context: TargetContext) -> None:
        super().__init__(config, context=context)
        self._client: KubeClient | None = None
        self._generations: dict[str, int] = {}

    # ------------------------------------------------------------------ config checks

    @classmethod
    def validate_spec(cls, spec: SecretSpec[Any], config: TargetConfig) -> list[str]:
        """Names, keys, types and namespaces Kubernetes accepts, checked offline."""
        assert isinstance(config, KubernetesTargetConfig)
        problems = []
        base = dns_name(spec.name)
        if spec.strategy == "in-place":
            full = base
        else:
            full = dns_name(config.naming.format(name=spec.name, version=999999))
        if not base or not _DNS1123.match(full) or len(full) > 253:
            problems.append(f"name {spec.name!r} can't be made a valid Kubernetes Secret name")
        keys = [style_key(k, spec.key_style) for k in spec.data or {}]
        if spec.from_ is not None or spec.format is not None:
            keys = [spec.name]
        problems.extend(
            f"key {key!r} is not a valid Secret key (letters, digits, '-', '_', '.')"
            for key in keys
            if not _KEY.match(key) or len(key) > 253
        )
        required = _REQUIRED_KEYS.get(spec.type or "", set())
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
                f"consumer {c!r}: use NAME, Kind/NAME (Deployment, StatefulSet, DaemonSet) "
                "or a label selector like app=web"
                for c in spec.consumers
                if not _consumer_pattern(c)
            )
        return problems

    # ------------------------------------------------------------------ plumbing

    @property
    def client(self) -> KubeClient:
        """The API client, connected on first use."""
        if self._client is None:
            self._client = KubeClient.connect(
                kubeconfig=self._path(self.config.kubeconfig),
                context=self.config.context,
                on_call=self._count,
            )
        return self._client

    def _path(self, value: str | None) -> str | None:
        return None if value is None else str((self.context.base_dir / value).absolute())

    def _count(self, operation: str, write: bool) -> None:
        if write:
            self.count_write(operation)
        else:
            self.count_read(operation)

    def close(self) -> None:
        """Close the connection pool."""
        if self._client is not None:
            self._client.close()

    def _namespace_of(self, name: str) -> str:
        spec = self.context.secrets.get(name)
        return (spec.namespace if spec else None) or self.config.namespace

    def _namespaces(self) -> list[str]:
        used = {self._namespace_of(n) for n in self.context.secrets}
        return sorted(used | {self.config.namespace})

    def _strategy(self, name: str) -> str:
        spec = self.context.secrets.get(name)
        return spec.strategy if spec else "versioned"

    def _k8s_name(self, secret: str, version: int) -> str:
        if self._strategy(secret) == "in-place":
            return dns_name(secret)
        return dns_name(self.config.naming.format(name=secret, version=version))

    def leader_elector(
        self, *, identity: str, on_change: Callable[[bool], None]
    ) -> LeaderElector | None:
        """A Lease-based elector when ``leader_election.enabled``."""
        settings = self.config.leader_election
        if not settings.enabled:
            return None
        return LeaderElector(
            self.client,
            namespace=settings.namespace or self.config.namespace,
            settings=settings,
            identity=identity,
            on_change=on_change,
        )

    # ------------------------------------------------------------------ key

    def load_key(self) -> bytes | None:
        """The HMAC key from its own Secret in the target's namespace."""
        found = self.client.get("Secret", self.config.namespace, self.config.key_secret)
        if found is None:
            return None
        if found.get("metadata", {}).get("labels", {}).get(MANAGED_BY) != "syncd":
            raise TargetError(
                f"Secret {self.config.namespace}/{self.config.key_secret} exists but is not "
                "managed by syncd; choose another key_secret"
            )
        return base64.b64decode(found.get("data", {}).get("key", ""))

    def store_key(self, key: bytes) -> None:
        """Create the key Secret; a concurrent creator wins and this cycle retries later."""
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": self.config.key_secret,
                "labels": {MANAGED_BY: "syncd", ROLE: "fingerprint-key"},
            },
            "type": "Opaque",
            "immutable": True,
            "data": {"key": base64.b64encode(key).decode()},
        }
        try:
            self.client.create("Secret", self.config.namespace, body)
        except ApiError as exc:
            if exc.status == 409:
                raise TargetError(
                    "another syncd created the fingerprint key at the same time; next cycle uses it"
                ) from exc
            raise

    # ------------------------------------------------------------------ versions

    def list_versions(self, names: Sequence[str]) -> dict[str, list[VersionInfo]]:
        """One labelled listing per namespace."""
        del names
        result: dict[str, list[VersionInfo]] = {}
        for namespace in self._namespaces():
            for obj in self.client.list(
                "Secret", namespace, selector=f"{MANAGED_BY}=syncd,{ROLE} in (version,in-place)"
            ):
                info = _version_info(obj)
                if info is not None:
                    result.setdefault(info.secret, []).append(info)
        return result

    def _body(self, item: NewVersion, *, name: str, role: str) -> dict[str, Any]:
        """The Secret for a version: labels and annotations say what it is, never a value."""
        spec = self.context.secrets.get(item.secret)
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": name,
                "labels": {
                    MANAGED_BY: "syncd",
                    ROLE: role,
                    LABEL_NAME: label_value(item.secret),
                    LABEL_VERSION: str(item.version),
                },
                "annotations": {
                    A_NAME: item.secret,
                    A_VERSION: str(item.version),
                    A_FINGERPRINT: item.fingerprint,
                    A_KEYS: json.dumps(item.keys, sort_keys=True),
                    A_SOURCE: item.source,
                    A_CREATED: item.created_at,
                },
            },
            "type": (spec.type if spec else None) or "Opaque",
            "data": {k: base64.b64encode(v).decode() for k, v in sorted(item.data.items())},
        }

    def create_version(self, item: NewVersion) -> VersionInfo:
        size = sum(len(k) + len(v) for k, v in item.data.items())
        if size > MAX_SECRET_BYTES:
            raise TargetError(
                f"the bundle is {size} bytes; a Kubernetes Secret holds at most 1 MiB"
            )
        namespace = self._namespace_of(item.secret)
        name = self._k8s_name(item.secret, item.version)
        in_place = self._strategy(item.secret) == "in-place"
        body = self._body(item, name=name, role="in-place" if in_place else "version")
        if in_place:
            return self._update_in_place(namespace, body)
        body["immutable"] = True
        try:
            created = self.client.create("Secret", namespace, body)
        except ApiError as exc:
            if exc.status != 409:
                raise
            existing = self.client.get("Secret", namespace, name)
            info = _version_info(existing or {})
            if info is None or info.fingerprint != item.fingerprint:
                raise TargetError(
                    f"Secret {namespace}/{name} already exists and is not this version; "
                    "remove it or change 'naming'"
                ) from exc
            return info  # created by an earlier, interrupted cycle
        info = _version_info(created)
        assert info is not None
        return info

    def import_existing(self, item: NewVersion, *, trust: bool) -> VersionInfo | None:
        """Label the hand-made Secret named like the logical secret as version 1.

        Its data must equal the source's (Kubernetes lets us compare, so ``trust`` is not
        needed); only labels and annotations change, so no workload rolls.
        """
        del trust
        namespace, name = self._namespace_of(item.secret), dns_name(item.secret)
        for _ in range(MAX_UPDATE_ATTEMPTS):
            existing = self.client.get("Secret", namespace, name)
            if existing is None:
                return None
            meta = existing["metadata"]
            if (meta.get("labels") or {}).get(MANAGED_BY) == "syncd":
                return None
            data = {k: base64.b64decode(v) for k, v in (existing.get("data") or {}).items()}
            if data != item.data:
                raise TargetError(
                    f"Secret {namespace}/{name} holds other data than the source (keys or values "
                    "differ); syncd --once will create a version from the source and repoint "
                    "its consumers instead"
                )
            body = self._body(item, name=name, role="version")
            meta["labels"] = {**(meta.get("labels") or {}), **body["metadata"]["labels"]}
            meta["annotations"] = {
                **(meta.get("annotations") or {}),
                **body["metadata"]["annotations"],
            }
            try:
                updated = self.client.replace("Secret", namespace, existing)
            except ApiError as exc:
                if exc.status == 409:
                    continue
                raise
            return _version_info(updated)
        raise TargetError(f"Secret {namespace}/{name} kept changing under syncd; try again")

    def _update_in_place(self, namespace: str, body: dict[str, Any]) -> VersionInfo:
        name = body["metadata"]["name"]
        for _ in range(MAX_UPDATE_ATTEMPTS):
            existing = self.client.get("Secret", namespace, name)
            try:
                if existing is None:
                    result = self.client.create("Secret", namespace, body)
                else:
                    if existing.get("immutable"):
                        raise TargetError(
                            f"Secret {namespace}/{name} is immutable; in-place needs a mutable one"
                        )
                    body["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
                    result = self.client.replace("Secret", namespace, body)
            except ApiError as exc:
                if exc.status == 409:
                    continue
                raise
            info = _version_info(result)
            assert info is not None
            return info
        raise TargetError(f"Secret {namespace}/{name} kept changing under syncd; retrying later")

    # ------------------------------------------------------------------ consumers

    def _workloads(self, namespace: str) -> Iterator[dict[str, Any]]:
        for kind in WORKLOADS:
            for obj in self.client.list(kind, namespace):
                obj["kind"] = kind
                yield obj

    def find_consumers(
        self, specs: Sequence[SecretSpec[Any]], versions: Mapping[str, list[VersionInfo]]
    ) -> dict[str, list[Consumer] | TargetError]:
        """Workloads referencing any version (or the plain name, for adoption)."""
        by_ns: dict[str, list[dict[str, Any]]] = {}
        for namespace in {self._namespace_of(s.name) for s in specs}:
            by_ns[namespace] = list(self._workloads(namespace))
        result: dict[str, list[Consumer] | TargetError] = {}
        for spec in specs:
            namespace = self._namespace_of(spec.name)
            try:
                result[spec.name] = self._consumers_of(spec, namespace, by_ns[namespace], versions)
            except TargetError as exc:
                result[spec.name] = exc
        return result

    def _consumers_of(
        self,
        spec: SecretSpec[Any],
        namespace: str,
        workloads: list[dict[str, Any]],
        versions: Mapping[str, list[VersionInfo]],
    ) -> list[Consumer]:
        in_place = spec.strategy == "in-place"
        stable = dns_name(spec.name)
        own = {v.object_name.split("/", 1)[1] for v in versions.get(spec.name, [])}
        own.add(stable)
        selected = _select(spec.consumers, workloads, namespace)
        consumers = []
        for obj in selected if selected is not None else workloads:
            template = obj.get("spec", {}).get("template", {})
            names = template_refs(template) & own
            if in_place:
                names = {stable} if stable in names else set()
            if not names and selected is None:
                continue
            if in_place and names:
                annotations = template.get("metadata", {}).get("annotations") or {}
                version = annotations.get(restart_annotation(spec.name), "0")
                refs = frozenset({f"{namespace}/{stable}@v{version}"})
            else:
                refs = frozenset(f"{namespace}/{n}" for n in names)
            consumers.append(
                Consumer(obj["kind"], obj["metadata"]["name"], namespace, refs={spec.name: refs})
            )
        return consumers

    def repoint(self, consumer: Consumer, swaps: Mapping[str, VersionInfo]) -> None:
        """Rewrite every reference in the pod template in one guarded update; 409 retries."""
        rename = {
            old.split("/", 1)[1]: new.object_name.split("/", 1)[1]
            for old, new in swaps.items()
            if "@v" not in old
        }
        restarts = {
            restart_annotation(new.secret): str(new.version)
            for old, new in swaps.items()
            if "@v" in old
        }
        for _ in range(MAX_UPDATE_ATTEMPTS):
            obj = self.client.get(consumer.kind, consumer.namespace, consumer.name)
            if obj is None:
                raise TargetError(f"{consumer.label} no longer exists")
            template = obj["spec"]["template"]
            rewrite_refs(template, rename)
            if restarts:
                meta = template.setdefault("metadata", {})
                meta.setdefault("annotations", {}).update(restarts)
            try:
                updated = self.client.replace(consumer.kind, consumer.namespace, obj)
            except ApiError as exc:
                if exc.status == 409:
                    continue
                raise
            self._generations[consumer.label] = int(updated["metadata"].get("generation", 0))
            return
        raise TargetError(f"{consumer.label} kept changing under syncd; retrying later")

    def wait_converged(
        self, consumers: Sequence[Consumer], *, timeout: float
    ) -> dict[str, ConvergenceError | None]:
        """Poll rollout status (as ``kubectl rollout status``) until done, failed or timeout."""
        results: dict[str, ConvergenceError | None] = {}
        pending = {c.label: c for c in consumers}
        deadline = time.monotonic() + timeout
        last: dict[str, str] = {}
        while pending:
            for label, consumer in list(pending.items()):
                obj = self.client.get(consumer.kind, consumer.namespace, consumer.name)
                if obj is None:
                    results[label] = ConvergenceError(f"{label} was deleted during the rollout")
                    del pending[label]
                    continue
                done, message = rollout_status(obj, self._generations.get(label, 0))
                if done:
                    results[label] = None
                    del pending[label]
                elif message.startswith("failed:"):
                    results[label] = ConvergenceError(message.removeprefix("failed: "))
                    del pending[label]
                else:
                    last[label] = message
            if not pending:
                break
            if time.monotonic() >= deadline:
                for label in pending:
                    results[label] = ConvergenceError(
                        f"timed out after {timeout:.0f}s: {last.get(label, 'rollout not done')}"
                    )
                break
            time.sleep(self.config.poll_interval)
        return results

    def diagnose(self) -> list[Finding]:
        """``secretKeyRef``/``envFrom``/volumes naming a missing Secret or key (not optional)."""
        findings = []
        for namespace in self._namespaces():
            # key names only: values are dropped as soon as each item is read
            keys = {
                s["metadata"]["name"]: set(s.get("data") or {})
                for s in self.client.list("Secret", namespace)
            }
            for obj in self._workloads(namespace):
                label = f"{obj['kind']}/{namespace}/{obj['metadata']['name']}"
                pod = (obj.get("spec", {}).get("template") or {}).get("spec") or {}
                findings.extend(_missing_refs(label, pod, keys))
        return findings

    # ------------------------------------------------------------------ GC

    def protected(self) -> set[str]:
        """Versions a ReplicaSet, ControllerRevision or Pod still references (rollback)."""
        names: set[str] = set()
        for namespace in self._namespaces():
            for kind in ("ReplicaSet", "Pod"):
                for obj in self.client.list(kind, namespace):
                    spec = obj.get("spec", {})
                    template = spec.get("template") if kind == "ReplicaSet" else {"spec": spec}
                    names.update(f"{namespace}/{n}" for n in template_refs(template or {}))
            for revision in self.client.list("ControllerRevision", namespace):
                names.update(f"{namespace}/{n}" for n in _refs_anywhere(revision.get("data")))
        return names

    def delete_version(self, version: VersionInfo) -> bool:
        """Delete an old version Secret (already gone counts as deleted)."""
        namespace, _, name = version.object_name.partition("/")
        self.client.delete("Secret", namespace, name)
        return True


# ---------------------------------------------------------------------- helpers


def _version_info(obj: Mapping[str, Any]) -> VersionInfo | None:
    meta = obj.get("metadata", {})
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    if labels.get(MANAGED_BY) != "syncd" or A_NAME not in annotations:
        return None
    try:
        version = int(annotations[A_VERSION])
        keys = json.loads(annotations.get(A_KEYS, "{}"))
    except (KeyError, ValueError):
        return None
    name = f"{meta.get('namespace', '')}/{meta.get('name', '')}"
    if labels.get(ROLE) == "in-place":
        name = f"{name}@v{version}"
    return VersionInfo(
        secret=annotations[A_NAME],
        version=version,
        object_name=name,
        fingerprint=annotations.get(A_FINGERPRINT, ""),
        keys=keys,
        source=annotations.get(A_SOURCE, ""),
        created_at=annotations.get(A_CREATED, ""),
    )


def _consumer_pattern(text: str) -> bool:
    if "=" in text:
        return all(re.match(r"^[A-Za-z0-9./_-]+=[A-Za-z0-9._-]*$", p) for p in text.split(","))
    kind, _, name = text.rpartition("/")
    return (not kind or kind in WORKLOADS) and bool(_DNS1123.match(name))


def _select(
    wanted: Literal["auto"] | list[str], workloads: list[dict[str, Any]], namespace: str
) -> list[dict[str, Any]] | None:
    """The workloads a ``consumers:`` list names (None for ``auto``); a missing name errors."""
    if wanted == "auto":
        return None
    chosen: dict[tuple[str, str], dict[str, Any]] = {}
    for entry in wanted:
        if "=" in entry:
            pairs = dict(p.split("=", 1) for p in entry.split(","))
            for obj in workloads:
                labels = obj.get("metadata", {}).get("labels") or {}
                if all(labels.get(k) == v for k, v in pairs.items()):
                    chosen[(obj["kind"], obj["metadata"]["name"])] = obj
            continue
        kind, _, name = entry.rpartition("/")
        matches = [
            o
            for o in workloads
            if o["metadata"]["name"] == name and (not kind or o["kind"] == kind)
        ]
        if not matches:
            raise TargetError(f"consumer {entry!r} does not exist in namespace {namespace}")
        for obj in matches:
            chosen[(obj["kind"], obj["metadata"]["name"])] = obj
    return list(chosen.values())


def _missing_refs(label: str, pod: dict[str, Any], keys: dict[str, set[str]]) -> list[Finding]:
    findings = []
    for group in ("containers", "initContainers"):
        for container in pod.get(group) or []:
            for env in container.get("env") or []:
                ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                if not ref or ref.get("optional"):
                    continue
                name, key = ref.get("name", ""), ref.get("key", "")
                where = f"env {env.get('name')} (container {container.get('name')})"
                if name not in keys:
                    findings.append(_missing(label, where, name, keys))
                elif key not in keys[name]:
                    present = ", ".join(sorted(keys[name])) or "none"
                    findings.append(
                        Finding(
                            label,
                            f"{where}: Secret {name!r} has no key {key!r} (keys: {present})",
                            f"use one of its keys, or add {key!r} to the Secret's source",
                        )
                    )
            for source in container.get("envFrom") or []:
                ref = source.get("secretRef")
                if ref and not ref.get("optional") and ref.get("name") not in keys:
                    findings.append(_missing(label, "envFrom", ref.get("name", ""), keys))
    for volume in pod.get("volumes") or []:
        secret = volume.get("secret")
        if secret and not secret.get("optional") and secret.get("secretName") not in keys:
            where = f"volume {volume.get('name')}"
            findings.append(_missing(label, where, secret.get("secretName", ""), keys))
    return findings


def _missing(label: str, where: str, name: str, keys: dict[str, set[str]]) -> Finding:
    close = difflib.get_close_matches(name, sorted(keys), n=1)
    fix = f"did you mean {close[0]!r}?" if close else "create it, or let syncd manage it"
    return Finding(label, f"{where}: Secret {name!r} does not exist", fix)


def _slots(pod_spec: dict[str, Any]) -> Iterator[tuple[dict[str, Any], str]]:
    """Every (dict, key) in a pod spec whose value names a Secret."""
    for group in ("containers", "initContainers", "ephemeralContainers"):
        for container in pod_spec.get(group) or []:
            for env in container.get("env") or []:
                ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                if ref and "name" in ref:
                    yield ref, "name"
            for source in container.get("envFrom") or []:
                ref = source.get("secretRef")
                if ref and "name" in ref:
                    yield ref, "name"
    for volume in pod_spec.get("volumes") or []:
        secret = volume.get("secret")
        if secret and "secretName" in secret:
            yield secret, "secretName"
        for source in (volume.get("projected") or {}).get("sources") or []:
            ref = source.get("secret")
            if ref and "name" in ref:
                yield ref, "name"
    for pull in pod_spec.get("imagePullSecrets") or []:
        if "name" in pull:
            yield pull, "name"


def template_refs(template: dict[str, Any]) -> set[str]:
    """Names of every Secret a pod template references."""
    return {holder[key] for holder, key in _slots(template.get("spec") or {})}


def rewrite_refs(template: dict[str, Any], rename: Mapping[str, str]) -> bool:
    """Point every reference in ``rename`` at its new name; True when something changed."""
    changed = False
    for holder, key in _slots(template.get("spec") or {}):
        if holder[key] in rename:
            holder[key] = rename[holder[key]]
            changed = True
    return changed


def _refs_anywhere(data: Any) -> set[str]:
    """Secret names in a ControllerRevision's stored ``spec.template`` patch."""
    if not isinstance(data, dict):
        return set()
    template = (data.get("spec") or {}).get("template")
    return template_refs(template) if isinstance(template, dict) else set()


def rollout_status(obj: Mapping[str, Any], expected_generation: int) -> tuple[bool, str]:
    """``(done, message)`` as ``kubectl rollout status`` decides; ``failed: ...`` ends the wait."""
    meta, spec, status = obj["metadata"], obj.get("spec", {}), obj.get("status") or {}
    generation = max(int(meta.get("generation", 0)), expected_generation)
    if int(status.get("observedGeneration", 0)) < generation:
        return False, "waiting for the controller to observe the update"
    kind = obj.get("kind")
    if kind == "Deployment":
        return _deployment_status(spec, status)
    if kind == "StatefulSet":
        return _statefulset_status(spec, status)
    return _daemonset_status(status)


def _deployment_status(spec: Mapping[str, Any], status: Mapping[str, Any]) -> tuple[bool, str]:
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Progressing" and condition.get("reason") == (
            "ProgressDeadlineExceeded"
        ):
            return False, "failed: progress deadline exceeded"
    replicas = int(spec.get("replicas", 1))
    updated = int(status.get("updatedReplicas", 0))
    if updated < replicas:
        return False, f"{updated} of {replicas} updated replicas"
    if int(status.get("replicas", 0)) > updated:
        return False, f"{int(status.get('replicas', 0)) - updated} old replicas pending termination"
    if int(status.get("availableReplicas", 0)) < updated:
        return (
            False,
            f"{status.get('availableReplicas', 0)} of {updated} updated replicas available",
        )
    return True, "rolled out"


def _statefulset_status(spec: Mapping[str, Any], status: Mapping[str, Any]) -> tuple[bool, str]:
    strategy = spec.get("updateStrategy") or {}
    if strategy.get("type", "RollingUpdate") != "RollingUpdate":
        return True, "OnDelete: pods pick the new version when they are deleted"
    replicas = int(spec.get("replicas", 1))
    if int(status.get("readyReplicas", 0)) < replicas:
        return False, f"{status.get('readyReplicas', 0)} of {replicas} pods ready"
    partition = int((strategy.get("rollingUpdate") or {}).get("partition", 0))
    if partition:
        if int(status.get("updatedReplicas", 0)) < replicas - partition:
            return False, "partitioned roll out not done"
        return True, "partitioned roll out done"
    if status.get("updateRevision") != status.get("currentRevision"):
        return False, f"{status.get('updatedReplicas', 0)} of {replicas} pods updated"
    return True, "rolled out"


def _daemonset_status(status: Mapping[str, Any]) -> tuple[bool, str]:
    desired = int(status.get("desiredNumberScheduled", 0))
    if int(status.get("updatedNumberScheduled", 0)) < desired:
        return False, f"{status.get('updatedNumberScheduled', 0)} of {desired} updated pods"
    if int(status.get("numberAvailable", 0)) < desired:
        return False, f"{status.get('numberAvailable', 0)} of {desired} updated pods available"
    return True, "rolled out"
