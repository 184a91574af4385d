"""The ``swarm`` target: every content change becomes a new Docker Swarm secret.

Swarm secrets are immutable and can never be read back, so rotation works by new names:
version N+1 of ``openai_api_key`` is the secret ``openai_api_key-v4``; each consumer
service is repointed by one update that swaps the secret reference but keeps its target
file (``/run/secrets/openai_api_key`` stays put); syncd then waits for the rollout the way
``docker service update --detach=false`` does, and only afterwards removes old versions.

State lives in labels on the secrets (``syncd.*``), never a value. The fingerprint HMAC key
can't live in a secret (unreadable), so it is a Swarm *config* (readable back by managers)
or, for a stricter setup, a key file given to syncd.

Talks to the Docker API through docker-py's low-level ``APIClient``. A repoint posts the
full inspected service spec verbatim with its version index: the high-level helpers rebuild
the spec from a fixed list of fields and could drop ones they don't know.
"""

from __future__ import annotations

import base64
import binascii
import copy
import difflib
import hashlib
import json
import logging
import os
import re
import string
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from syncd.config import SecretSpec
from syncd.errors import ConvergenceError, TargetError
from syncd.model import Consumer, Finding, NewVersion, VersionInfo
from syncd.targets.base import Target, TargetConfig, TargetContext, kubernetes_only

log = logging.getLogger("syncd.targets.swarm")

#: Swarm's own limits (swarmkit ``validateSecretSpec``): 1 byte up to, not including, 500 KiB.
MAX_SECRET_BYTES = 500 * 1024
MAX_NAME = 64
NAME_RE = re.compile(r"^[a-zA-Z0-9]+(?:[a-zA-Z0-9-_.]*[a-zA-Z0-9])?$")
_SERVICE_NAME_RE = re.compile(r"^[a-zA-Z0-9](?:[a-zA-Z0-9-_.]*[a-zA-Z0-9])?$")
HASH_CHARS = 8

LABEL_PREFIX = "syncd."
LABEL_MANAGED = "syncd.managed-by"
MANAGED_BY = "syncd"
LABEL_NAME = "syncd.name"
LABEL_VERSION = "syncd.version"
LABEL_FINGERPRINT = "syncd.fingerprint"
LABEL_KEYS = "syncd.keys"
LABEL_SOURCE = "syncd.source"
LABEL_CREATED = "syncd.created-at"
LABEL_ROLE = "syncd.role"

#: How often convergence is polled (the docker CLI polls every 200 ms).
POLL_SECONDS = 0.25
#: The monitor window Swarm uses when a service's UpdateConfig sets none.
DEFAULT_MONITOR_SECONDS = 5.0
#: Attempts of one repoint when another writer updates the service in between.
REPOINT_ATTEMPTS = 5

#: Task states in lifecycle order, as the docker CLI ranks them for its progress display.
_TASK_ORDER = {
    s: i
    for i, s in enumerate(
        (
            "new",
            "allocated",
            "pending",
            "assigned",
            "accepted",
            "preparing",
            "ready",
            "starting",
            "running",
            "complete",
            "shutdown",
            "failed",
            "rejected",
        ),
        start=1,
    )
}

T = TypeVar("T")


