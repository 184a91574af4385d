"""The aws-secrets-manager provider against moto's server (scripts/backends up aws).

Each test works under its own random name prefix, so tests share one server without seeing
each other's secrets. Values are generated; the canary proves none reaches an error or output.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import boto3
import pytest
import requests
import yaml

from providers.aws_secrets_manager import (
    AwsSecretRef,
    AwsSecretsManagerConfig,
    AwsSecretsManagerProvider,
    filter_groups,
)
from providers.base import ProviderContext
from syncd.calls import CallCounter
from syncd.config import load_config
from syncd.engine import CycleResult, Engine
from syncd.errors import ProviderError
from tests.conftest import ROOT, new_value
from tests.integration.faults import check_without, dead_endpoint, timed_cycle

pytestmark = pytest.mark.backend("aws")


@pytest.fixture(name="sm")
def sm_fixture(aws: dict[str, str]) -> Any:
    return boto3.client("secretsmanager", endpoint_url=aws["AWS_ENDPOINT_URL"])


@pytest.fixture(name="prefix")
def prefix_fixture() -> str:
    """A name prefix of this test alone: tests share the server without seeing each other."""
    return f"t{uuid.uuid4().hex[:10]}/"


def write_config(
    tmp_path: Path,
    aws: dict[str, str],
    secrets: list[dict[str, Any]],
    **provider: Any,
) -> Path:
    block = {"type": "aws-secrets-manager", "endpoint_url": aws["AWS_ENDPOINT_URL"], **provider}
    doc = {
        "providers": {"aws": block},
        "target": {"type": "files", "directory": "out"},
        "secrets": secrets,
    }
    path = tmp_path / "syncd.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def engine_for(
    tmp_path: Path, aws: dict[str, str], secrets: list[dict[str, Any]], **kw: Any
) -> Engine:
    return Engine(load_config(write_config(tmp_path, aws, secrets, **kw)))


def one(secret: str, /, **ref: Any) -> dict[str, Any]:
    return {"name": secret, "from": {"provider": "aws", **ref}}


def out(tmp_path: Path, name: str) -> bytes:
    return (tmp_path / "out" / name).read_bytes()


def delta(before: dict[str, dict[str, int]], after: CycleResult) -> dict[str, int]:
    old = before.get("aws", {})
    return {
        op: n - old.get(op, 0) for op, n in after.calls.get("aws", {}).items() if n - old.get(op, 0)
    }


def errors(result: CycleResult) -> dict[str, str]:
    return {i.name: i.error for i in result.items if i.error}


# --------------------------------------------------------------------------- reading


def test_reads_string_json_key_binary_and_base64(tmp_path, aws, sm, prefix, canary):
    plain, password = new_value(), new_value()
    raw = os.urandom(48)
    packed = os.urandom(32)
    sm.create_secret(Name=prefix + "plain", SecretString=plain)
    sm.create_secret(
        Name=prefix + "db",
        SecretString=json.dumps({"user": "app", "password": password, "port": 5432, "x": canary}),
    )
    sm.create_secret(Name=prefix + "blob", SecretBinary=raw)
    sm.create_secret(Name=prefix + "packed", SecretString=base64.b64encode(packed).decode())
    engine = engine_for(
        tmp_path,
        aws,
        [
            one("plain", name=prefix + "plain"),
            one("password", name=prefix + "db", key="password"),
            one("port", name=prefix + "db", key="port"),
            one("blob", name=prefix + "blob"),
            one("packed", name=prefix + "packed", decode="base64"),
        ],
    )
    result = engine.run_cycle()
    assert result.ok, errors(result)
    assert out(tmp_path, "plain") == plain.encode()
    assert out(tmp_path, "password") == password.encode()
    assert out(tmp_path, "port") == b"5432"
    assert out(tmp_path, "blob") == raw
    assert out(tmp_path, "packed") == packed
    # the two refs into one JSON secret and the three others: one listing, one batch read
    assert result.calls["aws"] == {"BatchGetSecretValue": 1, "ListSecrets": 1}
    assert canary not in json.dumps(result.to_json())


def test_a_picked_object_is_compact_json_with_sorted_keys(tmp_path, aws, sm, prefix):
    """One JSON rule for every provider: an object field renders compact, keys sorted, so an
    upstream re-ordering is not a change and Vault, AWS and Azure give the same bytes."""
    sm.create_secret(
        Name=prefix + "doc", SecretString='{"cfg": {"z": [1, 2], "a": "\u00e9", "m": null}}'
    )
    engine = engine_for(tmp_path, aws, [one("cfg", name=prefix + "doc", key="cfg")])
    assert engine.run_cycle().ok
    engine.close()
    assert out(tmp_path, "cfg") == '{"a":"\u00e9","m":null,"z":[1,2]}'.encode()


def test_reads_by_full_and_partial_arn_without_rereading(tmp_path, aws, sm, prefix):
    value = new_value()
    arn = sm.create_secret(Name=prefix + "by-arn", SecretString=value)["ARN"]
    engine = engine_for(tmp_path, aws, [one("full", name=arn), one("partial", name=arn[:-7])])
    first = engine.run_cycle()
    assert first.ok, errors(first)
    assert out(tmp_path, "full") == out(tmp_path, "partial") == value.encode()
    before = first.calls
    second = engine.run_cycle()
    assert delta(before, second) == {"ListSecrets": 1}, "an ARN ref must be matched by the listing"


def test_version_stage_and_id_pins(tmp_path, aws, sm, prefix):
    v1, v2, v3 = new_value("v1-"), new_value("v2-"), new_value("v3-")
    name = prefix + "pinned"
    first_id = sm.create_secret(Name=name, SecretString=v1)["VersionId"]
    sm.put_secret_value(SecretId=name, SecretString=v2)  # v2 AWSCURRENT, v1 AWSPREVIOUS
    sm.put_secret_value(SecretId=name, SecretString=v3, VersionStages=["AWSPENDING"])
    engine = engine_for(
        tmp_path,
        aws,
        [
            one("current", name=name),
            one("previous", name=name, version_stage="AWSPREVIOUS"),
            one("pending", name=name, version_stage="AWSPENDING"),
            one("first", name=name, version_id=first_id),
        ],
    )
    result = engine.run_cycle()
    assert result.ok, errors(result)
    assert out(tmp_path, "current") == v2.encode()
    assert out(tmp_path, "previous") == v1.encode()
    assert out(tmp_path, "pending") == v3.encode()
    assert out(tmp_path, "first") == v1.encode()
    # pinned stages/ids are read one by one (BatchGetSecretValue only reads AWSCURRENT)
    assert result.calls["aws"]["GetSecretValue"] == 3
    before = result.calls
    again = engine.run_cycle()
    assert delta(before, again) == {"ListSecrets": 1}, "pins must not be re-read without change"

    # a rotation moves AWSCURRENT to v4 and AWSPREVIOUS to v2; the pins on AWSPENDING and on
    # the first version id stay put. (moto doesn't re-point reads after
    # UpdateSecretVersionStage, so a rotation is how stages move here.)
    v4 = new_value("v4-")
    sm.put_secret_value(SecretId=name, SecretString=v4)
    before = again.calls
    moved = engine.run_cycle()
    assert moved.ok, errors(moved)
    actions = {i.name: i.action for i in moved.items}
    assert actions == {
        "current": "update",
        "previous": "update",
        "pending": "unchanged",
        "first": "unchanged",
    }
    assert out(tmp_path, "current") == v4.encode()
    assert out(tmp_path, "previous") == v2.encode()
    assert out(tmp_path, "pending") == v3.encode()
    assert delta(before, moved) == {"ListSecrets": 1, "BatchGetSecretValue": 1, "GetSecretValue": 1}


def test_recreated_secret_with_the_same_version_id(tmp_path, aws, sm, prefix):
    """Deleted and created again with the same ClientRequestToken, a secret has the same
    version id and another value: the ARN's suffix, drawn anew, tells them apart."""
    token = uuid.uuid4().hex
    name = prefix + "again"
    first = sm.create_secret(Name=name, SecretString=new_value(), ClientRequestToken=token)
    engine = engine_for(
        tmp_path,
        aws,
        [
            one("again", name=name),
            one("pinned", name=name, version_id=token),
            one("by_arn", name=first["ARN"]),
        ],
    )
    assert engine.run_cycle().ok
    sm.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)
    second = new_value()
    created = sm.create_secret(Name=name, SecretString=second, ClientRequestToken=token)
    assert created["VersionId"] == first["VersionId"] and created["ARN"] != first["ARN"]
    result = engine.run_cycle()
    engine.close()
    assert {i.name: i.action for i in result.items if i.name != "by_arn"} == {
        "again": "update",
        "pinned": "update",
    }
    assert out(tmp_path, "again") == out(tmp_path, "pinned") == second.encode()
    assert "secret not found" in errors(result)["by_arn"]  # the old ARN names the old secret


