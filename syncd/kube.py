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
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from syncd.errors import TargetError

LIST_PAGE = 500
#: (connect, read) seconds of one API request.
REQUEST_TIMEOUT = (10.0, 60.0)
JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"


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

    def __init__(self, status: int, reason: str, message: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(message)


class _NoDiscovery:
    """Stands in for the dynamic client's discoverer, which would request every API group
    (uncounted) and write a cache file; syncd discovers what it needs itself."""

    def __init__(self, client: Any, cache_file: Any) -> None:
        del client, cache_file


def _resource(kind: str | Resource) -> Resource:
    return RESOURCES[kind] if isinstance(kind, str) else kind


@dataclass
class KubeClient:
    """Requests against one cluster; every call is reported to ``on_call(operation, write)``
    *before* it is sent, so a write guard there can still stop it."""

    api: Any
    dynamic: Any
    on_call: Callable[[str, bool], None]
    server: str
    timeout: tuple[float, float] = REQUEST_TIMEOUT

    @classmethod
    def connect(
        cls,
        *,
        kubeconfig: str | None,
        context: str | None,
        on_call: Callable[[str, bool], None],
        timeout: tuple[float, float] = REQUEST_TIMEOUT,
    ) -> KubeClient:
        """In-cluster config when running in a pod (and no kubeconfig given), else kubeconfig.

        Reads local files only: no request is made until the first call.
        """
        try:
            from kubernetes import client, config
            from kubernetes.dynamic import DynamicClient
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
        api = client.ApiClient(configuration)
        dynamic = DynamicClient(api, discoverer=_NoDiscovery)  # type: ignore[no-untyped-call]
        return cls(api, dynamic, on_call, configuration.host, timeout)

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
    ) -> dict[str, Any]:
        """One API call; JSON in, JSON out; non-2xx raises ``ApiError``."""
        from kubernetes.client.exceptions import ApiException

        self.on_call(operation, method != "GET")
        try:
            response = self.dynamic.request(
                method,
                path,
                body=body,
                query_params=list((query or {}).items()),
                header_params={"Accept": JSON},
                content_type=content_type,
                serialize=False,
                _request_timeout=self.timeout,
            )
            raw = response.data
        except ApiException as exc:
            raise _error(exc.status or 0, _text(exc.body), method, path) from exc
        except Exception as exc:  # any transport failure: the server was not reached
            raise ApiError(0, "Unreachable", f"Kubernetes API {self.server}: {exc}") from exc
        text = _text(raw)
        try:
            return json.loads(text) if text else {}
        except ValueError as exc:
            raise ApiError(
                0, "BadResponse", f"Kubernetes API {self.server}: {method} {path} returned no JSON"
            ) from exc

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
        self, kind: str | Resource, namespace: str, *, selector: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """Every object of a kind in a namespace, paginated by ``LIST_PAGE``.

        List items carry no ``kind``; it is filled in so callers can tell objects apart.
        """
        resource = _resource(kind)
        token = ""
        while True:
            query = {"limit": str(LIST_PAGE)}
            if selector:
                query["labelSelector"] = selector
            if token:
                query["continue"] = token
            page = self.request(
                "GET",
                resource.path(namespace),
                operation=f"list_{resource.operation}",
                query=query,
            )
            for item in page.get("items") or []:
                if isinstance(item, dict):
                    item["kind"] = resource.kind
                    yield item
            token = (page.get("metadata") or {}).get("continue") or ""
            if not token:
                return

    def create(self, kind: str | Resource, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create an object."""
        resource = _resource(kind)
        return self.request(
            "POST", resource.path(namespace), operation=f"create_{resource.operation}", body=body
        )

    def replace(self, kind: str | Resource, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """Replace an object; its ``metadata.resourceVersion`` guards against lost updates (409)."""
        resource = _resource(kind)
        path = resource.path(namespace, body["metadata"]["name"])
        return self.request("PUT", path, operation=f"update_{resource.operation}", body=body)

    def patch(
        self, kind: str | Resource, namespace: str, name: str, patch: dict[str, Any]
    ) -> dict[str, Any]:
        """A JSON merge patch (RFC 7386): only the fields given change; a
        ``metadata.resourceVersion`` in it makes it conditional (409 when the object moved)."""
        resource = _resource(kind)
        return self.request(
            "PATCH",
            resource.path(namespace, name),
            operation=f"patch_{resource.operation}",
            body=patch,
            content_type=MERGE_PATCH,
        )

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
        return True

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


def _text(raw: Any) -> str:
    if isinstance(raw, bytes):
        return raw.decode("utf-8", errors="replace")
    return "" if raw is None else str(raw)


def _error(status: int, text: str, method: str, path: str) -> ApiError:
    reason, message = "", text[:300]
    try:
        doc = json.loads(text)
        if isinstance(doc, dict):
            reason, message = str(doc.get("reason", "")), str(doc.get("message", message))
    except ValueError:
        pass
    if status == 403:
        message = f"RBAC denied {method} {path}: {message}"
    return ApiError(status, reason, f"Kubernetes API {status} {reason}: {message}".strip())
