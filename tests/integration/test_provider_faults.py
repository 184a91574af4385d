"""Provider faults, for every remote provider, through a fault-injecting proxy.

Each remote provider (vault, aws-secrets-manager, aws-ssm, azure-key-vault) talks to its real
test server (OpenBao, moto, the Key Vault double over HTTPS) through a ``FaultProxy`` on
loopback, and a real daemon (``syncd.daemon.Daemon`` in a thread, its HTTP endpoints on a free
port) syncs two secrets of it into a files target with ``prune: true``. One daemon per
provider serves every case (a module fixture): each case arms a fault, changes a secret
upstream (to the ``canary`` value), and checks, while the fault lasts, that

- the target directory is exactly as it was (inodes, bytes, modes, mtimes, links);
- ``/readyz`` answers 503 naming the failing secret, ``syncd_provider_calls_total`` counts
  failed calls (``status`` label), the log line names the provider and the reference, and the
  error says whether it may pass by itself (``transient``);

then heals the proxy and checks that the daemon, never restarted, syncs the change on its own
and ``/readyz`` is 200 again, and that the value appears in no log line, error, metric or
health answer. Credential faults (a Vault token revoked, AWS keys refused or rotated, an Azure
token refused) have their own cases, and one test holds every provider against a hanging
server with the default settings.

Where the default isn't the point, clients use short timeouts, and the providers' hold after
a dead server (``HOLD``) is shortened, so a case costs a few seconds.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import stat
import threading
import time
import urllib.error
import urllib.request
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

import providers._aws as aws_module
import providers.aws_secrets_manager as sm_module
import providers.azure_key_vault as azure_module
import providers.vault.calls as vault_calls
from providers.base import ProviderContext
from syncd.calls import CallCounter
from syncd.config import load_config
from syncd.daemon import Daemon
from syncd.engine import CycleResult, Engine
from syncd.model import PlanItem
from syncd.redact import MASK
from syncd.registry import provider_class
from tests.conftest import backend_env, new_value, wait_until
from tests.integration.faults import (
    Action,
    Answer,
    Cut,
    Drop,
    FaultProxy,
    Hang,
    Kill,
    Seen,
    make_tls,
    timed_cycle,
)

#: The hold after a dead server, as the providers ship it (the daemons here shorten it).
HOLD_MODULES = (vault_calls, aws_module, azure_module)
DEFAULT_HOLDS = {module: module.HOLD for module in HOLD_MODULES}
SHORT_HOLD = 0.3
#: How long a denied ListSecrets is done without (an hour as shipped).
SHORT_DENIED = 1.0

HTML_PAGE = b"<html><head><title>503 Service Unavailable</title></head><body>down</body></html>"
LOGIN_PAGE = b"<!doctype html><html><body><form>Sign in to continue</form></body></html>"
JSON = ("Content-Type", "application/json")
HTML = ("Content-Type", "text/html; charset=utf-8")


# --------------------------------------------------------------------------- the backends


class Backend(ABC):
    """One remote provider behind a proxy: its config, its secrets, how to change them."""

    name: str  # the provider's name in the config, and the test id
    backend: str  # which test backend it needs
    #: the ``status`` label of a call that got this HTTP status in syncd_provider_calls_total
    #: (``0``: no answer, or one that can't be read)
    labels: ClassVar[dict[int, str]] = {0: "error", 429: "throttled", 500: "error", 503: "error"}

    def __init__(self, prefix: str, tmp: Path) -> None:
        self.prefix = prefix
        self.tmp = tmp

    @abstractmethod
    def start(self) -> str:
        """Make the setup clients (and the provider's credentials); return the upstream URL
        the proxy fronts."""

    def proxy(self, upstream: str) -> FaultProxy:
        """A proxy in front of ``upstream`` speaking what the provider's client expects."""
        return FaultProxy(upstream)

    @abstractmethod
    def block(self, url: str) -> dict[str, Any]:
        """The provider block, reaching the server at ``url``, with short timeouts."""

    @abstractmethod
    def default_block(self, url: str) -> dict[str, Any]:
        """The provider block with every time setting at its default."""

    @abstractmethod
    def ref(self, key: str) -> dict[str, Any]:
        """The ``from:`` of secret ``key`` ("a" or "b")."""

    @abstractmethod
    def described(self, key: str) -> str:
        """How errors name that reference."""

    @abstractmethod
    def put(self, key: str, value: str) -> None:
        """Write a new value of secret ``key`` upstream, past the proxy."""

    @abstractmethod
    def is_listing(self, seen: Seen) -> bool:
        """Whether a request is the change detection (metadata, listing)."""

    @abstractmethod
    def is_read(self, seen: Seen) -> bool:
        """Whether a request reads values."""

    @abstractmethod
    def error_body(self, code: str, message: str) -> bytes:
        """An error document in the server's own format."""

    @abstractmethod
    def close(self) -> None:
        """Release the setup clients (and what ``start`` made upstream)."""


class VaultBackend(Backend):
    name, backend = "vault", "vault"

    def start(self) -> str:
        import hvac

        env = backend_env("vault")
        self.root = hvac.Client(url=env["VAULT_ADDR"], token=env["VAULT_TOKEN"])
        self.policy = f"syncd-faults-{self.prefix}"
        rules = "\n".join(
            f'path "secret/{kind}/{self.prefix}/*" {{ capabilities = ["read", "list"] }}'
            for kind in ("data", "metadata", "detailed-metadata")
        )
        self.root.sys.create_or_update_policy(name=self.policy, policy=rules)
        self.rotate_token()
        return env["VAULT_ADDR"]

    def rotate_token(self) -> str:
        """A fresh token for the provider in its token file (what an agent would do)."""
        token = str(
            self.root.auth.token.create(policies=[self.policy], ttl="1h", no_parent=True)["auth"][
                "client_token"
            ]
        )
        (self.tmp / "vault-token").write_text(token)
        self.token = token
        return token

    def block(self, url: str) -> dict[str, Any]:
        return {**self.default_block(url), "timeout": "0.5s", "retries": 1, "backoff": "50ms"}

    def default_block(self, url: str) -> dict[str, Any]:
        return {
            "type": "vault",
            "addr": url,
            "auth": {"method": "token", "token_file": "vault-token"},
        }

    def ref(self, key: str) -> dict[str, Any]:
        return {"provider": self.name, "path": f"{self.prefix}/{key}", "key": "v"}

    def described(self, key: str) -> str:
        return f"vault:{self.prefix}/{key}#v"

    def put(self, key: str, value: str) -> None:
        self.root.secrets.kv.v2.create_or_update_secret(
            path=f"{self.prefix}/{key}", secret={"v": value}
        )

    def is_listing(self, seen: Seen) -> bool:
        return "metadata/" in seen.path

    def is_read(self, seen: Seen) -> bool:
        return "/v1/secret/data/" in seen.path

    def error_body(self, code: str, message: str) -> bytes:
        return json.dumps({"errors": [message]}).encode()

    def close(self) -> None:
        self.root.sys.delete_policy(self.policy)


class _AwsBackend(Backend):
    backend = "aws"
    service = type_name = listing = reading = ""  # boto3 service, provider type, operations

    def start(self) -> str:
        import boto3

        self.env = backend_env("aws")
        self.client = boto3.client(self.service, endpoint_url=self.env["AWS_ENDPOINT_URL"])
        return self.env["AWS_ENDPOINT_URL"]

    def block(self, url: str) -> dict[str, Any]:
        return {
            **self.default_block(url),
            "connect_timeout": "0.5s",
            "read_timeout": "0.5s",
            "max_attempts": 2,
        }

    def default_block(self, url: str) -> dict[str, Any]:
        return {
            "type": self.type_name,
            "endpoint_url": url,
            "region": self.env["AWS_DEFAULT_REGION"],
        }

    def is_listing(self, seen: Seen) -> bool:
        return seen.operation == self.listing

    def is_read(self, seen: Seen) -> bool:
        return seen.operation == self.reading

    def error_body(self, code: str, message: str) -> bytes:
        return json.dumps({"__type": code, "message": message}).encode()

    def close(self) -> None:
        self.client.close()


class SecretsManagerBackend(_AwsBackend):
    name, service, type_name = "sm", "secretsmanager", "aws-secrets-manager"
    listing, reading = "ListSecrets", "BatchGetSecretValue"

    def ref(self, key: str) -> dict[str, Any]:
        return {"provider": self.name, "name": f"{self.prefix}-{key}"}

    def described(self, key: str) -> str:
        return f"sm:{self.prefix}-{key}"

    def put(self, key: str, value: str) -> None:
        name = f"{self.prefix}-{key}"
        try:
            self.client.put_secret_value(SecretId=name, SecretString=value)
        except self.client.exceptions.ResourceNotFoundException:
            self.client.create_secret(Name=name, SecretString=value)


class SsmBackend(_AwsBackend):
    name, service, type_name = "ssm", "ssm", "aws-ssm"
    listing, reading = "DescribeParameters", "GetParameters"

    def ref(self, key: str) -> dict[str, Any]:
        return {"provider": self.name, "name": f"/{self.prefix}/{key}"}

    def described(self, key: str) -> str:
        return f"ssm:/{self.prefix}/{key}"

    def put(self, key: str, value: str) -> None:
        self.client.put_parameter(
            Name=f"/{self.prefix}/{key}", Value=value, Type="SecureString", Overwrite=True
        )


class AzureBackend(Backend):
    name, backend = "kv", "azure"
    labels: ClassVar[dict[int, str]] = {0: "error", 429: "429", 500: "500", 503: "503"}

    def start(self) -> str:
        from azure.identity import ClientSecretCredential
        from azure.keyvault.secrets import SecretClient

        self.env = backend_env("azure")
        ca = self.env["AZURE_KV_CA"]
        credential = ClientSecretCredential(
            self.env["AZURE_KV_TENANT"],
            self.env["AZURE_KV_CLIENT_ID"],
            Path(self.env["AZURE_KV_CLIENT_SECRET_FILE"]).read_text().strip(),
            authority=self.env["AZURE_KV_AUTHORITY"],
            disable_instance_discovery=True,
            connection_verify=ca,
        )
        self.seed = SecretClient(
            self.env["AZURE_KV_URL"],
            credential,
            verify_challenge_resource=False,
            connection_verify=ca,
        )
        self.tls = make_tls(self.tmp / "proxy-tls")
        return self.env["AZURE_KV_URL"]

    def proxy(self, upstream: str) -> FaultProxy:
        return FaultProxy(upstream, upstream_ca=self.env["AZURE_KV_CA"], tls=self.tls)

    def block(self, url: str) -> dict[str, Any]:
        return {
            **self.default_block(url),
            "timeout": "0.5s",
            "retry_total": 1,
            "retry_backoff_factor": "50ms",
        }

    def default_block(self, url: str) -> dict[str, Any]:
        return {
            "type": "azure-key-vault",
            "vault_url": url,
            "authority_host": url,  # the token endpoint is behind the proxy too
            "ca_bundle": str(self.tls.ca),
            "verify_challenge_resource": False,
            "auth": {
                "method": "client-secret",
                "tenant_id": self.env["AZURE_KV_TENANT"],
                "client_id": self.env["AZURE_KV_CLIENT_ID"],
                "client_secret_file": self.env["AZURE_KV_CLIENT_SECRET_FILE"],
            },
        }

    def ref(self, key: str) -> dict[str, Any]:
        return {"provider": self.name, "name": f"{self.prefix}-{key}"}

    def described(self, key: str) -> str:
        return f"kv:{self.prefix}-{key}"

    def put(self, key: str, value: str) -> None:
        self.seed.set_secret(f"{self.prefix}-{key}", value)

    def is_listing(self, seen: Seen) -> bool:
        return seen.path.split("?")[0].rstrip("/") == "/secrets"

    def is_read(self, seen: Seen) -> bool:
        return seen.method == "GET" and seen.path.startswith("/secrets/")

    def error_body(self, code: str, message: str) -> bytes:
        return json.dumps({"error": {"code": code, "message": message}}).encode()

    def admin(self, hook: str) -> None:
        """Call one of the double's test hooks (``revoke``: every issued token)."""
        import requests

        answer = requests.post(
            f"{self.env['AZURE_KV_ADMIN']}/{hook}",
            json={},
            verify=self.env["AZURE_KV_CA"],
            timeout=10,
        )
        answer.raise_for_status()

    def close(self) -> None:
        self.seed.close()


BACKENDS: dict[str, type[Backend]] = {
    b.name: b for b in (VaultBackend, SecretsManagerBackend, SsmBackend, AzureBackend)
}
PROVIDERS = [
    pytest.param(n, marks=pytest.mark.backend(b.backend), id=n) for n, b in BACKENDS.items()
]


# --------------------------------------------------------------------------- the rig


class LogLines(logging.Handler):
    """Every log record of the process while it is attached, formatted with tracebacks."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.lines: list[tuple[int, str]] = []
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record)
        with self._guard:
            self.lines.append((record.levelno, text))

    def since(self, mark: int, level: int = logging.DEBUG) -> list[str]:
        """The lines from index ``mark`` on, at ``level`` or above."""
        with self._guard:
            return [text for lvl, text in self.lines[mark:] if lvl >= level]


@dataclass
class Rig:
    """A provider behind a proxy and a daemon syncing two of its secrets into ``out``."""

    backend: Backend
    upstream: str
    proxy: FaultProxy
    daemon: Daemon
    out: Path
    logs: LogLines
    names: dict[str, str]  # "a"/"b" -> the logical secret's name
    results: list[tuple[float, CycleResult]] = field(default_factory=list)

    def get(self, path: str) -> tuple[int, str]:
        """GET a daemon endpoint: status and body."""
        host, port = self.daemon.address
        try:
            with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=5) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def failed_calls(self) -> dict[str, float]:
        """``syncd_provider_calls_total`` of this provider, by status, not ``ok``."""
        _, text = self.get("/metrics")
        counts: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = sample.labels
                if (
                    sample.name == "syncd_provider_calls_total"
                    and labels.get("provider") == self.backend.name
                    and labels.get("status") != "ok"
                ):
                    counts[labels["status"]] = counts.get(labels["status"], 0.0) + sample.value
        return counts

    def items(self, since: float) -> list[PlanItem]:
        """Every secret's outcome in the cycles that ended at or after ``since``."""
        return [i for at, r in list(self.results) if at >= since for i in r.items]

    def failure(self, key: str, since: float) -> PlanItem | None:
        name = self.names[key]
        return next((i for i in self.items(since) if i.name == name and i.error), None)

    def settled(self) -> bool:
        """Both secrets are in the target, no cycle is running, and the last one covered both,
        had no error and wrote nothing: what the target holds now stays. (A cycle that lands
        a change can leave metadata for the next one, e.g. the source reference a fresh
        listing returns, so a cycle with errors gone is not yet enough; and a retry runs one
        secret only, so it says nothing of the other.)"""
        done = list(self.results)
        if not done or self.daemon.health.running_since is not None:
            return False
        last = done[-1][1]
        return (
            all(self.value(k) is not None for k in self.names)
            and {i.name for i in last.items} >= set(self.names.values())
            and all(not i.error for i in last.items)
            and last.target_writes == 0
        )

    def value(self, key: str) -> bytes | None:
        try:
            return (self.out / self.names[key]).read_bytes()
        except OSError:
            return None


def snapshot(directory: Path) -> dict[str, tuple[Any, ...]]:
    """Everything a files target holds: each entry's inode, mode, size, mtime, link, bytes."""
    found: dict[str, tuple[Any, ...]] = {}
    for path in sorted(directory.rglob("*")):
        st = path.lstat()
        link = os.readlink(path) if stat.S_ISLNK(st.st_mode) else None
        data = path.read_bytes() if stat.S_ISREG(st.st_mode) else None
        found[str(path.relative_to(directory))] = (
            st.st_ino,
            st.st_mode,
            st.st_size,
            st.st_mtime_ns,
            link,
            data,
        )
    return found


def write_config(tmp: Path, block: dict[str, Any], names: dict[str, str], backend: Backend) -> Path:
    doc = {
        "providers": {backend.name: block},
        "target": {"type": "files", "directory": "out"},
        "prune": True,
        "defaults": {"refresh": "1s"},
        "daemon": {
            "listen": "127.0.0.1:0",
            "jitter": 0,
            "backoff_min": "0.2s",
            "backoff_max": "1s",
            "ready_grace": "0.3s",
            "watch_config": False,
        },
        "secrets": [{"name": names[k], "from": backend.ref(k)} for k in ("a", "b")],
    }
    path = tmp / "syncd.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture(scope="module", params=PROVIDERS)
def rig(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    """One provider behind a proxy, and a daemon syncing two of its secrets, for every case."""
    kind = BACKENDS[request.param]
    if kind.backend == "aws":
        request.getfixturevalue("aws")  # moto's credentials in the environment
    tmp = tmp_path_factory.mktemp(f"faults-{kind.name}")
    prefix = f"f{uuid.uuid4().hex[:10]}"
    backend = kind(prefix, tmp)
    upstream = backend.start()
    for key in ("a", "b"):
        backend.put(key, new_value())
    proxy = backend.proxy(upstream)
    names = {k: f"{kind.name}_{k}" for k in ("a", "b")}
    config = write_config(tmp, backend.block(proxy.url), names, backend)
    logs = LogLines()
    root = logging.getLogger()
    level = root.level
    with pytest.MonkeyPatch.context() as mp:
        for module in HOLD_MODULES:
            mp.setattr(module, "HOLD", SHORT_HOLD)
        mp.setattr(sm_module, "DENIED_RETRY", SHORT_DENIED)
        root.addHandler(logs)
        root.setLevel(logging.INFO)
        for noisy in ("apscheduler", "botocore", "azure", "urllib3"):
            mp.setattr(logging.getLogger(noisy), "level", logging.WARNING)
        daemon = Daemon(config)
        rig = Rig(backend, upstream, proxy, daemon, tmp / "out", logs, names)
        run_cycle = daemon.engine.run_cycle

        def recorded(*args: Any, **kwargs: Any) -> CycleResult:
            result = run_cycle(*args, **kwargs)
            rig.results.append((time.monotonic(), result))
            return result

        mp.setattr(daemon.engine, "run_cycle", recorded)
        thread = threading.Thread(target=daemon.run, name=f"daemon-{kind.name}", daemon=True)
        thread.start()
        try:
            wait_until("the daemon to sync both secrets", rig.settled, timeout=30)
            yield rig
        finally:
            proxy.clear()
            daemon.stop_event.set()
            thread.join(30)
            proxy.close()
            backend.close()
            root.removeHandler(logs)
            root.setLevel(level)
    assert not thread.is_alive(), "the daemon did not stop"


# --------------------------------------------------------------------------- the faults


@dataclass(frozen=True)
class Fault:
    """One way a server fails: what the proxy does, and what syncd must make of it."""

    arm: Callable[[Rig], None]
    #: a text the error names, per provider (``*`` for all)
    says: dict[str, str]
    transient: bool
    #: the HTTP status the failed calls got (``0``: none, or an answer that can't be read)
    status: int = 0
    #: the proxy answers each faulted request (so each must be counted once, as failed)
    answered: bool = False


def on_all(action: Callable[[Rig], Action]) -> Callable[[Rig], None]:
    """Every request gets the action (made for the rig: bodies in the server's format)."""
    return lambda rig: rig.proxy.fault(action(rig))


def on_reads(action: Action) -> Callable[[Rig], None]:
    """Only the value reads get the action; the change detection goes through."""
    return lambda rig: rig.proxy.fault(action, when=rig.backend.is_read)


UNREACHABLE = {
    "vault": "is unreachable",
    "sm": "unreachable",
    "ssm": "unreachable",
    "kv": "can't reach",
}
DROPPED = {
    "vault": "dropped the connection in the middle of an answer",
    "sm": "cut short",
    "ssm": "cut short",
    "kv": "dropped the connection in the middle of an answer",
}
NOT_JSON = {"*": "not JSON"}

FAULTS: dict[str, Fault] = {
    # the server dies after answering the change detection, before the reads
    "killed-after-listing": Fault(on_reads(Kill()), UNREACHABLE, transient=True),
    "refused": Fault(lambda rig: rig.proxy.down(), UNREACHABLE, transient=True),
    "hang": Fault(
        on_all(lambda rig: Hang()),
        {
            "vault": "did not answer within 0.5 s",
            "sm": "timed out",
            "ssm": "timed out",
            "kv": "Read timed out",
        },
        transient=True,
    ),
    "429-retry-after": Fault(
        on_all(
            lambda rig: Answer(
                429,
                rig.backend.error_body("ThrottlingException", "rate limit exceeded"),
                (JSON, ("Retry-After", "1")),
            )
        ),
        {
            "vault": "throttled (HTTP 429)",
            "sm": "(HTTP 429)",
            "ssm": "(HTTP 429)",
            "kv": "throttled",
        },
        transient=True,
        status=429,
        answered=True,
    ),
    "500": Fault(
        on_all(
            lambda rig: Answer(500, rig.backend.error_body("InternalServiceError", "boom"), (JSON,))
        ),
        {"*": "500"},
        transient=True,
        status=500,
        answered=True,
    ),
    # what a load balancer in front answers while the server is away
    "503-html": Fault(
        on_all(lambda rig: Answer(503, HTML_PAGE, (HTML,))),
        {"*": "503"},
        transient=True,
        status=503,
        answered=True,
    ),
    "reset": Fault(on_all(lambda rig: Drop(reset=True)), UNREACHABLE, transient=True),
    "closed": Fault(on_all(lambda rig: Drop()), UNREACHABLE, transient=True),
    "cut-mid-answer": Fault(on_reads(Cut(framed=False)), DROPPED, transient=True),
    # the real answer, value and all, cut short but framed as complete
    "truncated-json": Fault(
        on_reads(Cut(framed=True, tail=2)), NOT_JSON, transient=False, answered=True
    ),
    "html-200": Fault(
        on_all(lambda rig: Answer(200, LOGIN_PAGE, (HTML,))),
        NOT_JSON,
        transient=False,
        answered=True,
    ),
    "binary-200": Fault(
        on_all(
            lambda rig: Answer(
                200, secrets.token_bytes(512), (("Content-Type", "application/octet-stream"),)
            )
        ),
        NOT_JSON,
        transient=False,
        answered=True,
    ),
}


def expected_text(fault: Fault, provider: str) -> str:
    """What the error of ``provider`` must say under ``fault``."""
    return fault.says.get(provider, fault.says.get("*", ""))


@dataclass
class Watch:
    """One case from the moment its fault is armed: where the logs, cycles and metrics were."""

    rig: Rig
    canary: str
    mark: int
    since: float
    calls: dict[str, float]
    target: dict[str, tuple[Any, ...]]


def begin(rig: Rig, arm: Callable[[Rig], None], canary: str) -> Watch:
    """Once the daemon is idle: arm the fault, note the target, change secret ``a`` upstream."""
    wait_until("the daemon to settle before the fault", rig.settled, timeout=30)
    watch = Watch(rig, canary, len(rig.logs.lines), time.monotonic(), rig.failed_calls(), {})
    arm(rig)
    watch.target = snapshot(rig.out)
    rig.backend.put("a", canary)
    return watch


def shows(watch: Watch) -> PlanItem:
    """Wait for the outage to show, and check what every fault must do and leave alone:
    ``/readyz`` names the secret, the error and its log line name the provider and the
    reference, the target is untouched. Returns the failed item."""
    rig = watch.rig
    item = wait_until(
        "a failed cycle for secret a", lambda: rig.failure("a", watch.since), timeout=30
    )
    name = rig.names["a"]
    wait_until(
        "/readyz to name the failing secret",
        lambda: (got := rig.get("/readyz"))[0] == 503 and name in got[1],
        timeout=15,
    )
    assert snapshot(rig.out) == watch.target, (
        "the target changed while the provider failed; requests since the fault: "
        + "; ".join(
            f"{s.at - watch.since:.2f}s {s.method} {s.path} {s.action}"
            for s in rig.proxy.requests(since=watch.since)
        )
        + "; cycles: "
        + "; ".join(
            f"{at - watch.since:.2f}s writes={r.target_writes} "
            + ",".join(f"{i.name}:{i.action}:{'error' if i.error else 'ok'}" for i in r.items)
            for at, r in list(rig.results)[-8:]
        )
    )
    error = item.error or ""
    assert item.error_kind == "provider", item
    assert f"provider {rig.backend.name!r}" in error and rig.backend.described("a") in error, error
    assert any(
        name in line and rig.backend.described("a") in line
        for line in rig.logs.since(watch.mark, logging.ERROR)
    ), f"no error log line names {name} and its reference"
    return item


def heals(watch: Watch, heal: Callable[[], None]) -> float:
    """Heal the fault; the daemon, never restarted, syncs the change on its own and is ready
    again. Returns how long that took."""
    rig = watch.rig
    healed = time.monotonic()
    heal()
    wait_until(
        "the change to land after the fault",
        lambda: rig.value("a") == watch.canary.encode(),
        timeout=30,
    )
    recovery = time.monotonic() - healed
    wait_until("/readyz to be ready again", lambda: rig.get("/readyz")[0] == 200, timeout=15)
    assert_no_value(watch)
    return recovery


def assert_no_value(watch: Watch) -> None:
    """The value appears in no log line, error, metric or health answer (nor masked)."""
    rig = watch.rig
    texts = [
        *rig.logs.since(watch.mark),
        rig.get("/metrics")[1],
        rig.get("/readyz")[1],
        rig.get("/healthz")[1],
        *[f"{i.error} {i.notes}" for i in rig.items(watch.since)],
    ]
    for text in texts:
        assert watch.canary not in text, f"the value leaked: {text[:300]}"
        assert MASK not in text, f"a value reached a message (masked): {text[:300]}"


def report(case: str, rig: Rig, item: PlanItem, shown: float, recovery: float) -> None:
    """One line per case for the reliability table (``pytest -s`` shows them)."""
    summary = (item.error or "").split(": ", 2)[-1][:100]
    print(
        f"\nfault {case} {rig.backend.name}: {summary!r} transient={item.transient} "
        f"shown={shown:.1f}s recovered={recovery:.1f}s"
    )


@pytest.fixture(autouse=True)
def _healed(request: pytest.FixtureRequest) -> Iterator[None]:
    """A case that failed half-way must not leave its fault for the next one."""
    yield
    if "rig" in request.fixturenames:
        request.getfixturevalue("rig").proxy.clear()


# --------------------------------------------------------------------------- server faults


@pytest.mark.parametrize("fault_id", list(FAULTS))
def test_fault_leaves_the_target_alone_and_heals_by_itself(
    rig: Rig, fault_id: str, canary: str
) -> None:
    """The server fails one way while a change waits upstream: the secret fails (saying
    whether it may pass by itself), the outage shows, the target stays, and the change lands
    by itself once the server is back; an answered fault is counted once per answer."""
    fault = FAULTS[fault_id]
    watch = begin(rig, fault.arm, canary)
    item = shows(watch)
    shown = time.monotonic() - watch.since
    error = item.error or ""
    assert expected_text(fault, rig.backend.name) in error, error
    assert item.transient is fault.transient, (item.transient, error)
    status = rig.backend.labels[fault.status]
    after = rig.failed_calls()
    assert after.get(status, 0) > watch.calls.get(status, 0), (status, after)
    if fault_id == "killed-after-listing":
        assert listed(rig, watch.since), "the listing went through first"
        assert rig.proxy.requests(lambda s: s.action == "kill", since=watch.since), "no read"
    if fault_id == "truncated-json":
        assert any(canary.encode() in body for body in rig.proxy.cut_bodies), (
            "no cut answer held the value, so this case would test nothing"
        )
    recovery = heals(watch, rig.proxy.clear)
    if fault.answered:
        answered = len(rig.proxy.requests(lambda s: s.action != "pass", since=watch.since))
        counted = rig.failed_calls().get(status, 0) - watch.calls.get(status, 0)
        assert counted == answered, f"{answered} failed answers, {counted} counted as {status}"
    report(fault_id, rig, item, shown, recovery)


# --------------------------------------------------------------------------- credentials


@dataclass(frozen=True)
class Refusal:
    """Credentials failing mid-run: how, how it heals, what the error says."""

    arm: Callable[[Rig], None]
    heal: Callable[[Rig], None]
    says: str


def _revoke_vault_token(rig: Rig) -> None:
    backend = rig.backend
    assert isinstance(backend, VaultBackend)
    backend.root.auth.token.revoke(backend.token)


def _new_vault_token(rig: Rig) -> None:
    backend = rig.backend
    assert isinstance(backend, VaultBackend)
    backend.rotate_token()


def _aws_refuses(code: str, message: str) -> Callable[[Rig], None]:
    def arm(rig: Rig) -> None:
        body = rig.backend.error_body(code, message)
        rig.proxy.fault(Answer(400, body, (("Content-Type", "application/x-amz-json-1.1"),)))

    return arm


def _azure_authority_refuses(rig: Rig) -> None:
    """The vault revokes every token (a claims challenge, as Key Vault's continuous access
    evaluation sends), and Entra ID refuses the client secret (rotated, expired)."""
    backend = rig.backend
    assert isinstance(backend, AzureBackend)
    refusal = json.dumps(
        {
            "error": "invalid_client",
            "error_description": "AADSTS7000222: The provided client secret keys are expired.",
        }
    ).encode()
    rig.proxy.fault(Answer(401, refusal, (JSON,)), when=lambda s: "/oauth2/" in s.path)
    backend.admin("revoke")


def _azure_vault_refuses(rig: Rig) -> None:
    """The vault refuses the token it is shown: 401 with a challenge, on every request."""
    backend = rig.backend
    assert isinstance(backend, AzureBackend)
    challenge = (
        f'Bearer authorization="{rig.proxy.url}/{backend.env["AZURE_KV_TENANT"]}", '
        'resource="https://vault.azure.net"'
    )
    rig.proxy.fault(
        Answer(
            401,
            backend.error_body("Unauthorized", "AKV10032: Invalid issuer."),
            (JSON, ("WWW-Authenticate", challenge)),
        ),
        when=lambda s: s.path.startswith("/secrets"),
    )


def _clear(rig: Rig) -> None:
    rig.proxy.clear()


#: Secrets Manager and SSM share the AWS error shapes, so the same refusals.
AWS_REFUSALS = {
    "expired-token": Refusal(
        _aws_refuses(
            "ExpiredTokenException", "The security token included in the request is expired"
        ),
        _clear,
        "check the AWS credentials",
    ),
    "access-denied": Refusal(
        _aws_refuses("AccessDeniedException", "User is not authorized to perform this operation"),
        _clear,
        "check the AWS credentials",
    ),
}

REFUSALS: dict[str, dict[str, Refusal]] = {
    "vault": {
        "token-revoked": Refusal(
            _revoke_vault_token, _new_vault_token, "the token was refused (HTTP 403"
        )
    },
    "sm": AWS_REFUSALS,
    "ssm": AWS_REFUSALS,
    "kv": {
        "authority-refuses": Refusal(_azure_authority_refuses, _clear, "AADSTS7000222"),
        "vault-refuses-token": Refusal(_azure_vault_refuses, _clear, "AKV10032"),
    },
}


def test_credentials_refused_mid_run(rig: Rig, canary: str) -> None:
    """Credentials that stop working between cycles (each way the provider knows, in turn)
    fail each secret, not transient (someone must act), touch nothing, and once valid
    credentials are back the next change syncs."""
    for refusal_id, refusal in REFUSALS[rig.backend.name].items():
        value = f"{canary}-{refusal_id}"
        watch = begin(rig, refusal.arm, value)
        item = shows(watch)
        shown = time.monotonic() - watch.since
        assert refusal.says in (item.error or ""), item.error
        assert item.transient is False, item.error
        assert sum(rig.failed_calls().values()) > sum(watch.calls.values())
        healed = time.monotonic()
        recovery = heals(watch, partial(refusal.heal, rig))
        if refusal_id == "access-denied" and rig.backend.name == "sm":
            # a passing denial must not cost cheap change detection for good
            wait_until("ListSecrets to be used again", partial(listed, rig, healed), timeout=15)
        report(refusal_id, rig, item, shown, recovery)


def listed(rig: Rig, since: float) -> bool:
    """Whether the change detection went through to the server since ``since``."""
    return any(s.action == "pass" for s in rig.proxy.requests(rig.backend.is_listing, since=since))


def test_rotated_aws_key_is_read_again_without_a_restart(
    aws: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    canary: str,
) -> None:
    """A key deleted in IAM and its successor written to the credentials file (a rotated
    Kubernetes Secret mounted as the file): the refused call reads the chain again, and the
    next cycle syncs with the new key, in the same process."""
    import boto3

    endpoint = aws["SYNCD_AWS_AUTH_ENDPOINT"]
    admin = {
        "endpoint_url": endpoint,
        "aws_access_key_id": aws["SYNCD_AWS_AUTH_ACCESS_KEY_ID"],
        "aws_secret_access_key": aws["SYNCD_AWS_AUTH_SECRET_ACCESS_KEY"],
    }
    iam = boto3.client("iam", **admin)
    user = f"rot-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=user)
    iam.put_user_policy(
        UserName=user,
        PolicyName="read",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "secretsmanager:*", "Resource": "*"}],
            }
        ),
    )
    name = f"rot-{uuid.uuid4().hex[:8]}"
    sm = boto3.client("secretsmanager", **admin)
    sm.create_secret(Name=name, SecretString=new_value())
    credentials = tmp_path / "credentials"
    issued: list[str] = []  # the secret keys, which nothing may print

    def issue() -> str:
        key = iam.create_access_key(UserName=user)["AccessKey"]
        credentials.write_text(
            f"[syncd]\naws_access_key_id = {key['AccessKeyId']}\n"
            f"aws_secret_access_key = {key['SecretAccessKey']}\n"
        )
        issued.append(str(key["SecretAccessKey"]))
        return str(key["AccessKeyId"])

    first = issue()
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setattr(aws_module, "RENEW_INTERVAL", 0.0)
    doc = {
        "providers": {
            "sm": {
                "type": "aws-secrets-manager",
                "endpoint_url": endpoint,
                "region": aws["AWS_DEFAULT_REGION"],
                "profile": "syncd",
            }
        },
        "target": {"type": "files", "directory": "out"},
        "secrets": [{"name": "rotated", "from": {"provider": "sm", "name": name}}],
    }
    (tmp_path / "syncd.yaml").write_text(yaml.safe_dump(doc))
    engine = Engine(load_config(tmp_path / "syncd.yaml"))
    caplog.set_level(logging.INFO)
    try:
        assert engine.run_cycle().ok
        issue()
        iam.delete_access_key(UserName=user, AccessKeyId=first)
        sm.put_secret_value(SecretId=name, SecretString=canary)
        refused = engine.run_cycle()
        error = refused.items[0].error or ""
        assert "InvalidClientTokenId" in error and "check the AWS credentials" in error, error
        assert refused.target_writes == 0
        again = engine.run_cycle()
        assert again.ok, again.items[0].error
        assert (tmp_path / "out" / "rotated").read_bytes() == canary.encode()
    finally:
        engine.close()
    assert "using the new ones found in the chain (shared-credentials-file)" in caplog.text
    shown = json.dumps([refused.to_json(), again.to_json()]) + caplog.text
    assert all(text not in shown for text in (canary, *issued))


