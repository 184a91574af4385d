"""Fixtures shared by integration tests: the Kubernetes test cluster and moto's AWS."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import backend_env


@pytest.fixture(scope="module")
def kube_env() -> dict[str, str]:
    """How to reach the test cluster (``scripts/backends env kubernetes``)."""
    return backend_env("kubernetes")


@pytest.fixture(scope="module")
def api(kube_env: dict[str, str]) -> Any:
    """The ``kubernetes.client`` module, configured with the cluster's admin kubeconfig."""
    from kubernetes import client, config

    config.load_kube_config(config_file=kube_env["KUBECONFIG"])
    return client


@pytest.fixture(scope="module")
def kube(kube_env: dict[str, str], api: Any) -> tuple[dict[str, str], Any]:
    """Both of the above."""
    return kube_env, api


@pytest.fixture(scope="module")
def aws() -> Iterator[dict[str, str]]:
    """The moto env, also exported so the default credential chain finds it."""
    env = backend_env("aws")
    with pytest.MonkeyPatch.context() as mp:
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
            mp.setenv(key, env[key])
        for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
            mp.delenv(key, raising=False)
        yield env
