"""The kubernetes target's Secrets: the fingerprint key, versions, in-place Secrets, import,
adoption of objects from before installations had names.

Every object belongs to one installation (label ``syncd.io/instance``). A listing keeps only
this installation's objects and remembers the names of the others', so a consumer that uses
only another installation's Secrets is never claimed. A write that would land on another
installation's object is refused with its name, never a silent takeover.
"""

from __future__ import annotations

import base64
import binascii
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from syncd.errors import TargetError
from syncd.fingerprint import KEY_BYTES
from syncd.kube import RESOURCES, ApiError, KubeClient, rounds
from syncd.model import NewVersion, Rollout, VersionInfo
from syncd.targets.base import DEFAULT_INSTANCE
from syncd.targets.kubernetes.cache import Cache, Informer
from syncd.targets.kubernetes.naming import KubernetesTargetConfig, dns_name, version_name
from syncd.targets.kubernetes.objects import (
    A_CERTIFICATES,
    A_HISTORY,
    A_NAME,
    A_ROLLOUT,
    A_SOURCE,
    INSTANCE,
    LABEL_ROLLOUT,
    MANAGED_BY,
    ROLE,
    ROLE_IN_PLACE,
    ROLE_KEY,
    ROLE_VERSION,
    annotations_of,
    labels_of,
    managed,
    owner,
    secret_body,
    split_object_name,
    version_info,
    where,
)
from syncd.targets.kubernetes.views import secret_metadata

log = logging.getLogger("syncd.targets.kubernetes")

#: What the API server allows a Secret's values to total (its keys don't count).
MAX_SECRET_BYTES = 1024 * 1024
#: What it allows an object's annotations to total, keys and values (apimachinery).
MAX_ANNOTATION_BYTES = 256 * 1024
_VERSIONS = f"{MANAGED_BY}=syncd,{ROLE} in ({ROLE_VERSION},{ROLE_IN_PLACE})"
_UNLABELLED = f"{MANAGED_BY}=syncd,!{INSTANCE}"