# --------------------------------------------------------------------------- change detection


def test_change_detection_30_secrets(tmp_path, aws, sm, prefix):
    values = {f"s{i:02d}": new_value() for i in range(30)}
    for key, value in values.items():
        sm.create_secret(Name=prefix + key, SecretString=value)
    engine = engine_for(tmp_path, aws, [one(k, name=prefix + k) for k in values])
    first = engine.run_cycle()
    assert first.ok, errors(first)
    assert first.calls["aws"] == {"ListSecrets": 1, "BatchGetSecretValue": 2}  # 20 + 10

    read: list[list[str]] = []
    client = engine.provider("aws").client  # type: ignore[union-attr]
    client.meta.events.register(
        "provide-client-params.secrets-manager.BatchGetSecretValue",
        lambda params, **_: read.append(list(params["SecretIdList"])),
    )
    quiet = engine.run_cycle()
    assert quiet.ok and quiet.target_writes == 0
    assert delta(first.calls, quiet) == {"ListSecrets": 1}
    assert read == []

    changed = new_value()
    sm.put_secret_value(SecretId=prefix + "s17", SecretString=changed)
    once = engine.run_cycle()
    assert once.ok, errors(once)
    assert delta(quiet.calls, once) == {"ListSecrets": 1, "BatchGetSecretValue": 1}
    assert read == [[prefix + "s17"]]
    assert [i.name for i in once.items if i.action != "unchanged"] == ["s17"]
    assert out(tmp_path, "s17") == changed.encode()
    assert out(tmp_path, "s16") == values["s16"].encode()


