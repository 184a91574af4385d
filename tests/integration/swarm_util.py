"""Helpers for the swarm target's tests: a scratch project (source file + config) on the real
test Swarm, services built from the imported busybox image, and cleanup of what a test made.

Every object a test creates carries its own random prefix, so tests never see each other's
secrets and a crashed run leaves nothing that the next one would mistake for its own.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors
import docker.types
import pytest
import yaml

from syncd.config import load_config
from syncd.engine import CycleResult, Engine
from tests.conftest import backend_env, new_value, wait_until
from tests.integration.docker_proxy import DockerProxy

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
SYNCD = ROOT / ".venv" / "bin" / "syncd"
SECOND = 1_000_000_000  # Docker durations are nanoseconds

#: A reader that logs each read of its secret file; exits cleanly on SIGTERM (sh as PID 1
#: would otherwise ignore it and every rollout would wait for the kill timeout).
READER = (
    "trap 'exit 0' TERM; "
    "while true; do read up _ < /proc/uptime; "
    'if v=$(cat "$SECRET_FILE"); then echo "$up $SLOT $TASK ok $v"; '
    'else echo "$up $SLOT $TASK FAIL"; fi >> "/log/$TASK.log"; '
    "sleep 0.1; done"
)
IDLE = "trap 'exit 0' TERM; while true; do sleep 0.2; done"
#: ``READER`` over every file under /run/secrets, one line per file and round.
READ_ALL = (
    "trap 'exit 0' TERM; "
    "while true; do read up _ < /proc/uptime; for f in /run/secrets/*; do "
    'if v=$(cat "$f"); then echo "$up $SLOT $TASK ok $v"; '
    'else echo "$up $SLOT $TASK FAIL"; fi; done >> "/log/$TASK.log"; '
    "sleep 0.1; done"
)


@dataclass
class Swarm:
    """The running test swarm."""

    env: dict[str, str]
    api: Any

    @property
    def host(self) -> str:
        return self.env["DOCKER_HOST"]

    @property
    def image(self) -> str:
        return self.env["SYNCD_TEST_IMAGE"]

    def cli(self, *args: str, env: dict[str, str] | None = None, check: bool = True) -> str:
        """Run the docker CLI against the test swarm."""
        run_env = {**os.environ, "DOCKER_HOST": self.host, **(env or {})}
        out = subprocess.run(
            ["docker", *args], capture_output=True, text=True, env=run_env, check=False
        )
        if check and out.returncode != 0:
            pytest.fail(f"docker {' '.join(args)} failed: {out.stderr.strip()}")
        return out.stdout

    def service_secrets(self, name: str, *, previous: bool = False) -> list[dict[str, Any]]:
        """The secret references of a service's current (or previous) spec."""
        service = self.api.inspect_service(name)
        spec = service.get("PreviousSpec" if previous else "Spec") or {}
        refs: list[dict[str, Any]] = (
            spec.get("TaskTemplate", {}).get("ContainerSpec", {}).get("Secrets") or []
        )
        return refs

    def secret_names(self, prefix: str) -> set[str]:
        return {
            s["Spec"]["Name"]
            for s in self.api.secrets(filters={"name": prefix})
            if s["Spec"]["Name"].startswith(prefix)
        }

    def running_tasks(self, service: str) -> list[dict[str, Any]]:
        tasks = self.api.tasks(filters={"service": service, "desired-state": "running"})
        return [t for t in tasks if t["Status"]["State"] == "running"]

    def read_in_task(self, service: str, path: str) -> str:
        """Read a file inside a running task of ``service`` (one that runs the current spec)."""
        text = self.try_read_in_task(service, path)
        assert text is not None, f"no running up-to-date task of {service}"
        return text

    def try_read_in_task(self, service: str, path: str) -> str | None:
        """``read_in_task``, or ``None`` while no task runs (e.g. just after a restart)."""
        tasks = self.api.tasks(filters={"service": service, "_up-to-date": "true"})
        running = [
            t for t in tasks if t["Status"]["State"] == "running" and t["DesiredState"] == "running"
        ]
        if not running:
            return None
        container = running[0]["Status"]["ContainerStatus"]["ContainerID"]
        try:
            exec_id = self.api.exec_create(container, ["cat", path])["Id"]
            output: bytes = self.api.exec_start(exec_id)
        except docker.errors.APIError:  # the task stopped meanwhile
            return None
        return output.decode()


