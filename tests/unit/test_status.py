"""``syncd status``: the target's view of every secret, read from the target alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from syncd.config import load_config
from syncd.engine import Engine
from syncd.status import status
from tests.conftest import new_value
from tests.unit.memory_target import WORLDS, Service, World

ROOT = Path(__file__).resolve().parents[2]


def memory(world: World) -> dict[str, str]:
    return {"type": "memory", "world": next(n for n, w in WORLDS.items() if w is world)}


def rotate(path: Path, **values: str) -> None:
    keys = path.parent / "keys.yaml"
    keys.write_text(yaml.safe_dump({**yaml.safe_load(keys.read_text()), **values}))


def test_status_shows_versions_consumers_and_what_they_wait_for(write_config, world):
    path = write_config(
        values={"api": new_value(), "db": new_value()},
        target=memory(world),
        defaults={"keep": 5},
    )
    assert Engine(load_config(path)).run_cycle().ok
    world.services["web"] = Service("web", refs={"api-v1", "db-v1"})
    world.services["old"] = Service("old", refs={"api-v1"})
    rotate(path, api=new_value())
    assert Engine(load_config(path)).run_cycle().ok  # web and old move to api-v2
    world.services["old"].refs = {"api-v1"}  # put back by hand (a stack redeploy)
    world.services["web"].unconverged = "1 of 3 tasks running"
    steps, objects = list(world.log), dict(world.objects)
    found = {s.name: s for s in status(load_config(path))}
    api, db = found["api"], found["db"]
    assert (api.version, api.object_name, api.state) == (2, "api-v2", "rolling out")
    assert [v["version"] for v in api.versions] == [1, 2]
    assert api.source == {"api": api.source["api"]} and api.source["api"].startswith("local:api@")
    assert api.created_at and api.created_at.endswith("Z")
    assert {(c.label, tuple(c.versions), c.current) for c in api.consumers} == {
        ("service/web", (2,), True),
        ("service/old", (1,), False),
    }
    assert sorted(api.waiting) == [
        "service/old runs v1",
        "service/web has not converged: 1 of 3 tasks running",
    ]
    assert (db.version, db.state) == (1, "rolling out")  # web hasn't converged
    assert (world.log, world.objects) == (steps, objects)  # status wrote nothing


def test_status_reports_a_failed_version_and_a_secret_without_one(write_config, world):
    path = write_config(values={"api": new_value()}, target=memory(world), defaults={"keep": 0})
    assert Engine(load_config(path)).run_cycle().ok
    world.services["web"] = Service("web", refs={"api-v1"}, bad={"api-v2"}, native_rollback=False)
    rotate(path, api=new_value())
    assert not Engine(load_config(path)).run_cycle().ok  # v2 rolled back
    doc = yaml.safe_load(path.read_text())
    doc["secrets"].append({"name": "later", "from": {"provider": "local", "key": "api"}})
    path.write_text(yaml.safe_dump(doc))
    found = {s.name: s for s in status(load_config(path))}
    api = found["api"]
    assert (api.version, api.state) == (1, "failed")
    assert [(f["version"], f["state"]) for f in api.failed] == [(2, "rolled-back")]
    assert (found["later"].version, found["later"].state) == (None, "no version")


def test_status_names_generated_and_orphaned_secrets_without_asking_a_provider(
    write_config, tmp_path
):
    path = write_config(
        values={"x": new_value(), "y": new_value()},
        secrets=[{"name": "app_{key}", "for_each": {"provider": "local"}}],
    )
    assert Engine(load_config(path)).run_cycle().ok
    (tmp_path / "keys.yaml").unlink()  # no provider can answer now
    doc = yaml.safe_load(path.read_text())
    doc["secrets"] = [{"name": "other_{key}", "for_each": {"provider": "local"}}]
    path.write_text(yaml.safe_dump(doc))
    found = {s.name: s.state for s in status(load_config(path))}
    assert found == {"app_x": "not in config", "app_y": "not in config"}
    doc["secrets"] = [{"name": "app_{key}", "for_each": {"provider": "local"}}]
    path.write_text(yaml.safe_dump(doc))
    assert {s.name: s.state for s in status(load_config(path))} == {
        "app_x": "in sync",
        "app_y": "in sync",
    }


def test_status_command_text_and_json(write_config, tmp_path, canary):
    path = write_config(values={"a": canary})
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}

    def syncd(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "syncd", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            check=False,
        )

    assert syncd("--once", "-c", str(path)).returncode == 0
    text = syncd("status", "-c", str(path))
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].split()[0:2] == ["a", "v1"] and lines[0].endswith("in sync")
    assert lines[1].startswith("    source: a: local:a@")
    doc = json.loads(syncd("status", "-c", str(path), "-o", "json").stdout)
    assert (doc["kind"], [s["name"] for s in doc["secrets"]]) == ("Status", ["a"])
    assert doc["secrets"][0]["versions"][0]["object"] == "a-v1"
    only = json.loads(syncd("status", "-c", str(path), "--secret", "nope", "-o", "json").stdout)
    assert only["secrets"] == []
    assert canary not in text.stdout + text.stderr + json.dumps(doc)
