"""The kubernetes target's consumers: which workloads use a secret, repointing them, waiting
for their rollout, and which versions anything in a namespace can still fall back to.

Consumers are Deployments, StatefulSets, DaemonSets, CronJobs and the custom workloads the
config names (``custom_workloads``, Argo Rollouts by default) when the cluster serves them.
Jobs, ReplicaSets, ControllerRevisions, Pods and PodTemplates are not repointed (a Job's
template is immutable; the others are history or copies) but are scanned with them before
anything is deleted: a version any pod spec in the namespace references stays.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

from syncd.errors import ConvergenceError, TargetError
from syncd.kube import RESOURCES, ApiError, KubeClient, Resource, rounds
from syncd.model import Consumer, Finding, Revert, VersionInfo
from syncd.progress import WaitProgress
from syncd.targets.kubernetes.cache import DISCOVERY_TTL, Cache, Informer
from syncd.targets.kubernetes.naming import BUILTIN_CONSUMERS, KubernetesTargetConfig, dns_name
from syncd.targets.kubernetes.objects import (
    annotations_of,
    restart_annotation,
    split_object_name,
)
from syncd.targets.kubernetes.podspec import missing_refs, pod_templates, refs, rewrite
from syncd.targets.kubernetes.repointed import (
    Move,
    annotation_key,
    read_moves,
    read_record,
    write_moves,
)
from syncd.targets.kubernetes.rollout import FAILED, rollout_status
from syncd.targets.kubernetes.views import Workload, workload

log = logging.getLogger("syncd.targets.kubernetes")

#: Kinds only scanned before garbage collection (history, copies, immutable templates).
SCANNED_ONLY = ("ReplicaSet", "ControllerRevision", "Job", "Pod", "PodTemplate")


class Consumers:
    """Finds, repoints and waits for the workloads of this installation's secrets."""

    def __init__(
        self,
        *,
        client: Callable[[], KubeClient],
        config: KubernetesTargetConfig,
        namespaces: Callable[[], list[str]],
        foreign: Callable[[], set[str]],
        instance: str,
        cache: Callable[[], Cache | None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        #: the daemon's watch-fed cache, when it runs one
        self._cache = cache
        self.config = config
        #: whose repoint records (``repointed``) this reads and writes
        self.instance = instance
        #: workloads whose record was reported unreadable, so it is logged once
        self._bad_records: set[str] = set()
        self._namespaces = namespaces
        self._foreign = foreign
        self.clock = clock
        self._custom: tuple[float, list[Resource]] | None = None
        self._kinds: dict[str, Resource] = {k: RESOURCES[k] for k in BUILTIN_CONSUMERS}
        self._generations: dict[str, int] = {}

    @property
    def client(self) -> KubeClient:
        """The target's API client."""
        return self._client()

    # ------------------------------------------------------------------ kinds

    def custom(self, *, fresh: bool = False, client: KubeClient | None = None) -> list[Resource]:
        """The configured custom workloads the cluster serves (API discovery), asked again
        after ``DISCOVERY_TTL`` seconds; with a cache its discovery thread asks instead
        (``client`` is then its own), so a cycle doesn't."""
        cached = self._custom
        trusted = cached is not None and (self._cache() is not None or self.clock() < cached[0])
        if not fresh and cached is not None and trusted:
            return cached[1]
        served = []
        for entry in self.config.custom_workloads:
            plural, _, group = entry.partition(".")
            resource = (client or self.client).discover(group, plural)
            if resource is not None:
                served.append(resource)
                self._kinds[resource.kind] = resource
        self._custom = (self.clock() + DISCOVERY_TTL, served)
        return served

    def consumer_kinds(self) -> list[Resource]:
        """Kinds whose objects are repointed."""
        return [RESOURCES[k] for k in BUILTIN_CONSUMERS] + self.custom()

    def _workloads(self, namespace: str) -> list[Workload]:
        """Views of the consumer kinds' objects in a namespace: the cache's, or a listing's
        when there is no cache or it can't be sure."""
        kinds = self.consumer_kinds()
        cache = self._cache()
        if cache is not None:
            cached = cache.items([r.kind for r in kinds], namespace)
            if cached is not None:
                return cached
        return [workload(obj, self.instance) for obj in self._objects(namespace, kinds)]

    def informer(
        self, client: KubeClient, resource: Resource, namespace: str, stop: threading.Event
    ) -> Informer[Workload]:
        """The cache's informer of one consumer kind in ``namespace`` (views only)."""
        return Informer(
            client,
            resource,
            namespace,
            keep=lambda obj: workload(obj, self.instance),
            stop=stop,
        )

    def _objects(self, namespace: str, kinds: list[Resource]) -> Iterator[dict[str, Any]]:
        for resource in kinds:
            yield from self.client.list(resource, namespace)

    # ------------------------------------------------------------------ finding

    def find(
        self,
        specs: Sequence[Any],
        versions: Mapping[str, list[VersionInfo]],
        namespace_of: Callable[[str], str],
    ) -> dict[str, list[Consumer] | TargetError]:
        """Workloads referencing any of a secret's versions (or its plain name, for
        adoption), with how far their rollout got; one listing per kind and namespace."""
        by_ns = {ns: _Listed(self._workloads(ns)) for ns in {namespace_of(s.name) for s in specs}}
        result: dict[str, list[Consumer] | TargetError] = {}
        for spec in specs:
            namespace = namespace_of(spec.name)
            try:
                result[spec.name] = self._consumers_of(spec, namespace, by_ns[namespace], versions)
            except TargetError as exc:
                result[spec.name] = exc
        return result

    def _consumers_of(
        self,
        spec: Any,
        namespace: str,
        listed: _Listed,
        versions: Mapping[str, list[VersionInfo]],
    ) -> list[Consumer]:
        in_place = spec.strategy == "in-place"
        stable = dns_name(spec.name)
        own = {split_object_name(v.object_name)[1] for v in versions.get(spec.name, [])}
        if f"{namespace}/{stable}" not in self._foreign():
            own.add(stable)  # a hand-made Secret of that name (adoption), not another syncd's
        selected, missing = _select(spec.consumers, listed.workloads, namespace)
        consumers = list(missing)
        for view in selected if selected is not None else listed.referencing(own):
            names: set[str] = set(view.refs & own)
            if in_place:
                names = {stable} if stable in names else set()
            if not names and selected is None:
                continue
            if in_place and names:
                version = view.restarts.get(restart_annotation(spec.name), "0")
                found = frozenset({f"{namespace}/{stable}@v{version}"})
            else:
                found = frozenset(f"{namespace}/{n}" for n in names)
            consumer = Consumer(
                view.kind,
                view.name,
                namespace,
                refs={spec.name: found},
                unconverged=view.unconverged,
            )
            move = self._moves(consumer, view.record).get(spec.name)
            revert = move.revert(found) if move is not None and found else None
            if revert is not None:
                consumer = replace(consumer, reverted={spec.name: revert})
            consumers.append(consumer)
        return consumers

    def _moves(self, consumer: Consumer, record: Any) -> dict[str, Move]:
        """This installation's repoint records on the workload (its annotation's value);
        an unreadable one is ignored (the workload counts as never repointed), and logged
        once."""
        moves, problems = read_record(record, self.instance)
        if problems and consumer.label not in self._bad_records:
            self._bad_records.add(consumer.label)
            log.warning(
                "%s: ignoring syncd's repoint record %s (%s); the next repoint rewrites it",
                consumer.label,
                annotation_key(self.instance),
                "; ".join(problems),
            )
        return moves

    # ------------------------------------------------------------------ repoint and wait

    def _kind(self, consumer: Consumer) -> Resource:
        if consumer.kind not in self._kinds:
            self.custom(fresh=True)
        resource = self._kinds.get(consumer.kind)
        if resource is None:
            raise TargetError(f"{consumer.label}: the cluster no longer serves {consumer.kind}")
        return resource

    def repoint(
        self, consumer: Consumer, swaps: Mapping[str, VersionInfo], *, rollback: bool = False
    ) -> None:
        """Rewrite every reference in the pod templates in one guarded update; a 409 reads
        the workload again and goes round (``rounds``).

        A StatefulSet rolled back (``rollback``) also loses its pods that still reference a
        failed version and are not Ready: with the default ``OrderedReady`` policy the
        controller waits for such a pod forever instead of replacing it (the "forced
        rollback" the Kubernetes docs describe), so syncd deletes it and the controller
        recreates it from the restored template.
        """
        self._rewrite(consumer, swaps)
        if rollback and consumer.kind == "StatefulSet":
            self._delete_stuck_pods(consumer, set(swaps))

    def _delete_stuck_pods(self, consumer: Consumer, failed: set[str]) -> None:
        """Delete the StatefulSet's not-Ready pods that reference a failed version."""
        names = {split_object_name(name)[1] for name in failed}
        for pod in self.client.list("Pod", consumer.namespace):
            owners = (pod.get("metadata") or {}).get("ownerReferences") or []
            if not any(
                o.get("kind") == "StatefulSet" and o.get("name") == consumer.name for o in owners
            ):
                continue
            if not refs(pod) & names or _pod_ready(pod):
                continue
            name = pod["metadata"]["name"]
            self.client.delete("Pod", consumer.namespace, name)
            log.info(
                "%s: deleted pod %s, stuck on a failed version, so the controller recreates it",
                consumer.label,
                name,
            )

    def _rewrite(self, consumer: Consumer, swaps: Mapping[str, VersionInfo]) -> None:
        """The guarded template update of ``repoint``."""
        rename = {
            split_object_name(old)[1]: split_object_name(new.object_name)[1]
            for old, new in swaps.items()
            if "@v" not in old
        }
        restarts = {
            restart_annotation(new.secret): str(new.version)
            for old, new in swaps.items()
            if "@v" in old
        }
        resource = self._kind(consumer)
        for _ in rounds():
            obj = self.client.get(resource, consumer.namespace, consumer.name)
            if obj is None:
                raise TargetError(f"{consumer.label} no longer exists")
            body = {k: v for k, v in obj.items() if k != "status"}
            changed = rewrite(body, rename)
            for template in pod_templates(body) if restarts else ():
                annotations = template.setdefault("metadata", {}).setdefault("annotations", {})
                changed = changed or any(annotations.get(k) != v for k, v in restarts.items())
                annotations.update(restarts)
            if not changed:
                return  # someone else moved it meanwhile: nothing of ours left to rewrite
            self._record_moves(consumer, body, swaps)
            try:
                updated = self.client.replace(resource, consumer.namespace, body)
            except ApiError as exc:
                if exc.status == 409:
                    continue
                raise
            generation = (updated.get("metadata") or {}).get("generation", 0)
            self._generations[consumer.label] = generation if isinstance(generation, int) else 0
            return
        raise TargetError(f"{consumer.label} kept changing under syncd; retrying later")

    def _record_moves(
        self, consumer: Consumer, body: dict[str, Any], swaps: Mapping[str, VersionInfo]
    ) -> None:
        """Record in the update's body which version each swapped secret now is on, and for
        a revert being repointed, what it was reverted to (``repointed``)."""
        moves = self._moves(consumer, annotations_of(body).get(annotation_key(self.instance)))
        for new in swaps.values():
            revert = consumer.reverted.get(new.secret)
            reverted = revert.old if revert is not None and revert.to == new.object_name else None
            moves[new.secret] = Move(new.object_name, reverted or frozenset())
        write_moves(body, self.instance, moves, written={v.secret for v in swaps.values()})

    def wait(
        self, consumers: Sequence[Consumer], *, timeout: float
    ) -> dict[str, ConvergenceError | None]:
        """Poll rollout status (as ``kubectl rollout status``) until done, failed or timeout.

        A poll the API server doesn't answer (unreachable, throttled, restarting) says
        nothing about the rollout, which goes on without syncd: the wait keeps polling until
        the deadline, and a timeout then names the last such error.
        """
        results: dict[str, ConvergenceError | None] = {}
        pending = {c.label: c for c in consumers}
        deadline = time.monotonic() + timeout
        last: dict[str, str] = {}
        progress = WaitProgress(timeout)
        while pending:
            for label, consumer in list(pending.items()):
                try:
                    obj = self.client.get(self._kind(consumer), consumer.namespace, consumer.name)
                except ApiError as exc:
                    if exc.status != 0 and not exc.retryable:
                        raise
                    last[label] = f"rollout status unknown: {exc}"
                    continue
                if obj is None:
                    results[label] = ConvergenceError(f"{label} was deleted during the rollout")
                    del pending[label]
                    continue
                obj["kind"] = consumer.kind
                done, message = rollout_status(obj, self._generations.get(label, 0))
                if done:
                    results[label] = None
                    del pending[label]
                elif message.startswith(FAILED):
                    results[label] = ConvergenceError(
                        message.removeprefix(FAILED), blame=not _paused(obj)
                    )
                    del pending[label]
                else:
                    last[label] = message
                    progress.note(label, message)
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

    # ------------------------------------------------------------------ GC and doctor

    def protected(self) -> set[str]:
        """``ns/name`` of every Secret any pod spec in the namespaces references: workloads,
        their history (ReplicaSets, ControllerRevisions), Jobs, CronJobs, Pods, PodTemplates
        and served custom workloads (discovered afresh); and what a workload was reverted to
        after syncd repointed it (its record, ``repointed``): its manifest names it, and the
        next GitOps sync would put back a reference to a Secret that no longer exists."""
        custom = self.custom(fresh=True)
        consumer_kinds = {*BUILTIN_CONSUMERS, *(r.kind for r in custom)}
        kinds = [*(RESOURCES[k] for k in (*BUILTIN_CONSUMERS, *SCANNED_ONLY)), *custom]
        names: set[str] = set()
        for namespace in self._namespaces():
            for resource in kinds:
                for obj in self.client.list(resource, namespace):
                    names.update(f"{namespace}/{n}" for n in refs(obj))
                    if resource.kind in consumer_kinds:
                        names.update(self._reverted_to(obj, namespace))
        return names

    def _reverted_to(self, obj: Mapping[str, Any], namespace: str) -> set[str]:
        """The old references this installation's record on a workload says a revert put
        back, in the workload's own namespace (a record is hostile input: it can only keep
        a Secret from being deleted, never name one elsewhere)."""
        moves, _ = read_moves(obj, self.instance)
        return {
            old
            for move in moves.values()
            for old in move.reverted
            if split_object_name(old)[0] == namespace
        }

    def diagnose(self) -> list[Finding]:
        """``secretKeyRef``/``envFrom``/volumes naming a missing Secret or key (not optional)."""
        findings = []
        for namespace in self._namespaces():
            # key names only: values are dropped as soon as each item is read
            keys = {
                s["metadata"]["name"]: set(s.get("data") or {})
                for s in self.client.list("Secret", namespace)
            }
            for obj in self._objects(namespace, self.consumer_kinds()):
                label = f"{obj['kind']}/{namespace}/{obj['metadata']['name']}"
                findings.extend(missing_refs(label, obj, keys))
        return findings


def revert_message(consumer: Consumer, revert: Revert) -> str:
    """The Event on a workload whose revert is repointed (its first revert of a version)."""
    return (
        f"{consumer.label} was put back on {', '.join(sorted(revert.old))} after syncd "
        f"repointed it to {revert.to} (a GitOps sync or helm upgrade re-applying its "
        "manifest?); repointed once more, left as it is if that happens again. "
        f"{revert.fix}"
    )


def _paused(obj: Mapping[str, Any]) -> bool:
    """An operator paused the rollout (a paused Deployment, a Rollout waiting to be
    promoted): it can't finish, but that says nothing against the version."""
    if obj.get("kind") == "Deployment":
        return bool((obj.get("spec") or {}).get("paused"))
    return (obj.get("status") or {}).get("phase") == "Paused"


def _pod_ready(pod: Mapping[str, Any]) -> bool:
    """The pod's Ready condition is True."""
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(
        isinstance(c, dict) and c.get("type") == "Ready" and c.get("status") == "True"
        for c in conditions
    )


class _Listed:
    """A namespace's workloads with an index from Secret name to the workloads that
    reference it, so finding one secret's consumers doesn't look at every workload."""

    def __init__(self, workloads: list[Workload]) -> None:
        self.workloads = workloads
        self._by_ref: dict[str, list[int]] = {}
        for number, view in enumerate(workloads):
            for name in view.refs:
                self._by_ref.setdefault(name, []).append(number)

    def referencing(self, names: set[str]) -> list[Workload]:
        """The workloads that reference any of ``names``, in listing order."""
        numbers = {n for name in names for n in self._by_ref.get(name, ())}
        return [self.workloads[n] for n in sorted(numbers)]


def _select(
    wanted: Any, workloads: list[Workload], namespace: str
) -> tuple[list[Workload] | None, list[Consumer]]:
    """The workloads a ``consumers:`` list names (None for ``auto``), and the named ones that
    don't exist yet (reported, never blocking: stack users create secrets first)."""
    if wanted == "auto":
        return None, []
    chosen: dict[tuple[str, str], Workload] = {}
    missing: list[Consumer] = []
    for entry in wanted:
        if "=" in entry:
            pairs = dict(p.split("=", 1) for p in entry.split(","))
            matches = [w for w in workloads if all(w.labels.get(k) == v for k, v in pairs.items())]
            if not matches:
                missing.append(Consumer("selector", entry, namespace, missing=True))
        else:
            kind, _, name = entry.rpartition("/")
            matches = [w for w in workloads if w.name == name and (not kind or w.kind == kind)]
            if not matches:
                missing.append(Consumer(kind or "workload", name, namespace, missing=True))
        for view in matches:
            chosen[(view.kind, view.name)] = view
    return list(chosen.values()), missing
