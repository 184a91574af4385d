"""``KubernetesTarget``: the Target interface, wired to the modules that do the work.

``versions`` owns the Secrets (key, versions, in-place, import, adoption), ``consumers`` the
workloads (finding, repointing, rollout wait, the scan before deletion), ``naming`` the
offline rules. This class holds the one API client they share and the installation's name.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, ClassVar

from syncd.config import SecretSpec
from syncd.errors import ConvergenceError, NotLeaderError, TargetError
from syncd.kube import RESOURCES, KubeClient
from syncd.leader import LeaderElector, default_lease
from syncd.model import Consumer, Finding, NewVersion, Rollout, VersionInfo
from syncd.ratelimit import TokenBucket
from syncd.registry import missing_modules
from syncd.targets.base import DEFAULT_INSTANCE, Target, TargetConfig, TargetContext
from syncd.targets.kubernetes.cache import DISCOVERY_TTL, Cache
from syncd.targets.kubernetes.consumers import Consumers, revert_message
from syncd.targets.kubernetes.events import Events, Subject
from syncd.targets.kubernetes.naming import (
    BUILTIN_CONSUMERS,
    KubernetesTargetConfig,
    collisions,
    spec_problems,
)
from syncd.targets.kubernetes.objects import split_object_name
from syncd.targets.kubernetes.versions import Versions

log = logging.getLogger("syncd.targets.kubernetes")


def _no_count(operation: str, write: bool) -> None:
    """Lease traffic is neither a target read nor a target write of a cycle."""
    del operation, write


class KubernetesTarget(Target[KubernetesTargetConfig]):
    """Versioned immutable Secrets in one or more namespaces, for one installation."""

    type_name: ClassVar[str] = "kubernetes"
    config_model: ClassVar[type[TargetConfig]] = KubernetesTargetConfig

    def __init__(self, config: KubernetesTargetConfig, *, context: TargetContext) -> None:
        super().__init__(config, context=context)
        self._client: KubeClient | None = None
        self._elector_client: KubeClient | None = None
        self._events_client: KubeClient | None = None
        #: the daemon's watch-fed cache (``watch``), None for a one-shot run
        self.cache: Cache | None = None
        #: the rate limit of the cycle's requests and the Events, which follow them
        self._limiter = TokenBucket(config.qps, config.burst)
        self.events = Events(self._events_api, instance=context.instance)
        self.versions = Versions(
            client=lambda: self.client,
            config=config,
            instance=context.instance,
            namespaces=self._namespaces,
            cache=lambda: self.cache,
        )
        self.consumers = Consumers(
            client=lambda: self.client,
            config=config,
            namespaces=self._namespaces,
            foreign=lambda: self.versions.foreign,
            instance=context.instance,
            cache=lambda: self.cache,
        )

    # ------------------------------------------------------------------ config checks

    @classmethod
    def unavailable(cls) -> str | None:
        """The kubernetes package is an extra."""
        return missing_modules("the kubernetes target", ("kubernetes",), "kubernetes")

    @classmethod
    def validate_spec(cls, spec: SecretSpec[Any], config: TargetConfig) -> list[str]:
        """Names, keys, types and namespaces Kubernetes accepts, checked offline."""
        assert isinstance(config, KubernetesTargetConfig)
        return spec_problems(spec, config)

    @classmethod
    def validate_set(
        cls, specs: Sequence[SecretSpec[Any]], config: TargetConfig
    ) -> list[tuple[int, str]]:
        """Two secrets whose Secret names could meet (``a_b`` and ``a-b``; in-place ``x-v1``
        and versioned ``x``), in any version."""
        assert isinstance(config, KubernetesTargetConfig)
        return collisions(specs, config)

    def prepare(self) -> None:
        """Load the kubeconfig or in-cluster credentials (local files only, no request)."""
        _ = self.client

    def stored_settings(self, spec: SecretSpec[Any]) -> dict[str, str]:
        """The Secret type, unless Opaque: a type edit makes a new version."""
        if spec.type is not None and spec.type != "Opaque":
            return {"type": spec.type}
        return {}

    # ------------------------------------------------------------------ plumbing

    @property
    def client(self) -> KubeClient:
        """The API client, created on first use."""
        if self._client is None:
            self._client = self._connect(
                self._count, self._limiter, threads=self.config.concurrency
            )
        return self._client

    def _connect(
        self, on_call: Callable[[str, bool], None], limiter: TokenBucket, *, threads: int = 1
    ) -> KubeClient:
        kubeconfig = self.config.kubeconfig
        path = None if kubeconfig is None else str((self.context.base_dir / kubeconfig).absolute())
        return KubeClient.connect(
            kubeconfig=path,
            context=self.config.context,
            on_call=on_call,
            limiter=limiter,
            threads=threads,
        )

    def _events_api(self) -> KubeClient:
        """The Events' own client: an Event is not one of the cycle's target writes, and it
        only follows a step that passed the leader guard. It shares the cycle's rate limit,
        so ``qps`` bounds what a cycle sends, Events included (a cold sync emits one per
        version), and a ``Retry-After`` holds both back."""
        if self._events_client is None:
            self._events_client = self._connect(_no_count, self._limiter)
        return self._events_client

    def record(
        self, about: Consumer | VersionInfo, reason: str, message: str, *, warning: bool = False
    ) -> None:
        """An Event on the workload, or on the version's Secret."""
        if isinstance(about, VersionInfo):
            subject = Subject("Secret", *split_object_name(about.object_name))
        else:
            subject = Subject(about.kind, about.namespace or self.config.namespace, about.name)
        self.events.emit(subject, reason, message, warning=warning)

    def _count(self, operation: str, write: bool) -> None:
        if write:
            self.count_write(operation)
        else:
            self.count_read(operation)

    def watch(self) -> None:
        """Keep what cycles read in a watch-fed cache (``cache``): version Secrets and the
        consumer kinds in every namespace, the served custom kinds rediscovered in the
        background. On a client of its own, counted apart from the cycles' requests: its
        connections stay open for minutes, and a cycle's reads are the cache's."""
        if not self.config.watch or self.cache is not None:
            return
        namespaces = self._namespaces()
        kinds = len(BUILTIN_CONSUMERS) + len(self.config.custom_workloads) + 1
        client = self._connect(_no_count, self._limiter, threads=len(namespaces) * kinds + 2)
        cache = Cache(client)
        for namespace in namespaces:
            cache.add(self.versions.informer(client, namespace, cache.stop))
            for kind in BUILTIN_CONSUMERS:
                cache.add(self.consumers.informer(client, RESOURCES[kind], namespace, cache.stop))
        self.client.written = cache.written
        self.cache = cache
        if self.config.custom_workloads:
            threading.Thread(
                target=self._discover, args=(cache, client), name="watch discovery", daemon=True
            ).start()

    def _discover(self, cache: Cache, client: KubeClient) -> None:
        """Every ``DISCOVERY_TTL`` seconds: which custom workload kinds the cluster serves,
        each one then followed in every namespace."""
        while not cache.stop.is_set():
            try:
                served = self.consumers.custom(fresh=True, client=client)
            except TargetError as exc:
                log.warning("can't discover custom workloads (%s); trying again later", exc)
                served = []
            for resource in served:
                for namespace in self._namespaces():
                    cache.add(self.consumers.informer(client, resource, namespace, cache.stop))
            cache.stop.wait(DISCOVERY_TTL)

    def stop_watching(self) -> None:
        """End every watch and drop the cache (cycles list again)."""
        cache, self.cache = self.cache, None
        if cache is not None:
            if self._client is not None:
                self._client.written = None
            cache.close()

    def close(self) -> None:
        """Stop the cache, close the connection pools."""
        self.stop_watching()
        for client in (self._client, self._elector_client, self._events_client):
            if client is not None:
                client.close()

    def _namespace_of(self, name: str) -> str:
        spec = self.context.secrets.get(name)
        return (spec.namespace if spec else None) or self.config.namespace

    def _namespaces(self) -> list[str]:
        used = {self._namespace_of(n) for n in self.context.secrets}
        return sorted(used | {self.config.namespace})

    def _spec_type(self, name: str) -> str:
        spec = self.context.secrets.get(name)
        return (spec.type if spec else None) or "Opaque"

    def _in_place(self, name: str) -> bool:
        spec = self.context.secrets.get(name)
        return spec is not None and spec.strategy == "in-place"

    def leader_elector(
        self, *, identity: str, on_change: Callable[[bool], None]
    ) -> LeaderElector | None:
        """A Lease-based elector when ``leader_election.enabled``, on a client of its own (its
        renewals must not wait behind a cycle's requests, nor pass the write guard).

        That client has no rate limit: a renewal queued behind a cold sync's creates, or
        behind a low ``qps``, could miss ``renew_deadline`` and stop every write. Its rate is
        bounded anyway, one or two requests per ``renew_every``; its own bucket still lets
        a ``Retry-After`` answered to it hold its next attempt."""
        settings = self.config.leader_election
        if not settings.enabled:
            return None
        if self._elector_client is None:
            self._elector_client = self._connect(_no_count, TokenBucket(math.inf, 1))
            timeout = settings.deadline / 2
            self._elector_client.timeout = (timeout, timeout)
        return LeaderElector(
            self._elector_client,
            namespace=settings.namespace or self.config.namespace,
            lease=settings.lease or default_lease(self.context.instance, DEFAULT_INSTANCE),
            settings=settings,
            identity=identity,
            on_change=on_change,
        )

    # ------------------------------------------------------------------ key and versions

    def load_key(self) -> bytes | None:
        """The HMAC key from this installation's key Secret."""
        return self.versions.load_key()

    def store_key(self, key: bytes) -> None:
        """Create this installation's key Secret."""
        self.versions.store_key(key)

    def list_versions(self, names: Sequence[str]) -> dict[str, list[VersionInfo]]:
        """This installation's versions: one labelled listing per namespace, no write."""
        del names
        return self.versions.list_versions()

    def repair(self) -> None:
        """Label the default installation's objects from before installations had names."""
        self.versions.adopt_unlabelled()

    def create_versions(self, items: Sequence[NewVersion]) -> dict[str, VersionInfo | TargetError]:
        """Create versions ``concurrency`` at a time, within the client's rate limit: a cold
        sync of thousands of secrets is bound by ``qps``, not by one round trip after another.

        As the one-at-a-time default: a bad item fails alone (its ``TargetError`` is its
        result), and ``created`` hears of each finished item, here always from the calling
        thread. Two failures stop new creates, because every later item would meet them too:

        - the write guard refusing (``NotLeaderError``: the lease is lost): the creates in
          flight finish (each of their writes checks the guard again), the ones not started
          get the same error without a request;
        - an exception that is no ``TargetError`` (a bug): once the creates in flight have
          finished it is raised, as the one-at-a-time loop would raise it, and the swap
          fails every item of this call.

        Only ``concurrency`` creates are handed to the pool at a time, so stopping is
        immediate: nothing is queued in it.
        """
        _ = self.client  # connected once, here, not raced for by the workers
        width = self.config.concurrency
        results: dict[str, VersionInfo | TargetError] = {}
        waiting = iter(items)
        refused: NotLeaderError | None = None
        broken: Exception | None = None
        with ThreadPoolExecutor(max_workers=width, thread_name_prefix="syncd-create") as pool:
            running: dict[Future[VersionInfo], NewVersion] = {}
            for item in itertools.islice(waiting, width):
                running[pool.submit(self.create_version, item)] = item
            while running:
                done, _pending = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    item = running.pop(future)
                    try:
                        results[item.secret] = future.result()
                    except NotLeaderError as exc:
                        results[item.secret] = exc
                        refused = refused or exc
                    except TargetError as exc:
                        results[item.secret] = exc
                    except Exception as exc:  # noqa: BLE001 - raised below, once all are done
                        broken = broken or exc
                    self._created(1)
                    if refused is None and broken is None:
                        for follow in itertools.islice(waiting, 1):
                            running[pool.submit(self.create_version, follow)] = follow
        if broken is not None:
            raise broken
        if refused is not None:
            skipped = list(waiting)
            for item in skipped:
                results[item.secret] = refused
            self._created(len(skipped))
        return results

    def _created(self, n: int) -> None:
        if self.created is not None and n:
            self.created(n)

    def create_version(self, item: NewVersion) -> VersionInfo:
        """A new immutable version Secret, or the in-place Secret updated."""
        return self.versions.create(
            item,
            namespace=self._namespace_of(item.secret),
            in_place=self._in_place(item.secret),
            secret_type=self._spec_type(item.secret),
        )

    def import_existing(self, item: NewVersion, *, trust: bool) -> VersionInfo | None:
        """Adopt the hand-made Secret named like the logical secret (its data is compared, so
        ``trust`` is not needed)."""
        del trust
        return self.versions.import_existing(
            item, namespace=self._namespace_of(item.secret), in_place=self._in_place(item.secret)
        )

    def update_source(self, version: VersionInfo, source: str) -> bool:
        """Patch the source annotation of an unchanged version."""
        return self.versions.update_source(version, source)

    def write_history(self, version: VersionInfo, ledger: str) -> bool:
        """Patch the history annotation of the secret's newest version."""
        return self.versions.write_history(version, ledger)

    def reference_name(self, version: VersionInfo) -> str:
        """The Secret's name, as a manifest's ``secretName``/``secretKeyRef`` uses it."""
        return split_object_name(version.object_name)[1]

    def delete_version(self, version: VersionInfo) -> bool:
        """Delete an old version Secret."""
        return self.versions.delete(version)

    # ------------------------------------------------------------------ consumers

    def find_consumers(
        self, specs: Sequence[SecretSpec[Any]], versions: Mapping[str, list[VersionInfo]]
    ) -> dict[str, list[Consumer] | TargetError]:
        """Workloads referencing this installation's versions, with their rollout state."""
        return self.consumers.find(specs, versions, self._namespace_of)

    def repoint(
        self, consumer: Consumer, swaps: Mapping[str, VersionInfo], *, rollback: bool = False
    ) -> None:
        """One guarded update of the consumer's pod templates (see ``Consumers.repoint``);
        a revert repointed (a GitOps sync put old references back) is a Warning Event on
        the workload saying how to stop it."""
        self.consumers.repoint(consumer, swaps, rollback=rollback)
        moved_to = {v.object_name for v in swaps.values()}
        for revert in consumer.reverted.values():
            if revert.to in moved_to and not revert.again:
                self.record(consumer, "Reverted", revert_message(consumer, revert), warning=True)

    def wait_converged(
        self, consumers: Sequence[Consumer], *, timeout: float, rollback: bool = False
    ) -> dict[str, ConvergenceError | None]:
        """Wait as ``kubectl rollout status`` does (a rollback is one more rollout)."""
        del rollback
        return self.consumers.wait(consumers, timeout=timeout)

    def mark(self, version: VersionInfo, rollout: Rollout | None) -> VersionInfo:
        """Annotate a version Secret with its rollout outcome."""
        return self.versions.mark(version, rollout)

    def protected(self) -> set[str]:
        """Versions any pod spec in the namespaces still references."""
        return self.consumers.protected()

    def diagnose(self) -> list[Finding]:
        """Workloads referencing a missing Secret or key."""
        return self.consumers.diagnose()
