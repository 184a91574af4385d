"""Values and names at the edges, through a real Swarm and back out of a running task.

Binary values, bytes that aren't UTF-8, NUL bytes, CRLF line ends, trailing newlines and
multi-byte text must arrive byte for byte in ``/run/secrets/`` (a task copies them into a
bind-mounted folder, so nothing between decodes them), through a first sync and a swap. The
size limit is found on this very daemon and must be the one syncd enforces; a value just
over it, or an empty one, fails alone with a sentence, and its consumer keeps the old
version. Names exactly at Swarm's length limits are used as they are, one character more is
shortened (secrets) or refused (services), and a name that fits until its version gains a
digit keeps working across the change.
"""

from __future__ import annotations

import base64
import secrets
from pathlib import Path

import docker.errors
import docker.types
import pytest
import yaml

from syncd.targets.swarm import MAX_SECRET_BYTES
from tests.conftest import new_value, wait_until
from tests.integration.swarm_util import (  # noqa: F401 - swarm, project: fixtures
    Project,
    Swarm,
    item,
    project_fixture,
    refs,
    swarm_fixture,
    writes,
)
from tests.integration.swarm_util import labels_of as secret_labels

pytestmark = pytest.mark.backend("swarm")

#: Copies every mounted secret into /log/<task>/, then marks the copy done.
COPIER = (
    'trap \'exit 0\' TERM; mkdir -p "/log/$TASK" && cp /run/secrets/* "/log/$TASK/" && '
    ': > "/log/$TASK.done"; while true; do sleep 0.2; done'
)
MAX_NAME = 64
MAX_SERVICE_NAME = 63


def binary_values() -> dict[str, bytes]:
    """Generated values of each awkward kind (all of them new on every call)."""
    noise = secrets.token_bytes(16)
    return {
        "binary": bytes(range(256)) + noise,
        "not-utf8": b"\xff\xfe\xc3\x28" + noise + b"\x80",
        "nul": b"\x00" + noise + b"\x00\x00",
        "one-byte": secrets.token_bytes(1),
        "crlf": b"first " + noise.hex().encode() + b"\r\nsecond\r\n",
        "newlines": noise.hex().encode() + b"\n\n\n",
        "at-limit": secrets.token_bytes(MAX_SECRET_BYTES - 1),
    }


def text_values() -> dict[str, str]:
    """Text through the YAML source as written: line ends, trailing newlines, UTF-8."""
    return {
        "text-crlf": new_value("a") + "\r\nb\r\n",
        "text-newlines": new_value() + "\n\n",
        "text-unicode": "ünï 🔑 " + new_value() + " ",
    }


def write_sources(project: Project, binary: dict[str, bytes], text: dict[str, str]) -> None:
    encoded = {project.name(k): base64.b64encode(v).decode() for k, v in binary.items()}
    (project.root / "binary.yaml").write_text(yaml.safe_dump(encoded), encoding="utf-8")
    project.set_values({project.name(k): v for k, v in text.items()})


def copied(swarm: Swarm, service: str, logs: Path) -> dict[str, bytes]:
    """What a running task of ``service`` (on its current spec) found in /run/secrets."""

    def done() -> str | None:
        tasks = swarm.api.tasks(
            filters={"service": service, "_up-to-date": "true", "desired-state": "running"}
        )
        ready = [t["ID"] for t in tasks if (logs / f"{t['ID']}.done").exists()]
        return ready[0] if ready else None

    task = wait_until(f"a task of {service} to copy its secrets", done)
    return {path.name: path.read_bytes() for path in (logs / task).iterdir()}


def accepted(swarm: Swarm, name: str, data: bytes) -> bool:
    """Whether this daemon creates a secret ``name`` holding ``data`` (removed again)."""
    try:
        created = swarm.api.create_secret(name, data)
    except docker.errors.APIError:
        return False
    swarm.api.remove_secret(created["ID"])
    return True


