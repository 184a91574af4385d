"""A cold sync on the real API server within the client-side rate limit: 300 secrets created
eight at a time at ``qps: 50, burst: 10`` all arrive, exactly once, no faster than the limit
allows, and the next cycle writes nothing."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.conftest import new_value
from tests.integration.kube_util import (  # noqa: F401 - ns, project: fixtures
    Project,
    ns_fixture,
    project_fixture,
    ref,
)

pytestmark = pytest.mark.timeout(120)

SECRETS = 300
QPS, BURST = 50, 10


def test_a_cold_sync_keeps_to_qps_and_burst_and_creates_every_secret_once(
    api: Any, ns: str, project: Project
) -> None:
    names = [f"bulk-{i:03d}" for i in range(SECRETS)]
    project.values(**{name: new_value() for name in names})
    path = project.config(
        [{"name": n, "from": ref(n)} for n in names], qps=QPS, burst=BURST, concurrency=8
    )
    started = time.monotonic()
    cold = project.cycle(path)
    seconds = time.monotonic() - started
    assert cold.ok, [i.error for i in cold.items if i.error][:3]
    assert cold.calls["target"]["create_secret"] == SECRETS + 1  # and the fingerprint key

    secrets = api.CoreV1Api().list_namespaced_secret(ns, label_selector="syncd.io/role").items
    versions = sorted(s.metadata.name for s in secrets if s.metadata.name.startswith("bulk-"))
    assert versions == [f"{n}-v1" for n in names]
    # the creates alone spread over the time the bucket allows them, whatever else the cycle
    # sent (creationTimestamp has whole seconds, so one is lost at each end)
    stamps = [s.metadata.creation_timestamp for s in secrets if s.metadata.name in versions]
    spread = (max(stamps) - min(stamps)).total_seconds()
    bound = (SECRETS - BURST) / QPS
    print(f"\ncold sync of {SECRETS}: {seconds:.1f}s; creates spread over {spread:.0f}s")
    assert seconds >= bound - 0.5
    assert spread >= int(bound) - 1

    again = project.cycle(path)
    assert again.ok and again.target_writes == 0
