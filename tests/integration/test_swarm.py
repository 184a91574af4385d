"""The swarm target against a real single-node Swarm (``scripts/backends up swarm``).

syncd is driven through the engine (or the CLI) with a file provider whose source file the
tests rewrite; every check reads the truth back from the Docker API: which secrets exist,
what their labels say, which secret each service spec references, and what a running task
reads from ``/run/secrets``.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import logging
import re
import time
from collections import defaultdict
from typing import Any

import docker
import pytest

from syncd.config import load_config
from syncd.errors import ConfigError
from syncd.targets.swarm import MAX_SECRET_BYTES, SwarmTarget
from tests.conftest import new_value
from tests.integration.swarm_util import (  # noqa: F401 - swarm, project: fixtures
    IDLE,
    READER,
    Project,
    Swarm,
    item,
    labels_of,
    project_fixture,
    single,
    standalone_dockerd,
    swarm_fixture,
    wait_until,
    writes,
)

pytestmark = pytest.mark.backend("swarm")


# ---------------------------------------------------------------------------- first sync


def test_agent_zero_adopted_then_rotated_in_place(
    swarm: Swarm, project: Project, canary: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The guide's case: a hand-made ``openai_api_key`` read via OPENAI_API_KEY_FILE."""
    caplog.set_level(logging.DEBUG)
    with contextlib.suppress(docker.errors.NotFound):
        swarm.api.remove_service("agent-zero")  # left by an interrupted run
    project.extra_secrets.add("openai_api_key")
    swarm.api.create_secret("openai_api_key", new_value("hand-made-").encode())
    logs = project.root / "logs"
    logs.mkdir()
    service = project.service(
        "agent-zero",
        exact_name=True,
        secrets=[("openai_api_key", "openai_api_key")],
        env=[
            "OPENAI_API_KEY_FILE=/run/secrets/openai_api_key",
            "SECRET_FILE=/run/secrets/openai_api_key",
        ],
        command=READER,
        log_dir=logs,
        labels={"team": "agents"},
    )
    before = swarm.api.inspect_service(service)["Spec"]
    project.set_values({"openai_api_key": canary})
    config = project.config([single("openai_api_key")], keep=1)

    first = project.cycle(config)

    assert first.ok, first.items
    assert (item(first, "openai_api_key").action, item(first, "openai_api_key").version) == (
        "create",
        1,
    )
    assert item(first, "openai_api_key").consumers == ["service/agent-zero"]
    refs = swarm.service_secrets(service)
    assert [r["SecretName"] for r in refs] == ["openai_api_key-v1"]
    assert refs[0]["File"] == {"Name": "openai_api_key", "UID": "0", "GID": "0", "Mode": 0o440}
    after = swarm.api.inspect_service(service)["Spec"]
    for spec in (before, after):
        del spec["TaskTemplate"]["ContainerSpec"]["Secrets"]
    assert after == before, "the repoint changed more than the secret reference"
    assert swarm.read_in_task(service, "/run/secrets/openai_api_key") == canary
    # the hand-made secret is not syncd's: never collected
    assert "openai_api_key" in swarm.secret_names("openai_api_key")

    labels = labels_of(swarm, "openai_api_key-v1")
    assert labels["syncd.managed-by"] == "syncd"
    assert labels["syncd.name"] == "openai_api_key"
    assert labels["syncd.version"] == "1"
    assert re.fullmatch(r"[0-9a-f]{64}", labels["syncd.fingerprint"])
    assert set(json.loads(labels["syncd.keys"])) == {"openai_api_key"}
    assert "local:openai_api_key@" in labels["syncd.source"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", labels["syncd.created-at"])
    key_cfg = swarm.api.configs(filters={"name": project.key_config})
    assert len(key_cfg) == 1
    assert re.fullmatch(r"[0-9a-f]{64}\n", base64.b64decode(key_cfg[0]["Spec"]["Data"]).decode())

    again = project.cycle(config)
    assert [(i.action, i.version) for i in again.items] == [("unchanged", 1)]
    assert again.target_writes == 0 and not writes(again)

    rotated = new_value()
    project.set_values({"openai_api_key": rotated})
    second = project.cycle(config)
    assert second.ok, second.items
    assert (item(second, "openai_api_key").action, item(second, "openai_api_key").version) == (
        "update",
        2,
    )
    refs = swarm.service_secrets(service)
    assert [(r["SecretName"], r["File"]["Name"]) for r in refs] == [
        ("openai_api_key-v2", "openai_api_key")
    ]
    assert swarm.read_in_task(service, "/run/secrets/openai_api_key") == rotated

    everything = json.dumps([first.to_json(), second.to_json()]) + caplog.text
    everything += json.dumps([labels_of(swarm, f"openai_api_key-v{n}") for n in (1, 2)])
    assert canary not in everything
    reads = [line.split() for f in logs.iterdir() for line in f.read_text().splitlines()]
    assert reads and all(r[3] == "ok" for r in reads), "a read of the secret file failed"


def test_key_file_instead_of_swarm_config(swarm: Swarm, project: Project) -> None:
    """With ``key_file`` the HMAC key stays outside the swarm (0600 file, hex)."""
    name = project.name("db")
    project.set_values({name: new_value()})
    config = project.config([single(name)], target={"key_file": "state/syncd.key"})
    assert project.cycle(config).ok
    key = project.root / "state" / "syncd.key"
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    assert re.fullmatch(r"[0-9a-f]{64}\n", key.read_text())
    assert swarm.api.configs(filters={"name": project.key_config}) == []
    again = project.cycle(config)
    assert [i.action for i in again.items] == ["unchanged"] and again.target_writes == 0


# ---------------------------------------------------------------------------- GC + revert


def test_gc_keeps_versions_spares_rollback_target_and_repoints_a_revert(
    swarm: Swarm, project: Project, caplog: pytest.LogCaptureFixture
) -> None:
    plain, used = project.name("plain"), project.name("used")
    project.set_values({plain: new_value(), used: new_value()})
    config = project.config([single(plain, keep=2), single(used, keep=0)])
    assert project.cycle(config).ok
    service = project.service("web", secrets=[(f"{used}-v1", "used")])
    mine = project.prefix

    def versions() -> set[str]:
        return swarm.secret_names(mine)

    for _ in range(3):
        project.set_values({plain: new_value(), used: new_value()})
        result = project.cycle(config)
        assert result.ok, result.items
    # plain: keep 2 old versions; used: keep 0, but v3 is the service's rollback target
    assert versions() == {f"{plain}-v2", f"{plain}-v3", f"{plain}-v4", f"{used}-v3", f"{used}-v4"}
    previous = swarm.service_secrets(service, previous=True)
    assert [r["SecretName"] for r in previous] == [f"{used}-v3"]

    swarm.cli("service", "rollback", "--detach=false", "--quiet", service)
    assert [r["SecretName"] for r in swarm.service_secrets(service)] == [f"{used}-v3"]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        reverted = project.cycle(config)
    assert reverted.ok, reverted.items
    assert item(reverted, used).action == "repoint"
    assert item(reverted, used).consumers == [f"service/{service}"]
    assert f"service/{service} references an old version of {used}" in caplog.text
    refs = swarm.service_secrets(service)
    assert [(r["SecretName"], r["File"]["Name"]) for r in refs] == [(f"{used}-v4", "used")]
    # v3 is the rollback target again and survives; nothing else was written
    assert f"{used}-v3" in versions()
    assert writes(reverted) == {"update-service": 1}


def test_stack_deploy_pinning_with_names_and_revert_detection(
    swarm: Swarm, project: Project, caplog: pytest.LogCaptureFixture
) -> None:
    name = project.name("token")
    stack = project.prefix.rstrip("-")
    project.stacks.append(stack)
    project.set_values({name: new_value()})
    config = project.config([single(name)])
    assert project.cycle(config).ok
    var = re.sub(r"[^A-Za-z0-9]", "_", name).upper() + "_SECRET"
    compose = project.root / "stack.yml"
    compose.write_text(
        json.dumps(
            {
                "version": "3.8",
                "services": {
                    "app": {
                        "image": swarm.image,
                        "command": ["sh", "-c", IDLE],
                        "secrets": [{"source": "token", "target": "token"}],
                        "deploy": {
                            "update_config": {"order": "start-first", "monitor": "500ms"},
                            "rollback_config": {"order": "start-first", "monitor": "500ms"},
                        },
                    }
                },
                "secrets": {"token": {"external": True, "name": f"${{{var}}}"}},
            }
        )
    )

    def names_env() -> dict[str, str]:
        out = project.syncd("names", "--config", str(config), "-o", "env")
        assert out.returncode == 0, out.stderr
        return dict(line.split("=", 1) for line in out.stdout.splitlines())

    def deploy(pinned: dict[str, str]) -> None:
        swarm.cli(
            "stack", "deploy", "--resolve-image", "never", "-c", str(compose), stack, env=pinned
        )

    pinned_v1 = names_env()
    assert pinned_v1 == {var: f"{name}-v1"}
    deploy(pinned_v1)
    service = f"{stack}_app"
    wait_until("the stack's task", lambda: swarm.running_tasks(service) or None)

    project.set_values({name: new_value()})
    rotated = project.cycle(config)
    assert rotated.ok and item(rotated, name).consumers == [f"service/{service}"]
    assert [r["SecretName"] for r in swarm.service_secrets(service)] == [f"{name}-v2"]

    deploy(pinned_v1)  # an old pin: docker stack deploy puts v1 back
    assert [r["SecretName"] for r in swarm.service_secrets(service)] == [f"{name}-v1"]
    with caplog.at_level(logging.WARNING):
        repaired = project.cycle(config)
    assert repaired.ok, repaired.items
    assert (item(repaired, name).action, item(repaired, name).consumers) == (
        "repoint",
        [f"service/{service}"],
    )
    assert f"service/{service} references an old version of {name}" in caplog.text
    assert [r["SecretName"] for r in swarm.service_secrets(service)] == [f"{name}-v2"]

    out = project.syncd("names", "--config", str(config), "-o", "json")
    assert json.loads(out.stdout)["names"] == {name: f"{name}-v2"}
    deploy(names_env())  # the current pin: nothing to repair
    quiet = project.cycle(config)
    assert [i.action for i in quiet.items] == ["unchanged"] and quiet.target_writes == 0


# ---------------------------------------------------------------------------- bad input


def test_bad_values_fail_alone_and_the_old_version_stays(swarm: Swarm, project: Project) -> None:
    big, empty, edge, fine = (project.name(n) for n in ("big", "empty", "edge", "fine"))
    first_big = new_value()
    largest = (new_value() * (MAX_SECRET_BYTES // 20))[: MAX_SECRET_BYTES - 1]
    project.set_values({big: first_big, empty: new_value(), edge: largest, fine: new_value()})
    config = project.config([single(big), single(empty), single(edge), single(fine)])
    assert project.cycle(config).ok  # 1 byte below the limit is accepted
    service = project.service("svc", secrets=[(f"{big}-v1", "big")])

    too_big = (new_value() * (MAX_SECRET_BYTES // 20))[:MAX_SECRET_BYTES]
    project.set_values({big: too_big, empty: "", edge: largest, fine: new_value()})
    run = project.syncd("--config", str(config), "--once", "--output", "json")

    assert run.returncode == 1
    report = {s["name"]: s for s in json.loads(run.stdout)["secrets"]}
    assert "500 KiB" in report[big]["error"]["message"] and big in report[big]["error"]["message"]
    assert "empty" in report[empty]["error"]["message"]
    assert empty in report[empty]["error"]["message"]
    assert (report[fine]["action"], report[fine]["version"], report[fine]["error"]) == (
        "update",
        2,
        None,
    )
    assert report[edge]["action"] == "unchanged"
    assert too_big not in run.stdout + run.stderr
    names = swarm.secret_names(project.prefix)
    assert f"{big}-v2" not in names and f"{empty}-v2" not in names
    assert {f"{big}-v1", f"{empty}-v1", f"{fine}-v2"} <= names
    assert [r["SecretName"] for r in swarm.service_secrets(service)] == [f"{big}-v1"]
    assert swarm.read_in_task(service, "/run/secrets/big") == first_big


def test_names_that_cannot_be_made_valid_and_bundles_without_format(project: Project) -> None:
    project.set_values({"a": "x"})
    config = project.config(
        [
            single("bad name!", key="a"),
            {"name": "bundle", "data": {"a": {"provider": "local", "key": "a"}}},
            single("ok", key="a", consumers=["not a service"]),
            single("x" * 200, key="a"),
        ]
    )
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    text = str(caught.value)
    assert "secrets[0]" in text and "'bad name!' can't be made a Swarm secret name" in text
    assert "secrets[1]" in text and "needs 'format'" in text
    assert "secrets[2]" in text and "'not a service' is not a valid Swarm service name" in text
    assert "secrets[3]" not in text  # long names are shortened, not refused


def test_a_template_renders_one_blob_and_stops_at_the_swarm_limit(
    swarm: Swarm, project: Project
) -> None:
    url, huge = project.name("url"), project.name("huge")
    password = new_value("p@ss/")
    project.set_values({"user": "app", "password": password})
    data = {k: {"provider": "local", "key": k} for k in ("user", "password")}
    config = project.config(
        [
            {
                "name": url,
                "data": data,
                "template": "pg://{{ user }}:{{ password | urlencode }}@db",
            },
            {
                "name": huge,
                "data": data,
                "template": "{% for i in range(99999) %}{{ password }}{% endfor %}",
            },
        ]
    )
    result = project.cycle(config)
    assert item(result, url).action == "create"
    error = item(result, huge).error or ""
    assert f"renders more than the target's limit of {MAX_SECRET_BYTES - 1} bytes" in error
    assert password not in error
    assert f"{huge}-v1" not in swarm.secret_names(project.prefix)
    service = project.service("svc", secrets=[(f"{url}-v1", "url")])
    quoted = password.replace("@", "%40").replace("/", "%2F")
    assert swarm.read_in_task(service, "/run/secrets/url") == f"pg://app:{quoted}@db"


def test_long_names_are_shortened_uniquely(swarm: Swarm, project: Project) -> None:
    base = project.name("a" * 90)
    one, two = base + "-one", base + "-two"
    project.set_values({one: new_value(), two: new_value()})
    config = project.config([single(one), single(two)])
    assert project.cycle(config).ok
    managed = {
        s["Spec"]["Labels"]["syncd.name"]: s["Spec"]["Name"]
        for s in swarm.api.secrets(filters={"label": "syncd.managed-by=syncd"})
        if s["Spec"]["Labels"]["syncd.name"] in (one, two)
    }
    assert set(managed) == {one, two}
    assert all(len(n) == 64 and n.endswith("-v1") for n in managed.values())
    assert managed[one] != managed[two]
    again = project.cycle(config)
    assert [i.action for i in again.items] == ["unchanged", "unchanged"]


def test_name_taken_by_an_unmanaged_secret_is_not_overwritten(
    swarm: Swarm, project: Project
) -> None:
    taken, free = project.name("taken"), project.name("free")
    squatter = swarm.api.create_secret(f"{taken}-v1", new_value("hand-made-").encode())
    project.set_values({taken: new_value(), free: new_value()})
    result = project.cycle(project.config([single(taken), single(free)]))
    assert "already exists and is not this version" in (item(result, taken).error or "")
    assert item(result, free).action == "create" and item(result, free).error is None
    assert swarm.api.inspect_secret(f"{taken}-v1")["ID"] == squatter["ID"]
    assert swarm.api.inspect_secret(f"{taken}-v1")["Spec"]["Labels"] == {}


def test_unreachable_daemon_and_non_manager_node(swarm: Swarm, project: Project) -> None:
    one, two = project.name("one"), project.name("two")
    project.set_values({one: new_value(), two: new_value()})
    nowhere = project.config(
        [single(one), single(two)],
        target={"docker_host": f"unix://{project.root}/no-such.sock"},
        filename="nowhere.yaml",
    )
    run = project.syncd("--config", str(nowhere), "--once")
    assert run.returncode == 1
    assert run.stderr.count("is not reachable") == 2, run.stderr

    with standalone_dockerd() as host:
        worker = project.config([single(one), single(two)], target={"docker_host": host})
        result = project.cycle(worker)
        errors = [i.error or "" for i in result.items]
        assert all("is not a swarm manager" in e for e in errors), errors
        assert result.target_writes == 0
    assert not swarm.secret_names(project.prefix)


# ---------------------------------------------------------------------------- repoint + wait


def test_repoint_retries_out_of_sequence_and_keeps_concurrent_change(
    swarm: Swarm, project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = project.name("api-key")
    project.set_values({name: new_value()})
    config = project.config([single(name)])
    assert project.cycle(config).ok
    service = project.service("busy", secrets=[(f"{name}-v1", "api-key")])
    original = SwarmTarget._update_service
    raced: list[int] = []

    def racing(self: SwarmTarget, service_id: str, spec: dict[str, Any], index: int) -> Any:
        if not raced:  # another writer updates the service between our inspect and update
            raced.append(index)
            swarm.cli("service", "update", "--detach", "--label-add", "other=writer", service_id)
        return original(self, service_id, spec, index)

    monkeypatch.setattr(SwarmTarget, "_update_service", racing)
    project.set_values({name: new_value()})
    result = project.cycle(config)

    assert result.ok, result.items
    assert raced and writes(result)["update-service"] == 2
    spec = swarm.api.inspect_service(service)["Spec"]
    assert spec["Labels"]["other"] == "writer"
    assert [r["SecretName"] for r in spec["TaskTemplate"]["ContainerSpec"]["Secrets"]] == [
        f"{name}-v2"
    ]


def test_failed_rollout_is_reported_old_version_kept_and_retry_backs_off(
    swarm: Swarm, project: Project
) -> None:
    from syncd.engine import Engine

    name = project.name("flag")
    project.set_values({name: new_value("good-")})
    config = project.config([single(name)], timeout="60s")
    engine = Engine(load_config(config))
    try:
        assert project.cycle(engine=engine).ok
        service = project.service(
            "picky",
            secrets=[(f"{name}-v1", "flag")],
            command="grep -q '^good-' /run/secrets/flag || exit 3; " + IDLE,
            failure_action="rollback",
            monitor=2.0,
        )
        project.set_values({name: new_value("bad-")})
        failed = project.cycle(engine=engine)
        error = item(failed, name).error or ""
        assert not failed.ok and "did not converge" in error and "rollback" in error, error
        assert item(failed, name).outcome == "rolled-back"
        wait_until(
            "the rollback to v1",
            lambda: [r["SecretName"] for r in swarm.service_secrets(service)] == [f"{name}-v1"],
        )
        assert f"{name}-v1" in swarm.secret_names(project.prefix)
        retry = project.cycle(engine=engine)
        assert item(retry, name).outcome == "rolled-back"  # v2 is never tried again
        assert retry.target_writes == 0
    finally:
        engine.close()


def test_convergence_timeout(swarm: Swarm, project: Project) -> None:
    name = project.name("stuck")
    project.set_values({name: new_value()})
    config = project.config([single(name)], timeout="2s")
    assert project.cycle(config).ok
    project.service(
        "nowhere",
        secrets=[(f"{name}-v1", "stuck")],
        constraints=["node.labels.syncd-test-never==1"],
    )
    project.set_values({name: new_value()})
    started = time.monotonic()
    result = project.cycle(config)
    assert "did not converge within 2s" in (item(result, name).error or "")
    assert time.monotonic() - started < 30
    assert f"{name}-v1" in swarm.secret_names(project.prefix)  # not collected


# ---------------------------------------------------------------------------- zero downtime


def test_zero_downtime_five_rotations_start_first(swarm: Swarm, project: Project) -> None:
    """Two replicas read their secret every 100 ms while syncd rotates it five times."""
    name = project.name("app_token")
    values = [new_value(f"r{i}-") for i in range(6)]
    project.set_values({name: values[0]})
    config = project.config([single(name)], keep=1)
    assert project.cycle(config).ok
    logs = project.root / "logs"
    logs.mkdir()
    service = project.service(
        "reader",
        replicas=2,
        secrets=[(f"{name}-v1", "app_token")],
        env=["SECRET_FILE=/run/secrets/app_token"],
        command=READER,
        log_dir=logs,
        order="start-first",
        monitor=0.5,
    )
    time.sleep(1)
    for value in values[1:]:
        project.set_values({name: value})
        result = project.cycle(config)
        assert result.ok, result.items
        # converged means: both replicas now read the new value
        assert {swarm.read_in_task(service, "/run/secrets/app_token") for _ in range(4)} == {value}
    time.sleep(1)
    swarm.api.remove_service(service)
    project.services.remove(service)
    wait_until(
        "the readers to stop",
        lambda: (
            not swarm.api.containers(filters={"label": f"com.docker.swarm.service.name={service}"})
            or None
        ),
    )

    rank = {v: i for i, v in enumerate(values)}
    # task -> (slot, value rank, first read, last read)
    tasks: dict[str, tuple[str, int, float, float]] = {}
    total = 0
    for log_file in logs.iterdir():
        for line in log_file.read_text().splitlines():
            up, slot, task, status, *rest = line.split()
            assert status == "ok" and rest and rest[0] in rank, f"bad read: {line.split()[:4]}"
            seen = tasks.setdefault(task, (slot, rank[rest[0]], float(up), float(up)))
            assert seen[1] == rank[rest[0]], "a task saw its secret file change"
            tasks[task] = (slot, seen[1], min(seen[2], float(up)), max(seen[3], float(up)))
            total += 1
    by_slot: dict[str, list[tuple[float, float, int]]] = defaultdict(list)
    for slot, value_rank, first, last in tasks.values():
        by_slot[slot].append((first, last, value_rank))
    assert set(by_slot) == {"1", "2"}
    for slot, lives in by_slot.items():
        lives.sort()
        assert lives[-1][2] == len(values) - 1, f"slot {slot} did not end on the newest value"
        for old, new in itertools.pairwise(lives):
            assert new[2] > old[2], f"slot {slot} went from value {old[2]} to {new[2]}"
            # start-first: the new task read before the old one's last read, so the slot
            # was never without a reader
            assert new[0] < old[1], f"slot {slot} had no reader for {new[0] - old[1]:.2f}s"
    assert total > 100
