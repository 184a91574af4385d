"""A Swarm or Kubernetes target that isn't there yet (no daemon on the socket, nothing on the
port) fails each secret as a transient target error, in one short line, and the cycle ends
at once: a pipeline retries rather than pages, and nothing is written."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml

from tests.conftest import new_value, run


def _free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _kubeconfig(path: Path) -> Path:
    cluster = {"server": f"https://127.0.0.1:{_free_port()}", "insecure-skip-tls-verify": True}
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "u", "user": {"token": "not-a-real-token"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize("kind", ["swarm", "kubernetes"])
def test_a_target_not_there_yet_is_a_transient_failure(tmp_path: Path, kind: str) -> None:
    (tmp_path / "keys.yaml").write_text(yaml.safe_dump({"db": new_value()}))
    if kind == "swarm":
        target = {"type": "swarm", "docker_host": f"unix://{tmp_path}/no-daemon.sock"}
        where = "Docker daemon at"
    else:
        kubeconfig = _kubeconfig(tmp_path / "kubeconfig")
        target = {"type": "kubernetes", "namespace": "default", "kubeconfig": str(kubeconfig)}
        where = "GET /api/v1/namespaces/default/secrets failed"
    config = {
        "providers": {"local": {"type": "file", "path": "keys.yaml"}},
        "target": target,
        "secrets": [{"name": "db", "from": {"provider": "local", "key": "db"}}],
    }
    (tmp_path / "syncd.yaml").write_text(yaml.safe_dump(config))
    doc = run(tmp_path / "syncd.yaml").to_json()
    (item,) = doc["secrets"]
    error = item["error"]
    assert (item["action"], error["kind"], error["transient"]) == ("error", "target", True)
    assert error["message"].startswith("target unavailable: ") and where in error["message"]
    assert "labelSelector" not in error["message"] and "Max retries" not in error["message"]
    assert doc["target_writes"] == 0
