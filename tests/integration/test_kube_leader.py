"""Leader election against the real API server: one writer per installation, whatever the
clocks say, through pauses and crashes.

Writes are counted from the target's side: each syncd talks to the API server through a
counting proxy of its own, so a write is attributed to the process that sent it, whatever
that process believes. Lease traffic is election, not a write to the target, and is counted
apart.
"""

from __future__ import annotations

import base64
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from syncd.config import load_config
from syncd.engine import Engine
from syncd.leader import LeaderElector
from tests.conftest import new_value, wait_until
from tests.integration.kube_util import (  # noqa: F401 - ns, project: fixtures
    ELECTION,
    Project,
    Proxy,
    free_port,
    leads,
    ns_fixture,
    project_fixture,
    ref,
    secret_names,
    write_kubeconfig,
)

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def proxies(kube_env: dict[str, str], tmp_path: Path) -> Iterator[list[tuple[Proxy, str]]]:
    """Two proxies, each with a kubeconfig pointing at it."""
    admin = yaml.safe_load(Path(kube_env["KUBECONFIG"]).read_text())
    user = admin["users"][0]["user"]
    context = ssl.create_default_context(cafile=kube_env["SYNCD_KUBE_CA"])
    context.load_cert_chain(user["client-certificate"], user["client-key"])
    made = []
    for i in range(2):
        proxy = Proxy(kube_env["SYNCD_KUBE_SERVER"], context)
        port = proxy.start()
        config = write_kubeconfig(
            tmp_path / f"proxy-{i}.kubeconfig", server=f"http://127.0.0.1:{port}"
        )
        made.append((proxy, config))
    yield made
    for proxy, _ in made:
        proxy.stop()


def _config(project: Project, kubeconfig: str, name: str) -> Path:
    return project.config(
        [{"name": "api-key", "from": ref("key"), "refresh": "1s", "keep": 1}],
        file=name,
        kubeconfig=kubeconfig,
        leader_election=ELECTION,
    )


class Writer:
    """An engine driven by an elector, as the daemon drives them: a cycle whenever it leads,
    every write passing ``elector.check`` first."""

    def __init__(self, path: Path, identity: str, skew: timedelta) -> None:
        self.engine = Engine(load_config(path))
        elector = self.engine.target.leader_elector(identity=identity, on_change=lambda _: None)
        assert isinstance(elector, LeaderElector)
        elector.wall = lambda: datetime.now(UTC) + skew
        self.elector = elector
        self.engine.target.write_guard = elector.check
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            if self.elector.is_leader:
                self.engine.run_cycle()
            self.stop.wait(0.05)

    def start(self) -> None:
        self.elector.start()
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.elector.stop()
        self.engine.close()


@pytest.mark.parametrize(
    ("first_skew", "second_skew"),
    [
        (timedelta(0), timedelta(minutes=10)),  # a candidate whose clock runs ahead
        (timedelta(minutes=-10), timedelta(0)),  # a holder whose clock runs behind
    ],
    ids=["candidate-ahead", "holder-behind"],
)
def test_clock_skew_never_makes_two_writers(api, project, ns, proxies, first_skew, second_skew):
    """Two electors of one installation driving engines, one clock minutes off: the first
    leader stays the only writer while both run and the value keeps changing."""
    project.values(key=new_value())
    writers = [
        Writer(_config(project, proxies[0][1], "a.yaml"), "syncd-a", first_skew),
        Writer(_config(project, proxies[1][1], "b.yaml"), "syncd-b", second_skew),
    ]
    try:
        writers[0].start()
        wait_until("a leader", lambda: writers[0].elector.is_leader)
        writers[1].start()
        stop = time.monotonic() + 8
        while time.monotonic() < stop:
            project.values(key=new_value())
            time.sleep(0.4)
    finally:
        for writer in writers:
            writer.close()
    counts = [len(proxy.writes()) for proxy, _ in proxies]
    print(f"\nwrites per process with skew {first_skew}/{second_skew}: {counts}")
    assert counts[0] > 0, "the leader synced the changes"
    assert counts[1] == 0, "the other process never wrote"
    assert any(n.startswith("api-key-v") for n in secret_names(api, ns))


def _synced(api: Any, ns: str, value: str) -> int | None:
    """The newest version's number once it holds ``value``."""
    versions = {
        int(s.metadata.labels["syncd.io/version"]): s
        for s in api.CoreV1Api().list_namespaced_secret(ns, label_selector="syncd.io/role").items
        if s.metadata.labels.get("syncd.io/role") == "version"
    }
    if not versions:
        return None
    newest = max(versions)
    data = base64.b64decode(versions[newest].data["api-key"]).decode()
    return newest if data == value else None


def test_paused_then_killed_leaders_hand_over_and_never_write_out_of_turn(
    api, project, ns, proxies
):
    """Two real syncd daemons. The leader is frozen (SIGSTOP) past its lease: the other takes
    over and syncs; the frozen one, resumed, writes nothing. Then the new leader is killed and
    the first takes over again within a lease duration."""
    project.values(key=new_value())
    ports = [free_port(), free_port()]
    paths = [_config(project, proxies[i][1], f"p{i}.yaml") for i in range(2)]
    procs: list[subprocess.Popen[str]] = []

    def start(i: int) -> None:
        procs.append(
            subprocess.Popen(
                [
                    *(sys.executable, "-m", "syncd", "--config", str(paths[i])),
                    *("--listen", f"127.0.0.1:{ports[i]}"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env={**os.environ, "POD_NAME": f"syncd-{i}"},
            )
        )

    try:
        start(0)
        wait_until("process 0 leads", lambda: leads(ports[0]))
        start(1)
        wait_until("v1", lambda: "api-key-v1" in secret_names(api, ns))
        time.sleep(1)
        assert not leads(ports[1])
        procs[0].send_signal(signal.SIGSTOP)
        paused = time.monotonic()
        value = new_value()
        project.values(key=value)
        wait_until("process 1 takes over", lambda: leads(ports[1]), timeout=20)
        takeover = time.monotonic() - paused
        wait_until("the change synced by process 1", lambda: _synced(api, ns, value))
        procs[0].send_signal(signal.SIGCONT)
        resumed = time.monotonic()
        for _ in range(4):
            value = new_value()
            project.values(key=value)
            time.sleep(1)
        assert wait_until("process 1 keeps syncing", lambda: _synced(api, ns, value)) > 2
        late = proxies[0][0].writes(since=paused)
        assert late == [], "the paused leader wrote after losing its lease"
        assert not leads(ports[0])
        procs[1].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        wait_until("process 0 takes over again", lambda: leads(ports[0]), timeout=20)
        failover = time.monotonic() - killed
        value = new_value()
        project.values(key=value)
        wait_until("the change synced by process 0", lambda: _synced(api, ns, value))
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
            proc.wait()
    first = [t for t, _, _ in proxies[0][0].writes()]
    second = [t for t, _, _ in proxies[1][0].writes()]
    print(
        f"\nwrites: process 0 {len(first)}, process 1 {len(second)}; takeover after SIGSTOP "
        f"{takeover:.1f}s, after SIGKILL {failover:.1f}s (lease {ELECTION['duration']}s)"
    )
    assert second and first
    # process 1 wrote only between the pause and its death, process 0 never then
    assert all(paused <= t <= killed for t in second)
    assert not [t for t in first if paused <= t <= killed]
    assert resumed - paused > ELECTION["duration"]
    assert takeover < ELECTION["duration"] + 2
    assert failover < ELECTION["duration"] + 2