def test_filter_groups_cover_every_name_within_the_api_limits():
    names = [f"team{i % 7}/app-{i:04d}" for i in range(500)] + ["a", "ab", "zz/x"]
    groups = filter_groups(names)
    assert all(1 <= len(g) <= 10 for g in groups)
    prefixes = [p for g in groups for p in g]
    assert all(any(n.startswith(p) for p in prefixes) for n in names)
    assert all(p for p in prefixes), "an empty prefix would list the whole account"
    assert len(groups) == 1
    assert filter_groups(["x/one", "y/two"]) == [["x/one", "y/two"]]


# --------------------------------------------------------------------------- bad input


def test_bad_references_fail_alone_and_never_leak(tmp_path, aws, sm, prefix, canary):
    good = new_value()
    sm.create_secret(Name=prefix + "good", SecretString=good)
    sm.create_secret(Name=prefix + "text", SecretString=canary)
    sm.create_secret(Name=prefix + "json", SecretString=json.dumps({"a": canary}))
    sm.create_secret(Name=prefix + "bin", SecretBinary=canary.encode())
    sm.create_secret(Name=prefix + "notb64", SecretString=canary + "!")
    engine = engine_for(
        tmp_path,
        aws,
        [
            one("good", name=prefix + "good"),
            one("missing", name=prefix + "missing"),
            one("nokey", name=prefix + "json", key="b"),
            one("notjson", name=prefix + "text", key="a"),
            one("binkey", name=prefix + "bin", key="a"),
            one("badversion", name=prefix + "good", version_id="0" * 32),
            one("notb64", name=prefix + "notb64", decode="base64"),
        ],
    )
    result = engine.run_cycle()
    assert not result.ok
    assert out(tmp_path, "good") == good.encode()
    errs = errors(result)
    assert set(errs) == {"missing", "nokey", "notjson", "binkey", "badversion", "notb64"}
    assert "secret not found" in errs["missing"] and f"aws:{prefix}missing" in errs["missing"]
    assert "key 'b' not found" in errs["nokey"] and f"aws:{prefix}json#b" in errs["nokey"]
    assert "not JSON" in errs["notjson"]
    assert "binary" in errs["binkey"]
    assert "not found" in errs["badversion"] and "version_id" in errs["badversion"]
    assert "base64" in errs["notb64"]
    assert all("provider 'aws'" in e for e in errs.values())
    assert canary not in json.dumps(result.to_json())