# --------------------------------------------------------------------------- Retry-After


def _direct(rig: Rig, proxy: FaultProxy) -> Any:
    """A provider of the rig's kind built on its own (no daemon) against ``proxy``."""
    block = rig.backend.block(proxy.url)
    kind = provider_class(block["type"])
    config = kind.config_model.model_validate(block)
    context = ProviderContext(name=rig.backend.name, base_dir=rig.out.parent, calls=CallCounter())
    return kind(config, context=context)


def _in_time(call: Callable[[], Any], bound: float) -> tuple[float, Any]:
    """``call()`` and its wall time; fails when it is still running after ``bound`` seconds."""
    box: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: box.setdefault("r", call()), daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(bound)
    elapsed = time.monotonic() - started
    assert not thread.is_alive(), f"still waiting after {elapsed:.1f}s"
    return elapsed, box["r"]


def test_retry_after_is_honoured_and_bounded(rig: Rig) -> None:
    """A 429 with ``Retry-After: 1``: the retry waits at least that long, and succeeds. One
    asking for an hour must not hold the cycle: the call ends within seconds, transient."""
    refs = [
        provider_class(rig.backend.block("http://x")["type"]).ref_model.model_validate(
            rig.backend.ref(k)
        )
        for k in ("a", "b")
    ]
    throttled = rig.backend.error_body("ThrottlingException", "rate limit exceeded")
    proxy = rig.backend.proxy(rig.upstream)
    provider = _direct(rig, proxy)
    try:
        proxy.fault(Answer(429, throttled, (JSON, ("Retry-After", "1"))), times=1)
        elapsed, got = _in_time(lambda: provider.versions(refs), 10)
        assert all(not isinstance(v, Exception) for v in got.values()), got
        first = next(s for s in proxy.seen if s.action == "answer")
        retry = next(
            s
            for s in proxy.seen
            if s.at > first.at and (s.path, s.operation) == (first.path, first.operation)
        )
        waited = retry.at - first.at
        assert waited >= 0.95, f"Retry-After: 1 ignored: the retry came after {waited:.2f}s"
        assert elapsed < 5, f"{elapsed:.1f}s"

        proxy.fault(Answer(429, throttled, (JSON, ("Retry-After", "3600"))))
        long_wait, got = _in_time(lambda: provider.versions(refs), 15)
        errors = list(got.values())
        assert all(getattr(e, "transient", False) for e in errors), errors
        assert long_wait < 3, f"Retry-After: 3600 held the call {long_wait:.1f}s"
        assert all("Retry-After" in str(e) for e in errors), errors
    finally:
        provider.close()
        proxy.close()
    print(
        f"\nretry-after {rig.backend.name}: Retry-After 1 -> retried after {waited:.2f}s; "
        f"Retry-After 3600 -> gave up after {long_wait:.1f}s: {str(errors[0])[-120:]!r}"
    )