class SwarmTls(BaseModel):
    """TLS settings for a remote Docker daemon (``tcp://host:2376``); paths are files."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ca_cert: str | None = Field(None, description="CA certificate that signed the daemon's.")
    client_cert: str | None = Field(None, description="Client certificate (PEM).")
    client_key: str | None = Field(None, description="Client key (PEM).")
    verify: bool = Field(True, description="Verify the daemon's certificate.")


class SwarmTargetConfig(TargetConfig):
    """``{type: swarm}``: the local daemon by default (``DOCKER_HOST`` and friends apply)."""

    type: Literal["swarm"]
    docker_host: str | None = Field(
        None,
        description="Docker API of a manager node, e.g. unix:///var/run/docker.sock or "
        "tcp://manager:2376; default: DOCKER_HOST / DOCKER_TLS_VERIFY / DOCKER_CERT_PATH.",
    )
    tls: SwarmTls | None = Field(None, description="TLS for a tcp:// docker_host.")
    naming: str = Field(
        "{name}-v{version}",
        description="Name of each version's secret; must use {name} and {version} once.",
    )
    key_config: str = Field(
        "syncd-fingerprint-key",
        description="Swarm config holding the fingerprint HMAC key (created on first run).",
    )
    key_file: str | None = Field(
        None,
        description="Keep the HMAC key in this file instead of a Swarm config (e.g. a Swarm "
        "secret mounted into syncd); relative to the config file.",
    )
    api_timeout: float = Field(60.0, gt=0, description="Seconds one Docker API call may take.")

    @field_validator("naming")
    @classmethod
    def _naming(cls, value: str) -> str:
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(value) if f is not None]
        except ValueError as exc:
            raise ValueError(f"naming {value!r} is not a valid template: {exc}") from exc
        if sorted(fields) != ["name", "version"]:
            raise ValueError(
                f"naming {value!r} must use {{name}} and {{version}} exactly once each, "
                "and no other field"
            )
        return value

    @field_validator("key_config")
    @classmethod
    def _key_config(cls, value: str) -> str:
        if not NAME_RE.match(value) or len(value) > MAX_NAME:
            raise ValueError(f"key_config {value!r} is not a valid Swarm config name")
        return value


def object_name(naming: str, name: str, version: int) -> str:
    """The secret name of one version, at most 64 characters.

    A name that would be longer keeps as much of the logical name as fits, plus a short hash
    of the whole logical name, so two long names that share a prefix never collide and a
    given logical name always maps to the same prefix.
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


def name_problem(naming: str, name: str) -> str | None:
    """Why ``name`` can't become a Swarm secret name under ``naming``, or ``None``."""
    try:
        candidate = object_name(naming, name, 1)
    except ValueError as exc:
        return str(exc)
    if NAME_RE.match(candidate):
        return None
    return (
        f"name {name!r} can't be made a Swarm secret name ({candidate!r}): use letters, "
        "digits, '-', '_' and '.', starting and ending with a letter or digit"
    )


@dataclass
class _Watch:
    """Convergence state of one consumer while waiting, as the docker CLI keeps it."""

    consumer: Consumer
    converged_at: float | None = None
    detail: str = "no update status yet"


