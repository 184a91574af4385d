"""Consumers on the real Swarm: named services that don't exist yet, rollouts stuck on the
current version, doctor's ``*_FILE`` fixes, a source moved without a value change, and
commands that must write nothing (counted on the Docker side)."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.conftest import new_value
from tests.integration.swarm_util import (  # noqa: F401 - swarm, project: fixtures
    Project,
    Swarm,
    item,
    labels_of,
    project_fixture,
    refs,
    single,
    swarm_fixture,
    wait_until,
    writes,
)

pytestmark = pytest.mark.backend("swarm")


def update_status(swarm: Swarm, service: str) -> dict[str, Any]:
    status: dict[str, Any] = swarm.api.inspect_service(service).get("UpdateStatus") or {}
    return status


def test_a_named_consumer_deployed_later_gets_repointed(swarm: Swarm, project: Project) -> None:
    """Stack users create secrets before they deploy: a missing consumer doesn't block the
    version, is reported, and is repointed once it exists (here deployed with an old pin)."""
    name, web = project.name("token"), project.name("web")
    project.set_values({name: new_value()})
    config = project.config([single(name, consumers=[web.upper()])])  # names ignore case

    first = project.syncd("--config", str(config), "--once", "--output", "json")

    assert first.returncode == 0, first.stderr
    (report,) = json.loads(first.stdout)["secrets"]
    assert (report["action"], report["version"], report["error"]) == ("create", 1, None)
    assert [n for n in report["notes"] if f"service/{web.upper()}" in n and "doesn't exist" in n]
    project.set_values({name: new_value()})
    rotated = project.cycle(config)
    assert (item(rotated, name).action, item(rotated, name).version) == ("update", 2)

    project.service("web", secrets=[(f"{name}-v1", "token")])
    repaired = project.cycle(config)

    assert repaired.ok, repaired.items
    assert (item(repaired, name).action, item(repaired, name).consumers) == (
        "repoint",
        [f"service/{web}"],
    )
    assert refs(swarm, web) == [f"{name}-v2"]
    assert project.cycle(config).target_writes == 0


def test_a_managed_secret_is_never_taken_for_a_hand_made_one(
    swarm: Swarm, project: Project
) -> None:
    """``app-v1`` is version 1 of ``app``; a logical secret named ``app-v1`` must not count a
    service using it as its own consumer (it would be repointed to the wrong value)."""
    app = project.name("app")
    project.set_values({app: new_value(), f"{app}-v1": new_value()})
    config = project.config([single(app), single(f"{app}-v1")])
    assert project.cycle(config).ok
    service = project.service("web", secrets=[(f"{app}-v1", "app")])

    result = project.cycle(config)

    assert [(i.name, i.action, i.consumers) for i in result.items] == [
        (app, "unchanged", []),
        (f"{app}-v1", "unchanged", []),
    ]
    assert result.target_writes == 0
    assert refs(swarm, service) == [f"{app}-v1"]


def test_a_consumer_stuck_on_the_current_version_is_reported_every_cycle(
    swarm: Swarm, project: Project
) -> None:
    """From the service listing alone: a paused update, and one ``updating`` for longer than
    the secret's timeout (a placement nobody satisfies), fail their secret each cycle."""
    held, pending = project.name("held"), project.name("pending")
    project.set_values({held: new_value(), pending: new_value()})
    patient = project.config([single(held), single(pending)], timeout="10m")
    impatient = project.config(
        [single(held), single(pending, timeout="1s")], timeout="10m", filename="impatient.yaml"
    )
    assert project.cycle(patient).ok
    paused = project.service("paused", secrets=[(f"{held}-v1", "s")], failure_action="pause")
    stuck = project.service("stuck", secrets=[(f"{pending}-v1", "s")])
    swarm.cli("service", "update", "--detach", "--entrypoint", "sh -c 'exit 3'", paused)
    swarm.cli("service", "update", "--detach", "--constraint-add", "node.labels.none==1", stuck)
    wait_until("the paused update", lambda: update_status(swarm, paused).get("State") == "paused")
    started = wait_until("the stuck update", lambda: update_status(swarm, stuck).get("StartedAt"))

    early = project.cycle(patient)
    assert item(early, pending).error is None  # updating, but within its timeout
    assert "its update is paused" in (item(early, held).error or "")

    start = datetime.fromisoformat(started[:26].rstrip("Z") + "+00:00")
    wait_until("a second of updating", lambda: (datetime.now(UTC) - start).total_seconds() > 1.5)
    for _ in range(2):  # every cycle, not only the one that repointed
        late = project.cycle(impatient)
        for name, service, why, detail in (
            (held, paused, "its update is paused", "(update paused"),
            (pending, stuck, "its update has been running for", "than the secret's timeout (1s)"),
        ):
            error = item(late, name).error or ""
            assert error.startswith("consumers have not converged on v1"), error
            assert f"service/{service}: {why}" in error and detail in error, error
            assert item(late, name).error_kind == "convergence"
        assert late.target_writes == 0
    assert refs(swarm, paused) == [f"{held}-v1"] and refs(swarm, stuck) == [f"{pending}-v1"]