class Versions:
    """Reads and writes this installation's Secrets through the target's client."""

    def __init__(
        self,
        *,
        client: Callable[[], KubeClient],
        config: KubernetesTargetConfig,
        instance: str,
        namespaces: Callable[[], list[str]],
        cache: Callable[[], Cache | None] = lambda: None,
    ) -> None:
        self._client = client
        #: the daemon's watch-fed cache, when it runs one
        self._cache = cache
        self.config = config
        self.instance = instance
        self._namespaces = namespaces
        #: ``ns/name`` of managed Secrets of other installations, seen by the last listing
        self.foreign: set[str] = set()
        self._adopted = instance != DEFAULT_INSTANCE

    @property
    def client(self) -> KubeClient:
        """The target's API client."""
        return self._client()

    @property
    def key_secret(self) -> str:
        """This installation's fingerprint key Secret."""
        return self.config.key_secret_for(self.instance)

    def _foreign_error(self, obj: dict[str, Any], what: str) -> TargetError:
        return TargetError(
            f"Secret {where(obj)} belongs to syncd installation {owner(obj)!r} (label "
            f"{INSTANCE}), not {self.instance!r}: {what}"
        )

    # ------------------------------------------------------------------ the key

    def load_key(self) -> bytes | None:
        """The HMAC key from this installation's key Secret; a damaged one is refused."""
        namespace, name = self.config.namespace, self.key_secret
        found = self.client.get("Secret", namespace, name)
        if found is None:
            return None
        if not managed(found):
            raise TargetError(
                f"Secret {namespace}/{name} exists but is not managed by syncd; choose another "
                "key_secret"
            )
        if owner(found) != self.instance:
            raise self._foreign_error(found, "give this installation its own key_secret")
        try:
            key = base64.b64decode(str((found.get("data") or {}).get("key", "")), validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if len(key) != KEY_BYTES:
            raise TargetError(
                f"Secret {namespace}/{name} holds no valid fingerprint key (key must be "
                f"{KEY_BYTES} bytes, base64). Delete it to repair: kubectl -n {namespace} delete "
                f"secret {name}. syncd then creates a new key, and every secret gets one new "
                "version on its next cycle (its consumers are repointed and roll once)"
            )
        return key

    def store_key(self, key: bytes) -> None:
        """Create the key Secret; a concurrent creator wins and this cycle retries later."""
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": self.key_secret,
                "labels": {MANAGED_BY: "syncd", ROLE: ROLE_KEY, INSTANCE: self.instance},
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
                    f"Secret {self.config.namespace}/{self.key_secret} appeared meanwhile "
                    "(another syncd created the key at the same time); the next cycle uses it"
                ) from exc
            raise

    # ------------------------------------------------------------------ listing

    def list_versions(self) -> dict[str, list[VersionInfo]]:
        """Only this installation's versions: from the cache, or one labelled listing per
        namespace of the Secrets' metadata (their data is never read)."""
        result: dict[str, list[VersionInfo]] = {}
        foreign: set[str] = set()
        for namespace in self._namespaces():
            for obj in self._version_secrets(namespace):
                if owner(obj) != self.instance:
                    foreign.add(where(obj))
                    continue
                info = version_info(obj)
                if info is not None:
                    result.setdefault(info.secret, []).append(info)
        self.foreign = foreign
        return result

    def _version_secrets(self, namespace: str) -> Iterable[dict[str, Any]]:
        cache = self._cache()
        cached = cache.items(["Secret"], namespace) if cache is not None else None
        if cached is not None:
            return cached
        return self.client.list("Secret", namespace, selector=_VERSIONS, metadata_only=True)

    def informer(self, client: KubeClient, namespace: str, stop: threading.Event) -> Informer[Any]:
        """The cache's informer of the version Secrets in ``namespace`` (metadata only)."""
        return Informer(
            client,
            RESOURCES["Secret"],
            namespace,
            keep=secret_metadata,
            wanted=_is_version,
            selector=_VERSIONS,
            metadata_only=True,
            stop=stop,
        )

    def adopt_unlabelled(self) -> None:
        """Label the default installation's objects from before installations had names.

        Once per process: they are already listed as the default installation's, so this only
        makes it explicit for other tools. A failure is logged and retried next cycle.
        """
        if self._adopted:
            return
        try:
            for namespace in self._namespaces():
                for obj in self.client.list("Secret", namespace, selector=_UNLABELLED):
                    name = obj["metadata"]["name"]
                    self.client.patch(
                        "Secret",
                        namespace,
                        name,
                        {
                            "metadata": {
                                "labels": {INSTANCE: DEFAULT_INSTANCE},
                                "resourceVersion": obj["metadata"]["resourceVersion"],
                            }
                        },
                    )
                    log.info("labelled Secret %s/%s as installation default", namespace, name)
        except ApiError as exc:
            log.warning("can't label objects of installation default yet: %s", exc)
            return
        self._adopted = True

    # ------------------------------------------------------------------ writing

    def create(
        self, item: NewVersion, *, namespace: str, in_place: bool, secret_type: str
    ) -> VersionInfo:
        """Create one version (or update the in-place Secret)."""
        size = sum(len(v) for v in item.data.values())
        if size > MAX_SECRET_BYTES:
            raise TargetError(
                f"the bundle's values are {size} bytes; a Kubernetes Secret holds at most 1 MiB "
                f"({MAX_SECRET_BYTES} bytes, keys not counted)"
            )
        if in_place:
            return self._update_in_place(item, namespace=namespace, secret_type=secret_type)
        name = version_name(self.config.naming, item.secret, item.version)
        body = secret_body(
            item, name=name, role=ROLE_VERSION, instance=self.instance, secret_type=secret_type
        )
        body["immutable"] = True
        _fit_history(body)
        _check_annotations(body, item)
        try:
            created = self.client.create("Secret", namespace, body)
        except ApiError as exc:
            if exc.status != 409:
                raise
            cache = self._cache()
            if cache is not None:  # it planned a version that exists: it may be stale
                cache.resync("Secret", namespace, f"Secret {namespace}/{name} already exists")
            existing = self.client.get("Secret", namespace, name) or {}
            if managed(existing) and owner(existing) != self.instance:
                raise self._foreign_error(
                    existing,
                    f"it can't become version {item.version} of {item.secret!r}; "
                    "change 'naming' or the namespace of one installation",
                ) from exc
            info = version_info(existing)
            if info is None or info.secret != item.secret or info.fingerprint != item.fingerprint:
                raise TargetError(
                    f"Secret {namespace}/{name} already exists and is not this version; "
                    "remove it or change 'naming'"
                ) from exc
            return info  # created by an earlier, interrupted cycle
        info = version_info(created)
        if info is None:
            raise TargetError(f"Secret {namespace}/{name} was created without syncd's labels")
        return info

    def _update_in_place(
        self, item: NewVersion, *, namespace: str, secret_type: str
    ) -> VersionInfo:
        """Write the stable Secret, keeping every label, annotation, owner reference and
        finalizer that syncd doesn't own (a chart's, an operator's)."""
        name = dns_name(item.secret)
        ours = secret_body(
            item, name=name, role=ROLE_IN_PLACE, instance=self.instance, secret_type=secret_type
        )
        for _ in rounds():
            existing = self.client.get("Secret", namespace, name)
            body = ours if existing is None else self._merged(existing, ours, item, secret_type)
            _fit_history(body)
            _check_annotations(body, item)
            try:
                if existing is None:
                    result = self.client.create("Secret", namespace, body)
                else:
                    result = self.client.replace("Secret", namespace, body)
            except ApiError as exc:
                if exc.status == 409:
                    continue
                raise
            info = version_info(result)
            if info is None:
                raise TargetError(f"Secret {namespace}/{name} was written without syncd's labels")
            return info
        raise TargetError(f"Secret {namespace}/{name} kept changing under syncd; retrying later")

    def _merged(
        self, existing: dict[str, Any], ours: dict[str, Any], item: NewVersion, secret_type: str
    ) -> dict[str, Any]:
        """``existing`` with syncd's labels, annotations, data and type; the rest kept."""
        place = where(existing)
        if managed(existing):
            if owner(existing) != self.instance:
                raise self._foreign_error(existing, f"in-place {item.secret!r} can't write it")
            labels = labels_of(existing)
            if labels.get(ROLE) != ROLE_IN_PLACE or annotations_of(existing).get(A_NAME) != (
                item.secret
            ):
                raise TargetError(
                    f"Secret {place} is another secret syncd manages "
                    f"({annotations_of(existing).get(A_NAME) or labels.get(ROLE)!r}); in-place "
                    f"{item.secret!r} would overwrite it: rename one of them"
                )
        if existing.get("immutable"):
            raise TargetError(f"Secret {place} is immutable; in-place needs a mutable one")
        current_type = existing.get("type") or "Opaque"
        if current_type != secret_type:
            raise TargetError(
                f"Secret {place} has type {current_type} and the config says {secret_type}; "
                "Kubernetes can't change a Secret's type: set 'type' to match, or replace the "
                "Secret by hand"
            )
        meta = dict(existing["metadata"])
        meta["labels"] = {**labels_of(existing), **ours["metadata"]["labels"]}
        meta["annotations"] = {**_kept(existing), **ours["metadata"]["annotations"]}
        body = {k: v for k, v in existing.items() if k not in ("data", "stringData")}
        body.update(metadata=meta, data=ours["data"], type=secret_type)
        return body

    def import_existing(
        self, item: NewVersion, *, namespace: str, in_place: bool
    ) -> VersionInfo | None:
        """Label the hand-made Secret named like the logical secret as version ``item.version``.

        Its data must equal the source's; only labels and annotations change, so no workload
        rolls. A Secret syncd already manages (any installation) is left alone.
        """
        name = dns_name(item.secret)
        role = ROLE_IN_PLACE if in_place else ROLE_VERSION
        for _ in rounds():
            existing = self.client.get("Secret", namespace, name)
            if existing is None or managed(existing):
                return None
            try:
                data = {
                    k: base64.b64decode(str(v), validate=True)
                    for k, v in (existing.get("data") or {}).items()
                }
            except (binascii.Error, ValueError):
                data = {}
            if data != item.data:
                raise TargetError(
                    f"Secret {namespace}/{name} holds other data than the source (keys or values "
                    "differ); syncd --once will create a version from the source and repoint "
                    "its consumers instead"
                )
            ours = secret_body(
                item,
                name=name,
                role=role,
                instance=self.instance,
                secret_type=str(existing.get("type") or "Opaque"),
            )
            meta = existing["metadata"]
            meta["labels"] = {**labels_of(existing), **ours["metadata"]["labels"]}
            meta["annotations"] = {**_kept(existing), **ours["metadata"]["annotations"]}
            try:
                updated = self.client.replace("Secret", namespace, existing)
            except ApiError as exc:
                if exc.status == 409:
                    continue
                raise
            return version_info(updated)
        raise TargetError(f"Secret {namespace}/{name} kept changing under syncd; try again")

    def _stored(self, version: VersionInfo) -> dict[str, Any] | None:
        """The Secret holding ``version`` as read now, or None when it is gone or is no
        longer this installation's object for that version (metadata writes check first)."""
        namespace, name = split_object_name(version.object_name)
        existing = self.client.get("Secret", namespace, name)
        info = version_info(existing) if existing is not None else None
        if (
            existing is None
            or owner(existing) != self.instance
            or info is None
            or info.object_name != version.object_name
            or info.fingerprint != version.fingerprint
        ):
            return None
        return existing

    def update_source(self, version: VersionInfo, source: str) -> bool:
        """Patch the source annotation of a stored version (metadata stays mutable on an
        immutable Secret); False when the object is gone or isn't this version any more."""
        existing = self._stored(version)
        return existing is not None and self._annotate(version, existing, A_SOURCE, source)

    def write_history(self, version: VersionInfo, ledger: str) -> bool:
        """Patch the history annotation of a stored version, guarded like ``update_source``;
        a ledger that would take the Secret's annotations past the API server's limit is
        refused before any request."""
        existing = self._stored(version)
        if existing is None:
            return False
        others = {k: v for k, v in annotations_of(existing).items() if k != A_HISTORY}
        size = _annotation_bytes({**others, A_HISTORY: ledger})
        if size > MAX_ANNOTATION_BYTES:
            raise TargetError(
                f"Secret {version.object_name} would carry {size} bytes of annotations with its "
                f"history; Kubernetes allows {MAX_ANNOTATION_BYTES}"
            )
        return self._annotate(version, existing, A_HISTORY, ledger)

    def _annotate(
        self, version: VersionInfo, existing: dict[str, Any], key: str, value: str
    ) -> bool:
        """Set one annotation of the version Secret ``existing`` was read as, guarded by its
        resourceVersion; False when it changed or went meanwhile."""
        namespace, name = split_object_name(version.object_name)
        patch = {
            "metadata": {
                "annotations": {key: value},
                "resourceVersion": existing["metadata"]["resourceVersion"],
            }
        }
        try:
            self.client.patch("Secret", namespace, name, patch)
        except ApiError as exc:
            if exc.status in (404, 409):
                return False
            raise
        return True

    def mark(self, version: VersionInfo, rollout: Rollout | None) -> VersionInfo:
        """Annotate (and label) a version Secret with its rollout outcome; a JSON merge patch
        guarded by the resourceVersion just read, so it never lands on another object."""
        namespace, name = split_object_name(version.object_name)
        for _ in rounds():
            existing = self._stored(version)
            if existing is None:
                raise TargetError(
                    f"Secret {version.object_name} is no longer this installation's version "
                    f"{version.version}; its rollout outcome was not recorded"
                )
            state = rollout.state if rollout is not None else None
            patch = {
                "metadata": {
                    "annotations": {A_ROLLOUT: rollout.to_label() if rollout else None},
                    "labels": {LABEL_ROLLOUT: state},
                    "resourceVersion": existing["metadata"]["resourceVersion"],
                }
            }
            try:
                self.client.patch("Secret", namespace, name, patch)
            except ApiError as exc:
                if exc.status == 409:
                    continue
                raise
            return replace(version, rollout=rollout)
        raise TargetError(f"Secret {version.object_name} kept changing; outcome not recorded")

    def delete(self, version: VersionInfo) -> bool:
        """Delete an old version Secret (already gone counts as deleted)."""
        namespace, name = split_object_name(version.object_name)
        self.client.delete("Secret", namespace, name)
        return True


