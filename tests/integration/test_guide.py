"""The guide's workflows, each as the worked example in config/examples, run for real.

- Compose dev: .env and user_keys.yaml written for env_file and SECRETS_FILE.
- Swarm: agent-zero with OPENAI_API_KEY_FILE / ANTHROPIC_API_KEY_FILE, including the guide's
  own ``antrhopic`` typo, which ``syncd doctor`` must find.
- Kubernetes: pmoves-secrets consumed by agent-zero through secretKeyRef, dev and prod
  namespaces from one base config.
- CI one-shot: AWS Secrets Manager into the cluster, with the plan/apply exit codes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from syncd.envfile import parse_env
from tests.conftest import ROOT, backend_env, new_value

EXAMPLES = ROOT / "config" / "examples"
pytestmark = pytest.mark.timeout(300)


def syncd(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "syncd", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        check=False,
        timeout=240,
    )


def copy_example(name: str, tmp_path: Path) -> Path:
    source = EXAMPLES / name
    if source.is_dir():
        return Path(shutil.copytree(source, tmp_path / name))
    return Path(shutil.copy(source, tmp_path / name))


# ---------------------------------------------------------------------- Compose


def test_compose_dev_example_writes_env_file_and_secrets_file(tmp_path):
    folder = copy_example("compose-dev", tmp_path)
    run = syncd("--config", str(folder / "syncd.yaml"), "--once")
    assert run.returncode == 0, run.stderr
    values = yaml.safe_load((folder / "user_keys.yaml").read_text())
    env = parse_env((folder / "secrets" / ".env").read_text())
    assert env == {k.upper(): v for k, v in values.items()}
    assert yaml.safe_load((folder / "secrets" / "user_keys.yaml").read_text()) == values
    compose = yaml.safe_load((folder / "docker-compose.yml").read_text())
    assert compose["services"]["agent-zero"]["env_file"] == ["./secrets/.env"]


# ---------------------------------------------------------------------- Swarm


@pytest.fixture
def swarm() -> Iterator[Any]:
    import docker

    env = backend_env("swarm")
    client = docker.DockerClient(base_url=env["DOCKER_HOST"], version="auto", timeout=60)
    yield env, client
    client.close()


def _cleanup_swarm(client: Any) -> None:
    for service in client.services.list(filters={"name": "agent-zero"}):
        service.remove()
    deadline = time.monotonic() + 60
    while client.containers.list(filters={"label": "com.docker.swarm.service.name=agent-zero"}):
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
    for secret in client.secrets.list():
        if secret.name.startswith(("openai_api_key", "anthropic_api_key", "agent_env")):
            for _ in range(20):
                try:
                    secret.remove()
                    break
                except Exception:
                    time.sleep(0.5)
    for config in client.configs.list(filters={"name": "syncd-fingerprint-key"}):
        config.remove()


def test_swarm_agent_zero_example_and_doctor_finds_the_typo(swarm, tmp_path):
    """The guide's stack, typo included: doctor names it, syncd adopts and rotates."""
    env, client = swarm
    _cleanup_swarm(client)
    config = copy_example("swarm-agent-zero.yaml", tmp_path)
    folder = copy_example("swarm", tmp_path)
    openai = client.secrets.create(name="openai_api_key", data=b"by-hand-openai")
    anthropic = client.secrets.create(name="anthropic_api_key", data=b"by-hand-anthropic")
    try:
        from docker.types import SecretReference

        client.services.create(
            env["SYNCD_TEST_IMAGE"],
            command=["sleep", "3600"],
            name="agent-zero",
            env=[
                "OPENAI_API_KEY_FILE=/run/secrets/openai_api_key",
                "ANTHROPIC_API_KEY_FILE=/run/secrets/antrhopic_api_key",
            ],
            secrets=[
                SecretReference(openai.id, "openai_api_key"),
                SecretReference(anthropic.id, "anthropic_api_key"),
            ],
        )
        host = {"DOCKER_HOST": env["DOCKER_HOST"]}
        doctor = syncd("doctor", "--config", str(config), "--output", "json", env=host)
        assert doctor.returncode == 1
        problems = json.loads(doctor.stdout)["problems"]
        typo = [
            p for p in problems if p["subject"] == "service/agent-zero" and "_FILE" in p["problem"]
        ]
        assert typo == [
            {
                "subject": "service/agent-zero",
                "problem": "ANTHROPIC_API_KEY_FILE=/run/secrets/antrhopic_api_key but no secret "
                "is mounted at /run/secrets/antrhopic_api_key",
                "fix": "set ANTHROPIC_API_KEY_FILE=/run/secrets/anthropic_api_key "
                "(a secret is mounted there)",
            }
        ]
        run = syncd("--config", str(config), "--once", env=host)
        assert run.returncode == 0, run.stderr
        names = syncd("names", "--config", str(config), env=host)
        assert "OPENAI_API_KEY_SECRET=openai_api_key-v1" in names.stdout.splitlines()
        rotated = new_value()
        keys = folder / "user_keys.yaml"
        data = yaml.safe_load(keys.read_text())
        data["openai_api_key"] = rotated
        keys.write_text(yaml.safe_dump(data))
        run = syncd("--config", str(config), "--once", env=host)
        assert run.returncode == 0, run.stderr
        spec = client.api.inspect_service("agent-zero")["Spec"]
        refs = spec["TaskTemplate"]["ContainerSpec"]["Secrets"]
        assert {(r["SecretName"], r["File"]["Name"]) for r in refs} == {
            ("openai_api_key-v2", "openai_api_key"),
            ("anthropic_api_key-v1", "anthropic_api_key"),
        }
    finally:
        _cleanup_swarm(client)


