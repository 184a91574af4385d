"""Installations on one Swarm: each sees, repoints, collects, prunes and adopts only its own
objects; a name another installation holds is a clear error; objects from before
installations had names belong to the default installation, which labels them once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import new_value
from tests.integration.swarm_util import (  # noqa: F401 - swarm, project: fixtures
    Project,
    Swarm,
    item,
    labels_of,
    project_fixture,
    single,
    swarm_fixture,
    writes,
)

pytestmark = pytest.mark.backend("swarm")


def refs(swarm: Swarm, service: str) -> list[str]:
    return sorted(r["SecretName"] for r in swarm.service_secrets(service))


def test_two_installations_share_a_swarm(swarm: Swarm, project: Project) -> None:
    """Same logical names, a service each, prune on: each rotates, collects and prunes only
    its own; each doctor is clean of the other; a third one can't take their names or key."""
    token, db, extra = (project.name(n) for n in ("token", "db", "extra"))
    blue, green = project.instance("blue"), project.instance("green")

    def install(instance: str, tag: str, names: list[str]) -> Path:
        project.set_values({n: new_value() for n in names}, filename=f"{tag}.yaml")
        return project.config(
            [single(n) for n in names],
            keep=0,
            instance=instance,
            prune=True,
            source=f"{tag}.yaml",
            filename=f"{tag}-syncd.yaml",
            target={"key_config": None, "naming": f"{{name}}-{tag}-v{{version}}"},
        )

    blue_config = install(blue, "b", [token, db])
    green_config = install(green, "g", [token, db, extra])
    assert project.cycle(blue_config).ok
    assert project.cycle(green_config).ok
    blue_app = project.service(
        "blue-app", secrets=[(f"{token}-b-v1", "token"), (f"{db}-b-v1", "db")]
    )
    green_app = project.service(
        "green-app",
        secrets=[(f"{token}-g-v1", "token"), (f"{db}-g-v1", "db"), (f"{extra}-g-v1", "extra")],
        env=["TOKEN_FILE=/run/secrets/tokn"],
    )
    key_configs = {
        c["Spec"]["Name"]: c["Spec"]["Labels"]["syncd.instance"]
        for c in swarm.api.configs(filters={"name": "syncd-fingerprint-key-" + project.prefix})
    }
    assert key_configs == {
        f"syncd-fingerprint-key-{blue}": blue,
        f"syncd-fingerprint-key-{green}": green,
    }

    # blue rotates twice: only its service moves; green's objects and service stay put
    green_before = {
        k: v for k, v in project.indexes().items() if "-g-" in k[1] or k[1] == green_app
    }
    for version in (2, 3):
        project.set_values({token: new_value(), db: new_value()}, filename="b.yaml")
        rotated = project.cycle(blue_config)
        assert rotated.ok, rotated.items
        assert item(rotated, token).consumers == [f"service/{blue_app}"]
        assert not any(i.action == "delete" for i in rotated.items)
        assert refs(swarm, blue_app) == [f"{db}-b-v{version}", f"{token}-b-v{version}"]
    green_after = {k: v for k, v in project.indexes().items() if k in green_before}
    assert green_after == green_before
    # keep 0: blue collected its v1 (v2 is the rollback target); green's v1 are untouched
    names = swarm.secret_names(project.prefix)
    assert f"{token}-b-v1" not in names and f"{token}-b-v2" in names
    assert {f"{token}-g-v1", f"{db}-g-v1", f"{extra}-g-v1"} <= names
    green_cycle = project.cycle(green_config)
    assert [i.action for i in green_cycle.items] == ["unchanged"] * 3
    assert green_cycle.target_writes == 0

    # each doctor sees only its own: green's typo is green's alone
    blue_doctor = project.syncd("doctor", "--config", str(blue_config))
    green_doctor = project.syncd("doctor", "--config", str(green_config), "--output", "json")
    assert (blue_doctor.returncode, blue_doctor.stdout) == (0, "no problems found\n")
    problems = json.loads(green_doctor.stdout)["problems"]
    assert [(p["subject"], p["problem"].split("=")[0]) for p in problems] == [
        (f"service/{green_app}", "TOKEN_FILE")
    ]

    # a third installation that would take green's names (and key) gets errors naming green
    intruder = project.config(
        [single(token)],
        instance=project.instance("red"),
        source="g.yaml",
        filename="red.yaml",
        target={"key_config": f"syncd-fingerprint-key-{green}", "naming": "{name}-g-v{version}"},
    )
    refused = project.syncd("--config", str(intruder), "--once")
    assert refused.returncode == 1
    assert f"holds the key of syncd instance '{green}'" in refused.stderr, refused.stderr
    intruder = project.config(
        [single(token)],
        instance=project.instance("red"),
        source="g.yaml",
        filename="red.yaml",
        target={"key_config": None, "naming": "{name}-g-v{version}"},
    )
    refused = project.syncd("--config", str(intruder), "--once", "--output", "json")
    assert refused.returncode == 1
    (report,) = json.loads(refused.stdout)["secrets"]
    assert f"belongs to syncd instance '{green}'" in report["error"]["message"], report
    assert "target.naming" in report["error"]["message"]
    assert json.loads(refused.stdout)["target_calls"]["write"] == {"create-config": 1}
    # nor can blue import green's object as a hand-made secret
    importer = project.config(
        [single(f"{token}-g-v1", key=token)],
        instance=blue,
        source="b.yaml",
        filename="import.yaml",
        target={"key_config": None},
    )
    imported = project.syncd("import", "--config", str(importer), "--trust-values")
    assert imported.returncode == 1
    assert f"belongs to syncd instance '{green}'; not imported" in imported.stderr
    assert labels_of(swarm, f"{token}-g-v1")["syncd.instance"] == green