@dataclass
class Project:
    """One test's scratch folder: ``keys.yaml`` (the file provider's source) and configs."""

    root: Path
    swarm: Swarm
    prefix: str
    services: list[str] = field(default_factory=list)
    #: unprefixed names a test uses (the guide's own names): secrets and logical names
    extra_secrets: set[str] = field(default_factory=set)
    stacks: list[str] = field(default_factory=list)

    def name(self, base: str) -> str:
        return f"{self.prefix}{base}"

    @property
    def key_config(self) -> str:
        return f"{self.prefix}fingerprint-key"

    def set_values(self, values: dict[str, str], *, filename: str = "keys.yaml") -> None:
        """Rewrite a source file; a new mtime/size is what the file provider detects.

        The new file replaces the old one in one rename, so a daemon reading meanwhile sees
        the old values or the new ones, never a half-written file.
        """
        path = self.root / filename
        temp = path.with_name(f".{path.name}.tmp")
        temp.write_text(yaml.safe_dump(values, default_style='"'), encoding="utf-8")
        # make sure the stat token changes even within one mtime tick
        os.utime(temp, ns=(time.time_ns(), time.time_ns()))
        temp.replace(path)

    def config(
        self,
        secret_specs: Sequence[dict[str, Any]],
        *,
        keep: int = 1,
        timeout: str = "90s",
        target: dict[str, Any] | None = None,
        filename: str = "syncd.yaml",
        source: str = "keys.yaml",
        instance: str | None = None,
        prune: bool = False,
        extra: dict[str, Any] | None = None,
    ) -> Path:
        """A config of the file provider ``local`` (``source``) into the test swarm.

        ``target`` entries override the defaults; one set to ``None`` is left out (e.g.
        ``key_config``, to use the instance's default key config). ``extra`` adds top-level
        blocks (``daemon``, more ``providers``).
        """
        block = {
            "type": "swarm",
            "docker_host": self.swarm.host,
            "key_config": self.key_config,
            **(target or {}),
        }
        doc: dict[str, Any] = {
            "providers": {"local": {"type": "file", "path": source}},
            "target": {k: v for k, v in block.items() if v is not None},
            "defaults": {"keep": keep, "timeout": timeout},
            "prune": prune,
            "secrets": list(secret_specs),
        }
        if instance is not None:
            doc["instance"] = instance
        for key, block in (extra or {}).items():
            doc[key] = {**doc[key], **block} if isinstance(doc.get(key), dict) else block
        path = self.root / filename
        path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        return path

    def cycle(self, config: Path | None = None, *, engine: Engine | None = None) -> CycleResult:
        """One cycle through the engine (a fresh one unless given: state lives in the swarm)."""
        if engine is not None:
            return engine.run_cycle()
        own = Engine(load_config(config or self.root / "syncd.yaml"))
        try:
            return own.run_cycle()
        finally:
            own.close()

    def instance(self, suffix: str) -> str:
        """An installation name of this test (cleanup removes its key config)."""
        return f"{self.prefix}{suffix}"

    def indexes(self) -> dict[tuple[str, str], int]:
        """The version index of each of this test's secrets, configs and services: any write
        to one of them moves its index, so equal snapshots mean nothing was written."""
        api = self.swarm.api
        found: dict[tuple[str, str], int] = {}
        for kind, listed in (("secret", api.secrets()), ("config", api.configs())):
            for obj in listed:
                spec = obj["Spec"]
                if self._owns(spec["Name"], spec.get("Labels") or {}):
                    found[(kind, spec["Name"])] = obj["Version"]["Index"]
        for service in api.services():
            if service["Spec"]["Name"] in self.services:
                found[("service", service["Spec"]["Name"])] = service["Version"]["Index"]
        return found

    def relabel(self, kind: str, name: str, change: Callable[[dict[str, str]], None]) -> None:
        """Change the labels of a secret or config (``kind``) in place, as another tool or an
        older syncd could have left them."""
        api = self.swarm.api
        obj = next(o for o in getattr(api, f"{kind}s")() if o["Spec"]["Name"] == name)
        spec = obj["Spec"]
        labels = dict(spec.get("Labels") or {})
        change(labels)
        spec["Labels"] = labels
        url = api._url(f"/{kind}s/{{0}}/update", obj["ID"])
        response = api._post_json(url, data=spec, params={"version": obj["Version"]["Index"]})
        api._raise_for_status(response)

    def _owns(self, name: str, labels: dict[str, str]) -> bool:
        logical = labels.get("syncd.name", "")
        return (
            name.startswith(self.prefix)
            or name in self.extra_secrets
            or logical.startswith(self.prefix)
            or logical in self.extra_secrets
            or labels.get("syncd.instance", "").startswith(self.prefix)
        )

    def syncd(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run the ``syncd`` CLI."""
        return subprocess.run(
            [str(SYNCD), *args], capture_output=True, text=True, check=False, cwd=self.root
        )

    def start_syncd(self, *args: str, log: Path | None = None) -> subprocess.Popen[str]:
        """Start the ``syncd`` CLI without waiting for it (``communicate`` collects it);
        a long-running one logs into ``log`` instead, so a full pipe never blocks it."""
        if log is None:
            return subprocess.Popen(
                [str(SYNCD), *args],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=self.root,
            )
        with log.open("w") as sink:
            return subprocess.Popen(
                [str(SYNCD), *args], stdout=sink, stderr=sink, text=True, cwd=self.root
            )

    def service(
        self,
        base: str,
        *,
        secrets: Sequence[tuple[str, str]],
        command: str = IDLE,
        replicas: int = 1,
        env: Sequence[str] = (),
        order: str = "start-first",
        monitor: float = 0.5,
        failure_action: str = "pause",
        log_dir: Path | None = None,
        labels: dict[str, str] | None = None,
        constraints: Sequence[str] = (),
        exact_name: bool = False,
    ) -> str:
        """Create a service referencing ``secrets`` as (secret name, target file) pairs."""
        name = base if exact_name else self.name(base)
        refs = []
        for secret_name, target in secrets:
            secret_id = self.swarm.api.inspect_secret(secret_name)["ID"]
            refs.append(
                docker.types.SecretReference(
                    secret_id, secret_name, filename=target, uid="0", gid="0", mode=0o440
                )
            )
        mounts = []
        if log_dir is not None:
            mounts.append(docker.types.Mount("/log", str(log_dir), type="bind"))
        spec = docker.types.ContainerSpec(
            self.swarm.image,
            ["sh", "-c", command],
            env=["SLOT={{.Task.Slot}}", "TASK={{.Task.ID}}", *env],
            secrets=refs,
            mounts=mounts,
            stop_grace_period=2 * SECOND,
        )
        template = docker.types.TaskTemplate(
            spec,
            restart_policy=docker.types.RestartPolicy(condition="any", delay=SECOND // 5),
            placement=(
                docker.types.Placement(constraints=list(constraints)) if constraints else None
            ),
        )
        update = docker.types.UpdateConfig(
            parallelism=1,
            delay=0,
            failure_action=failure_action,
            monitor=int(monitor * SECOND),
            max_failure_ratio=0,
            order=order,
        )
        self.swarm.api.create_service(
            template,
            name=name,
            mode=docker.types.ServiceMode("replicated", replicas=replicas),
            update_config=update,
            rollback_config=docker.types.RollbackConfig(
                parallelism=1, delay=0, monitor=int(monitor * SECOND), order=order
            ),
            labels={"test.owner": self.prefix, **(labels or {})},
        )
        self.services.append(name)
        if not constraints:
            wait_until(
                f"{replicas} running task(s) of {name}",
                lambda: len(self.swarm.running_tasks(name)) >= replicas or None,
            )
        return name

    def cleanup(self) -> None:
        """Remove this test's services, stacks, secrets (managed or not) and configs."""
        api = self.swarm.api
        for stack in self.stacks:
            self.swarm.cli("stack", "rm", stack, check=False)
        for name in self.services:
            try:
                api.remove_service(name)
            except docker.errors.NotFound:
                continue
        for secret in api.secrets():
            if self._owns(secret["Spec"]["Name"], secret["Spec"].get("Labels") or {}):
                _remove_quietly(api.remove_secret, secret["ID"])
        for cfg in api.configs():
            if self._owns(cfg["Spec"]["Name"], cfg["Spec"].get("Labels") or {}):
                _remove_quietly(api.remove_config, cfg["ID"])
        shutil.rmtree(self.root, ignore_errors=True)


def _remove_quietly(remove: Callable[[str], Any], ident: str) -> None:
    try:
        remove(ident)
    except docker.errors.APIError as exc:
        logging.getLogger(__name__).warning("cleanup: can't remove %s: %s", ident, exc)


def new_project(swarm: Swarm) -> Project:
    prefix = "t" + secrets.token_hex(3) + "-"
    root = Path(tempfile.mkdtemp(prefix="syncd-swarm-"))
    return Project(root=root, swarm=swarm, prefix=prefix)


@pytest.fixture(scope="module", name="swarm")
def swarm_fixture() -> Iterator[Swarm]:
    """The running test swarm (import this fixture into a test module to use it)."""
    env = backend_env("swarm")
    api = docker.APIClient(base_url=env["DOCKER_HOST"], version="auto", timeout=60)
    yield Swarm(env=env, api=api)
    api.close()


@pytest.fixture(name="project")
def project_fixture(swarm: Swarm) -> Iterator[Project]:
    """A scratch project on the swarm, cleaned up afterwards."""
    p = new_project(swarm)
    yield p
    p.cleanup()


def single(name: str, key: str | None = None, **extra: Any) -> dict[str, Any]:
    """A one-value secret read from the source file's ``key`` (default: ``name``)."""
    return {"name": name, "from": {"provider": "local", "key": key or name}, **extra}


def item(result: CycleResult, name: str) -> Any:
    """The plan item of one secret."""
    return next(i for i in result.items if i.name == name)


def refs(swarm: Swarm, service: str) -> list[str]:
    """The secret names a service's current spec references."""
    return [r["SecretName"] for r in swarm.service_secrets(service)]


def labels_of(swarm: Swarm, secret: str) -> dict[str, str]:
    """A secret's labels, as Docker reports them."""
    labels: dict[str, str] = swarm.api.inspect_secret(secret)["Spec"]["Labels"]
    return labels


def writes(result: CycleResult) -> dict[str, int]:
    """The target writes of a cycle, by operation."""
    return dict(result.calls.get("target", {}))


@contextmanager
def standalone_dockerd() -> Iterator[str]:
    """A second Docker daemon that is not part of any swarm; yields its DOCKER_HOST.

    It proves what syncd says when pointed at a node that can't manage swarm objects.
    """
    root = Path(tempfile.mkdtemp(prefix="syncd-dk-", dir="/tmp"))
    sock = root / "d.sock"
    log = (root / "dockerd.log").open("wb")
    proc = subprocess.Popen(
        [
            "dockerd",
            "--host",
            f"unix://{sock}",
            "--data-root",
            str(root / "data"),
            "--exec-root",
            str(root / "exec"),
            "--pidfile",
            str(root / "d.pid"),
            "--iptables=false",
            "--ip6tables=false",
            "--bridge=none",
            "--storage-driver=vfs",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        client = docker.APIClient(base_url=f"unix://{sock}", version="1.41", timeout=5)
        wait_until("the standalone dockerd", lambda: _pings(client), timeout=60)
        client.close()
        yield f"unix://{sock}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()
        shutil.rmtree(root, ignore_errors=True)


def _pings(client: Any) -> bool:
    try:
        return bool(client.ping())
    except (docker.errors.DockerException, OSError, ConnectionError):  # not up yet
        return False


@contextmanager
def docker_proxy(swarm: Swarm, folder: Path) -> Iterator[DockerProxy]:
    """A ``DockerProxy`` in front of the test swarm for the duration of the block."""
    proxy = DockerProxy(swarm.host, folder / "docker-proxy.sock")
    try:
        yield proxy
    finally:
        proxy.close()


def restart_dockerd(swarm: Swarm) -> None:
    """Restart the test swarm's dockerd (``scripts/backends restart swarm``: SIGTERM, so every
    container stops, then a start of the same swarm, waiting until its node is ready again).
    The services' tasks start again on their own afterwards."""
    out = subprocess.run(
        [str(ROOT / "scripts" / "backends"), "restart", "swarm"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert out.returncode == 0, f"restarting dockerd failed: {out.stderr.strip()}"
    assert swarm.api.nodes(), "the swarm has no node after the restart"


# ---------------------------------------------------------------------------- invariants


class ReferenceWatch:
    """Checks continuously, through its own client, that no service of ``services`` (names,
    read at every poll so services created later count) references a secret that doesn't
    exist in its current or previous spec, by name and by ID, and that no task of theirs
    failed over a secret. Polls that find dockerd unreachable (a restart) are counted apart.
    """

    def __init__(self, swarm: Swarm, services: Sequence[str], *, interval: float = 0.2) -> None:
        self._api = docker.APIClient(base_url=swarm.host, version="auto", timeout=10)
        self._services = services
        self._interval = interval
        self._stop = threading.Event()
        self.problems: list[str] = []
        self.checks = 0
        self.unreachable = 0
        self._thread = threading.Thread(target=self._run, name="reference-watch", daemon=True)

    def __enter__(self) -> ReferenceWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self._api.close()

    def assert_clean(self, *, min_checks: int = 5) -> None:
        """No problem seen, over enough polls to mean something."""
        assert not self.problems, self.problems[:10]
        assert self.checks >= min_checks, f"only {self.checks} reference checks ran"

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._check()
            except (docker.errors.DockerException, OSError):  # requests' errors are OSErrors
                self.unreachable += 1
            except Exception as exc:  # a bug here must fail the test, not end the watch quietly
                self._problem(f"the watch itself failed: {type(exc).__name__}: {exc}")
                return

    def _check(self) -> None:
        watched = set(self._services)
        # services first: a secret created after this listing can't be referenced in it
        services = [s for s in self._api.services() if s["Spec"]["Name"] in watched]
        listed = self._api.secrets()
        ids = {s["ID"] for s in listed}
        names = {s["Spec"]["Name"] for s in listed}
        for service in services:
            for which in ("Spec", "PreviousSpec"):
                spec = service.get(which) or {}
                container = (spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}
                for ref in container.get("Secrets") or []:
                    if ref["SecretID"] not in ids or ref["SecretName"] not in names:
                        self._problem(
                            f"{service['Spec']['Name']} {which} references {ref['SecretName']} "
                            f"({ref['SecretID']}), which doesn't exist"
                        )
        ours = {s["ID"]: s["Spec"]["Name"] for s in services}
        for task in self._api.tasks():
            error = str((task.get("Status") or {}).get("Err") or "")
            if task.get("ServiceID") in ours and "secret" in error.lower():
                self._problem(f"a task of {ours[task['ServiceID']]} failed: {error}")
        self.checks += 1

    def _problem(self, text: str) -> None:
        if text not in self.problems:
            self.problems.append(text)


@dataclass(frozen=True)
class Read:
    """One line of a ``READER`` log: when (container uptime), which slot and task, the value."""

    uptime: float
    slot: str
    task: str
    ok: bool
    value: str


def reads(log_dir: Path) -> list[Read]:
    """Every read the ``READER`` tasks logged into ``log_dir``."""
    found = []
    for path in sorted(log_dir.glob("*.log")):
        for line in path.read_text().splitlines():
            up, slot, task, status, *rest = line.split()
            found.append(Read(float(up), slot, task, status == "ok", rest[0] if rest else ""))
    return found


def assert_reads_ok(log_dir: Path, values: set[str], *, at_least: int = 10) -> list[Read]:
    """Every read succeeded and saw one of ``values`` whole; returns the reads."""
    seen = reads(log_dir)
    failed = [r for r in seen if not r.ok]
    assert not failed, f"{len(failed)} failed reads, first: {failed[0]}"
    strange = [r for r in seen if r.value not in values]
    assert not strange, f"a read saw a value that was never written: task {strange[0].task}"
    assert len(seen) >= at_least, f"only {len(seen)} reads"
    return seen


# ---------------------------------------------------------------------------- a swap rig


@dataclass
class SwapRig:
    """One secret read by two services (``a`` and ``b``, one ``READER`` task each, its log in
    ``logs``), syncd reaching the swarm through ``proxy``, and a ``watch`` over both services.

    ``values`` lists every value the secret had, oldest first.
    """

    project: Project
    proxy: DockerProxy
    watch: ReferenceWatch
    config: Path
    secret: str
    services: tuple[str, str]
    logs: Path
    values: list[str]
    keep: int
    api_timeout: str

    @property
    def swarm(self) -> Swarm:
        return self.project.swarm

    def variant(
        self, filename: str, *, source: str = "keys.yaml", api_timeout: str | None = None
    ) -> Path:
        """A config of the same installation and secret that reads ``source`` (the same
        secret as another process sees it) or has another ``api_timeout``."""
        return self.project.config(
            [single(self.secret)],
            keep=self.keep,
            timeout="60s",
            target={"docker_host": self.proxy.url, "api_timeout": api_timeout or self.api_timeout},
            source=source,
            filename=filename,
        )

    def rotate(self) -> str:
        """Give the secret a new value upstream; returns it."""
        value = new_value(f"r{len(self.values)}-")
        self.values.append(value)
        self.project.set_values({self.secret: value})
        return value

    def versions(self) -> dict[int, str]:
        """The secret's versions in the swarm: number -> fingerprint label."""
        listed = self.swarm.api.secrets(filters={"label": f"syncd.name={self.secret}"})
        found: dict[int, str] = {}
        for secret in listed:
            labels = secret["Spec"]["Labels"]
            number = int(labels["syncd.version"])
            assert number not in found, f"two secrets are version {number}"
            assert secret["Spec"]["Name"] == self.object(number), secret["Spec"]["Name"]
            found[number] = labels["syncd.fingerprint"]
        return found

    def newest(self) -> int:
        return max(self.versions())

    def object(self, version: int) -> str:
        return f"{self.secret}-v{version}"

    def refs(self, service: str, *, previous: bool = False) -> list[str]:
        return [r["SecretName"] for r in self.swarm.service_secrets(service, previous=previous)]

    def reads_newest(self, service: str) -> bool:
        """Whether a task on the current spec of ``service`` reads the newest value."""
        return self.swarm.try_read_in_task(service, "/run/secrets/token") == self.values[-1]

    def cycle(self) -> CycleResult:
        """One cycle of a fresh engine (a new run: all state is read from the swarm)."""
        return self.project.cycle(self.config)

    def settle(self) -> None:
        """Finish whatever an earlier (failed) test left half done."""
        for _ in range(3):
            if self.cycle().target_writes == 0:
                return
        pytest.fail("three cycles in a row still wrote something")

    def assert_converged(self, *, keep: int = 0) -> int:
        """Both services run the newest version, read the newest value, and the swarm holds
        that version, the previous specs' and at most ``keep`` more; returns the version."""
        newest = self.newest()
        current = self.object(newest)
        previous = set()
        for service in self.services:
            assert self.refs(service) == [current], (service, self.refs(service))
            previous |= set(self.refs(service, previous=True))
            wait_until(
                f"{service} to read the newest value", partial(self.reads_newest, service), 30
            )
        names = {self.object(n) for n in self.versions()}
        extra = names - {current} - previous
        assert len(extra) <= keep, f"more than keep={keep} old versions: {sorted(extra)}"
        assert previous <= names, f"a previous spec's version is gone: {previous - names}"
        return newest


@contextmanager
def swap_rig(swarm: Swarm, *, keep: int = 0, api_timeout: str = "20s") -> Iterator[SwapRig]:
    """A ``SwapRig`` on v2 of its secret (v1 in both services' previous specs, so every later
    swap also collects a version), cleaned up afterwards."""
    project = new_project(swarm)
    try:
        with docker_proxy(swarm, project.root) as proxy:
            name = project.name("token")
            values = [new_value("r0-")]
            project.set_values({name: values[0]})
            config = project.config(
                [single(name)],
                keep=keep,
                timeout="60s",
                target={"docker_host": proxy.url, "api_timeout": api_timeout},
            )
            assert project.cycle(config).ok
            logs = project.root / "logs"
            logs.mkdir()
            a, b = (
                project.service(
                    base,
                    secrets=[(f"{name}-v1", "token")],
                    env=["SECRET_FILE=/run/secrets/token"],
                    command=READER,
                    log_dir=logs,
                    monitor=0.3,
                )
                for base in ("a", "b")
            )
            with ReferenceWatch(swarm, project.services) as watch:
                rig = SwapRig(
                    project, proxy, watch, config, name, (a, b), logs, values, keep, api_timeout
                )
                rig.rotate()
                assert rig.cycle().ok
                rig.assert_converged(keep=keep)
                yield rig
    finally:
        project.cleanup()