def test_provider_error_keeps_the_last_good_version(tmp_path, aws, sm, prefix):
    value = new_value()
    sm.create_secret(Name=prefix + "keep", SecretString=value)
    engine = engine_for(tmp_path, aws, [one("keep", name=prefix + "keep")])
    assert engine.run_cycle().ok
    sm.delete_secret(SecretId=prefix + "keep", ForceDeleteWithoutRecovery=True)
    failed = engine.run_cycle()
    assert not failed.ok and failed.target_writes == 0
    assert "secret not found" in errors(failed)["keep"]
    assert out(tmp_path, "keep") == value.encode()


def test_wrong_credentials_on_a_checking_server(tmp_path, aws, monkeypatch, prefix):
    endpoint = aws["SYNCD_AWS_AUTH_ENDPOINT"]
    key_id, secret = aws["SYNCD_AWS_AUTH_ACCESS_KEY_ID"], aws["SYNCD_AWS_AUTH_SECRET_ACCESS_KEY"]
    value = new_value()
    boto3.client(
        "secretsmanager",
        endpoint_url=endpoint,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
    ).create_secret(Name=prefix + "authz", SecretString=value)
    secrets = [one("authz", name=prefix + "authz")]

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    good = Engine(load_config(write_config(tmp_path, aws, secrets, endpoint_url=endpoint)))
    assert good.run_cycle().ok
    assert out(tmp_path, "authz") == value.encode()

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-" + secret)
    bad = Engine(load_config(write_config(tmp_path, aws, secrets, endpoint_url=endpoint)))
    result = bad.run_cycle()
    message = errors(result)["authz"]
    assert "check the AWS credentials" in message and f"aws:{prefix}authz" in message
    assert secret not in message
    assert result.target_writes == 0 and out(tmp_path, "authz") == value.encode()


def test_unreachable_endpoint_is_transient_after_retries(tmp_path, aws, prefix):
    provider = _provider("http://127.0.0.1:9", max_attempts=2)
    ref = AwsSecretRef(provider="aws", name=prefix + "x")
    result = provider.versions([ref])[ref]
    assert isinstance(result, ProviderError) and result.transient
    assert "unreachable" in str(result) and f"aws:{prefix}x" in str(result)
    assert provider.context.calls.snapshot()["aws"] == {"ListSecrets": 2}


def test_no_region_is_a_clear_error(tmp_path, aws, monkeypatch, prefix):
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    engine = engine_for(tmp_path, aws, [one("x", name=prefix + "x")])
    assert "no AWS region" in errors(engine.run_cycle())["x"]


