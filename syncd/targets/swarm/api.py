"""Docker API plumbing for the swarm target: connection settings, counted calls, errors.

Talks through docker-py's low-level ``APIClient``. Every call is counted (reads and writes
apart; a write first passes the target's write guard) and Docker's errors become
``TargetError`` sentences naming the daemon.

Objects are looked up by ID, or by listing and comparing names: Docker resolves
``/secrets/X`` and ``/services/X`` by ID, then by name, then by *ID prefix*, so inspecting a
name that doesn't exist (yet, or any more) can return an unrelated object whose ID happens to
start with it. Swarm compares secret and config names ignoring case, and so does
``named_like``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from syncd.errors import TargetError
from syncd.targets.swarm.settings import SwarmTargetConfig

T = TypeVar("T")


class Conflict(TargetError):
    """The object already exists (HTTP 409)."""


class InUse(TargetError):
    """Swarm refuses: the secret is still referenced by a service."""


class NotFound(TargetError):
    """The object does not exist (HTTP 404)."""


class OutOfSequence(TargetError):
    """Another writer updated the object since it was read (its version index moved)."""


class Unavailable(TargetError):
    """Docker gave no usable answer this time: unreachable, timed out, or a server error
    (5xx, e.g. a manager restarting or electing a leader). A read can simply be tried again;
    a write that got this may or may not have happened."""

    @property
    def transient(self) -> bool:
        """Always: Docker may answer next time."""
        return True


def _connection_failed(exc: BaseException) -> bool:
    """Whether docker-py's error wraps a failed connection (it re-raises the version probe's
    requests error as a plain ``DockerException``), rather than a setting it refused."""
    import requests.exceptions

    cause = exc.__cause__ or exc.__context__
    return isinstance(cause, requests.exceptions.RequestException)


def api_error(exc: Any, operation: str, host: str) -> TargetError:
    """A user-facing error for a Docker API error response."""
    explanation = str(getattr(exc, "explanation", None) or exc)
    status = getattr(exc, "status_code", None)
    if "not a swarm manager" in explanation:
        return TargetError(
            f"the Docker node at {host} is not a swarm manager ({explanation}); point "
            "target.docker_host at a manager node"
        )
    if "is in use by" in explanation:
        return InUse(explanation)
    if "out of sequence" in explanation:
        return OutOfSequence(f"{operation}: {explanation}")
    if status == 409 or "already exists" in explanation:
        return Conflict(explanation)
    if status == 404:
        return NotFound(f"{operation}: {explanation}")
    if isinstance(status, int) and status >= 500:
        return Unavailable(f"Docker API {operation} failed ({status}): {explanation}")
    return TargetError(f"Docker API {operation} failed ({status}): {explanation}")


class DockerApi:
    """One Docker daemon, reached lazily: building it (and ``settings``) never connects."""

    def __init__(
        self,
        config: SwarmTargetConfig,
        *,
        base_dir: Path,
        count_read: Callable[[str], None],
        count_write: Callable[[str], None],
    ) -> None:
        self._config = config
        self._base_dir = base_dir
        self._count_read = count_read
        self._count_write = count_write
        self._settings: dict[str, Any] | None = None
        self._client: Any = None

    @property
    def host(self) -> str:
        """The daemon as messages name it."""
        return self._config.docker_host or os.environ.get("DOCKER_HOST") or "the local socket"

    def settings(self) -> dict[str, Any]:
        """The client's settings, built and checked without a request (``prepare``).

        ``DOCKER_HOST``, ``DOCKER_TLS_VERIFY`` and ``DOCKER_CERT_PATH`` apply when
        ``docker_host`` is unset; every TLS file must exist.
        """
        if self._settings is None:
            import docker.errors
            import docker.tls
            import docker.utils

            settings: dict[str, Any] = {}
            try:
                if self._config.docker_host:
                    docker.utils.parse_host(self._config.docker_host)
                    settings["base_url"] = self._config.docker_host
                else:
                    settings.update(docker.utils.kwargs_from_env())
                if self._config.tls is not None:
                    settings["tls"] = self._tls_config(docker.tls)
            except docker.errors.DockerException as exc:
                raise TargetError(f"target: the Docker client settings don't work: {exc}") from exc
            self._settings = settings
        return self._settings

    def _tls_config(self, tls_module: Any) -> Any:
        tls = self._config.tls
        assert tls is not None
        paths: dict[str, str | None] = {}
        for field in ("ca_cert", "client_cert", "client_key"):
            value = getattr(tls, field)
            if value is None:
                paths[field] = None
                continue
            path = (self._base_dir / os.path.expanduser(value)).absolute()
            if not path.is_file():
                raise TargetError(f"target.tls.{field}: {path} is not a file")
            paths[field] = str(path)
        cert, key, ca = paths["client_cert"], paths["client_key"], paths["ca_cert"]
        if (cert is None) != (key is None):
            raise TargetError("target.tls needs both client_cert and client_key, or neither")
        return tls_module.TLSConfig(
            client_cert=(cert, key) if cert and key else None,
            ca_cert=ca,
            verify=(ca or True) if tls.verify else False,
        )

    def _api(self) -> Any:
        if self._client is None:
            import docker
            import docker.errors

            settings = self.settings()
            self._count_read("version")
            try:
                self._client = docker.APIClient(
                    version="auto", timeout=self._config.api_timeout, **settings
                )
            except docker.errors.DockerException as exc:
                message = f"Docker daemon at {self.host} is not reachable: {exc}"
                if _connection_failed(exc):  # no daemon there yet: it may come up
                    raise Unavailable(message) from exc
                raise TargetError(message) from exc
        return self._client

    def call(self, operation: str, fn: Callable[[Any], T], *, write: bool = False) -> T:
        """Run one Docker API call, counted, with Docker's errors turned into ``TargetError``."""
        api = self._api()
        if write:
            self._count_write(operation)
        else:
            self._count_read(operation)
        import docker.errors
        import requests.exceptions

        try:
            return fn(api)
        except docker.errors.APIError as exc:
            raise api_error(exc, operation, self.host) from exc
        except requests.exceptions.RequestException as exc:
            raise Unavailable(f"Docker daemon at {self.host} is not reachable: {exc}") from exc
        except docker.errors.DockerException as exc:
            raise TargetError(f"Docker API {operation} failed: {exc}") from exc

    # ------------------------------------------------------------------ lookups

    def named_like(self, kind: str, name: str) -> list[dict[str, Any]]:
        """The secrets or configs (``kind``) whose name equals ``name`` ignoring case."""
        listed: list[dict[str, Any]] = self.call(
            f"list-{kind}",
            lambda api: getattr(api, kind)(filters={"name": name}),
        )
        # the name filter matches prefixes
        return [o for o in listed if (o.get("Spec") or {}).get("Name", "").lower() == name.lower()]

    def named(self, kind: str, name: str) -> dict[str, Any] | None:
        """The secret or config (``kind``) named exactly ``name``, or ``None``."""
        return next(
            (o for o in self.named_like(kind, name) if o["Spec"]["Name"] == name),
            None,
        )

    def service_named(self, name: str) -> dict[str, Any] | None:
        """The service named exactly ``name``, or ``None``."""
        listed: list[dict[str, Any]] = self.call(
            "list-services", lambda api: api.services(filters={"name": name})
        )
        return next((s for s in listed if (s.get("Spec") or {}).get("Name") == name), None)

    # ------------------------------------------------------------------ writes

    def update_labels(self, kind: str, obj: Mapping[str, Any], labels: Mapping[str, str]) -> None:
        """Replace a secret's or config's labels (the only thing Swarm lets change), guarded
        by the version index it was read at."""
        spec = {**(obj.get("Spec") or {}), "Labels": dict(labels)}
        index = obj["Version"]["Index"]

        def post(api: Any) -> Any:
            url = api._url(f"/{kind}/{{0}}/update", obj["ID"])
            return api._result(api._post_json(url, data=spec, params={"version": index}))

        self.call(f"update-{kind.removesuffix('s')}", post, write=True)

    def update_service(self, service_id: str, spec: Mapping[str, Any], index: int) -> Any:
        """POST the whole spec as given (docker-py's ``update_service`` rebuilds it from a
        fixed list of fields and could drop ones it doesn't know)."""

        def post(api: Any) -> Any:
            url = api._url("/services/{0}/update", service_id)
            return api._result(api._post_json(url, data=spec, params={"version": index}), json=True)

        return self.call("update-service", post, write=True)

    def close(self) -> None:
        """Close the connection pool."""
        if self._client is not None:
            self._client.close()
            self._client = None