class SwarmTarget(Target[SwarmTargetConfig]):
    """Versioned Swarm secrets, repointed services, convergence waits and safe collection."""

    type_name: ClassVar[str] = "swarm"
    config_model: ClassVar[type[TargetConfig]] = SwarmTargetConfig

    def __init__(self, config: SwarmTargetConfig, *, context: TargetContext) -> None:
        super().__init__(config, context=context)
        try:
            import docker  # noqa: F401 - only checks the SDK is there; connects lazily
        except ImportError as exc:
            raise TargetError(
                "the swarm target needs the Docker SDK: pip install 'syncd[swarm]'"
            ) from exc
        self._client: Any = None
        self._ids: dict[str, str] = {}
        self.key_path = (
            (context.base_dir / os.path.expanduser(config.key_file)).absolute()
            if config.key_file
            else None
        )

    # ------------------------------------------------------------------ config checks

    @classmethod
    def validate_spec(cls, spec: SecretSpec[Any], config: TargetConfig) -> list[str]:
        """Names Swarm can hold, one blob per secret, consumers as service names."""
        assert isinstance(config, SwarmTargetConfig)
        problems = []
        problem = name_problem(config.naming, spec.name)
        if problem:
            problems.append(problem)
        if spec.is_bundle and spec.format is None:
            problems.append(
                "a Swarm secret is one blob: a 'data' bundle needs 'format' (env, yaml or json)"
            )
        if isinstance(spec.consumers, list):
            seen: set[str] = set()
            for consumer in spec.consumers:
                if not _SERVICE_NAME_RE.match(consumer) or len(consumer) > 63:
                    problems.append(f"consumer {consumer!r} is not a valid Swarm service name")
                elif consumer in seen:
                    problems.append(f"consumer {consumer!r} is listed twice")
                seen.add(consumer)
        problems.extend(kubernetes_only(spec))
        return problems

    # ------------------------------------------------------------------ Docker API plumbing

    @property
    def _host(self) -> str:
        return self.config.docker_host or os.environ.get("DOCKER_HOST") or "the local Docker socket"

    def _api(self) -> Any:
        """The API client, created on first use so that building the target never connects."""
        if self._client is None:
            import docker
            import docker.errors
            import docker.tls
            import docker.utils

            kwargs: dict[str, Any] = {}
            if self.config.docker_host:
                kwargs["base_url"] = self.config.docker_host
            else:
                kwargs.update(docker.utils.kwargs_from_env())
            if self.config.tls is not None:
                kwargs["tls"] = self._tls_config(docker.tls)
            self.count_read("version")
            try:
                self._client = docker.APIClient(
                    version="auto", timeout=self.config.api_timeout, **kwargs
                )
            except docker.errors.DockerException as exc:
                raise TargetError(f"Docker daemon at {self._host} is not reachable: {exc}") from exc
        return self._client

    def _tls_config(self, tls_module: Any) -> Any:
        tls = self.config.tls
        assert tls is not None

        def path(value: str | None) -> str | None:
            if value is None:
                return None
            return str((self.context.base_dir / os.path.expanduser(value)).absolute())

        cert, key = path(tls.client_cert), path(tls.client_key)
        if (cert is None) != (key is None):
            raise TargetError("target.tls needs both client_cert and client_key, or neither")
        ca = path(tls.ca_cert)
        return tls_module.TLSConfig(
            client_cert=(cert, key) if cert and key else None,
            ca_cert=ca,
            verify=(ca or True) if tls.verify else False,
        )

    def _call(self, operation: str, fn: Callable[[Any], T], *, write: bool = False) -> T:
        """Run one Docker API call, counted, with Docker's errors turned into ``TargetError``."""
        api = self._api()
        if write:
            self.count_write(operation)
        else:
            self.count_read(operation)
        import docker.errors
        import requests.exceptions

        try:
            return fn(api)
        except docker.errors.APIError as exc:
            raise _api_error(exc, operation, self._host) from exc
        except (requests.exceptions.RequestException, docker.errors.DockerException) as exc:
            raise TargetError(f"Docker daemon at {self._host} is not reachable: {exc}") from exc

    # ------------------------------------------------------------------ fingerprint key

    def load_key(self) -> bytes | None:
        """The HMAC key from the key file or the ``key_config`` Swarm config."""
        if self.key_path is not None:
            try:
                text = self.key_path.read_text(encoding="ascii")
            except FileNotFoundError:
                return None
            except (OSError, UnicodeDecodeError) as exc:
                raise TargetError(
                    f"can't read the fingerprint key file {self.key_path}: {exc}"
                ) from exc
            return _parse_key(text, f"key file {self.key_path}")
        name = self.config.key_config
        configs = self._call("list-configs", lambda api: api.configs(filters={"name": name}))
        # the name filter matches prefixes; the listing carries the data (API >= 1.30)
        data = next(
            ((c.get("Spec") or {}).get("Data") for c in configs if c["Spec"]["Name"] == name),
            None,
        )
        if data is None:
            return None
        try:
            text = base64.b64decode(data).decode("ascii")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise TargetError(f"Swarm config {name!r} does not hold a syncd key") from exc
        return _parse_key(text, f"Swarm config {name!r}")

    def store_key(self, key: bytes) -> None:
        """Store a new key; refuses to overwrite one another instance stored meanwhile."""
        text = key.hex() + "\n"
        if self.key_path is not None:
            try:
                self.key_path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError as exc:
                raise TargetError(
                    f"fingerprint key file {self.key_path} appeared meanwhile; next cycle uses it"
                ) from exc
            except OSError as exc:
                raise TargetError(
                    f"can't create the fingerprint key file {self.key_path}: {exc}"
                ) from exc
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.write(text)
            return
        labels = {LABEL_MANAGED: MANAGED_BY, LABEL_ROLE: "fingerprint-key"}
        name = self.config.key_config
        try:
            self._call(
                "create-config",
                lambda api: api.create_config(name, text.encode("ascii"), labels=labels),
                write=True,
            )
        except _Conflict as exc:
            raise TargetError(
                f"Swarm config {name!r} was created by another syncd meanwhile; next cycle uses it"
            ) from exc

    # ------------------------------------------------------------------ versions

    def _managed_secrets(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call(
            "list-secrets",
            lambda api: api.secrets(filters={"label": f"{LABEL_MANAGED}={MANAGED_BY}"}),
        )
        return result

    def list_versions(self, names: Sequence[str]) -> dict[str, list[VersionInfo]]:
        """Every managed version in the swarm, also of names not asked for (``prune``)."""
        del names
        found: dict[str, list[VersionInfo]] = {}
        for secret in self._managed_secrets():
            info = _version_info(secret)
            if info is None:
                log.warning(
                    "secret %s carries syncd labels that don't parse; ignoring it",
                    (secret.get("Spec") or {}).get("Name", secret.get("ID")),
                )
                continue
            self._ids[info.object_name] = secret["ID"]
            found.setdefault(info.secret, []).append(info)
        for versions in found.values():
            versions.sort(key=lambda v: v.version)
        return found

    def create_version(self, item: NewVersion) -> VersionInfo:
        if len(item.data) != 1:
            raise TargetError(
                f"secret {item.secret!r}: a Swarm secret is one blob, got {len(item.data)} keys "
                "(give the bundle a 'format')"
            )
        (value,) = item.data.values()
        if not value:
            raise TargetError(
                f"secret {item.secret!r}: the value is empty; Swarm secrets hold 1 byte to 500 KiB"
            )
        if len(value) >= MAX_SECRET_BYTES:
            raise TargetError(
                f"secret {item.secret!r}: the value is {len(value)} bytes; Swarm secrets must be "
                f"smaller than 500 KiB ({MAX_SECRET_BYTES} bytes)"
            )
        try:
            name = object_name(self.config.naming, item.secret, item.version)
        except ValueError as exc:
            raise TargetError(f"secret {item.secret!r}: {exc}") from exc
        info = item.stored_as(name)
        labels = _labels(item)
        try:
            created = self._call(
                "create-secret",
                lambda api: api.create_secret(name, value, labels=labels),
                write=True,
            )
        except _Conflict:
            return self._adopt_existing(info)
        self._ids[name] = created["ID"]
        return info

    def import_existing(self, item: NewVersion, *, trust: bool) -> VersionInfo | None:
        """Label a hand-made secret named like the logical secret as version 1.

        Swarm never gives secret data back, so the value can't be compared with the source:
        this needs ``trust`` (``syncd import --trust-values``) after checking it by other means.
        Only labels change; services referencing it are not touched.
        """
        try:
            existing = self._call("inspect-secret", lambda api: api.inspect_secret(item.secret))
        except _NotFound:
            return None
        spec = dict(existing.get("Spec") or {})
        if (spec.get("Labels") or {}).get(LABEL_MANAGED) == MANAGED_BY:
            return None
        if not trust:
            raise TargetError(
                f"secret {item.secret!r}: Swarm can't give its data back to compare with the "
                "source; check it matches, then run syncd import --trust-values"
            )
        spec["Labels"] = {**(spec.get("Labels") or {}), **_labels(item)}
        index = existing["Version"]["Index"]

        def post(api: Any) -> Any:
            url = api._url("/secrets/{0}/update", existing["ID"])
            return api._result(api._post_json(url, data=spec, params={"version": index}))

        self._call("update-secret", post, write=True)
        return _version_info({"Spec": spec})

    def _adopt_existing(self, info: VersionInfo) -> VersionInfo:
        """A secret of that name exists: fine if it is this very version (a repeated step)."""
        existing = self._call("inspect-secret", lambda api: api.inspect_secret(info.object_name))
        labels = (existing.get("Spec") or {}).get("Labels") or {}
        if (
            labels.get(LABEL_MANAGED) == MANAGED_BY
            and labels.get(LABEL_NAME) == info.secret
            and labels.get(LABEL_VERSION) == str(info.version)
            and labels.get(LABEL_FINGERPRINT) == info.fingerprint
        ):
            self._ids[info.object_name] = existing["ID"]
            return info
        raise TargetError(
            f"secret {info.secret!r}: a Swarm secret named {info.object_name!r} already exists "
            "and is not this version; remove or rename it"
        )

    # ------------------------------------------------------------------ consumers

    def _services(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("list-services", lambda api: api.services())
        return result

    def find_consumers(
        self, specs: Sequence[SecretSpec[Any]], versions: Mapping[str, list[VersionInfo]]
    ) -> dict[str, list[Consumer] | TargetError]:
        """One service listing answers for every secret.

        A service counts as a consumer of a secret when its current spec references any
        managed version of it, or an unmanaged secret named exactly like the logical secret
        (a hand-made ``openai_api_key``), so existing setups are adopted on the first run.
        """
        services = self._services()
        interest: dict[str, set[str]] = {}
        for spec in specs:
            interest[spec.name] = {v.object_name for v in versions.get(spec.name, [])} | {spec.name}
        by_service: dict[str, Consumer] = {}
        for service in services:
            name = (service.get("Spec") or {}).get("Name", "")
            referenced = _secret_names(service.get("Spec"))
            refs = {
                secret: frozenset(referenced & objects)
                for secret, objects in interest.items()
                if referenced & objects
            }
            by_service[name] = Consumer(kind="service", name=name, refs=refs)
        result: dict[str, list[Consumer] | TargetError] = {}
        for spec in specs:
            if spec.consumers == "auto":
                result[spec.name] = sorted(
                    (c for c in by_service.values() if spec.name in c.refs), key=lambda c: c.name
                )
                continue
            missing = [n for n in spec.consumers if n not in by_service]
            if missing:
                result[spec.name] = TargetError(
                    f"secret {spec.name!r}: consumer service(s) {', '.join(missing)} not found "
                    f"in the swarm at {self._host}"
                )
                continue
            for n in spec.consumers:
                if spec.name not in by_service[n].refs:
                    log.warning(
                        "service %s is listed as a consumer of %s but references no version "
                        "of it; add one with docker service update --secret-add",
                        n,
                        spec.name,
                    )
            result[spec.name] = [by_service[n] for n in spec.consumers]
        return result

    def diagnose(self) -> list[Finding]:
        """``*_FILE`` variables that point under /run/secrets at a file no secret provides."""
        findings = []
        for service in self._services():
            spec = service.get("Spec") or {}
            container = (spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}
            mounted = {_mount_path(ref) for ref in container.get("Secrets") or []}
            for entry in container.get("Env") or []:
                var, _, path = entry.partition("=")
                if var.endswith("_FILE") and path.startswith(SECRETS_DIR) and path not in mounted:
                    findings.append(_missing_file(spec.get("Name", "?"), var, path, mounted))
        return findings

    def _secret_id(self, name: str) -> str:
        if name not in self._ids:
            secret = self._call("inspect-secret", lambda api: api.inspect_secret(name))
            self._ids[name] = secret["ID"]
        return self._ids[name]

    def repoint(self, consumer: Consumer, swaps: Mapping[str, VersionInfo]) -> None:
        """One service update swapping every reference in ``swaps``; target files stay put.

        The full inspected spec goes back unchanged except for the swapped ``SecretID`` and
        ``SecretName``, guarded by the spec's version index; when another writer got in
        between (``update out of sequence``) the spec is inspected again and the swap retried.
        """
        new_ids = {old: self._secret_id(v.object_name) for old, v in swaps.items()}
        for attempt in range(1, REPOINT_ATTEMPTS + 1):
            service = self._call("inspect-service", lambda api: api.inspect_service(consumer.name))
            spec = copy.deepcopy(service["Spec"])
            container = (spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}
            updated, changed = _swap_refs(container.get("Secrets") or [], swaps, new_ids)
            if not changed:
                return  # already done (a repeated step) or the reference was removed
            container["Secrets"] = updated
            try:
                result = self._update_service(service["ID"], spec, service["Version"]["Index"])
            except TargetError as exc:
                if "out of sequence" in str(exc) and attempt < REPOINT_ATTEMPTS:
                    log.info("%s changed meanwhile; repointing again", consumer.label)
                    continue
                raise
            for warning in (result or {}).get("Warnings") or []:
                log.warning("%s: %s", consumer.label, warning)
            moved = ", ".join(f"{old} -> {v.object_name}" for old, v in sorted(swaps.items()))
            log.info("repointed %s: %s", consumer.label, moved)
            return
        raise TargetError(f"{consumer.label} kept changing; gave up repointing")

    def _update_service(self, service_id: str, spec: dict[str, Any], index: int) -> Any:
        """POST the whole spec as given (docker-py's ``update_service`` rebuilds it)."""

        def post(api: Any) -> Any:
            url = api._url("/services/{0}/update", service_id)
            return api._result(api._post_json(url, data=spec, params={"version": index}), json=True)

        return self._call("update-service", post, write=True)

    def wait_converged(
        self, consumers: Sequence[Consumer], *, timeout: float
    ) -> dict[str, ConvergenceError | None]:
        """Wait as ``docker service update --detach=false`` does, for all consumers at once.

        Per poll: the service's ``UpdateStatus`` (``paused`` and any ``rollback_*`` state
        fail the swap: the orchestrator is putting the old version back); then the newest
        up-to-date task of every slot (or node, for global services) must be running, and
        stay so for the service's monitor window. ``completed`` before that means the
        orchestrator already saw the window through.
        """
        deadline = time.monotonic() + timeout
        pending = {c.label: _Watch(c) for c in consumers}
        results: dict[str, ConvergenceError | None] = {}
        while pending:
            nodes = self._active_nodes()
            for label, watch in list(pending.items()):
                done, error = self._poll(watch, nodes)
                if done:
                    results[label] = error
                    del pending[label]
            if not pending:
                break
            if time.monotonic() >= deadline:
                for label, watch in pending.items():
                    results[label] = ConvergenceError(
                        f"{label} did not converge within {timeout:g}s ({watch.detail})"
                    )
                break
            time.sleep(POLL_SECONDS)
        return results

    def _active_nodes(self) -> set[str]:
        nodes = self._call("list-nodes", lambda api: api.nodes())
        return {n["ID"] for n in nodes if ((n.get("Status") or {}).get("State")) != "down"}

    def _poll(self, watch: _Watch, nodes: set[str]) -> tuple[bool, ConvergenceError | None]:
        """One look at one consumer: ``(finished, error)``."""
        consumer = watch.consumer
        service = self._call("inspect-service", lambda api: api.inspect_service(consumer.name))
        spec = service.get("Spec") or {}
        monitor_ns = (spec.get("UpdateConfig") or {}).get("Monitor") or 0
        monitor = monitor_ns / 1e9 if monitor_ns else DEFAULT_MONITOR_SECONDS
        status = service.get("UpdateStatus") or {}
        state = status.get("State")
        message = status.get("Message") or ""
        if state == "paused" or (state or "").startswith("rollback"):
            return True, ConvergenceError(
                f"{consumer.label}: update {state}"
                + (f": {message}" if message else "")
                + "; the old version stays in place"
            )
        if state == "completed" and watch.converged_at is None:
            return True, None
        now = time.monotonic()
        if watch.converged_at is not None and now - watch.converged_at >= monitor:
            return True, None
        mode = spec.get("Mode") or {}
        if "ReplicatedJob" in mode or "GlobalJob" in mode:
            return True, None  # a job has no steady state; its next run uses the new spec
        tasks = self._call(
            "list-tasks",
            lambda api: api.tasks(filters={"service": service["ID"], "_up-to-date": "true"}),
        )
        if "Global" in mode:
            latest = _latest_tasks(tasks, key="NodeID", nodes=nodes)
            wanted = len(latest)
            ready = wanted > 0
        else:
            latest = _latest_tasks(tasks, key="Slot", nodes=nodes)
            wanted = int(((mode.get("Replicated") or {}).get("Replicas")) or 0)
            ready = True
        running = sum(
            1
            for t in latest.values()
            if _TASK_ORDER.get(t.get("DesiredState", ""), 99) <= _TASK_ORDER["running"]
            and (t.get("Status") or {}).get("State") == "running"
        )
        watch.detail = f"{running}/{wanted} up-to-date tasks running, update {state or 'pending'}"
        if ready and running == wanted:
            if watch.converged_at is None:
                watch.converged_at = now
        else:
            watch.converged_at = None
        return False, None

    # ------------------------------------------------------------------ collection

    def protected(self) -> set[str]:
        """Secrets referenced by any service's current spec or previous (rollback) spec.

        Swarm refuses to remove a secret the current spec uses, but not one only the
        previous spec uses: deleting that would make ``docker service rollback`` fail.
        """
        names: set[str] = set()
        for service in self._services():
            names |= _secret_names(service.get("Spec"))
            names |= _secret_names(service.get("PreviousSpec"))
        return names

    def delete_version(self, version: VersionInfo) -> bool:
        """Remove one version's secret; ``False`` while a service still uses it."""
        ref = self._ids.get(version.object_name, version.object_name)
        try:
            self._call("remove-secret", lambda api: api.remove_secret(ref), write=True)
        except _InUse:
            return False
        except _NotFound:
            pass  # already gone: a repeated step
        self._ids.pop(version.object_name, None)
        return True

    def close(self) -> None:
        """Close the API client's connection pool."""
        if self._client is not None:
            self._client.close()
            self._client = None


# ---------------------------------------------------------------------- helpers


class _Conflict(TargetError):
    """The object already exists (HTTP 409)."""


class _InUse(TargetError):
    """Swarm refuses: the secret is still referenced by a service."""


class _NotFound(TargetError):
    """The object does not exist (HTTP 404)."""


def _api_error(exc: Any, operation: str, host: str) -> TargetError:
    """A user-facing error for a Docker API error response."""
    explanation = str(getattr(exc, "explanation", None) or exc)
    status = getattr(exc, "status_code", None)
    if "not a swarm manager" in explanation:
        return TargetError(
            f"the Docker node at {host} is not a swarm manager ({explanation}); point "
            "target.docker_host at a manager node"
        )
    if "is in use by" in explanation:
        return _InUse(explanation)
    if status == 409 or "already exists" in explanation:
        return _Conflict(explanation)
    if status == 404:
        return _NotFound(f"{operation}: {explanation}")
    return TargetError(f"Docker API {operation} failed ({status}): {explanation}")


def _parse_key(text: str, where: str) -> bytes:
    try:
        key = bytes.fromhex(text.strip())
    except ValueError as exc:
        raise TargetError(f"{where} does not hold a hex-encoded key") from exc
    if len(key) < 16:
        raise TargetError(f"{where} holds a key shorter than 16 bytes")
    return key


def _labels(item: NewVersion) -> dict[str, str]:
    """The labels that make a Swarm secret a managed version (never a value)."""
    return {
        LABEL_MANAGED: MANAGED_BY,
        LABEL_NAME: item.secret,
        LABEL_VERSION: str(item.version),
        LABEL_FINGERPRINT: item.fingerprint,
        LABEL_KEYS: json.dumps(item.keys, sort_keys=True, separators=(",", ":")),
        LABEL_SOURCE: item.source,
        LABEL_CREATED: item.created_at,
    }


def _version_info(secret: Mapping[str, Any]) -> VersionInfo | None:
    spec = secret.get("Spec") or {}
    labels = spec.get("Labels") or {}
    try:
        keys = json.loads(labels.get(LABEL_KEYS) or "{}")
        if not isinstance(keys, dict):
            return None
        return VersionInfo(
            secret=labels[LABEL_NAME],
            version=int(labels[LABEL_VERSION]),
            object_name=spec["Name"],
            fingerprint=labels[LABEL_FINGERPRINT],
            keys={str(k): str(v) for k, v in keys.items()},
            source=labels.get(LABEL_SOURCE, ""),
            created_at=labels.get(LABEL_CREATED, ""),
        )
    except (KeyError, ValueError):
        return None


SECRETS_DIR = "/run/secrets/"


def _mount_path(ref: Mapping[str, Any]) -> str:
    """Where a service's secret reference appears in the container."""
    name = str((ref.get("File") or {}).get("Name") or ref.get("SecretName", ""))
    return name if name.startswith("/") else SECRETS_DIR + name


def _missing_file(service: str, var: str, path: str, mounted: set[str]) -> Finding:
    close = difflib.get_close_matches(path, sorted(mounted), n=1)
    if close:
        fix = f"set {var}={close[0]} (a secret is mounted there)"
    else:
        name = path.removeprefix(SECRETS_DIR)
        fix = f"docker service update --secret-add source=<secret>,target={name} {service}"
    return Finding(
        subject=f"service/{service}",
        problem=f"{var}={path} but no secret is mounted at {path}",
        fix=fix,
    )


def _secret_names(spec: Mapping[str, Any] | None) -> set[str]:
    container = ((spec or {}).get("TaskTemplate") or {}).get("ContainerSpec") or {}
    return {ref["SecretName"] for ref in container.get("Secrets") or [] if ref.get("SecretName")}


def _swap_refs(
    refs: Sequence[Mapping[str, Any]],
    swaps: Mapping[str, VersionInfo],
    new_ids: Mapping[str, str],
) -> tuple[list[dict[str, Any]], bool]:
    """The secret references with each swapped one renamed; ``File`` is left untouched.

    A service caught mid-way (referencing an old and the new version at one target file)
    ends with one reference per (secret, file) pair.
    """
    updated: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    changed = False
    for ref in refs:
        entry = dict(ref)
        successor = swaps.get(entry.get("SecretName", ""))
        if successor is not None:
            entry["SecretName"] = successor.object_name
            entry["SecretID"] = new_ids[ref["SecretName"]]
            changed = True
        key = (entry.get("SecretID", ""), json.dumps(entry.get("File"), sort_keys=True))
        if key in seen:
            continue
        seen.add(key)
        updated.append(entry)
    return updated, changed


def _latest_tasks(
    tasks: Sequence[Mapping[str, Any]], *, key: str, nodes: set[str]
) -> dict[Any, Mapping[str, Any]]:
    """The task that speaks for each slot (or node): lowest desired state, then least far along.

    Tasks on nodes that are down don't count, as in the docker CLI.
    """
    chosen: dict[Any, Mapping[str, Any]] = {}
    for task in tasks:
        desired = _TASK_ORDER.get(task.get("DesiredState", ""), 0)
        observed = _TASK_ORDER.get((task.get("Status") or {}).get("State", ""), 0)
        if not desired or not observed:
            continue
        node = task.get("NodeID")
        if node and node not in nodes:
            continue
        slot = task.get(key)
        current = chosen.get(slot)
        if current is not None:
            cur_desired = _TASK_ORDER.get(current.get("DesiredState", ""), 0)
            cur_observed = _TASK_ORDER.get((current.get("Status") or {}).get("State", ""), 0)
            if cur_desired < desired or (cur_desired == desired and cur_observed <= observed):
                continue
        chosen[slot] = task
    return chosen


__all__ = ["SwarmTarget", "SwarmTargetConfig", "SwarmTls", "name_problem", "object_name"]
