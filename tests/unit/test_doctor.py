"""``syncd doctor`` on the in-memory target: old versions, unused and orphaned secrets."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

from syncd.config import load_config
from syncd.doctor import diagnose
from syncd.engine import Engine
from tests.conftest import new_value
from tests.unit.memory_target import WORLDS, Service


def test_doctor_reports_old_versions_unused_and_orphans(write_config, world):
    name = next(n for n, w in WORLDS.items() if w is world)
    path = write_config(
        values={"a": new_value(), "b": new_value(), "gone": new_value()},
        target={"type": "memory", "world": name},
        defaults={"keep": 5},
    )
    Engine(load_config(path)).run_cycle()
    world.services["web"] = Service("web", refs={"a-v1", "b-v1"})
    (path.parent / "keys.yaml").write_text(
        yaml.safe_dump({"a": new_value(), "b": "x", "gone": "y"})
    )
    Engine(load_config(path)).run_cycle()
    assert world.services["web"].refs == {"a-v2", "b-v2"}
    assert [(f.subject, f.problem) for f in diagnose(load_config(path))] == [
        ("secret/gone", "no consumer uses it")
    ]
    world.services["web"].refs = {"a-v1", "b-v2"}  # reverted by hand
    doc = yaml.safe_load(path.read_text())
    doc["secrets"] = [s for s in doc["secrets"] if s["name"] != "gone"]
    path.write_text(yaml.safe_dump(doc))
    findings = {(f.subject, f.problem) for f in diagnose(load_config(path))}
    assert findings == {
        ("service/web", "references a-v1 of a; the current version is a-v2"),
        ("secret/gone", "managed by syncd but no longer in the config"),
    }


def test_doctor_cli_exit_codes_and_json(write_config, world):
    name = next(n for n, w in WORLDS.items() if w is world)
    path = write_config(values={"a": new_value()}, target={"type": "memory", "world": name})
    code = (
        "import sys; from syncd import registry; "
        "registry.BUILTIN_TARGETS['memory'] = 'tests.unit.memory_target:MemoryTarget'; "
        "from syncd.cli import main; sys.exit(main(sys.argv[1:]))"
    )

    def doctor(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", code, "doctor", "--config", str(path), *args],
            capture_output=True,
            text=True,
            check=False,
        )

    # the memory world lives in this process: the subprocess sees an empty one
    run = doctor("--output", "json")
    assert run.returncode == 1
    assert json.loads(run.stdout) == {
        "apiVersion": "syncd.io/v1",
        "kind": "DoctorReport",
        "problems": [
            {
                "subject": "secret/a",
                "problem": "has no version in the target yet",
                "fix": "run syncd --once",
            }
        ],
        "warnings": [],
    }


def test_doctor_clean_files_target(write_config):
    path = write_config(values={"a": new_value()})
    Engine(load_config(path)).run_cycle()
    run = subprocess.run(
        [sys.executable, "-m", "syncd", "doctor", "--config", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (run.returncode, run.stdout) == (0, "no problems found\n")


def test_doctor_asks_every_provider_about_every_reference_without_reading_a_value(
    write_config, tmp_path
):
    """A missing key, a missing file and a data_from on a missing file each get a finding
    naming the secret, provider and reference; a good reference gets none."""
    path = write_config(
        values={"a": new_value()},
        secrets=[
            {"name": "a", "from": {"provider": "local", "key": "a"}},
            {"name": "b", "from": {"provider": "local", "key": "missing"}},
            {"name": "c", "from": {"provider": "gone", "key": "a"}},
            {"name": "d", "data_from": {"provider": "gone"}},
        ],
        providers={
            "local": {"type": "file", "path": "keys.yaml"},
            "gone": {"type": "file", "path": "nothere.yaml"},
        },
    )
    found = {(f.subject, f.problem) for f in diagnose(load_config(path))}
    keys = tmp_path / "keys.yaml"
    gone = tmp_path / "nothere.yaml"
    assert found == {
        ("secret/b", f"provider 'local', local:missing: key 'missing' not found in {keys}"),
        ("secret/c", f"provider 'gone', gone:a: {gone}: file not found"),
        ("secret/d", f"provider 'gone', gone:*: {gone}: file not found"),
    }
    assert not (tmp_path / "out").exists()


def test_doctor_names_a_source_file_that_does_not_parse(write_config, tmp_path, canary):
    path = write_config(values={"a": new_value()})
    (tmp_path / "keys.yaml").write_text(f"a: [{canary}\n")
    (finding,) = diagnose(load_config(path))
    assert finding.subject == "secret/a" and "keys.yaml" in finding.problem
    assert canary not in finding.problem
