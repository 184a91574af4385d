"""The ``target:`` block: what ``syncd check`` and ``prepare`` refuse before any request."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from syncd.config import load_config
from syncd.engine import Engine
from syncd.errors import ConfigError, SyncdError


def write_config(tmp_path: Path, **target: Any) -> Path:
    (tmp_path / "keys.yaml").write_text("a: x\n")
    doc = {
        "providers": {"local": {"type": "file", "path": "keys.yaml"}},
        "target": {"type": "swarm", "docker_host": f"unix://{tmp_path}/no.sock", **target},
        "secrets": [{"name": "a", "from": {"provider": "local", "key": "a"}}],
    }
    path = tmp_path / "syncd.yaml"
    path.write_text(json.dumps(doc, indent=1))
    return path


def test_prepare_checks_tls_files_and_the_key_file_without_a_request(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("not checked before a connection\n")
    tls = {"ca_cert": "ca.pem", "client_cert": "cert.pem", "client_key": "key.pem"}
    engine = Engine(load_config(write_config(tmp_path, tls=tls)))
    with pytest.raises(SyncdError, match=r"target\.tls\.client_cert: .*cert\.pem is not a file"):
        engine.build()
    assert engine.calls.snapshot() == {}

    (tmp_path / "cert.pem").write_text("x\n")
    (tmp_path / "key.pem").write_text("x\n")
    (tmp_path / "syncd.key").write_text("")
    engine = Engine(load_config(write_config(tmp_path, tls=tls, key_file="syncd.key")))
    with pytest.raises(SyncdError, match=r"syncd\.key is empty .* delete "):
        engine.build()
    (tmp_path / "syncd.key").unlink()
    Engine(load_config(write_config(tmp_path, tls=tls, key_file="syncd.key"))).build()
    assert engine.calls.snapshot() == {}  # the daemon is unreachable: nothing was asked


@pytest.mark.parametrize(
    ("value", "accepted"),
    [("90s", 90.0), (2.5, 2.5), ("1m30s", 90.0), (0, None), (-1, None), ("nan", None)],
)
def test_api_timeout_is_a_duration(tmp_path: Path, value: Any, accepted: float | None) -> None:
    path = write_config(tmp_path, api_timeout=value)
    if accepted is None:
        with pytest.raises(ConfigError, match="api_timeout"):
            load_config(path)
    else:
        assert load_config(path).target[1].api_timeout == accepted


def test_a_missing_docker_sdk_is_reported_by_check_with_the_line(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    code = (
        "import sys; sys.modules['docker'] = None\n"
        "from syncd.cli import main\n"
        f"sys.exit(main(['check', '--config', {str(path)!r}]))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=tmp_path
    )
    assert run.returncode == 1
    assert f"{path}:" in run.stderr and "pip install 'syncd[swarm]'" in run.stderr, run.stderr
