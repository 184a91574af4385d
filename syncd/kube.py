"""A thin JSON client for the Kubernetes API, shared by the kubernetes target and leader election.

It uses the official ``kubernetes`` package for what it does well (kubeconfig and in-cluster
loading, TLS, token refresh) but sends and receives plain JSON dicts: a workload is read,
edited and written back whole, so no field the generated models don't know can be dropped.

Requests go through ``kubernetes.dynamic.DynamicClient.request``: the one raw-JSON entry point
whose signature is the same in every release syncd supports. ``ApiClient.call_api`` changed
its arguments in 37.0.0 and ``ApiClient.param_serialize`` only exists from then on, so calling
either directly breaks on one side of that line. The dynamic client's own API discovery (a
request per API group at construction, cached in a temp file) is replaced by a stand-in that
does nothing: syncd discovers only the groups it needs, with counted requests.

Throttling and passing server trouble are retried here, where every attempt is counted and
passes the write guard: an answer of 429 (API priority and fairness), any 5xx carrying
``Retry-After``, and 502/503/504 (a restarting server, a load balancer between replicas).
``Retry-After`` is honoured (up to ``MAX_RETRY_AFTER``), otherwise the wait doubles from
``RETRY_BASE`` with jitter, and one request never spends more than ``RETRY_BUDGET`` seconds
waiting. A ``Retry-After`` holds back every request of the client, not only the refused one:
it pauses the client's ``TokenBucket`` (``syncd.ratelimit``), which every attempt passes
before it is sent. Writes are retried too: every write syncd sends is conditional (a
``resourceVersion``) or a create whose 409 it resolves, so a write the server applied before
its answer was lost can't apply twice. urllib3's own status retries are turned off (they
skipped POST and PATCH, ignored 5xx, and reported a 429 that outlasted them as an unreachable
server); its connection retries stay. A server that can't be reached is not retried here:
it fails fast, and the rollout wait keeps polling through it.

A guarded read-modify-write that loses to another writer (409) goes round again through
``rounds()``: for up to ``CONFLICT_BUDGET`` seconds, with a short jittered pause between
rounds, because a writer that updates the same object in a loop (an operator fighting over
a field, a script) can win many quick rounds in a row.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from syncd.errors import TargetError
from syncd.ratelimit import TokenBucket
from syncd.retry_after import retry_after

LIST_PAGE = 500
#: A page of a metadata-only list: its items are a tenth of a whole Secret or less.
METADATA_PAGE = 5000
#: How long the server keeps one watch open before syncd opens the next (informers pick
#: a few minutes too): also the longest a silently dead connection leaves a cache stale.
WATCH_SECONDS = 290
#: How much longer than that the client waits for a byte before giving the watch up.
WATCH_SLACK = 30
#: The longest line a watch may send (one event): a bigger one is not an object syncd uses.
MAX_EVENT_BYTES = 16 * 1024 * 1024
#: (connect, read) seconds of one API request.
REQUEST_TIMEOUT = (10.0, 60.0)
JSON = "application/json"
#: Lists and watches of Secrets ask for metadata only: syncd reads a version's labels and
#: annotations, never its data, and a Secret's values are most of its size. A server that
#: can't serve the partial form falls back to the whole object (the second type).
METADATA_LIST = f"{JSON};as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,{JSON}"
METADATA_WATCH = f"{JSON};as=PartialObjectMetadata;g=meta.k8s.io;v=v1,{JSON}"
MERGE_PATCH = "application/merge-patch+json"
#: Answers retried whatever the verb, with or without ``Retry-After``.
RETRIED = frozenset({429, 502, 503, 504})
#: Attempts of one request, the first included.
MAX_ATTEMPTS = 5
#: The first wait without ``Retry-After``, in seconds; it doubles per attempt.
RETRY_BASE = 0.25
#: The longest single wait a ``Retry-After`` gets.
MAX_RETRY_AFTER = 10.0
#: The most one request waits between its attempts, in seconds.
RETRY_BUDGET = 20.0
#: How long a read-modify-write keeps going round while other writers win (409), seconds.
CONFLICT_BUDGET = 10.0
#: The most rounds it makes in that time (each one a read and a write).
MAX_CONFLICT_ROUNDS = 60
#: The longest pause between two rounds, in seconds (the first pauses are much shorter).
MAX_CONFLICT_PAUSE = 0.2


@dataclass(frozen=True)
class Resource:
    """Where a kind lives in the API: ``/apis/<group>/<version>/namespaces/<ns>/<plural>``."""

    kind: str
    group: str
    version: str
    plural: str

    def path(self, namespace: str, name: str | None = None) -> str:
        """The collection path in ``namespace``, or one object's path."""
        base = f"/api/{self.version}" if not self.group else f"/apis/{self.group}/{self.version}"
        path = f"{base}/namespaces/{quote(namespace, safe='')}/{self.plural}"
        return path if name is None else f"{path}/{quote(name, safe='')}"

    @property
    def operation(self) -> str:
        """The kind as it appears in counted operation names (``list_cronjob``)."""
        return self.kind.lower()


