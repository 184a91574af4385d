"""Helpers for the Kubernetes tests: a namespace and a config folder per test, workloads that
kwok rolls out, the chart through helm, ServiceAccount kubeconfigs, and a counting proxy that
attributes every request to the one process that sent it.

Test modules import the fixtures (``ns_fixture``, ``project_fixture``) from here rather than
from each other, so no test module depends on another one's contents.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from syncd.config import load_config
from syncd.engine import CycleResult, Engine
from tests.conftest import ROOT

CHART = ROOT / "helm" / "syncd"

#: Request headers the proxy passes on: what the API server needs to read and authenticate
#: a request (a ServiceAccount token travels in ``Authorization``).
_FORWARDED = ("content-type", "accept", "content-length", "authorization")


@pytest.fixture(name="ns")
def ns_fixture(api: Any) -> Iterator[str]:
    """A namespace of the test's own, deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    api.CoreV1Api().create_namespace({"metadata": {"name": name}})
    yield name
    api.CoreV1Api().delete_namespace(name)


class Project:
    """A config folder: a source file, a syncd.yaml pointing at the test cluster."""

    def __init__(self, root: Path, kubeconfig: str, namespace: str) -> None:
        self.root = root
        self.kubeconfig = kubeconfig
        self.namespace = namespace

    def values(self, **values: str) -> None:
        (self.root / "keys.yaml").write_text(yaml.safe_dump(values))

    def config(
        self,
        secrets: list[dict[str, Any]],
        *,
        top: dict[str, Any] | None = None,
        file: str = "syncd.yaml",
        **target: Any,
    ) -> Path:
        """Write a config; ``top`` adds top-level keys (``instance``, ``prune``...)."""
        doc = {
            **(top or {}),
            "providers": {"local": {"type": "file", "path": "keys.yaml"}},
            "target": {
                "type": "kubernetes",
                "namespace": self.namespace,
                "kubeconfig": self.kubeconfig,
                "poll_interval": 0.3,
                **target,
            },
            "defaults": {"timeout": "60s"},
            "secrets": secrets,
        }
        path = self.root / file
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path

    def cycle(self, path: Path | None = None, **kwargs: Any) -> CycleResult:
        engine = Engine(load_config(path or self.root / "syncd.yaml"))
        try:
            return engine.run_cycle(**kwargs)
        finally:
            engine.close()

    def syncd(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The CLI, as a user runs it."""
        return subprocess.run(
            [sys.executable, "-m", "syncd", *args],
            capture_output=True,
            text=True,
            check=False,
        )


@pytest.fixture(name="project")
def project_fixture(tmp_path: Path, kube_env: dict[str, str], ns: str) -> Project:
    """A config folder for the test's namespace, with the admin kubeconfig."""
    return Project(tmp_path, kube_env["KUBECONFIG"], ns)


def ref(key: str) -> dict[str, str]:
    return {"provider": "local", "key": key}


def deployment(name: str, pod_spec: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "strategy": {"rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec},
            **spec,
        },
    }


def container(**extra: Any) -> dict[str, Any]:
    return {"name": "app", "image": "example.invalid/agent-zero:1", **extra}


def rolled_out(api: Any, ns: str, name: str) -> bool:
    """What ``kubectl rollout status`` waits for."""
    d = api.AppsV1Api().read_namespaced_deployment(name, ns)
    s = d.status
    return bool(
        (s.observed_generation or 0) >= d.metadata.generation
        and (s.updated_replicas or 0) == d.spec.replicas
        and (s.available_replicas or 0) == d.spec.replicas
        and (s.replicas or 0) == d.spec.replicas
    )


def secret_names(api: Any, ns: str) -> set[str]:
    return {s.metadata.name for s in api.CoreV1Api().list_namespaced_secret(ns).items}


def template_secret_refs(template: Any) -> set[str]:
    spec = template.spec
    refs = set()
    for c in spec.containers:
        for e in c.env or []:
            if e.value_from and e.value_from.secret_key_ref:
                refs.add(e.value_from.secret_key_ref.name)
        for f in c.env_from or []:
            if f.secret_ref:
                refs.add(f.secret_ref.name)
    for v in spec.volumes or []:
        if v.secret:
            refs.add(v.secret.secret_name)
        if v.projected:
            refs.update(s.secret.name for s in v.projected.sources if s.secret)
    refs.update(p.name for p in spec.image_pull_secrets or [])
    return refs


def write_kubeconfig(
    path: Path, *, server: str, token: str | None = None, ca: str | None = None
) -> str:
    """Write a kubeconfig for ``server``, authenticating with ``token`` if given."""
    cluster: dict[str, str] = {"server": server}
    if ca is not None:
        cluster["certificate-authority"] = ca
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": cluster}],
                "users": [{"name": "u", "user": {"token": token} if token else {}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    return str(path)


def sa_token(api: Any, ns: str, sa: str) -> str:
    """A token of ServiceAccount ``ns/sa`` (TokenRequest), as a pod of it would mount."""
    return str(
        api.CoreV1Api()
        .create_namespaced_service_account_token(sa, ns, {"spec": {"expirationSeconds": 3600}})
        .status.token
    )


def token_kubeconfig(api: Any, kube_env: dict[str, str], ns: str, sa: str, path: Path) -> str:
    """A kubeconfig straight to the API server with ServiceAccount ``ns/sa``'s token."""
    return write_kubeconfig(
        path,
        server=kube_env["SYNCD_KUBE_SERVER"],
        token=sa_token(api, ns, sa),
        ca=kube_env["SYNCD_KUBE_CA"],
    )


def helm(
    kube_env: dict[str, str], *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """The helm CLI against the test cluster; fails the test with helm's output if asked to."""
    run = subprocess.run(
        [kube_env["SYNCD_KUBE_HELM"], "--kubeconfig", kube_env["KUBECONFIG"], *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if check and run.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{run.stdout}\n{run.stderr}")
    return run


@dataclass
class Proxy:
    """An HTTP front of the API server for one process; records every request it forwards.

    With a ``context`` holding the admin client certificate every request is the admin's;
    with a CA-only context the client's own ``Authorization`` (a ServiceAccount token) is
    what the API server authenticates, so RBAC is that account's.
    """

    upstream: str
    context: ssl.SSLContext
    requests: list[tuple[float, str, str]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    def writes(self, since: float = 0.0) -> list[tuple[float, str, str]]:
        """Writes to the target (not to the Lease) at or after ``since``."""
        return [
            r for r in self.requests if r[1] != "GET" and "/leases" not in r[2] and r[0] >= since
        ]

    def start(self) -> int:
        proxy = self
        target = urlparse(self.upstream)
        host = target.hostname or "127.0.0.1"

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                proxy.requests.append((time.monotonic(), self.command, self.path))
                conn = http.client.HTTPSConnection(
                    host, target.port, context=proxy.context, timeout=30
                )
                headers = {k: v for k, v in self.headers.items() if k.lower() in _FORWARDED}
                conn.request(self.command, self.path, body=body, headers=headers)
                answer = conn.getresponse()
                data = answer.read()
                conn.close()
                try:
                    self.send_response(answer.status)
                    self.send_header("Content-Type", answer.getheader("Content-Type") or "")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client went away (a killed process): nothing to answer

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

            def log_message(self, format: str, *args: Any) -> None:
                del format, args

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return int(self.server.server_address[1])

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def leads(port: int) -> bool:
    """Whether the daemon serving metrics on ``port`` holds its Lease (``syncd_leader``)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            return "syncd_leader 1.0" in resp.read().decode()
    except OSError:
        return False
