"""``SwarmTarget``: the target interface over one Swarm, for one installation.

This module keeps the versions (list, create, adopt, relabel, delete) and ties in the
other concerns: names (``names``), the key (``keys``), consumers and doctor
(``consumers``), what a repoint swaps (``repoint``) and the rollout wait (``convergence``).

It sees only its installation's objects: a secret labelled with another ``syncd.instance``
is never listed as a version, counted as a consumer's reference, collected, pruned or
adopted, and creating a version under a name another installation holds is an error naming
that installation. Secrets from before installations had names (no instance label) belong to
the default installation, which labels the ones of its own secrets in ``repair``.
"""

from __future__ import annotations

import base64
import binascii
import copy
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, ClassVar

from syncd.config import SecretSpec
from syncd.errors import ConvergenceError, TargetError
from syncd.model import Consumer, Finding, NewVersion, Rollout, VersionInfo
from syncd.registry import missing_modules
from syncd.render import FOR_EACH, source_parts
from syncd.targets.base import (
    DEFAULT_INSTANCE,
    Target,
    TargetConfig,
    TargetContext,
    kubernetes_only,
)
from syncd.targets.swarm import convergence, keys
from syncd.targets.swarm.api import Conflict, DockerApi, InUse, NotFound, OutOfSequence
from syncd.targets.swarm.consumers import consumers_of, file_findings, secret_refs
from syncd.targets.swarm.labels import (
    LABEL_FINGERPRINT,
    LABEL_HISTORY,
    LABEL_INSTANCE,
    LABEL_MANAGED,
    LABEL_NAME,
    LABEL_ROLLOUT,
    LABEL_SOURCE,
    LABEL_VERSION,
    MANAGED_BY,
    MANAGED_FILTER,
    key_labels,
    labels_of,
    owner,
    version_info,
    version_labels,
)
from syncd.targets.swarm.names import (
    collisions,
    name_problem,
    object_name,
    reserved_names,
    service_name_problem,
    shown,
)
from syncd.targets.swarm.repoint import moved_meanwhile, swap_refs, version_named
from syncd.targets.swarm.settings import SwarmTargetConfig

log = logging.getLogger("syncd.targets.swarm")

#: Swarm's own limits (swarmkit ``validateSecretSpec``): 1 byte up to, not including, 500 KiB.
MAX_SECRET_BYTES = 500 * 1024
#: Attempts of one repoint when another writer updates the service in between.
REPOINT_ATTEMPTS = 5