def _core(kind: str, plural: str) -> Resource:
    return Resource(kind, "", "v1", plural)


#: The built-in kinds syncd reads or writes.
RESOURCES: dict[str, Resource] = {
    r.kind: r
    for r in (
        _core("Secret", "secrets"),
        _core("Pod", "pods"),
        _core("PodTemplate", "podtemplates"),
        Resource("Deployment", "apps", "v1", "deployments"),
        Resource("StatefulSet", "apps", "v1", "statefulsets"),
        Resource("DaemonSet", "apps", "v1", "daemonsets"),
        Resource("ReplicaSet", "apps", "v1", "replicasets"),
        Resource("ControllerRevision", "apps", "v1", "controllerrevisions"),
        Resource("Job", "batch", "v1", "jobs"),
        Resource("CronJob", "batch", "v1", "cronjobs"),
        Resource("Lease", "coordination.k8s.io", "v1", "leases"),
    )
}


class ApiError(TargetError):
    """A non-2xx answer from the API server (status 0: it could not be reached)."""

    def __init__(
        self, status: int, reason: str, message: str, retry_after: float | None = None
    ) -> None:
        self.status = status
        self.reason = reason
        #: The server's ``Retry-After``, in seconds, when it sent one.
        self.retry_after = retry_after
        super().__init__(message)

    @property
    def retryable(self) -> bool:
        """Whether the server refused for now rather than for good (throttled, restarting)."""
        return self.status in RETRIED or (self.status >= 500 and self.retry_after is not None)

    @property
    def transient(self) -> bool:
        """Unreachable, throttled or a server error: the next cycle may succeed."""
        return self.status in {0, 429} or self.status >= 500


class _NoDiscovery:
    """Stands in for the dynamic client's discoverer, which would request every API group
    (uncounted) and write a cache file; syncd discovers what it needs itself."""

    def __init__(self, client: Any, cache_file: Any) -> None:
        del client, cache_file


def _resource(kind: str | Resource) -> Resource:
    return RESOURCES[kind] if isinstance(kind, str) else kind