def test_objects_from_before_installations_belong_to_the_default_one(
    swarm: Swarm, project: Project
) -> None:
    """No instance label: the default installation lists them (a dry run reports them and
    writes nothing), labels them in its first real cycle, once; a named one never sees them."""
    token, db = project.name("token"), project.name("db")
    project.set_values({token: new_value(), db: new_value()})
    config = project.config([single(token), single(db)])
    assert project.cycle(config).ok
    for secret in (f"{token}-v1", f"{db}-v1"):
        project.relabel("secret", secret, lambda labels: labels.pop("syncd.instance"))
    project.relabel("config", project.key_config, lambda labels: labels.pop("syncd.instance"))
    service = project.service("app", secrets=[(f"{token}-v1", "token")])
    before = project.indexes()

    named = project.config(
        [single(token), single(db)],
        instance=project.instance("named"),
        filename="named.yaml",
        target={"key_config": None},
    )
    plan = project.syncd("--config", str(named), "--once", "--dry-run", "--output", "json")
    assert [s["action"] for s in json.loads(plan.stdout)["secrets"]] == ["create", "create"]
    dry = project.syncd("--config", str(config), "--once", "--dry-run", "-v")
    assert (dry.returncode, dry.stdout) == (
        0,
        f"= {token}: unchanged v1\n= {db}: unchanged v1\n"
        "plan: 0 to create, 0 to update, 0 to delete, 2 unchanged\n",
    )
    assert project.indexes() == before
    borrowed = project.config(
        [single(token)], instance=project.instance("named"), filename="borrowed.yaml"
    )
    refused = project.syncd("--config", str(borrowed), "--once")
    assert "holds the key of syncd instance 'default'" in refused.stderr, refused.stderr
    taken = project.cycle(named)
    assert all("belongs to syncd instance 'default'" in (i.error or "") for i in taken.items)
    assert writes(taken) == {"create-config": 1}  # its own key; nothing of the default's
    assert {k: v for k, v in project.indexes().items() if k in before} == before

    first = project.cycle(config)
    assert [i.action for i in first.items] == ["unchanged", "unchanged"]
    assert writes(first) == {"update-config": 1, "update-secret": 2}
    for secret in (f"{token}-v1", f"{db}-v1"):
        assert labels_of(swarm, secret)["syncd.instance"] == "default"
    assert project.cycle(config).target_writes == 0
    assert refs(swarm, service) == [f"{token}-v1"]