# ---------------------------------------------------------------------- Kubernetes


def _agent_zero(apps: Any, namespace: str, secret: str) -> None:
    def ref(var: str, key: str) -> dict[str, Any]:
        return {"name": var, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}

    apps.create_namespaced_deployment(
        namespace,
        {
            "metadata": {"name": "agent-zero"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "agent-zero"}},
                "template": {
                    "metadata": {"labels": {"app": "agent-zero"}},
                    "spec": {
                        "containers": [
                            {
                                "name": "agent-zero",
                                "image": "ghcr.io/pmoves/agent-zero:latest",
                                "env": [
                                    ref("OPENAI_API_KEY", "openai-api-key"),
                                    ref("ANTHROPIC_API_KEY", "anthropic-api-key"),
                                ],
                            }
                        ]
                    },
                },
            },
        },
    )


def _secret_ref_names(apps: Any, namespace: str) -> set[str]:
    template = apps.read_namespaced_deployment("agent-zero", namespace).spec.template
    return {e.value_from.secret_key_ref.name for e in template.spec.containers[0].env}


def test_kubernetes_pmoves_secrets_dev_and_prod(kube, tmp_path):
    env, client = kube
    core, apps = client.CoreV1Api(), client.AppsV1Api()
    folder = copy_example("kubernetes", tmp_path)
    namespaces = {
        "dev": f"pmoves-dev-{uuid.uuid4().hex[:6]}",
        "prod": f"pmoves-prod-{uuid.uuid4().hex[:6]}",
    }
    run_env = {
        "PMOVES_DEV_NAMESPACE": namespaces["dev"],
        "PMOVES_PROD_NAMESPACE": namespaces["prod"],
        "KUBECONFIG": env["KUBECONFIG"],
    }
    for ns in namespaces.values():
        core.create_namespace({"metadata": {"name": ns}})
    try:
        # as the guide does it by hand in dev
        core.create_namespaced_secret(
            namespaces["dev"],
            {
                "metadata": {"name": "pmoves-secrets"},
                "stringData": {"openai-api-key": "by-hand", "anthropic-api-key": "by-hand"},
            },
        )
        _agent_zero(apps, namespaces["dev"], "pmoves-secrets")
        for stage in ("dev", "prod"):
            run = syncd("--config", str(folder / f"{stage}.yaml"), "--once", env=run_env)
            assert run.returncode == 0, run.stderr
        assert _secret_ref_names(apps, namespaces["dev"]) == {"pmoves-secrets-v1"}
        prod = core.read_namespaced_secret("pmoves-secrets-v1", namespaces["prod"])
        assert sorted(prod.data) == ["anthropic-api-key", "openai-api-key"]
        assert prod.immutable is True
        rotated = new_value()
        (folder / ".env.dev").write_text(
            f"OPENAI_API_KEY={rotated}\nANTHROPIC_API_KEY=example-dev-anthropic-not-real\n"
        )
        run = syncd("--config", str(folder / "dev.yaml"), "--once", "--output", "json", env=run_env)
        doc = json.loads(run.stdout)
        assert [(s["action"], s["version"], s["changed_keys"]) for s in doc["secrets"]] == [
            ("update", 2, ["openai-api-key"])
        ]
        assert _secret_ref_names(apps, namespaces["dev"]) == {"pmoves-secrets-v2"}
        plan = syncd("--config", str(folder / "prod.yaml"), "--once", "--dry-run", env=run_env)
        assert plan.returncode == 0, plan.stdout + plan.stderr  # prod untouched
    finally:
        for ns in namespaces.values():
            core.delete_namespace(ns)