def test_awkward_values_arrive_byte_for_byte_and_bad_sizes_fail_alone(
    swarm: Swarm, project: Project
) -> None:
    # the limits of this daemon, found on it: 1 byte to 500 KiB minus one
    probe = project.name("probe")
    assert accepted(swarm, probe, b"\x00" * (MAX_SECRET_BYTES - 1))
    assert not accepted(swarm, probe, b"\x00" * MAX_SECRET_BYTES)
    assert not accepted(swarm, probe, b"")
    assert accepted(swarm, probe, b"\x00")

    binary, text = binary_values(), text_values()
    too_big = {"over": secrets.token_bytes(MAX_SECRET_BYTES), "emptied": new_value().encode()}
    write_sources(project, {**binary, **too_big}, text)
    sources = {**dict.fromkeys([*binary, *too_big], "bin"), **dict.fromkeys(text, "local")}
    specs = [
        {"name": project.name(k), "from": {"provider": provider, "key": project.name(k)}}
        for k, provider in sources.items()
    ]
    binary_source = {"type": "file", "path": "binary.yaml", "encoding": "base64"}
    config = project.config(specs, keep=0, extra={"providers": {"bin": binary_source}})
    first = project.cycle(config)
    over = item(first, project.name("over"))
    assert over.action == "error" and f"is {MAX_SECRET_BYTES} bytes" in (over.error or "")
    assert project.name("over") in (over.error or "") and "500 KiB" in (over.error or "")
    assert [i.name for i in first.items if i.error] == [project.name("over")]
    assert f"{project.name('over')}-v1" not in swarm.secret_names(project.prefix)

    logs = project.root / "logs"
    logs.mkdir()
    mounted = [*binary, *text, "emptied"]
    service = project.service(
        "x" * (MAX_SERVICE_NAME - len(project.prefix)),  # a service name at Swarm's limit
        secrets=[(f"{project.name(k)}-v1", k) for k in mounted],
        command=COPIER,
        log_dir=logs,
        monitor=0.3,
    )
    assert len(service) == MAX_SERVICE_NAME
    expected = {**binary, **{k: v.encode() for k, v in text.items()}, "emptied": too_big["emptied"]}
    assert copied(swarm, service, logs) == expected

    # a swap: every value new, one emptied upstream, one still too big
    binary, text = binary_values(), text_values()
    write_sources(project, {**binary, **too_big, "emptied": b""}, text)
    second = project.cycle(config)
    failed = {i.name: i.error or "" for i in second.items if i.error}
    assert set(failed) == {project.name("over"), project.name("emptied")}, failed
    emptied = failed[project.name("emptied")]
    assert project.name("emptied") in emptied and "empty" in emptied and "1 byte" in emptied
    made = len(binary) + len(text)  # each new version's history records its outcome
    assert writes(second) == {"create-secret": made, "update-service": 1, "update-secret": made}
    now = {**binary, **{k: v.encode() for k, v in text.items()}, "emptied": too_big["emptied"]}
    assert copied(swarm, service, logs) == now, "a value changed on its way, or the emptied one"
    assert f"{project.name('emptied')}-v1" in refs(swarm, service)
    assert f"{project.name('emptied')}-v2" not in swarm.secret_names(project.prefix)
    project.services.append(service + "y")  # removed by the cleanup, should it be created
    with pytest.raises(docker.errors.APIError):  # one character over the service name limit
        swarm.api.create_service(
            docker.types.TaskTemplate(docker.types.ContainerSpec(swarm.image, ["true"])),
            name=service + "y",
        )


def test_names_at_swarm_length_limits(swarm: Swarm, project: Project) -> None:
    probe = project.name("p")
    assert accepted(swarm, probe + "a" * (MAX_NAME - len(probe)), b"x")
    assert not accepted(swarm, probe + "a" * (MAX_NAME + 1 - len(probe)), b"x")

    fits = project.name("f" * (MAX_NAME - len("-v1") - len(project.prefix)))  # -v1: 64
    longer = fits + "g"  # -v1 would be 65
    project.set_values({fits: new_value(), longer: new_value()})
    config = project.config(
        [{"name": n, "from": {"provider": "local", "key": n}} for n in (fits, longer)], keep=1
    )
    assert project.cycle(config).ok
    assert f"{fits}-v1" in swarm.secret_names(project.prefix)
    (short,) = [n for n in swarm.secret_names(project.prefix) if n != f"{fits}-v1"]
    assert len(short) == MAX_NAME and short.endswith("-v1") and short.startswith(fits[:40])
    assert secret_labels(swarm, short)["syncd.name"] == longer

    # fits until its version has two digits: v10 is shortened, and nothing gets lost
    for _ in range(9):
        project.set_values({fits: new_value(), longer: new_value()})
        result = project.cycle(config)
        assert result.ok, result.items
    assert item(result, fits).version == 10
    names = swarm.secret_names(project.prefix)
    mine = {n: secret_labels(swarm, n) for n in names}
    versions = {(lab["syncd.name"], lab["syncd.version"]): n for n, lab in mine.items()}
    assert versions[(fits, "9")] == f"{fits}-v9"
    assert len(versions[(fits, "10")]) == MAX_NAME and versions[(fits, "10")] != f"{fits}-v10"
    assert len(versions) == 4, sorted(versions)  # keep 1: v9 and v10 of each
    quiet = project.cycle(config)
    assert quiet.ok and quiet.target_writes == 0