# --------------------------------------------------------------------------- throttling


class _Flaky(BaseHTTPRequestHandler):
    """Answers with the queued (status, body) pairs, then with the last one forever."""

    script: ClassVar[list[tuple[int, dict[str, Any]]]] = []
    seen: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).seen.append(self.headers.get("X-Amz-Target", ""))
        status, body = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        return


@pytest.fixture
def flaky() -> Iterator[type[_Flaky]]:
    handler = type("Flaky", (_Flaky,), {"script": [], "seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    handler.url = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    yield handler
    server.shutdown()
    server.server_close()


def _provider(endpoint: str, **cfg: Any) -> AwsSecretsManagerProvider:
    config = AwsSecretsManagerConfig.model_validate(
        {"type": "aws-secrets-manager", "endpoint_url": endpoint, "region": "us-east-1", **cfg}
    )
    context = ProviderContext(name="aws", base_dir=Path("."), calls=CallCounter())
    return AwsSecretsManagerProvider(config, context=context)


THROTTLED = (429, {"__type": "ThrottlingException", "message": "Rate exceeded"})
UNAVAILABLE = (503, {"__type": "ServiceUnavailable", "message": "try later"})


@pytest.mark.parametrize("mode", ["standard", "adaptive"])
def test_throttling_and_5xx_are_retried_and_counted(aws, flaky, mode):
    listing = {
        "SecretList": [
            {
                "Name": "x",
                "ARN": "arn:aws:secretsmanager:us-east-1:1:secret:x-abcdef",
                "SecretVersionsToStages": {"v" * 32: ["AWSCURRENT"]},
            }
        ]
    }
    flaky.script[:] = [THROTTLED, UNAVAILABLE, (200, listing)]
    provider = _provider(flaky.url, retry_mode=mode, max_attempts=4)
    statuses: list[str] = []
    provider.context.calls.add_listener(lambda _c, _op, status: statuses.append(status))
    ref = AwsSecretRef(provider="aws", name="x")
    assert provider.versions([ref]) == {ref: "v" * 32 + "@abcdef"}
    assert flaky.seen == ["secretsmanager.ListSecrets"] * 3
    assert provider.context.calls.snapshot()["aws"] == {"ListSecrets": 3}
    assert statuses == ["throttled", "error", "ok"]


def test_throttling_surfaces_as_transient_only_after_retries(aws, flaky):
    flaky.script[:] = [THROTTLED]
    provider = _provider(flaky.url, max_attempts=3)
    ref = AwsSecretRef(provider="aws", name="x")
    result = provider.versions([ref])[ref]
    assert isinstance(result, ProviderError) and result.transient
    assert "ThrottlingException" in str(result) and "after 3 attempts" in str(result)
    assert provider.context.calls.snapshot()["aws"] == {"ListSecrets": 3}
    assert len(flaky.seen) == 3


# --------------------------------------------------------------------------- auth and CLI


class _StsRelay(BaseHTTPRequestHandler):
    """An STS endpoint of its own: relays each request to moto and notes what it was."""

    upstream: ClassVar[str]
    seen: ClassVar[list[str]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).seen.append(self.headers.get("X-Amz-Target") or body.decode().split("&")[0])
        headers = {
            k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")
        }
        answer = requests.post(self.upstream, data=body, headers=headers, timeout=10)
        self.send_response(answer.status_code)
        self.send_header("Content-Type", answer.headers.get("Content-Type", "text/xml"))
        self.send_header("Content-Length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)

    def log_message(self, *args: Any) -> None:
        return


@pytest.fixture
def sts_relay(aws: dict[str, str]) -> Iterator[type[_StsRelay]]:
    handler = type("Relay", (_StsRelay,), {"upstream": aws["AWS_ENDPOINT_URL"], "seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    handler.url = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    yield handler
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("where", ["sts_endpoint_url", "AWS_ENDPOINT_URL_STS"])
def test_assume_role_once_at_its_own_sts_endpoint(
    tmp_path, aws, sm, prefix, sts_relay, monkeypatch, where
):
    """STS goes to its own endpoint (the setting, else botocore's resolution), never to the
    provider's endpoint_url (a Secrets Manager VPC endpoint has no STS), once per session."""
    value = new_value()
    sm.create_secret(Name=prefix + "role", SecretString=value)
    role: dict[str, Any] = {
        "role_arn": "arn:aws:iam::123456789012:role/syncd-reader",
        "external_id": "ext-1",
    }
    if where == "sts_endpoint_url":
        role["sts_endpoint_url"] = sts_relay.url
    else:
        monkeypatch.setenv("AWS_ENDPOINT_URL_STS", sts_relay.url)
    engine = engine_for(tmp_path, aws, [one("role", name=prefix + "role")], assume_role=role)
    for _ in range(3):
        result = engine.run_cycle()
        assert result.ok, errors(result)
    engine.close()
    assert out(tmp_path, "role") == value.encode()
    assert result.calls["aws"]["AssumeRole"] == 1
    assert result.calls["aws"]["ListSecrets"] == 3
    assert sts_relay.seen == ["Action=AssumeRole"]  # STS there, Secrets Manager not


def test_sts_defaults_to_the_regional_endpoint(aws, monkeypatch):
    """No setting and no AWS_ENDPOINT_URL_STS: the region's STS, not the endpoint_url."""
    monkeypatch.delenv("AWS_ENDPOINT_URL_STS", raising=False)
    provider = _provider(
        aws["AWS_ENDPOINT_URL"],
        assume_role={"role_arn": "arn:aws:iam::123456789012:role/syncd-reader"},
        region="eu-west-1",
    )
    endpoints = {
        c.meta.service_model.service_name: c.meta.endpoint_url for c in provider.aws._clients
    }
    provider.close()
    assert endpoints == {
        "sts": "https://sts.eu-west-1.amazonaws.com",
        "secretsmanager": aws["AWS_ENDPOINT_URL"],
    }


def test_cli_once_exit_codes(tmp_path, aws, sm, prefix, canary):
    sm.create_secret(Name=prefix + "cli", SecretString=canary)
    config = write_config(tmp_path, aws, [one("cli", name=prefix + "cli")])
    syncd = str(ROOT / ".venv" / "bin" / "syncd")
    ok = subprocess.run(
        [syncd, "--config", str(config), "--once", "--output", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    report = json.loads(ok.stdout)
    assert report["provider_calls"]["aws"] == {"BatchGetSecretValue": 1, "ListSecrets": 1}
    assert out(tmp_path, "cli") == canary.encode()
    assert canary not in ok.stdout + ok.stderr

    broken = write_config(
        tmp_path, aws, [one("cli", name=prefix + "cli"), one("gone", name=prefix + "gone")]
    )
    bad = subprocess.run(
        [syncd, "--config", str(broken), "--once"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert bad.returncode == 1
    assert f"aws:{prefix}gone" in bad.stdout + bad.stderr
    assert canary not in bad.stdout + bad.stderr
    assert out(tmp_path, "cli") == canary.encode()


# --------------------------------------------------------------------------- find


def test_find_by_prefix_and_tags_bundles_many_secrets(tmp_path, aws, sm, prefix, canary):
    """``data_from: {provider: aws, find: ...}``: every matching secret as one bundle key."""
    values = {"openai": canary, "anthropic": new_value(), "other": new_value()}
    for name, value in values.items():
        tags = [{"Key": "team", "Value": "ai" if name != "other" else "web"}]
        sm.create_secret(Name=f"{prefix}{name}", SecretString=value, Tags=tags)
    sm.create_secret(Name=f"x{prefix}elsewhere", SecretString=new_value())
    engine = engine_for(
        tmp_path,
        aws,
        [
            {"name": "all", "data_from": {"provider": "aws", "find": {"prefix": prefix}}},
            {
                "name": "ai",
                "data_from": {
                    "provider": "aws",
                    "find": {"prefix": prefix, "tags": {"team": "ai"}},
                },
                "key_style": "upper",
            },
        ],
    )
    result = engine.run_cycle()
    assert result.ok, errors(result)
    assert sorted(p.name for p in (tmp_path / "out" / "all").iterdir()) == [
        "anthropic",
        "openai",
        "other",
    ]
    assert out(tmp_path, "ai/OPENAI") == canary.encode()
    assert sorted(p.name for p in (tmp_path / "out" / "ai").iterdir()) == ["ANTHROPIC", "OPENAI"]
    before = result.calls
    again = engine.run_cycle()
    assert again.target_writes == 0
    assert "BatchGetSecretValue" not in delta(before, again)  # a no-change cycle reads no value
    sm.create_secret(
        Name=f"{prefix}new", SecretString=new_value(), Tags=[{"Key": "team", "Value": "ai"}]
    )
    grown = engine.run_cycle()
    assert {i.name: i.changed_keys for i in grown.items} == {"all": ["new"], "ai": ["NEW"]}
    engine.close()
    assert canary not in json.dumps(grown.to_json())


def test_find_needs_data_from_and_a_filter(tmp_path, aws):
    from syncd.errors import ConfigError

    with pytest.raises(ConfigError, match="find needs a 'prefix', 'tags' or both"):
        load_config(write_config(tmp_path, aws, [one("a", find={})]))
    engine = engine_for(tmp_path, aws, [one("a", find={"prefix": "p/"})])
    result = engine.run_cycle()
    engine.close()
    assert "'find' names many secrets: use it with data_from" in errors(result)["a"]


def test_for_each_find_makes_a_secret_per_match(tmp_path, aws, sm, prefix):
    """``for_each`` + ``find``: every matching secret becomes its own synced secret."""
    values = {"openai-key": new_value(), "anthropic-key": new_value()}
    for name, value in values.items():
        sm.create_secret(Name=f"{prefix}{name}", SecretString=value)
    engine = engine_for(
        tmp_path,
        aws,
        [
            {
                "name": "{key}",
                "for_each": {"provider": "aws", "find": {"prefix": prefix}},
                "key_style": "snake",
            }
        ],
    )
    result = engine.run_cycle()
    assert result.ok, errors(result)
    assert sorted(i.name for i in result.items) == ["anthropic_key", "openai_key"]
    assert out(tmp_path, "openai_key") == values["openai-key"].encode()
    before = result.calls
    again = engine.run_cycle()
    engine.close()
    assert again.target_writes == 0
    assert "BatchGetSecretValue" not in delta(before, again)


# --------------------------------------------------------------------------- hostile names


def test_find_match_with_a_path_name_fails_alone(tmp_path, aws, sm, prefix, canary):
    """A matched secret named ``<prefix>../../../x`` (or with ``/``) fails only its own
    generated secret: the others sync, nothing lands outside the directory, and the error
    names the source and the key, never the value."""
    good = new_value()
    sm.create_secret(Name=f"{prefix}good", SecretString=good)
    for bad in ("../../../escaped", "nested/deeper", ".hidden"):
        sm.create_secret(Name=f"{prefix}{bad}", SecretString=canary)
    (tmp_path / "deep" / "er").mkdir(parents=True)
    config = write_config(
        tmp_path / "deep" / "er",
        aws,
        [{"name": "{key}", "for_each": {"provider": "aws", "find": {"prefix": prefix}}}],
    )
    engine = Engine(load_config(config))
    result = engine.run_cycle()
    engine.close()
    errs = errors(result)
    assert {i.name for i in result.items if i.error is None} == {"good"}
    assert set(errs) == {"../../../escaped", "nested/deeper", ".hidden"}
    for key, message in errs.items():
        assert f"key {key!r} from aws:find(prefix={prefix}" in message
        assert "can't be a file name" in message
    out_dir = tmp_path / "deep" / "er" / "out"
    assert (out_dir / "good").read_bytes() == good.encode()
    for path in tmp_path.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert canary.encode() not in path.read_bytes(), path
    assert canary not in json.dumps(result.to_json())


def test_a_value_that_is_not_unicode_fails_alone(tmp_path, aws, sm, prefix):
    """A lone surrogate (JSON can escape one) is no text a file can hold: that secret fails
    with a reason, the others in the same batch sync."""
    good = new_value()
    sm.create_secret(Name=prefix + "good", SecretString=good)
    sm.create_secret(Name=prefix + "broken", SecretString=json.dumps({"k": "\ud800"}))
    engine = engine_for(
        tmp_path,
        aws,
        [one("good", name=prefix + "good"), one("k", name=prefix + "broken", key="k")],
    )
    result = engine.run_cycle()
    engine.close()
    assert out(tmp_path, "good") == good.encode()
    assert "not valid Unicode text" in errors(result)["k"]


# --------------------------------------------------------------------------- dead endpoints


def test_hung_endpoint_costs_a_cycle_two_read_timeouts_with_defaults(tmp_path, aws, prefix):
    """Default settings, an endpoint that accepts and never answers: ListSecrets times out,
    is retried once, and the cycle ends after about 2 x read_timeout (5 s), not minutes."""
    with dead_endpoint("hang") as url:
        engine = engine_for(
            tmp_path, aws, [one(f"s{i}", name=f"{prefix}s{i}") for i in range(5)], endpoint_url=url
        )
        elapsed, result = timed_cycle(engine, bound=15.0)
        engine.close()
    assert all(
        "ListSecrets: endpoint timed out (after 2 attempts)" in e for e in errors(result).values()
    )
    assert len(errors(result)) == 5
    assert result.calls["aws"] == {"ListSecrets": 2}
    assert 9.5 < elapsed < 15.0, f"{elapsed:.1f}s"


@pytest.mark.parametrize("kind", ["refuse", "reset"])
def test_dead_endpoint_fails_a_cycle_fast_with_defaults(tmp_path, aws, prefix, kind):
    with dead_endpoint(kind) as url:
        engine = engine_for(tmp_path, aws, [one("s", name=f"{prefix}s")], endpoint_url=url)
        elapsed, result = timed_cycle(engine, bound=3.0)
        engine.close()
    assert "endpoint unreachable (after 2 attempts)" in errors(result)["s"]
    assert result.calls["aws"] == {"ListSecrets": 2}
    assert elapsed < 3.0, f"{elapsed:.1f}s"


def test_time_settings_take_durations(tmp_path, aws):
    from syncd.errors import ConfigError

    config = load_config(
        write_config(
            tmp_path, aws, [one("x", name="x")], connect_timeout="1500ms", read_timeout="30s"
        )
    )
    block = config.providers["aws"][1]
    assert (block.connect_timeout, block.read_timeout) == (1.5, 30.0)
    with pytest.raises(ConfigError, match="read_timeout"):
        load_config(write_config(tmp_path, aws, [one("x", name="x")], read_timeout="-1s"))


def test_check_names_a_missing_boto3_with_file_and_line(tmp_path, aws):
    config = write_config(tmp_path, aws, [one("x", name="x")])
    line = config.read_text().splitlines().index("    type: aws-secrets-manager") + 1
    run = check_without("boto3", config)
    assert run.returncode == 1, run.stdout + run.stderr
    assert f"{config}:{line}: providers.aws.type:" in run.stderr
    assert "needs boto3: pip install 'syncd[aws]'" in run.stderr
