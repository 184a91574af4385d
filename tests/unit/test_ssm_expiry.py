"""SSM parameter policies as expiry: ``DescribeParameters``' ``Expiration`` policies, read with
the change detection syncd already does. The answers come from botocore's ``Stubber``, which
checks them against the service model: moto (the AWS test server) returns policies malformed
(``PolicyText`` as a Python repr), so this is tested here, on the shape AWS documents."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from botocore.stub import Stubber

from providers.aws_ssm import AwsSsmConfig, AwsSsmProvider, AwsSsmRef
from providers.base import ProviderContext
from syncd.calls import CallCounter

WHEN = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


def expiration(when: str) -> dict[str, str]:
    text = json.dumps({"Type": "Expiration", "Version": "1.0", "Attributes": {"Timestamp": when}})
    return {"PolicyText": text, "PolicyType": "Expiration", "PolicyStatus": "Pending"}


def meta(name: str, *policies: dict[str, str]) -> dict[str, Any]:
    return {
        "Name": name,
        "Type": "SecureString",
        "Version": 3,
        "LastModifiedDate": datetime(2026, 1, 1, tzinfo=UTC),
        "Policies": list(policies),
    }


@pytest.fixture
def ssm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[AwsSsmProvider, Any]]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    config = AwsSsmConfig.model_validate({"type": "aws-ssm", "region": "eu-west-1"})
    context = ProviderContext(name="ssm", base_dir=tmp_path, calls=CallCounter())
    provider = AwsSsmProvider(config, context=context)
    with Stubber(provider.client) as stub:
        yield provider, stub
        stub.assert_no_pending_responses()
    provider.close()


def test_an_expiration_policy_is_the_parameters_expiry(ssm):
    provider, stub = ssm
    soon = AwsSsmRef(provider="ssm", name="/app/cert")
    none = AwsSsmRef(provider="ssm", name="/app/plain")
    odd = AwsSsmRef(provider="ssm", name="/app/odd")
    stub.add_response(
        "describe_parameters",
        {
            "Parameters": [
                meta(
                    "/app/cert",
                    {"PolicyText": "{}", "PolicyType": "NoChangeNotification"},
                    expiration("2030-01-02T03:04:05.000Z"),
                ),
                meta("/app/plain"),
                meta(
                    "/app/odd",
                    {"PolicyText": "{'not': 'json'}", "PolicyType": "Expiration"},
                    expiration("not a time"),
                ),
            ]
        },
    )
    tokens = provider.versions([soon, none, odd])
    assert all(isinstance(t, str) for t in tokens.values())
    assert provider.expiry([soon, none, odd]) == {soon: WHEN.timestamp()}


def test_a_path_gives_its_soonest_parameters_expiry_and_a_removed_policy_clears_it(ssm):
    provider, stub = ssm
    path = AwsSsmRef(provider="ssm", path="/app")
    later = expiration("2031-01-01T00:00:00Z")
    stub.add_response(
        "describe_parameters",
        {
            "Parameters": [
                meta("/app/a", later),
                meta("/app/b", expiration("2030-01-02T03:04:05Z")),
            ]
        },
    )
    provider.versions([path])
    assert provider.expiry([path]) == {path: WHEN.timestamp()}
    stub.add_response("describe_parameters", {"Parameters": [meta("/app/a"), meta("/app/b")]})
    provider.versions([path])
    assert provider.expiry([path]) == {}