# --------------------------------------------------------------------------- default timeouts


def test_hanging_server_with_default_settings(
    tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every provider, default settings, a server that reads each request and never answers:
    one cycle of each (all four at once) ends well under 15 s, each secret failing transient."""
    request.getfixturevalue("aws")
    for module, hold in DEFAULT_HOLDS.items():
        monkeypatch.setattr(module, "HOLD", hold)
    runs: dict[str, tuple[float, CycleResult]] = {}
    engines: list[Engine] = []
    proxies: list[FaultProxy] = []
    backends: list[Backend] = []

    def cycle(name: str, engine: Engine) -> None:
        runs[name] = timed_cycle(engine, bound=15.0)

    try:
        threads = []
        for name, kind in BACKENDS.items():
            folder = tmp_path / name
            folder.mkdir()
            backend = kind(f"h{uuid.uuid4().hex[:8]}", folder)
            backends.append(backend)
            proxy = backend.proxy(backend.start())
            proxies.append(proxy)
            proxy.fault(Hang())
            names = {"a": "a", "b": "b"}
            engine = Engine(
                load_config(write_config(folder, backend.default_block(proxy.url), names, backend))
            )
            engines.append(engine)
            threads.append(threading.Thread(target=cycle, args=(name, engine), daemon=True))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)
    finally:
        for proxy in proxies:
            proxy.close()
        for engine in engines:
            engine.close()
        for backend in backends:
            backend.close()
    assert set(runs) == set(BACKENDS), runs
    for name, (elapsed, result) in runs.items():
        print(f"\nhang with defaults {name}: one cycle took {elapsed:.1f}s")
        assert elapsed < 13.0, f"{name}: {elapsed:.1f}s"
        assert all(i.error and i.transient for i in result.items), (name, result.items)