class SwarmTarget(Target[SwarmTargetConfig]):
    """Versioned Swarm secrets, repointed services, convergence waits and safe collection.

    It stores no settings besides the data (``stored_settings`` stays empty): a secret
    file's mode and owner belong to each service's reference, which repointing keeps.
    """

    type_name: ClassVar[str] = "swarm"
    config_model: ClassVar[type[TargetConfig]] = SwarmTargetConfig

    def __init__(self, config: SwarmTargetConfig, *, context: TargetContext) -> None:
        super().__init__(config, context=context)
        self.instance = context.instance
        self._api = DockerApi(
            config,
            base_dir=context.base_dir,
            count_read=self.count_read,
            count_write=self.count_write,
        )
        self.key_path = (
            (context.base_dir / os.path.expanduser(config.key_file)).absolute()
            if config.key_file
            else None
        )
        self.key_config = config.key_config_name(context.instance)
        self._reserved = reserved_names(key_config=config.key_config, key_file=config.key_file)
        #: repair's listing, handed to the list_versions that follows it in the same cycle
        self._listing: list[dict[str, Any]] | None = None
        #: every managed secret of the last listing, lowercased name -> owning installation
        self._owners: dict[str, str] = {}
        #: this installation's version secrets of the last listing, by object name
        self._secrets: dict[str, dict[str, Any]] = {}
        self._versions: dict[str, list[VersionInfo]] = {}
        self._listed = False
        self._ids: dict[str, str] = {}
        self._service_ids: dict[str, str] = {}
        self._key_adopted = False
        #: repair's lookup of the key config, handed to the load_key that follows it
        self._key_record: list[dict[str, Any] | None] = []

    # ------------------------------------------------------------------ config checks

    @classmethod
    def unavailable(cls) -> str | None:
        """The Docker SDK is an extra."""
        return missing_modules("the swarm target", ("docker",), "swarm")

    @classmethod
    def validate_spec(cls, spec: SecretSpec[Any], config: TargetConfig) -> list[str]:
        """Names Swarm can hold, one blob per secret, consumers as service names.

        Runs at config load and for every name a source supplies (``for_each`` keys).
        """
        assert isinstance(config, SwarmTargetConfig)
        problems = []
        reserved = reserved_names(key_config=config.key_config, key_file=config.key_file)
        problem = name_problem(config.naming, spec.name, reserved)
        if problem:
            problems.append(problem)
        if spec.is_bundle and not spec.renders_one:
            problems.append(
                "a Swarm secret is one blob: a 'data' bundle needs 'format' (env, yaml or json) "
                "or a template"
            )
        if isinstance(spec.consumers, list):
            seen: set[str] = set()
            for consumer in spec.consumers:
                problem = service_name_problem(consumer)
                if problem:
                    problems.append(problem)
                elif consumer.lower() in seen:
                    problems.append(f"consumer {shown(consumer)} is listed twice")
                seen.add(consumer.lower())
        problems.extend(kubernetes_only(spec))
        return problems

    @classmethod
    def validate_set(
        cls, specs: Sequence[SecretSpec[Any]], config: TargetConfig
    ) -> list[tuple[int, str]]:
        """Two logical names whose versions would be one Swarm object (names ignore case)."""
        assert isinstance(config, SwarmTargetConfig)
        return collisions(config.naming, [spec.name for spec in specs])

    def max_value_bytes(self) -> int:
        """Swarm refuses a secret of 500 KiB or more."""
        return MAX_SECRET_BYTES - 1

    def prepare(self) -> None:
        """Build the Docker client settings (TLS files must exist) and read a key file that
        exists; no request to Docker."""
        self._api.settings()
        if self.key_path is not None:
            keys.read_key_file(self.key_path)

    # ------------------------------------------------------------------ fingerprint key

    def load_key(self) -> bytes | None:
        """The HMAC key from the key file or this installation's key config."""
        if self.key_path is not None:
            return keys.read_key_file(self.key_path)
        config = self._key_record.pop() if self._key_record else self._key_lookup()
        if config is None:
            return None
        who = owner(labels_of(config))
        if who is not None and who != self.instance:
            raise TargetError(
                f"Swarm config {self.key_config!r} holds the key of syncd instance {who!r}; "
                f"give this installation ({self.instance!r}) its own target.key_config"
            )
        data = (config.get("Spec") or {}).get("Data")
        fix = keys.config_fix(self.key_config)
        try:
            raw = base64.b64decode(data or "", validate=True)
        except (binascii.Error, ValueError):
            raw = b"\xff"  # not base64: reported as not a key below
        return keys.parse_key(raw, where=f"Swarm config {self.key_config!r}", fix=fix)

    def _key_lookup(self) -> dict[str, Any] | None:
        return self._api.named("configs", self.key_config)

    def store_key(self, key: bytes) -> None:
        """Store a new key; one another instance stored meanwhile wins."""
        if self.key_path is not None:
            keys.write_key_file(self.key_path, key)
            return
        labels = key_labels(self.instance)
        try:
            self._api.call(
                "create-config",
                lambda api: api.create_config(self.key_config, keys.key_text(key), labels=labels),
                write=True,
            )
        except Conflict as exc:
            raise TargetError(
                f"Swarm config {self.key_config!r} was created meanwhile (or differs only in "
                "case from an existing one); the next cycle uses it"
            ) from exc

    # ------------------------------------------------------------------ versions

    def _list_managed(self) -> list[dict[str, Any]]:
        listed: list[dict[str, Any]] = self._api.call(
            "list-secrets", lambda api: api.secrets(filters=MANAGED_FILTER)
        )
        return listed

    def list_versions(self, names: Sequence[str]) -> dict[str, list[VersionInfo]]:
        """This installation's versions, also of names not asked for (``prune``); never writes.

        Secrets without an instance label count as the default installation's, so a dry run
        before ``repair`` labels them reports the same as a real cycle.
        """
        del names
        listing = self._listing if self._listing is not None else self._list_managed()
        self._listing = None
        self._owners, self._secrets, self._ids = {}, {}, {}
        found: dict[str, list[VersionInfo]] = {}
        for secret in listing:
            name = str((secret.get("Spec") or {}).get("Name", ""))
            who = owner(labels_of(secret)) or DEFAULT_INSTANCE
            self._owners[name.lower()] = who
            if who != self.instance:
                continue
            info = version_info(secret)
            if info is None:
                log.warning(
                    "secret %s carries syncd labels that don't parse; ignoring it", shown(name)
                )
                continue
            self._secrets[name] = secret
            self._ids[name] = secret["ID"]
            found.setdefault(info.secret, []).append(info)
        for versions in found.values():
            versions.sort(key=lambda v: v.version)
        self._versions = found
        self._listed = True
        return found

    def create_version(self, item: NewVersion) -> VersionInfo:
        """Create ``<name>-v<N>``, refusing a name, size or owner problem before any write."""
        if len(item.data) != 1:
            raise TargetError(
                f"secret {shown(item.secret)}: a Swarm secret is one blob, got {len(item.data)} "
                "keys (give the bundle a 'format')"
            )
        (value,) = item.data.values()
        if not value:
            raise TargetError(
                f"secret {shown(item.secret)}: the value is empty; Swarm secrets hold 1 byte "
                "to 500 KiB"
            )
        if len(value) >= MAX_SECRET_BYTES:
            raise TargetError(
                f"secret {shown(item.secret)}: the value is {len(value)} bytes; Swarm secrets "
                f"must be smaller than 500 KiB ({MAX_SECRET_BYTES} bytes)"
            )
        problem = name_problem(self.config.naming, item.secret, self._reserved)
        if problem is not None:
            raise TargetError(f"secret {shown(item.secret)}: {problem}; nothing was written")
        name = object_name(self.config.naming, item.secret, item.version)
        info = item.stored_as(name)
        other = self._owners.get(name.lower())
        if other is not None and other != self.instance:
            raise self._taken(item.secret, name, other)
        labels = version_labels(item, self.instance)
        try:
            created = self._api.call(
                "create-secret",
                lambda api: api.create_secret(name, value, labels=labels),
                write=True,
            )
        except Conflict:
            return self._adopt_existing(info)
        self._ids[name] = created["ID"]
        self._owners[name.lower()] = self.instance
        return info

    def _taken(self, secret: str, name: str, other: str) -> TargetError:
        return TargetError(
            f"secret {shown(secret)}: the Swarm secret {name!r} belongs to syncd instance "
            f"{other!r}; installations can't share object names, so give this one "
            f"(instance {self.instance!r}) its own target.naming, e.g. "
            f"'{{name}}-{self.instance}-v{{version}}'"
        )

    def _adopt_existing(self, info: VersionInfo) -> VersionInfo:
        """A secret of that name exists: fine if it is this very version (a repeated step)."""
        same = self._api.named_like("secrets", info.object_name)
        existing = next((s for s in same if s["Spec"]["Name"] == info.object_name), None)
        if existing is None:
            taken = ", ".join(sorted(repr(s["Spec"]["Name"]) for s in same)) or "one"
            raise TargetError(
                f"secret {shown(info.secret)}: Swarm already has a secret named like "
                f"{info.object_name!r} ({taken}; Swarm names ignore case); remove or rename it"
            )
        labels = labels_of(existing)
        who = owner(labels)
        if who is not None and who != self.instance:
            raise self._taken(info.secret, info.object_name, who)
        if (
            who == self.instance
            and labels.get(LABEL_NAME) == info.secret
            and labels.get(LABEL_VERSION) == str(info.version)
        ):
            if labels.get(LABEL_FINGERPRINT) == info.fingerprint:
                self._ids[info.object_name] = existing["ID"]
                return info
            # another process of this installation got there first with another value: a
            # live version (consumers may use it already), not something to remove
            raise TargetError(
                f"secret {shown(info.secret)}: version {info.version} ({info.object_name!r}) "
                "was created meanwhile from a different value by another run of this "
                f"installation ({self.instance!r}; are two syncd processes writing at once?); "
                f"nothing was written for this run's value, and the next cycle makes it "
                f"version {info.version + 1}"
            )
        raise TargetError(
            f"secret {shown(info.secret)}: a Swarm secret named {info.object_name!r} already "
            "exists and is not this version; remove or rename it"
        )

    def update_source(self, version: VersionInfo, source: str) -> bool:
        """Relabel an unchanged version with its new source reference (Swarm lets labels
        change; the data stays). ``False`` when the secret moved since the listing."""
        secret = self._secrets.get(version.object_name)
        if secret is None:
            return False
        labels = labels_of(secret)
        if labels.get(LABEL_FINGERPRINT) != version.fingerprint:
            return False
        try:
            self._api.update_labels("secrets", secret, {**labels, LABEL_SOURCE: source})
        except (OutOfSequence, NotFound) as exc:
            log.info(
                "%s changed meanwhile; its source is recorded next cycle: %s",
                version.object_name,
                exc,
            )
            return False
        finally:
            del self._secrets[version.object_name]  # its version index moved
        return True

    def mark(self, version: VersionInfo, rollout: Rollout | None) -> VersionInfo:
        """Relabel a version with its rollout outcome, read afresh so that two marks in one
        cycle (rolling back, then rolled back) each see the other's version index."""
        for attempt in range(1, REPOINT_ATTEMPTS + 1):
            secret, labels = self._version_labels(version)
            if secret is None:
                raise TargetError(
                    f"{version.object_name} is no longer this installation's version "
                    f"{version.version}; its rollout outcome was not recorded"
                )
            marked = {k: v for k, v in labels.items() if k != LABEL_ROLLOUT}
            if rollout is not None:
                marked[LABEL_ROLLOUT] = rollout.to_label()
            try:
                self._api.update_labels("secrets", secret, marked)
            except OutOfSequence:
                if attempt < REPOINT_ATTEMPTS:
                    continue
                raise
            finally:
                self._secrets.pop(version.object_name, None)  # its version index moved
            return replace(version, rollout=rollout)
        raise TargetError(f"{version.object_name} kept changing; its outcome was not recorded")

    def write_history(self, version: VersionInfo, ledger: str) -> bool:
        """Relabel the secret's newest version with its ledger (Swarm lets labels change),
        read afresh by name like ``mark``; ``False`` when it is no longer that version or
        changed meanwhile (the next change of the secret records it)."""
        secret, labels = self._version_labels(version)
        if secret is None:
            return False
        try:
            self._api.update_labels("secrets", secret, {**labels, LABEL_HISTORY: ledger})
        except (OutOfSequence, NotFound) as exc:
            log.info("%s changed meanwhile: %s", version.object_name, exc)
            return False
        finally:
            self._secrets.pop(version.object_name, None)  # its version index moved
        return True

    def _version_labels(self, version: VersionInfo) -> tuple[dict[str, Any] | None, dict[str, str]]:
        """The secret stored as ``version``, read afresh by name, and its labels; ``None`` when
        it is gone, another installation's, or no longer that version (another fingerprint)."""
        secret = self._api.named("secrets", version.object_name)
        labels = labels_of(secret) if secret is not None else {}
        if (
            secret is None
            or owner(labels) != self.instance
            or labels.get(LABEL_FINGERPRINT) != version.fingerprint
        ):
            return None, {}
        return secret, labels

    def import_existing(self, item: NewVersion, *, trust: bool) -> VersionInfo | None:
        """Label a hand-made secret named exactly like the logical secret as version 1.

        Swarm never gives secret data back, so the value can't be compared with the source:
        this needs ``trust`` (``syncd import --trust-values``) after checking it by other means.
        Only labels change; services referencing it are not touched.
        """
        existing = self._api.named("secrets", item.secret)
        if existing is None:
            return None
        labels = labels_of(existing)
        who = owner(labels)
        if who == self.instance:
            return None
        if who is not None:
            raise TargetError(
                f"secret {shown(item.secret)}: the Swarm secret {item.secret!r} belongs to syncd "
                f"instance {who!r}; not imported"
            )
        if not trust:
            raise TargetError(
                f"secret {shown(item.secret)}: Swarm can't give its data back to compare with "
                "the source; check it matches, then run syncd import --trust-values"
            )
        new = {**labels, **version_labels(item, self.instance)}
        self._api.update_labels("secrets", existing, new)
        return version_info({"Spec": {**existing["Spec"], "Labels": new}})

    def repair(self) -> None:
        """Remove a killed run's temporary key files; in the default installation, label its
        secrets from before installations had names (and its key config) once.

        Only secrets of this config's own logical names (or of its ``for_each`` templates) are
        labelled; others stay unlabelled and still count as the default installation's. The
        listing is handed to the next ``list_versions``, so a cycle lists secrets once.
        """
        if self.key_path is not None:
            try:
                removed = keys.remove_stale_temps(self.key_path)
            except OSError as exc:
                log.warning("can't clean up temporary key files next to %s: %s", self.key_path, exc)
            else:
                for temp in removed:
                    log.info("removed %s, left by an interrupted run", temp)
        listing = self._list_managed()
        if self.instance == DEFAULT_INSTANCE:
            legacy = [s for s in listing if self._unlabelled_own(labels_of(s))]
            for secret in legacy:
                self._label_instance("secrets", secret)
            if legacy:
                listing = self._list_managed()
            if self.key_path is None and not self._key_adopted:
                config = self._key_lookup()
                if config is not None and self._unlabelled_own(labels_of(config), key=True):
                    self._label_instance("configs", config)
                    config = self._key_lookup()
                self._key_record = [config]  # load_key follows: spare it a second lookup
                self._key_adopted = True
        self._listing = listing

    def _unlabelled_own(self, labels: Mapping[str, str], *, key: bool = False) -> bool:
        """A managed object without an instance label that this config's secrets own."""
        if labels.get(LABEL_MANAGED) != MANAGED_BY or LABEL_INSTANCE in labels:
            return False
        if key:
            return True
        mine = self.context.secrets
        template = source_parts(labels.get(LABEL_SOURCE, "")).get(FOR_EACH)
        return labels.get(LABEL_NAME) in mine or (template is not None and template in mine)

    def _label_instance(self, kind: str, obj: Mapping[str, Any]) -> None:
        name = obj["Spec"]["Name"]
        try:
            self._api.update_labels(kind, obj, {**labels_of(obj), LABEL_INSTANCE: DEFAULT_INSTANCE})
        except TargetError as exc:
            log.warning("can't label %s as instance %s yet: %s", shown(name), DEFAULT_INSTANCE, exc)
            return
        log.info(
            "labelled %s as instance %s (written before instances)", shown(name), DEFAULT_INSTANCE
        )

    # ------------------------------------------------------------------ consumers

    def _services(self) -> list[dict[str, Any]]:
        services: list[dict[str, Any]] = self._api.call("list-services", lambda api: api.services())
        self._service_ids = {str((s.get("Spec") or {}).get("Name", "")): s["ID"] for s in services}
        return services

    def _service_id(self, consumer: Consumer) -> str:
        """A consumer's service ID (never an inspect by name: that may match an ID prefix)."""
        if consumer.name not in self._service_ids:
            service = self._api.service_named(consumer.name)
            if service is None:
                raise TargetError(f"{consumer.label} no longer exists")
            self._service_ids[consumer.name] = service["ID"]
        return self._service_ids[consumer.name]

    def find_consumers(
        self, specs: Sequence[SecretSpec[Any]], versions: Mapping[str, list[VersionInfo]]
    ) -> dict[str, list[Consumer] | TargetError]:
        """One service listing answers for every secret (see ``consumers.consumers_of``)."""
        if not self._listed:
            self.list_versions([])
        found = consumers_of(
            self._services(),
            specs,
            versions,
            managed=set(self._owners),
            now=datetime.now(UTC),
        )
        result: dict[str, list[Consumer] | TargetError] = {**found}
        return result

    def diagnose(self) -> list[Finding]:
        """``*_FILE`` variables of this installation's services that point at nothing."""
        if not self._listed:
            self.list_versions([])
        own = set(self._secrets)
        logical = set(self.context.secrets)
        unmanaged = {n for n in logical if n.lower() not in self._owners}
        named = {
            c.lower()
            for spec in self.context.secrets.values()
            if isinstance(spec.consumers, list)
            for c in spec.consumers
        }

        def ours(service: Mapping[str, Any]) -> bool:
            spec = service.get("Spec") or {}
            refs = secret_refs(spec)
            return bool(refs & own or refs & unmanaged) or str(spec.get("Name")).lower() in named

        current = {name: v[-1].object_name for name, v in self._versions.items() if v}
        return file_findings(self._services(), ours=ours, logical=logical, current=current)

    def _secret_id(self, name: str) -> str:
        if name not in self._ids:
            secret = self._api.named("secrets", name)
            if secret is None:
                raise TargetError(f"Swarm secret {name!r} does not exist")
            self._ids[name] = secret["ID"]
        return self._ids[name]

    def repoint(
        self, consumer: Consumer, swaps: Mapping[str, VersionInfo], *, rollback: bool = False
    ) -> None:
        """One service update swapping every reference in ``swaps``; target files stay put.

        A rollback is the same update the other way; a service whose own ``FailureAction:
        rollback`` already moved it back no longer references the failed version, and is
        not updated again (that would restart the rollout the orchestrator just undid).

        The full inspected spec goes back unchanged except for the swapped ``SecretID`` and
        ``SecretName``, guarded by the spec's version index; when another writer got in
        between (``update out of sequence``) the spec is inspected again and the swap retried.
        """
        del rollback  # the same update either way
        new_ids = {old: self._secret_id(v.object_name) for old, v in swaps.items()}
        service_id = self._service_id(consumer)
        for attempt in range(1, REPOINT_ATTEMPTS + 1):
            service = self._api.call("inspect-service", lambda api: api.inspect_service(service_id))
            spec = copy.deepcopy(service["Spec"])
            container = (spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}
            refs = container.get("Secrets") or []
            moved = {**moved_meanwhile(refs, swaps, version_of=self._version_named), **swaps}
            for old, successor in moved.items():
                if old not in new_ids:
                    new_ids[old] = self._secret_id(successor.object_name)
            updated, changed = swap_refs(refs, moved, new_ids)
            if not changed:
                return  # already done (a repeated step), or the reference was removed
            container["Secrets"] = updated
            try:
                result = self._update_service(service["ID"], spec, service["Version"]["Index"])
            except OutOfSequence:
                if attempt < REPOINT_ATTEMPTS:
                    log.info("%s changed meanwhile; repointing again", consumer.label)
                    continue
                raise
            for warning in (result or {}).get("Warnings") or []:
                log.warning("%s: %s", consumer.label, warning)
            done = ", ".join(
                f"{old} -> {v.object_name}"
                for old, v in sorted(moved.items())
                if any(r.get("SecretName") == old for r in refs)
            )
            log.debug("updated %s: %s", consumer.label, done)
            return
        raise TargetError(f"{consumer.label} kept changing; gave up repointing")

    def _update_service(self, service_id: str, spec: dict[str, Any], index: int) -> Any:
        return self._api.update_service(service_id, spec, index)

    def _version_named(self, name: str, secret: str) -> int | None:
        return version_named(
            self._api, name, secret, naming=self.config.naming, instance=self.instance
        )

    def wait_converged(
        self, consumers: Sequence[Consumer], *, timeout: float, rollback: bool = False
    ) -> dict[str, ConvergenceError | None]:
        """Wait as ``docker service update --detach=false`` does (see ``convergence``)."""
        return convergence.wait_converged(
            self._api, consumers, service_id=self._service_id, timeout=timeout, rollback=rollback
        )

    # ------------------------------------------------------------------ collection

    def protected(self) -> set[str]:
        """Secrets referenced by any service's current spec or previous (rollback) spec.

        Swarm refuses to remove a secret the current spec uses, but not one only the
        previous spec uses: deleting that would make ``docker service rollback`` fail.
        """
        names: set[str] = set()
        for service in self._services():
            names |= secret_refs(service.get("Spec"))
            names |= secret_refs(service.get("PreviousSpec"))
        return names

    def delete_version(self, version: VersionInfo) -> bool:
        """Remove one of this installation's version secrets, by the ID its listing gave;
        ``False`` while a service still uses it."""
        ident = self._ids.get(version.object_name)
        if ident is None:
            raise TargetError(
                f"{version.object_name!r} is not one of this installation's listed secrets; "
                "not deleted"
            )
        try:
            self._api.call("remove-secret", lambda api: api.remove_secret(ident), write=True)
        except InUse:
            return False
        except NotFound:
            pass  # already gone: a repeated step
        self._ids.pop(version.object_name, None)
        return True

    def close(self) -> None:
        """Close the API client's connection pool."""
        self._api.close()