def _is_version(obj: dict[str, Any]) -> bool:
    """Whether a Secret is one ``_VERSIONS`` selects (what the cache's informer sees)."""
    return managed(obj) and labels_of(obj).get(ROLE) in (ROLE_VERSION, ROLE_IN_PLACE)


def _annotation_bytes(annotations: dict[str, Any]) -> int:
    return sum(len(k.encode()) + len(str(v).encode()) for k, v in annotations.items())


def _fit_history(body: dict[str, Any]) -> None:
    """Leave the ledger out of a Secret it would take past the annotation limit: the version
    matters, its history doesn't (an older version still carries the ledger before it)."""
    annotations = body["metadata"]["annotations"]
    if A_HISTORY in annotations and _annotation_bytes(annotations) > MAX_ANNOTATION_BYTES:
        log.warning(
            "Secret %s: no room for its history in the annotations; created without it",
            body["metadata"]["name"],
        )
        del annotations[A_HISTORY]


def _check_annotations(body: dict[str, Any], item: NewVersion) -> None:
    """Refuse a Secret whose annotations the API server would: syncd's per-key fingerprints
    and source reference grow with the number of keys, and with the ones an in-place Secret
    already carries they may not total more than ``MAX_ANNOTATION_BYTES``."""
    size = _annotation_bytes(body["metadata"]["annotations"])
    if size > MAX_ANNOTATION_BYTES:
        raise TargetError(
            f"Secret {body['metadata']['name']} would carry {size} bytes of annotations and "
            f"Kubernetes allows {MAX_ANNOTATION_BYTES}: syncd records a fingerprint and a "
            f"source per key, and the bundle has {len(item.data)} keys; split it into secrets "
            "with fewer keys"
        )


def _kept(existing: dict[str, Any]) -> dict[str, Any]:
    """The annotations of a Secret written over in place that stay: all but the ones syncd
    sets only when they apply (a value without certificates must not keep the old expiry)."""
    return {k: v for k, v in annotations_of(existing).items() if k != A_CERTIFICATES}