# ---------------------------------------------------------------------- CI one-shot


def test_ci_oneshot_example_plan_and_apply(kube, tmp_path):
    import boto3

    aws = backend_env("aws")
    env, client = kube
    core = client.CoreV1Api()
    namespace = f"ci-{uuid.uuid4().hex[:6]}"
    prefix = f"ci-{uuid.uuid4().hex[:6]}/"
    sm = boto3.client(
        "secretsmanager",
        endpoint_url=aws["AWS_ENDPOINT_URL"],
        region_name=aws["AWS_DEFAULT_REGION"],
        aws_access_key_id=aws["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=aws["AWS_SECRET_ACCESS_KEY"],
    )
    for name in ("openai", "anthropic"):
        sm.create_secret(Name=f"{prefix}{name}", SecretString=json.dumps({"api_key": new_value()}))
    config = copy_example("ci-oneshot.yaml", tmp_path)
    run_env = {
        **aws,
        "AWS_REGION": aws["AWS_DEFAULT_REGION"],
        "DEPLOY_NAMESPACE": namespace,
        "SECRET_PREFIX": prefix,
        "KUBECONFIG": env["KUBECONFIG"],
    }
    core.create_namespace({"metadata": {"name": namespace}})
    try:
        plan = syncd("--config", str(config), "--once", "--dry-run", env=run_env)
        assert plan.returncode == 2, plan.stderr
        assert "+ pmoves-secrets: would create v1" in plan.stdout
        apply = syncd("--config", str(config), "--once", env=run_env)
        assert apply.returncode == 0, apply.stderr
        assert syncd("--config", str(config), "--once", "--dry-run", env=run_env).returncode == 0
        sm.put_secret_value(SecretId=f"{prefix}openai", SecretString=json.dumps({"x": 1}))
        broken = syncd("--config", str(config), "--once", env=run_env)
        assert broken.returncode == 1
        assert "api_key" in broken.stderr  # names the missing key, never a value
        assert sorted(s.metadata.name for s in core.list_namespaced_secret(namespace).items) == [
            "pmoves-secrets-v1",
            "syncd-fingerprint-key",
        ]
    finally:
        core.delete_namespace(namespace)


# ---------------------------------------------------------------------- migration


def test_import_adopts_hand_made_kubernetes_secret_without_a_rollout(kube, tmp_path):
    env, client = kube
    core, apps = client.CoreV1Api(), client.AppsV1Api()
    folder = copy_example("kubernetes", tmp_path)
    namespace = f"import-{uuid.uuid4().hex[:6]}"
    run_env = {"PMOVES_DEV_NAMESPACE": namespace, "KUBECONFIG": env["KUBECONFIG"]}
    values = parse_env((folder / ".env.dev").read_text())
    core.create_namespace({"metadata": {"name": namespace}})
    try:
        # kubectl create secret generic pmoves-secrets --from-literal=... as in the guide
        core.create_namespaced_secret(
            namespace,
            {
                "metadata": {"name": "pmoves-secrets"},
                "stringData": {
                    "openai-api-key": values["OPENAI_API_KEY"],
                    "anthropic-api-key": values["ANTHROPIC_API_KEY"],
                },
            },
        )
        _agent_zero(apps, namespace, "pmoves-secrets")
        generation = apps.read_namespaced_deployment("agent-zero", namespace).metadata.generation
        run = syncd("import", "--config", str(folder / "dev.yaml"), env=run_env)
        assert run.returncode == 0, run.stderr
        assert run.stdout == "* pmoves-secrets: imported as v1\n"
        secret = core.read_namespaced_secret("pmoves-secrets", namespace)
        assert secret.metadata.labels["app.kubernetes.io/managed-by"] == "syncd"
        assert secret.metadata.annotations["syncd.io/version"] == "1"
        deployment = apps.read_namespaced_deployment("agent-zero", namespace)
        assert deployment.metadata.generation == generation  # no restart
        again = syncd(
            "--config", str(folder / "dev.yaml"), "--once", "--output", "json", env=run_env
        )
        doc = json.loads(again.stdout)
        assert doc["target_writes"] == 0
        assert [(s["action"], s["version"]) for s in doc["secrets"]] == [("unchanged", 1)]
        rerun = syncd("import", "--config", str(folder / "dev.yaml"), env=run_env)
        assert rerun.stdout == "= pmoves-secrets: already managed (v1)\n"
        # a hand-made Secret whose data differs from the source is refused
        core.delete_namespaced_secret("pmoves-secrets", namespace)
        core.create_namespaced_secret(
            namespace,
            {"metadata": {"name": "pmoves-secrets"}, "stringData": {"openai-api-key": "other"}},
        )
        differs = syncd("import", "--config", str(folder / "dev.yaml"), env=run_env)
        assert differs.returncode == 1
        assert "holds other data than the source" in differs.stderr
        assert "other" not in differs.stderr.replace("other data", "")
    finally:
        core.delete_namespace(namespace)


def test_import_hand_made_swarm_secret_needs_trust(swarm, tmp_path):
    env, client = swarm
    _cleanup_swarm(client)
    config = copy_example("swarm-agent-zero.yaml", tmp_path)
    copy_example("swarm", tmp_path)
    host = {"DOCKER_HOST": env["DOCKER_HOST"]}
    secret = client.secrets.create(name="openai_api_key", data=b"example-openai-key-not-real")
    try:
        from docker.types import SecretReference

        service = client.services.create(
            env["SYNCD_TEST_IMAGE"],
            command=["sleep", "3600"],
            name="agent-zero",
            secrets=[SecretReference(secret.id, "openai_api_key")],
        )
        index = client.api.inspect_service(service.id)["Version"]["Index"]
        refused = syncd("import", "--config", str(config), "--secret", "openai_api_key", env=host)
        assert refused.returncode == 1
        assert "run syncd import --trust-values" in refused.stderr
        run = syncd(
            "import",
            "--config",
            str(config),
            "--secret",
            "openai_api_key",
            "--trust-values",
            env=host,
        )
        assert run.returncode == 0, run.stderr
        assert run.stdout == "* openai_api_key: imported as v1\n"
        assert client.api.inspect_service(service.id)["Version"]["Index"] == index
        again = syncd(
            "--config",
            str(config),
            "--once",
            "--secret",
            "openai_api_key",
            "--output",
            "json",
            env=host,
        )
        assert json.loads(again.stdout)["target_writes"] == 0
    finally:
        _cleanup_swarm(client)
