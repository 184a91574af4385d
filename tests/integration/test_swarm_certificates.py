"""Certificate expiry stored on the real Swarm's version secrets: a label with a timestamp
per key, so a new process knows it without reading the value; a next version without a
certificate carries none."""

from __future__ import annotations

import json

import pytest

from tests.certs import certificate
from tests.certs import days_from_now as at
from tests.conftest import new_value
from tests.integration.swarm_util import (  # noqa: F401 - swarm, project: fixtures
    Project,
    Swarm,
    item,
    project_fixture,
    single,
    swarm_fixture,
)

pytestmark = [pytest.mark.backend("swarm"), pytest.mark.timeout(300)]

STORED = "syncd.certificates-expire"


def test_a_certificates_expiry_is_a_label_of_its_version(
    swarm: Swarm, project: Project, canary: str
) -> None:
    name = project.name("tls")
    when = at(40)
    project.set_values({name: f"{canary}\n{certificate(when).decode()}"})
    config = project.config([single(name)])
    first = project.cycle(config)
    assert first.ok and list(item(first, name).expires.values()) == [when.timestamp()]
    labels = swarm.api.inspect_secret(f"{name}-v1")["Spec"]["Labels"]
    assert list(json.loads(labels[STORED]).values()) == [int(when.timestamp())]
    assert all(canary not in v for v in labels.values())

    restarted = project.cycle(config)  # a fresh engine: nothing read by it
    assert restarted.calls["local"].get("read", 0) == 0, restarted.calls
    assert item(restarted, name).action == "unchanged"
    assert list(item(restarted, name).expires.values()) == [when.timestamp()]

    project.set_values({name: new_value()})
    replaced = project.cycle(config)
    assert replaced.ok and item(replaced, name).expires == {}
    assert STORED not in swarm.api.inspect_secret(f"{name}-v2")["Spec"]["Labels"]
    assert item(project.cycle(config), name).expires == {}