@dataclass
class KubeClient:
    """Requests against one cluster; every call waits for ``limiter`` and is then reported to
    ``on_call(operation, write)`` *before* it is sent, so a write guard there can still stop
    it (and a leader that lost its lease while the request queued sends nothing).

    One client may serve several threads at once: ``limiter`` is thread-safe and urllib3's
    pool hands each thread a connection of its own."""

    api: Any
    dynamic: Any
    on_call: Callable[[str, bool], None]
    server: str
    limiter: TokenBucket
    timeout: tuple[float, float] = REQUEST_TIMEOUT
    #: Told of every object a write returned (None for a delete), so a watch-fed cache can
    #: wait until its stream has caught up with this process's own writes.
    written: Callable[[Resource, str, str, dict[str, Any] | None], None] | None = None

    @classmethod
    def connect(
        cls,
        *,
        kubeconfig: str | None,
        context: str | None,
        on_call: Callable[[str, bool], None],
        limiter: TokenBucket,
        threads: int = 1,
        timeout: tuple[float, float] = REQUEST_TIMEOUT,
    ) -> KubeClient:
        """In-cluster config when running in a pod (and no kubeconfig given), else kubeconfig.

        ``threads``: how many threads send through the client at once; urllib3's pool keeps
        at least that many connections (a smaller pool would close and reopen a connection,
        TLS handshake and all, for every request beyond it). Reads local files only: no
        request is made until the first call.
        """
        try:
            from kubernetes import client, config
            from kubernetes.dynamic import DynamicClient
            from urllib3.util.retry import Retry
        except ImportError as exc:
            raise TargetError(
                "the kubernetes target needs the kubernetes package: "
                "pip install 'syncd[kubernetes]'"
            ) from exc
        configuration = client.Configuration()
        try:
            if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
                config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            else:
                config.load_kube_config(  # type: ignore[no-untyped-call]
                    config_file=kubeconfig, context=context, client_configuration=configuration
                )
        except (config.ConfigException, OSError, TypeError, ValueError) as exc:
            raise TargetError(f"can't load Kubernetes credentials: {exc}") from exc
        # connection retries as urllib3's default; answers are retried by ``request``
        configuration.retries = Retry(3, status=0, respect_retry_after_header=False)
        configuration.connection_pool_maxsize = max(configuration.connection_pool_maxsize, threads)
        api = client.ApiClient(configuration)
        dynamic = DynamicClient(api, discoverer=_NoDiscovery)  # type: ignore[no-untyped-call]
        return cls(api, dynamic, on_call, configuration.host, limiter, timeout)

    def close(self) -> None:
        """Close the connection pool."""
        self.api.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        operation: str,
        body: Any = None,
        query: dict[str, str] | None = None,
        content_type: str = JSON,
        accept: str = JSON,
    ) -> dict[str, Any]:
        """One API call; JSON in, JSON out; non-2xx raises ``ApiError``.

        A throttled or passing refusal (``ApiError.retryable``) is tried again, up to
        ``MAX_ATTEMPTS`` and ``RETRY_BUDGET`` seconds of waiting. Each attempt first waits for
        the rate limit, then is reported to ``on_call``, so the write guard sees every one
        right before it is sent. A ``Retry-After`` on a retryable answer pauses the limiter,
        holding back the other threads' requests too (also when this request gives up); a
        wait of this request's own (no ``Retry-After``) is slept here.
        """
        waited, attempt = 0.0, 1
        while True:
            self.limiter.acquire()
            self.on_call(operation, method != "GET")
            try:
                return self._send(
                    method, path, body=body, query=query, content_type=content_type, accept=accept
                )
            except ApiError as exc:
                delay = _delay(exc, attempt)
                paused = exc.retryable and exc.retry_after is not None
                if paused:  # the server's word, for every request to it, even if this one ends
                    self.limiter.pause(delay)
                if not exc.retryable or attempt == MAX_ATTEMPTS or waited + delay > RETRY_BUDGET:
                    raise
                if not paused:
                    time.sleep(delay)
            waited, attempt = waited + delay, attempt + 1

    def _send(
        self,
        method: str,
        path: str,
        *,
        body: Any,
        query: dict[str, str] | None,
        content_type: str,
        accept: str,
    ) -> dict[str, Any]:
        with self._answer(method, path, query=query, accept=accept) as open_response:
            response = open_response(body, content_type, self.timeout)
            raw = response.data
        text = _text(raw)
        try:
            return json.loads(text) if text else {}
        except ValueError as exc:
            raise ApiError(
                0, "BadResponse", f"Kubernetes API {self.server}: {method} {path} returned no JSON"
            ) from exc

    @contextmanager
    def _answer(
        self, method: str, path: str, *, query: dict[str, str] | None, accept: str
    ) -> Iterator[Callable[[Any, str, tuple[float, float]], Any]]:
        """A sender for one request whose failures, while sending or while reading the
        answer inside the block, become ``ApiError`` (status 0: not reached)."""
        from kubernetes.client.exceptions import ApiException

        def send(body: Any, content_type: str, timeout: tuple[float, float]) -> Any:
            return self.dynamic.request(
                method,
                path,
                body=body,
                query_params=list((query or {}).items()),
                header_params={"Accept": accept},
                content_type=content_type,
                serialize=False,
                _request_timeout=timeout,
            )

        try:
            yield send
        except ApiException as exc:
            raise _error(
                exc.status or 0,
                _text(exc.body),
                method,
                path,
                retry_after((exc.headers or {}).get("Retry-After")),
            ) from exc
        except ApiError:
            raise
        except Exception as exc:  # any transport failure: the server was not reached
            # urllib3 names the whole URL, query and all, around its reason: keep the reason
            reason = getattr(exc, "reason", None) or exc
            message = f"Kubernetes API {self.server}: {method} {path} failed: {reason}"
            raise ApiError(0, "Unreachable", message) from exc

    def watch(
        self,
        kind: str | Resource,
        namespace: str,
        *,
        resource_version: str,
        selector: str | None = None,
        metadata_only: bool = False,
        timeout_seconds: int = WATCH_SECONDS,
        opened: Callable[[Any], None] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """The change events of a kind in a namespace after ``resource_version``, as the
        server streams them (``{"type": ..., "object": ...}``), with bookmarks, until the
        server ends the watch after ``timeout_seconds``; a 410 arrives as an ``ERROR``
        event or as ``ApiError`` (the caller lists again). One request, reported to
        ``on_call`` as ``watch_<kind>`` before it is sent; ``opened`` gets the open answer,
        so another thread can cut the stream short (``interrupt``)."""
        resource = _resource(kind)
        query = {
            "watch": "true",
            "allowWatchBookmarks": "true",
            "resourceVersion": resource_version,
            "timeoutSeconds": str(timeout_seconds),
        }
        if selector:
            query["labelSelector"] = selector
        path = resource.path(namespace)
        self.limiter.acquire()
        self.on_call(f"watch_{resource.operation}", False)
        accept = METADATA_WATCH if metadata_only else JSON
        read_timeout = timeout_seconds + WATCH_SLACK
        with self._answer("GET", path, query=query, accept=accept) as open_response:
            response = open_response(None, JSON, (self.timeout[0], read_timeout))
            if opened is not None:
                opened(response)
            try:
                yield from _events(response)
            finally:
                response.release_conn()

    def get(self, kind: str | Resource, namespace: str, name: str) -> dict[str, Any] | None:
        """One object, or None when it doesn't exist."""
        resource = _resource(kind)
        try:
            return self.request(
                "GET", resource.path(namespace, name), operation=f"get_{resource.operation}"
            )
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def list(
        self,
        kind: str | Resource,
        namespace: str,
        *,
        selector: str | None = None,
        metadata_only: bool = False,
    ) -> Iterator[dict[str, Any]]:
        """Every object of a kind in a namespace, paginated by ``LIST_PAGE``; with
        ``metadata_only``, only each object's metadata (``PartialObjectMetadataList``), by
        ``METADATA_PAGE``.

        List items carry no ``kind``; it is filled in so callers can tell objects apart.
        """
        for page in self.pages(kind, namespace, selector=selector, metadata_only=metadata_only):
            yield from page.get("items") or []

    def pages(
        self,
        kind: str | Resource,
        namespace: str,
        *,
        selector: str | None = None,
        metadata_only: bool = False,
    ) -> Iterator[dict[str, Any]]:
        """The pages of ``list``, each with its ``metadata.resourceVersion`` (where a watch
        starts); items not shaped like objects are dropped and the rest get their ``kind``."""
        resource = _resource(kind)
        token = ""
        while True:
            query = {"limit": str(METADATA_PAGE if metadata_only else LIST_PAGE)}
            if selector:
                query["labelSelector"] = selector
            if token:
                query["continue"] = token
            page = self.request(
                "GET",
                resource.path(namespace),
                operation=f"list_{resource.operation}",
                query=query,
                accept=METADATA_LIST if metadata_only else JSON,
            )
            items = [i for i in page.get("items") or [] if isinstance(i, dict)]
            for item in items:
                item["kind"] = resource.kind
            page["items"] = items
            yield page
            token = (page.get("metadata") or {}).get("continue") or ""
            if not token:
                return

    def create(self, kind: str | Resource, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create an object."""
        resource = _resource(kind)
        created = self.request(
            "POST", resource.path(namespace), operation=f"create_{resource.operation}", body=body
        )
        return self._wrote(resource, namespace, body["metadata"]["name"], created)

    def replace(self, kind: str | Resource, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """Replace an object; its ``metadata.resourceVersion`` guards against lost updates (409)."""
        resource = _resource(kind)
        name = body["metadata"]["name"]
        path = resource.path(namespace, name)
        replaced = self.request("PUT", path, operation=f"update_{resource.operation}", body=body)
        return self._wrote(resource, namespace, name, replaced)

    def patch(
        self, kind: str | Resource, namespace: str, name: str, patch: dict[str, Any]
    ) -> dict[str, Any]:
        """A JSON merge patch (RFC 7386): only the fields given change; a
        ``metadata.resourceVersion`` in it makes it conditional (409 when the object moved)."""
        resource = _resource(kind)
        patched = self.request(
            "PATCH",
            resource.path(namespace, name),
            operation=f"patch_{resource.operation}",
            body=patch,
            content_type=MERGE_PATCH,
        )
        return self._wrote(resource, namespace, name, patched)

    def delete(self, kind: str | Resource, namespace: str, name: str) -> bool:
        """Delete an object; False when it was already gone."""
        resource = _resource(kind)
        try:
            self.request(
                "DELETE", resource.path(namespace, name), operation=f"delete_{resource.operation}"
            )
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        self._wrote(resource, namespace, name, None)
        return True

    def _wrote(
        self, resource: Resource, namespace: str, name: str, obj: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Tell ``written`` of a write the server applied; ``obj`` as it answered."""
        if self.written is not None:
            self.written(resource, namespace, name, obj)
        return obj or {}

    def discover(self, group: str, plural: str) -> Resource | None:
        """The namespaced resource ``plural`` of API group ``group`` at the group's preferred
        version, or None when the cluster doesn't serve it (API discovery, no RBAC needed)."""
        try:
            found = self.request("GET", f"/apis/{quote(group, safe='')}", operation="discover")
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        version = ((found.get("preferredVersion") or {}).get("groupVersion") or "").split("/")
        if len(version) != 2:
            return None
        listing = self.request(
            "GET",
            f"/apis/{quote(group, safe='')}/{quote(version[1], safe='')}",
            operation="discover",
        )
        for item in listing.get("resources") or []:
            if item.get("name") == plural and item.get("namespaced") and item.get("kind"):
                return Resource(str(item["kind"]), group, version[1], plural)
        return None


def rounds() -> Iterator[int]:
    """Round numbers for a read-modify-write loop that a 409 sends round again (``continue``).

    Rounds end after ``CONFLICT_BUDGET`` seconds or ``MAX_CONFLICT_ROUNDS``; the caller then
    reports that the object kept changing. Between rounds a random pause, doubling up to
    ``MAX_CONFLICT_PAUSE``, takes syncd out of step with a writer on a fixed rhythm.
    """
    deadline = time.monotonic() + CONFLICT_BUDGET
    for number in range(MAX_CONFLICT_ROUNDS):
        if number:
            pause = random.uniform(0, min(MAX_CONFLICT_PAUSE, 0.01 * 2.0**number))  # noqa: S311
            if time.monotonic() + pause >= deadline:
                return
            time.sleep(pause)
        yield number


def interrupt(response: Any) -> None:
    """End a watch answer another thread is reading (its read then fails at once)."""
    shutdown = getattr(response, "shutdown", None)  # urllib3 >= 2.3
    with suppress(OSError, RuntimeError):  # already closed, or back in the pool
        (shutdown or response.close)()


def _chunks(response: Any) -> Iterator[bytes]:
    """The answer's bytes as they arrive: ``read1`` returns what is there (urllib3 >= 2.3),
    where ``stream`` waits for a whole buffer unless the answer is chunked."""
    read1 = getattr(response, "read1", None)
    if read1 is None:
        yield from response.stream(64 * 1024, decode_content=True)
        return
    while chunk := read1(64 * 1024):
        yield chunk


def _events(response: Any) -> Iterator[dict[str, Any]]:
    """The JSON events of a watch answer, one per line; a line that isn't an event (garbage
    from a proxy, a truncated write) ends the stream as a server that went away would."""
    pending = b""
    for chunk in _chunks(response):
        pending += chunk
        if len(pending) > MAX_EVENT_BYTES and b"\n" not in pending:
            raise ApiError(0, "BadResponse", "Kubernetes API: a watch event is too large")
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except ValueError as exc:
                raise ApiError(0, "BadResponse", "Kubernetes API: a watch sent no JSON") from exc
            if not isinstance(event, dict) or not isinstance(event.get("object"), dict):
                raise ApiError(0, "BadResponse", "Kubernetes API: a watch sent no event")
            yield event


def _text(raw: Any) -> str:
    if isinstance(raw, bytes):
        return raw.decode("utf-8", errors="replace")
    return "" if raw is None else str(raw)


def _delay(exc: ApiError, attempt: int) -> float:
    """The wait before attempt ``attempt + 1``: the server's ``Retry-After`` (at most
    ``MAX_RETRY_AFTER``), else a doubling wait with jitter so retrying clients spread out."""
    if exc.retry_after is not None:
        return min(exc.retry_after, MAX_RETRY_AFTER)
    return RETRY_BASE * 2.0 ** (attempt - 1) * random.uniform(0.5, 1.0)  # noqa: S311


def _error(status: int, text: str, method: str, path: str, wait: float | None = None) -> ApiError:
    reason, message = "", text[:300]
    try:
        doc = json.loads(text)
        if isinstance(doc, dict):
            reason, message = str(doc.get("reason", "")), str(doc.get("message", message))
    except ValueError:
        pass
    if status == 403:
        message = f"RBAC denied {method} {path}: {message}"
    return ApiError(status, reason, f"Kubernetes API {status} {reason}: {message}".strip(), wait)
