"""Fixtures shared by the integration tests that talk to the Kubernetes test cluster."""

from __future__ import annotations

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
