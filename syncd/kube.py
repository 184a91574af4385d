"""A thin JSON client for the Kubernetes API, shared by the target and leader election.

It uses the official ``kubernetes`` package for what it does well (kubeconfig and in-cluster
loading, TLS, token refresh) but sends and receives plain JSON dicts: a workload is read,
edited and written back whole, so no field the generated models don't know can be dropped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from syncd.errors import TargetError

#: Resource paths by kind, for the kinds syncd reads or writes.
API_PATHS = {
    "Secret": "/api/v1/namespaces/{ns}/secrets",
    "Pod": "/api/v1/namespaces/{ns}/pods",
    "Namespace": "/api/v1/namespaces",
    "Deployment": "/apis/apps/v1/namespaces/{ns}/deployments",
    "StatefulSet": "/apis/apps/v1/namespaces/{ns}/statefulsets",
    "DaemonSet": "/apis/apps/v1/namespaces/{ns}/daemonsets",
    "ReplicaSet": "/apis/apps/v1/namespaces/{ns}/replicasets",
    "ControllerRevision": "/apis/apps/v1/namespaces/{ns}/controllerrevisions",
    "Lease": "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases",
}

LIST_PAGE = 500


class ApiError(TargetError):
    """A non-2xx answer from the API server, with its status and reason."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(message)


@dataclass
class KubeClient:
    """Requests against one cluster; every call is reported to ``on_call(operation, write)``."""

    api: Any
    on_call: Callable[[str, bool], None]
    server: str

    @classmethod
    def connect(
        cls,
        *,
        kubeconfig: str | None,
        context: str | None,
        on_call: Callable[[str, bool], None],
    ) -> KubeClient:
        """In-cluster config when running in a pod (and no kubeconfig given), else kubeconfig."""
        try:
            from kubernetes import client, config
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
        return cls(client.ApiClient(configuration), on_call, configuration.host)

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
    ) -> dict[str, Any]:
        """One API call; JSON in, JSON out; non-2xx raises ``ApiError``."""
        write = method not in ("GET",)
        self.on_call(operation, write)
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            _, url, headers, body_out, _ = self.api.param_serialize(
                method=method,
                resource_path=path,
                query_params=list((query or {}).items()),
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            )
            response = self.api.call_api(
                method, url, header_params=headers, body=body_out, _request_timeout=(10, 60)
            )
            response.read()
        except Exception as exc:
            raise ApiError(0, "Unreachable", f"Kubernetes API {self.server}: {exc}") from exc
        text = response.data.decode("utf-8") if response.data else ""
        if not 200 <= response.status < 300:
            raise _error(response.status, text, method, path)
        return json.loads(text) if text else {}

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """One object, or None when it doesn't exist."""
        path = f"{API_PATHS[kind].format(ns=namespace)}/{name}"
        try:
            return self.request("GET", path, operation=f"get_{kind.lower()}")
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def list(
        self, kind: str, namespace: str, *, selector: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """Every object of a kind in a namespace, paginated by ``LIST_PAGE``."""
        path = API_PATHS[kind].format(ns=namespace)
        token = ""
        while True:
            query = {"limit": str(LIST_PAGE)}
            if selector:
                query["labelSelector"] = selector
            if token:
                query["continue"] = token
            page = self.request("GET", path, operation=f"list_{kind.lower()}", query=query)
            yield from page.get("items", [])
            token = page.get("metadata", {}).get("continue", "")
            if not token:
                return

    def create(self, kind: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create an object."""
        path = API_PATHS[kind].format(ns=namespace)
        return self.request("POST", path, operation=f"create_{kind.lower()}", body=body)

    def replace(self, kind: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """Replace an object; its ``metadata.resourceVersion`` guards against lost updates (409)."""
        path = f"{API_PATHS[kind].format(ns=namespace)}/{body['metadata']['name']}"
        return self.request("PUT", path, operation=f"update_{kind.lower()}", body=body)

    def delete(self, kind: str, namespace: str, name: str) -> bool:
        """Delete an object; False when it was already gone."""
        path = f"{API_PATHS[kind].format(ns=namespace)}/{name}"
        try:
            self.request("DELETE", path, operation=f"delete_{kind.lower()}")
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True


def _error(status: int, text: str, method: str, path: str) -> ApiError:
    reason, message = "", text[:300]
    try:
        doc = json.loads(text)
        reason, message = doc.get("reason", ""), doc.get("message", message)
    except ValueError:
        pass
    if status == 403:
        message = f"RBAC denied {method} {path}: {message}"
    return ApiError(status, reason, f"Kubernetes API {status} {reason}: {message}".strip())
