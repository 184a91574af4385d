"""``POST /sync`` against the real API server: a daemon with the kubernetes target, refreshed
once an hour, makes a new version Secret because a request asked for it; with leader
election, only the Lease holder takes requests.

The daemons run in this process (as ``tests/unit/test_daemon.py`` runs them) so the leak
canaries see their logs; each request's answer is searched for the value, too.
"""

from __future__ import annotations

import http.client
import json
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from syncd.daemon import Daemon
from tests.conftest import new_value, running_daemons, wait_until
from tests.integration.kube_util import (  # noqa: F401 - ns, project: fixtures
    ELECTION,
    Project,
    ns_fixture,
    project_fixture,
    ref,
    secret_names,
)

pytestmark = pytest.mark.timeout(240)


def _config(project: Project, token: str, *, file: str = "syncd.yaml", **target: Any) -> Path:
    (project.root / "token").write_text(token + "\n")
    return project.config(
        [{"name": "api-key", "from": ref("key"), "refresh": "1h", "keep": 1}],
        top={"daemon": {"listen": "127.0.0.1:0", "trigger": {"token_file": "token"}}},
        file=file,
        **target,
    )


def _post(daemon: Daemon, path: str, token: str) -> tuple[int, bytes]:
    host, port = daemon.address
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request("POST", path, headers={"Authorization": f"Bearer {token}"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@pytest.fixture
def running() -> Iterator[Callable[[Path], Daemon]]:
    with running_daemons(stop_within=60) as start:
        yield start


def test_a_post_makes_the_new_version_now(
    project: Project, api: Any, ns: str, running: Callable[[Path], Daemon]
) -> None:
    token = secrets.token_urlsafe(32)
    first = new_value()
    project.values(key=first)
    daemon = running(_config(project, token))
    wait_until("version 1", lambda: "api-key-v1" in secret_names(api, ns))
    second = new_value()
    project.values(key=second)
    assert _post(daemon, "/sync", token + "x")[0] == 401
    status, body = _post(daemon, "/sync?secret=api-key", token)
    assert status == 202
    assert json.loads(body) == {
        "apiVersion": "syncd.io/v1",
        "kind": "SyncRequest",
        "secrets": ["api-key"],
    }
    assert second not in body.decode() and first not in body.decode()
    wait_until("version 2", lambda: "api-key-v2" in secret_names(api, ns), timeout=60)
    stored = api.CoreV1Api().read_namespaced_secret("api-key-v2", ns)
    assert stored.metadata.labels, "a version syncd made carries its labels"
    status, body = _post(daemon, "/sync?secret=nope", token)
    assert (status, json.loads(body)["unknown"]) == (404, ["nope"])


def test_only_the_lease_holder_takes_requests(
    project: Project,
    api: Any,
    ns: str,
    running: Callable[[Path], Daemon],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = secrets.token_urlsafe(32)
    project.values(key=new_value())
    daemons = []
    for i in range(2):
        # two replicas in one process: each needs an identity of its own for the Lease
        monkeypatch.setenv("POD_NAME", f"replica-{i}")
        daemons.append(
            running(_config(project, token, file=f"syncd-{i}.yaml", leader_election=ELECTION))
        )
    leader = wait_until("a leader", lambda: next((d for d in daemons if d.leading), None))
    (follower,) = [d for d in daemons if d is not leader]
    assert not follower.leading
    status, body = _post(follower, "/sync", token)
    assert status == 503
    assert "not the leader" in json.loads(body)["message"]
    assert not [job for job in follower.scheduler.get_jobs() if job.id.startswith("sync:")]
    # the leader may have synced at its start; a new value needs a new version either way
    wait_until("the leader's first cycle", lambda: leader.health.running_since is None)
    before = {n for n in secret_names(api, ns) if n.startswith("api-key-v")}
    project.values(key=new_value())
    assert _post(leader, "/sync", token)[0] == 202
    wait_until(
        "a new version",
        lambda: {n for n in secret_names(api, ns) if n.startswith("api-key-v")} - before,
        timeout=60,
    )
