"""``syncd history`` on the real Swarm: three versions of a secret a service runs, the first
collected once no spec (current or previous) references it, read back by a second process
with no provider reachable; another installation's secret is never relabelled."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import new_value
from tests.integration.swarm_util import (  # noqa: F401 - swarm, project: fixtures
    Project,
    Swarm,
    item,
    project_fixture,
    refs,
    single,
    swarm_fixture,
)

pytestmark = [pytest.mark.backend("swarm"), pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]


def history(project: Project, config: Path, name: str, *args: str) -> str:
    """``syncd history`` as a user runs it (this checkout's code)."""
    run = subprocess.run(
        [sys.executable, "-m", "syncd", "history", name, "--config", str(config), *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=project.root,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_history_of_three_versions_one_collected(swarm: Swarm, project: Project) -> None:
    name, theirs = project.name("token"), project.name("theirs")
    values = [new_value() for _ in range(3)]
    project.set_values({name: values[0], theirs: new_value()})
    other = project.config(
        [single(theirs)],
        instance=project.instance("other"),
        filename="other.yaml",
        target={"key_config": None},
    )
    assert project.cycle(other).ok
    foreign = swarm.api.inspect_secret(f"{theirs}-v1")["Version"]["Index"]
    config = project.config([single(name)], keep=0)
    assert project.cycle(config).ok
    service = project.service("app", secrets=[(f"{name}-v1", "token")])
    for value in values[1:]:
        project.set_values({name: value, theirs: new_value()})
        result = project.cycle(config)
        assert result.ok, result.items
    assert refs(swarm, service) == [f"{name}-v3"]
    assert item(result, name).deleted == [f"{name}-v1"]  # v2 is the previous spec's
    assert swarm.secret_names(name) == {f"{name}-v2", f"{name}-v3"}

    (project.root / "keys.yaml").unlink()  # history needs no provider
    doc = json.loads(history(project, config, name, "-o", "json"))
    assert (doc["kind"], doc["object"], doc["held"]) == (
        "History",
        f"{name}-v3",
        [f"{name}-v2", f"{name}-v3"],
    )
    moved = [f"service/{service}"]
    assert [(e["version"], e["outcome"], e["consumers"]) for e in doc["entries"]] == [
        (1, "converged", []),
        (2, "converged", moved),
        (3, "converged", moved),
    ]
    assert [e["collected_at"] is not None for e in doc["entries"]] == [True, False, False]
    text = history(project, config, name)
    assert text.splitlines()[0] == f"{name}: 3 versions (on {name}-v3)"
    assert not any(v in text or v in json.dumps(doc) for v in values)
    assert swarm.api.inspect_secret(f"{theirs}-v1")["Version"]["Index"] == foreign
    print(f"\nsyncd history {name}:\n{text}")
