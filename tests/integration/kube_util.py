"""Helpers for the Kubernetes tests: a namespace and a config folder per test, workloads that
kwok rolls out, the chart through helm, ServiceAccount kubeconfigs, and a counting proxy that
attributes every request to the one process that sent it.

Test modules import the fixtures (``ns_fixture``, ``project_fixture``) from here rather than
from each other, so no test module depends on another one's contents.
"""

from __future__ import annotations

import http.client
import json
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from syncd.config import load_config
from syncd.engine import CycleResult, Engine
from tests.conftest import ROOT, wait_until

CHART = ROOT / "helm" / "syncd"
#: Election settings short enough for a test: lease 3 s, writes stop 2 s after a renewal.
ELECTION = {"enabled": True, "duration": 3, "renew_deadline": 2, "renew_every": 0.3}

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
        providers: dict[str, Any] | None = None,
        **target: Any,
    ) -> Path:
        """Write a config; ``top`` adds top-level keys (``instance``, ``prune``...),
        ``providers`` more providers beside ``local`` (``keys.yaml``)."""
        doc = {
            **(top or {}),
            "providers": {"local": {"type": "file", "path": "keys.yaml"}, **(providers or {})},
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


def bind_shipped_role(api: Any, ns: str, *, drop: tuple[str, ...] = ()) -> None:
    """ServiceAccount ``syncd`` bound to ``config/rbac/role.yaml`` in ``ns``, minus the verbs
    in ``drop`` (a Role from an older release)."""
    role = yaml.safe_load((ROOT / "config" / "rbac" / "role.yaml").read_text())
    for rule in role["rules"]:
        rule["verbs"] = [v for v in rule["verbs"] if v not in drop]
    api.CoreV1Api().create_namespaced_service_account(ns, {"metadata": {"name": "syncd"}})
    rbac = api.RbacAuthorizationV1Api()
    rbac.create_namespaced_role(ns, role)
    rbac.create_namespaced_role_binding(
        ns,
        {
            "metadata": {"name": "syncd"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "syncd"},
            "subjects": [{"kind": "ServiceAccount", "name": "syncd", "namespace": ns}],
        },
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


Hook = Callable[[], bool]


@dataclass
class Rule:
    """One scripted behaviour of the proxy, for requests whose method is ``method`` and whose
    path (query included) matches the regular expression ``path``.

    It applies to the next ``times`` matching requests (None: every one). For each: ``before``
    runs first (it may block, holding the request; False drops the request unsent), then the
    proxy either answers ``status`` itself (with ``headers`` and a Status body like the API
    server's) or forwards the request; once the API server has answered, ``after`` runs (it
    may block: the write is done and the client doesn't know yet; False drops the answer).
    ``hits`` records when each matching request arrived, and its path.
    """

    method: str
    path: str
    times: int | None = 1
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    #: what the proxy's own answer carries (default: a Status like the API server's)
    body: bytes | None = None
    before: Hook | None = None
    after: Hook | None = None
    hits: list[tuple[float, str]] = field(default_factory=list)

    def matches(self, method: str, path: str) -> bool:
        """Whether this rule still applies to ``method path``."""
        return (
            method == self.method
            and re.search(self.path, path) is not None
            and (self.times is None or len(self.hits) < self.times)
        )


class Hold:
    """A ``before``/``after`` hook that holds the request until ``release``; ``reached`` is set
    when a request arrives, so a test can act (kill the client, stop the server) meanwhile."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self._released = threading.Event()
        self._go_on = True

    def __call__(self) -> bool:
        self.reached.set()
        if not self._released.wait(120):
            raise AssertionError("a held request was never released")
        return self._go_on

    def wait(self, timeout: float = 60.0) -> None:
        """Block until a request is held; fail the test after ``timeout``."""
        assert self.reached.wait(timeout), f"no request reached the hold in {timeout:.0f}s"

    def release(self, *, go_on: bool = True) -> None:
        """Let the held request go on, or (``go_on=False``) drop it: a process killed while
        it waited must not have its request sent after its death."""
        self._go_on = go_on
        self._released.set()


@dataclass
class Proxy:
    """An HTTP front of the API server for one process; records every request it forwards and
    plays the ``rules`` a test scripts (answers of its own, held requests, lost answers).

    With a ``context`` holding the admin client certificate every request is the admin's;
    with a CA-only context the client's own ``Authorization`` (a ServiceAccount token) is
    what the API server authenticates, so RBAC is that account's. An API server that can't be
    reached, or dies while answering, closes the client's connection without an answer, as a
    dead server does.
    """

    upstream: str
    context: ssl.SSLContext
    requests: list[tuple[float, str, str]] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def writes(self, since: float = 0.0) -> list[tuple[float, str, str]]:
        """Writes to the target at or after ``since``: not to the Lease, nor the Events
        (best-effort notes about the writes, not writes of the swap)."""
        return [
            r
            for r in self.requests
            if r[1] != "GET" and "/leases" not in r[2] and "/events" not in r[2] and r[0] >= since
        ]

    def script(self, rule: Rule) -> Rule:
        """Add a rule (the first matching rule applies) and return it."""
        with self._lock:
            self.rules.append(rule)
        return rule

    def rule_for(self, method: str, path: str) -> Rule | None:
        """The first rule that applies to a request, which it then counts as a hit."""
        with self._lock:
            for rule in self.rules:
                if rule.matches(method, path):
                    rule.hits.append((time.monotonic(), path))
                    return rule
        return None

    def kubeconfig(self, path: Path) -> str:
        """A kubeconfig that reaches the API server through this proxy."""
        assert self.server is not None, "start the proxy first"
        return write_kubeconfig(path, server=f"http://127.0.0.1:{self.server.server_address[1]}")

    def start(self) -> int:
        proxy = self
        target = urlparse(self.upstream)
        host = target.hostname or "127.0.0.1"

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status: int, headers: dict[str, str], data: bytes) -> None:
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client went away (a killed process): nothing to answer

            def _upstream(self, body: bytes | None) -> tuple[int, dict[str, str], bytes] | None:
                headers = {k: v for k, v in self.headers.items() if k.lower() in _FORWARDED}
                conn = http.client.HTTPSConnection(
                    host, target.port, context=proxy.context, timeout=30
                )
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    answer = conn.getresponse()
                    data = answer.read()
                except (OSError, http.client.HTTPException):
                    return None  # the API server is down or died answering
                finally:
                    conn.close()
                kept = {
                    name: answer.getheader(name) or ""
                    for name in _RETURNED
                    if answer.getheader(name) is not None
                }
                return answer.status, kept, data

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                proxy.requests.append((time.monotonic(), self.command, self.path))
                rule = proxy.rule_for(self.command, self.path)
                if rule is not None and rule.before is not None and not rule.before():
                    self.close_connection = True
                    return
                if rule is not None and rule.status is not None:
                    self._answer(
                        rule.status,
                        {"Content-Type": "application/json", **rule.headers},
                        _status_body(rule.status) if rule.body is None else rule.body,
                    )
                    return
                if self.command == "GET" and "watch=true" in self.path:
                    self._stream()
                    return
                answer = self._upstream(body)
                if answer is None or (
                    rule is not None and rule.after is not None and not rule.after()
                ):
                    self.close_connection = True
                    return
                self._answer(*answer)

            def _stream(self) -> None:
                """A watch, relayed as the API server sends it (an answer read whole
                would reach the client only when the watch ends)."""
                headers = {k: v for k, v in self.headers.items() if k.lower() in _FORWARDED}
                conn = http.client.HTTPSConnection(
                    host, target.port, context=proxy.context, timeout=WATCH_RELAY
                )
                self.close_connection = True
                try:
                    conn.request("GET", self.path, headers=headers)
                    answer = conn.getresponse()
                    self.send_response(answer.status)
                    self.send_header("Content-Type", answer.getheader("Content-Type") or "")
                    self.end_headers()
                    while chunk := answer.read1(65536):
                        self.wfile.write(chunk)
                        self.wfile.flush()
                except (OSError, http.client.HTTPException):
                    pass  # either side went away: the client sees the stream end
                finally:
                    conn.close()

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


#: How long a relayed watch may go without a byte from the API server, in seconds.
WATCH_RELAY = 400

#: Answer headers the proxy passes back: the body's type and the server's retry advice.
_RETURNED = ("Content-Type", "Retry-After")


def _status_body(status: int) -> bytes:
    """A ``Status`` object as the API server sends with an error (APF's 429, a 5xx)."""
    reason = {429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable"}.get(
        status, "Unknown"
    )
    return json.dumps(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": f"injected by the test proxy: {status}",
            "reason": reason,
            "code": status,
        }
    ).encode()


def admin_context(kube_env: dict[str, str]) -> ssl.SSLContext:
    """A TLS context that authenticates as the test cluster's admin (its client certificate)."""
    admin = yaml.safe_load(Path(kube_env["KUBECONFIG"]).read_text())
    user = admin["users"][0]["user"]
    context = ssl.create_default_context(cafile=kube_env["SYNCD_KUBE_CA"])
    context.load_cert_chain(user["client-certificate"], user["client-key"])
    return context


@pytest.fixture(name="proxy")
def proxy_fixture(kube_env: dict[str, str]) -> Iterator[Proxy]:
    """A scriptable proxy in front of the test cluster's API server, as its admin."""
    proxy = Proxy(kube_env["SYNCD_KUBE_SERVER"], admin_context(kube_env))
    proxy.start()
    yield proxy
    proxy.stop()


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


class ReferenceChecker:
    """Guarantee 1, watched from a thread of its own with the admin client: in every snapshot
    of the namespace, each pod template of each Deployment, ReplicaSet, StatefulSet,
    DaemonSet, CronJob, Job and Pod references only Secrets that exist.

    A snapshot is consistent: the Secrets are listed first and every other kind at exactly
    that ``resourceVersion``, so a repoint and a collection landing between two lists can't
    look like a violation, nor hide one. Lists that fail (the API server is being faulted)
    are counted and retried on the next round.
    """

    def __init__(self, api: Any, namespace: str, *, interval: float = 0.1) -> None:
        self.api = api
        self.namespace = namespace
        self.interval = interval
        self.snapshots = 0
        self.failed = 0
        self.violations: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ReferenceChecker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        from kubernetes.client.exceptions import ApiException

        while not self._stop.is_set():
            try:
                self.check()
            except (ApiException, OSError, ValueError):
                self.failed += 1  # the API server is being faulted: try again next round
            self._stop.wait(self.interval)

    def check(self) -> None:
        """One snapshot: record every pod template that names a missing Secret."""
        core, apps, batch = self.api.CoreV1Api(), self.api.AppsV1Api(), self.api.BatchV1Api()
        ns = self.namespace
        secrets = core.list_namespaced_secret(ns)
        existing = {s.metadata.name for s in secrets.items}
        at = {"resource_version": secrets.metadata.resource_version}
        at["resource_version_match"] = "Exact"
        templates: list[tuple[str, Any]] = []
        for kind, lister in (
            ("Deployment", apps.list_namespaced_deployment),
            ("ReplicaSet", apps.list_namespaced_replica_set),
            ("StatefulSet", apps.list_namespaced_stateful_set),
            ("DaemonSet", apps.list_namespaced_daemon_set),
            ("Job", batch.list_namespaced_job),
        ):
            templates.extend(
                (f"{kind}/{o.metadata.name}", o.spec.template) for o in lister(ns, **at).items
            )
        templates.extend(
            (f"CronJob/{o.metadata.name}", o.spec.job_template.spec.template)
            for o in batch.list_namespaced_cron_job(ns, **at).items
        )
        templates.extend(
            (f"Pod/{o.metadata.name}", o) for o in core.list_namespaced_pod(ns, **at).items
        )
        for label, template in templates:
            missing = template_secret_refs(template) - existing
            if missing:
                self.violations.append(f"{label} -> {sorted(missing)} at {at['resource_version']}")
        self.snapshots += 1

    def assert_clean(self, *, min_snapshots: int = 3) -> None:
        """No violation was seen, in enough snapshots to mean something."""
        assert self.violations == [], self.violations[:5]
        assert self.snapshots >= min_snapshots, (
            f"only {self.snapshots} snapshots ({self.failed} failed): the checker saw too little"
        )


def _apiserver_args(port: str) -> list[str]:
    """The command line of the test cluster's API server listening on ``port``."""
    flag = f"--secure-port={port}"
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [a.decode() for a in args if a]
        if words and words[0].endswith("kube-apiserver") and flag in words:
            return words
    raise AssertionError(f"no kube-apiserver with {flag} runs here")


class SpareApiServer:
    """A second kube-apiserver on the test cluster's etcd, on a port of its own.

    Stopping and starting it faults only the clients pointed at it: the controllers, kwok and
    the checker keep using the first one, so the cluster stays healthy whatever a test does
    to this one. It runs with the first one's flags (certificates, service-account keys,
    authorization) and dies with the test process.
    """

    def __init__(self, kube_env: dict[str, str], log: Path) -> None:
        first = urlparse(kube_env["SYNCD_KUBE_SERVER"])
        self.port = free_port()
        self.args = [
            f"--secure-port={self.port}" if a.startswith("--secure-port=") else a
            for a in _apiserver_args(str(first.port))
        ]
        self.url = f"https://127.0.0.1:{self.port}"
        self.log = log
        self.context = admin_context(kube_env)
        self.proc: subprocess.Popen[bytes] | None = None

    def ready(self) -> bool:
        """Whether it answers ``/readyz`` with ok."""
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.context, timeout=2)
        try:
            conn.request("GET", "/readyz")
            return conn.getresponse().read() == b"ok"
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def start(self) -> float:
        """Start it and wait until it is ready; the seconds that took."""
        started = time.monotonic()
        with self.log.open("ab") as log:
            # setpriv (util-linux): the server gets SIGKILL if the test process dies first
            self.proc = subprocess.Popen(
                ["setpriv", "--pdeathsig", "KILL", *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        wait_until("the spare API server to be ready", self.ready, timeout=60)
        return time.monotonic() - started

    def stop(self, sig: int = signal.SIGTERM) -> float:
        """Stop it (``SIGTERM``: a graceful shutdown; ``SIGKILL``: a crash); how long it took."""
        started = time.monotonic()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=60)
        return time.monotonic() - started


@pytest.fixture(name="spare_api", scope="module")
def spare_api_fixture(
    kube_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SpareApiServer]:
    """A spare API server for the module's tests to stop and start; stopped at the end."""
    server = SpareApiServer(kube_env, tmp_path_factory.mktemp("spare-api") / "apiserver.log")
    server.start()
    yield server
    server.stop()


def once(config: Path, *args: str) -> subprocess.Popen[str]:
    """``syncd --config CONFIG --once --output json`` started as a user runs it (not waited for)."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "syncd",
            "--config",
            str(config),
            "--once",
            "--output",
            "json",
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def once_result(config: Path, *args: str, timeout: float = 120) -> dict[str, Any]:
    """Run ``once`` to its end; its ``--output json`` document, with ``exit`` set to its code."""
    proc = once(config, *args)
    out, err = proc.communicate(timeout=timeout)
    try:
        doc = json.loads(out)
    except ValueError as exc:
        raise AssertionError(
            f"syncd --once printed no JSON (exit {proc.returncode}): {err}"
        ) from exc
    doc["exit"] = proc.returncode
    doc["stderr"] = err
    return dict(doc)
