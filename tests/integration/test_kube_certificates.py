"""Certificate expiry stored on the version Secrets of the real API server: a new process
(each ``Project.cycle`` is one) knows it without reading the value, and an in-place Secret
written over with a value that has no certificate keeps no old expiry."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.certs import certificate
from tests.certs import days_from_now as at
from tests.conftest import new_value
from tests.integration.kube_util import (  # noqa: F401 - ns, project: fixtures
    Project,
    ns_fixture,
    project_fixture,
    ref,
)

pytestmark = pytest.mark.timeout(300)

STORED = "syncd.io/certificates-expire"


def _stored(api: Any, ns: str, name: str) -> dict[str, int] | None:
    annotations = api.CoreV1Api().read_namespaced_secret(name, ns).metadata.annotations or {}
    raw = annotations.get(STORED)
    return None if raw is None else json.loads(raw)


def test_a_certificates_expiry_is_stored_on_its_version_and_dropped_with_it(
    api: Any, ns: str, project: Project, canary: str
) -> None:
    when = at(30)
    project.values(tls=f"{canary}\n{certificate(when).decode()}")
    path = project.config(
        [
            {"name": "tls", "from": ref("tls")},
            {"name": "inplace", "from": ref("tls"), "strategy": "in-place"},
        ]
    )
    first = project.cycle(path)
    assert first.ok, first.items
    assert {i.name: list(i.expires.values()) for i in first.items} == {
        "tls": [when.timestamp()],
        "inplace": [when.timestamp()],
    }
    for name in ("tls-v1", "inplace"):
        stored = _stored(api, ns, name)
        assert stored is not None and list(stored.values()) == [int(when.timestamp())], stored
        assert canary not in json.dumps(stored)

    restarted = project.cycle(path)  # a new engine: nothing read in this process yet
    assert restarted.ok and restarted.calls["local"].get("read", 0) == 0, restarted.calls
    assert {i.name: (i.action, list(i.expires.values())) for i in restarted.items} == {
        "tls": ("unchanged", [when.timestamp()]),
        "inplace": ("unchanged", [when.timestamp()]),
    }

    project.values(tls=new_value())  # no certificate any more
    replaced = project.cycle(path)
    assert replaced.ok, replaced.items
    assert {i.name: i.expires for i in replaced.items} == {"tls": {}, "inplace": {}}
    assert _stored(api, ns, "tls-v2") is None
    assert _stored(api, ns, "inplace") is None  # the in-place Secret kept no old expiry
    again = project.cycle(path)
    assert {i.name: i.expires for i in again.items} == {"tls": {}, "inplace": {}}
