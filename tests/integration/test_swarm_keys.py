"""The fingerprint key: an interrupted first run can't leave a broken key file, a broken key
says how to repair it, and a key another instance stored first wins."""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from syncd.config import load_config
from syncd.engine import Engine
from syncd.errors import TargetError
from syncd.targets.swarm import SwarmTarget
from tests.conftest import new_value
from tests.integration.swarm_util import (  # noqa: F401 - swarm, project: fixtures
    Project,
    Swarm,
    project_fixture,
    single,
    swarm_fixture,
)

pytestmark = pytest.mark.backend("swarm")

KEY_FILE = "state/syncd.key"


def test_an_interrupted_first_run_leaves_no_key_file(
    swarm: Swarm, project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed right after the key's file was created (before a byte was written): the next
    run finds no key file, makes one, and syncs; the temporary file is removed later."""
    name = project.name("db")
    project.set_values({name: new_value()})
    config = project.config([single(name)], target={"key_file": KEY_FILE})
    folder = project.root / "state"
    real_open = os.open

    def killed_after_create(path: Any, flags: int, mode: int = 0o777, **kw: Any) -> int:
        fd = real_open(path, flags, mode, **kw)
        if Path(path).parent == folder and flags & os.O_CREAT:
            os.close(fd)
            raise KeyboardInterrupt  # what a SIGKILL looks like from the outside
        return fd

    monkeypatch.setattr(os, "open", killed_after_create)
    with pytest.raises(KeyboardInterrupt):
        project.cycle(config)
    monkeypatch.undo()

    assert not (folder / "syncd.key").exists()
    assert not swarm.secret_names(project.prefix)
    leftovers = list(folder.iterdir())
    result = project.cycle(config)
    assert result.ok, result.items
    key = (folder / "syncd.key").read_text()
    assert len(bytes.fromhex(key.strip())) == 32 and key.endswith("\n")
    assert oct((folder / "syncd.key").stat().st_mode & 0o777) == "0o600"
    # the temporary file a killed run leaves is removed once it is clearly stale
    assert [p.name.startswith(".syncd.key.tmp-") for p in leftovers] == [True]
    old = time.time() - 3600
    os.utime(leftovers[0], (old, old))
    assert project.cycle(config).ok
    assert sorted(p.name for p in folder.iterdir()) == ["syncd.key"]


BROKEN = {
    "empty": b"",
    "whitespace": b" \n",
    "not hex": b"not-a-key-at-all\n",
    "binary": bytes(range(256)),
    "odd hex digits": b"abc\n",
    "too short": os.urandom(8).hex().encode(),
    "too long": os.urandom(100).hex().encode(),
}


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_a_broken_key_file_says_how_to_repair_it(project: Project, kind: str) -> None:
    name = project.name("db")
    project.set_values({name: new_value()})
    config = project.config([single(name)], target={"key_file": KEY_FILE})
    key = project.root / KEY_FILE
    key.parent.mkdir()
    key.write_bytes(BROKEN[kind])

    run = project.syncd("--config", str(config), "--once", "--output", "json")

    assert run.returncode == 1
    assert f"delete {key}" in run.stderr and "one new version" in run.stderr, run.stderr
    if len(BROKEN[kind].strip()) > 4:
        assert BROKEN[kind].strip().decode("latin-1") not in run.stdout + run.stderr
    assert json.loads(run.stdout)["target_writes"] == 0
    key.unlink()
    again = project.cycle(config)
    assert again.ok, again.items


def test_a_broken_key_config_says_how_to_repair_it(swarm: Swarm, project: Project) -> None:
    name = project.name("db")
    project.set_values({name: new_value()})
    config = project.config([single(name)])
    swarm.api.create_config(project.key_config, b"\x00\x01garbage")

    run = project.syncd("--config", str(config), "--once")

    assert run.returncode == 1
    assert f"docker config rm {project.key_config}" in run.stderr, run.stderr
    assert "garbage" not in run.stderr
    assert not swarm.secret_names(project.prefix)


def test_a_key_another_instance_stored_first_wins(swarm: Swarm, project: Project) -> None:
    """Both stores refuse to replace a key that appeared after this process looked."""
    project.set_values({"a": new_value()})
    for target in ({"key_file": KEY_FILE}, {}):
        engine = Engine(load_config(project.config([single("a")], target=target)))
        swarm_target = engine.target
        assert isinstance(swarm_target, SwarmTarget)
        try:
            assert swarm_target.load_key() is None
            first = os.urandom(32)
            swarm_target.store_key(first)  # the other instance
            with pytest.raises(TargetError, match="meanwhile"):
                swarm_target.store_key(os.urandom(32))
            assert swarm_target.load_key() == first
        finally:
            engine.close()
    stored = swarm.api.configs(filters={"name": project.key_config})
    assert len(stored) == 1
    assert len(bytes.fromhex(base64.b64decode(stored[0]["Spec"]["Data"]).decode())) == 32