def test_doctor_suggests_a_mounted_file_only_when_its_name_is_close(
    swarm: Swarm, project: Project
) -> None:
    """The shared /run/secrets/ prefix made every path look alike; file names are compared."""
    db, token = project.name("db_password"), project.name("api_token")
    project.set_values({db: new_value(), token: new_value()})
    config = project.config([single(db), single(token)])
    assert project.cycle(config).ok
    typo = f"/run/secrets/{db}".replace("password", "pasword")
    service = project.service(
        "app",
        secrets=[(f"{db}-v1", db), (f"{token}-v1", "elsewhere")],
        env=[f"DB_PASSWORD_FILE={typo}", f"API_TOKEN_FILE=/run/secrets/{token}"],
    )

    run = project.syncd("doctor", "--config", str(config), "--output", "json")

    assert run.returncode == 1, run.stderr
    assert json.loads(run.stdout)["problems"] == [
        {
            "subject": f"service/{service}",
            "problem": f"DB_PASSWORD_FILE={typo} but no secret is mounted at {typo}",
            "fix": f"set DB_PASSWORD_FILE=/run/secrets/{db} (a secret is mounted there)",
        },
        {
            "subject": f"service/{service}",
            "problem": f"API_TOKEN_FILE=/run/secrets/{token} but no secret is mounted at "
            f"/run/secrets/{token}",
            "fix": f"docker service update --secret-add source={token}-v1,target={token} {service}",
        },
    ]


def test_a_moved_source_is_recorded_without_reading_or_writing_again(
    swarm: Swarm, project: Project
) -> None:
    """Two secrets from two keys of one file: one key changes, the file's version moves for
    both. The unchanged one is relabelled (its data stays), so later cycles - in any process
    - read no value and write nothing."""
    one, two = project.name("one"), project.name("two")
    upstream = project.root / "upstream.json"

    def publish(values: dict[str, str]) -> None:
        upstream.write_text(json.dumps(values))
        os.utime(upstream, ns=(time.time_ns(), time.time_ns()))

    steady = new_value()
    publish({"one": new_value(), "two": steady})
    config = project.config(
        [single(one, key="one"), single(two, key="two")], source="upstream.json"
    )
    assert project.cycle(config).ok
    before = swarm.api.inspect_secret(f"{two}-v1")

    publish({"one": new_value(), "two": steady})
    moved = project.cycle(config)

    assert [(i.name, i.action, i.version) for i in moved.items] == [
        (one, "update", 2),
        (two, "unchanged", 1),
    ]
    assert writes(moved) == {"create-secret": 1, "update-secret": 1}
    after = swarm.api.inspect_secret(f"{two}-v1")
    assert after["ID"] == before["ID"]
    old_labels, new_labels = before["Spec"]["Labels"], after["Spec"]["Labels"]
    assert new_labels["syncd.source"] != old_labels["syncd.source"]
    assert {k: v for k, v in new_labels.items() if k != "syncd.source"} == {
        k: v for k, v in old_labels.items() if k != "syncd.source"
    }
    for _ in range(2):
        quiet = project.cycle(config)
        assert quiet.calls["local"].get("read", 0) == 0, quiet.calls
        assert quiet.target_writes == 0 and not writes(quiet)


def test_dry_run_names_and_doctor_write_nothing(swarm: Swarm, project: Project) -> None:
    """With a change, a stale consumer, an orphan to prune and a secret from before
    installations (no instance label) pending, none of these commands moves the version index
    of any secret, config or service."""
    changed, stale, legacy, orphan = (project.name(n) for n in ("changed", "stale", "old", "gone"))
    values = {n: new_value() for n in (changed, stale, legacy, orphan)}
    project.set_values(values)
    everything = project.config([single(n) for n in values], filename="all.yaml")
    assert project.cycle(everything).ok
    project.set_values({**values, stale: new_value()})
    assert project.cycle(everything).ok  # stale-v2
    service = project.service("reader", secrets=[(f"{stale}-v1", "stale")])
    project.relabel("secret", f"{legacy}-v1", lambda labels: labels.pop("syncd.instance"))
    project.set_values({**values, stale: new_value(), changed: new_value()})
    config = project.config([single(n) for n in (changed, stale, legacy)], prune=True)
    before = project.indexes()

    dry = project.syncd("--config", str(config), "--once", "--dry-run", "--output", "json")
    pinned = project.syncd("names", "--config", str(config))
    doctor = project.syncd("doctor", "--config", str(config))

    assert dry.returncode == 2, dry.stderr
    report = json.loads(dry.stdout)
    assert {s["name"]: s["action"] for s in report["secrets"]} == {
        changed: "update",
        stale: "update",
        legacy: "unchanged",
        orphan: "delete",
    }
    assert report["target_writes"] == 0
    assert pinned.returncode == 0 and f"{legacy}-v1" in pinned.stdout, pinned.stderr
    assert doctor.returncode == 1 and f"{stale}-v1" in doctor.stdout, doctor.stdout
    assert project.indexes() == before
    assert {("secret", f"{legacy}-v1"), ("service", service)} <= set(before)
