"""The azure-key-vault provider against the loopback Key Vault test double (HTTPS, real SDK).

Start the backend first: ``scripts/backends up azure``. The double speaks the Key Vault REST
protocol with challenge-based auth and an Entra-like token endpoint, and counts what it
serves (``/_double/stats``), so each test checks syncd's own call counts against the
server's. Test values are generated; the ``canary`` must never show outside the target.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests
import yaml

from providers.azure_key_vault import FRESH_SECONDS, AzureKeyVaultProvider
from syncd.config import load_config
from syncd.engine import Engine
from tests.certs import certificate, days_from_now
from tests.conftest import ROOT, backend_env, new_value
from tests.integration.faults import check_without, dead_port, timed_cycle

pytestmark = pytest.mark.backend("azure")


@pytest.fixture(name="azure", scope="module")
def azure_fixture() -> dict[str, str]:
    return backend_env("azure")


@pytest.fixture(name="seed", scope="module")
def seed_fixture(azure: dict[str, str]) -> Iterator[Any]:
    """A plain SDK client (client secret auth) to write test secrets with."""
    from azure.identity import ClientSecretCredential
    from azure.keyvault.secrets import SecretClient

    ca = azure["AZURE_KV_CA"]
    credential = ClientSecretCredential(
        azure["AZURE_KV_TENANT"],
        azure["AZURE_KV_CLIENT_ID"],
        Path(azure["AZURE_KV_CLIENT_SECRET_FILE"]).read_text().strip(),
        authority=azure["AZURE_KV_AUTHORITY"],
        disable_instance_discovery=True,
        connection_verify=ca,
    )
    client = SecretClient(
        azure["AZURE_KV_URL"], credential, verify_challenge_resource=False, connection_verify=ca
    )
    yield client
    client.close()


@pytest.fixture(autouse=True)
def _no_ambient_azure(monkeypatch: pytest.MonkeyPatch) -> None:
    """No trust or credential may come from the developer's environment."""
    for name in list(os.environ):
        if name.startswith(("AZURE_", "IDENTITY_", "MSI_")) or name in (
            "REQUESTS_CA_BUNDLE",
            "SSL_CERT_FILE",
            "CURL_CA_BUNDLE",
        ):
            monkeypatch.delenv(name)


class Admin:
    """The double's test hooks."""

    def __init__(self, env: dict[str, str]) -> None:
        self.url = env["AZURE_KV_ADMIN"]
        self.ca = env["AZURE_KV_CA"]

    def stats(self) -> dict[str, int]:
        response = requests.get(f"{self.url}/stats", verify=self.ca, timeout=10)
        response.raise_for_status()
        data: dict[str, int] = response.json()
        return data

    def post(self, hook: str, body: dict[str, Any] | None = None) -> None:
        response = requests.post(f"{self.url}/{hook}", json=body or {}, verify=self.ca, timeout=10)
        response.raise_for_status()


@pytest.fixture(name="admin")
def admin_fixture(azure: dict[str, str]) -> Iterator[Admin]:
    hooks = Admin(azure)
    hooks.post("reset")
    yield hooks
    hooks.post("reset")


def delta(before: dict[str, int], after: dict[str, int], key: str) -> int:
    return after.get(key, 0) - before.get(key, 0)


def unique(label: str) -> str:
    return f"t{uuid.uuid4().hex[:10]}-{label}"


def provider_block(azure: dict[str, str], **extra: Any) -> dict[str, Any]:
    block: dict[str, Any] = {
        "type": "azure-key-vault",
        "vault_url": azure["AZURE_KV_URL"],
        "auth": {
            "method": "client-secret",
            "tenant_id": azure["AZURE_KV_TENANT"],
            "client_id": azure["AZURE_KV_CLIENT_ID"],
            "client_secret_file": azure["AZURE_KV_CLIENT_SECRET_FILE"],
        },
        "authority_host": azure["AZURE_KV_AUTHORITY"],
        "ca_bundle": azure["AZURE_KV_CA"],
        "verify_challenge_resource": False,
        "retry_backoff_factor": 0.05,
    }
    block.update(extra)
    return block


def write_config(tmp_path: Path, provider: dict[str, Any], secrets: list[dict[str, Any]]) -> Path:
    doc = {
        "providers": {"kv": provider},
        "target": {"type": "files", "directory": str(tmp_path / "out")},
        "secrets": secrets,
    }
    path = tmp_path / "syncd.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def calls(result: Any, operation: str) -> int:
    return int(result.calls.get("kv", {}).get(operation, 0))


def wait_fresh() -> None:
    """Let list timestamps age past the same-second guard so they count as version ids."""
    time.sleep(FRESH_SECONDS + 0.2)


# --------------------------------------------------------------------------- reading


def test_reads_and_detects_change_with_list_pages_only(
    tmp_path: Path, azure: dict[str, str], seed: Any, admin: Admin
) -> None:
    names = [unique("a"), unique("b"), unique("json")]
    values = [new_value(), new_value()]
    seed.set_secret(names[0], values[0])
    seed.set_secret(names[1], values[1])
    password = new_value()
    seed.set_secret(names[2], json.dumps({"user": "app", "password": password, "port": 5432}))
    wait_fresh()
    config = write_config(
        tmp_path,
        provider_block(azure),
        [
            {"name": "first", "from": {"provider": "kv", "name": names[0]}},
            {"name": "second", "from": {"provider": "kv", "name": names[1]}},
            {
                "name": "db_password",
                "from": {"provider": "kv", "name": names[2], "key": "password"},
            },
            {"name": "db_port", "from": {"provider": "kv", "name": names[2], "key": "port"}},
        ],
    )
    out = tmp_path / "out"
    engine = Engine(load_config(config))
    try:
        first = engine.run_cycle()
        assert first.ok, [i.error for i in first.items]
        assert (out / "first").read_text() == values[0]
        assert (out / "second").read_text() == values[1]
        assert (out / "db_password").read_text() == password
        assert (out / "db_port").read_text() == "5432"
        # three distinct secrets: three reads, even though four refs use them
        assert calls(first, "get_secret") == 3

        before = admin.stats()
        second = engine.run_cycle()
        after = admin.stats()
        assert second.ok
        assert second.target_writes == 0
        assert all(i.action == "unchanged" for i in second.items)
        assert delta(before, after, "get") == 0
        assert calls(second, "get_secret") == calls(first, "get_secret")
        listed = calls(second, "list_secrets") - calls(first, "list_secrets")
        assert listed == delta(before, after, "list") >= 1
        pages = -(-len(list(seed.list_properties_of_secrets())) // 25)
        assert listed == pages

        changed = new_value()
        seed.set_secret(names[1], changed)
        before = admin.stats()
        third = engine.run_cycle()
        after = admin.stats()
        assert third.ok
        assert delta(before, after, "get") == 1
        assert calls(third, "get_secret") - calls(second, "get_secret") == 1
        assert (out / "second").read_text() == changed
        assert (out / "first").read_text() == values[0]
        assert {i.name: i.action for i in third.items}["second"] == "update"
    finally:
        engine.close()


def test_fresh_timestamp_is_not_trusted(
    tmp_path: Path, azure: dict[str, str], seed: Any, admin: Admin
) -> None:
    """Two writes within one second share a timestamp, so a fresh one must not be a version id."""
    name = unique("fresh")
    seed.set_secret(name, new_value())
    with provider_for(tmp_path, azure) as provider:
        ref = provider.ref_model.model_validate({"provider": "kv", "name": name})
        assert provider.versions([ref])[ref] is None
        wait_fresh()
        token = provider.versions([ref])[ref]
        assert isinstance(token, str) and token.startswith("u:")


def test_recreated_secret_is_synced_and_recovered_one_is_not_rewritten(
    tmp_path: Path, azure: dict[str, str], seed: Any, admin: Admin
) -> None:
    """Key Vault soft-deletes: a name comes back only after a purge, as a new secret (new
    version id and timestamps), whose value syncs; a recovered secret keeps its versions,
    so nothing is written for it."""
    from azure.core.exceptions import HttpResponseError

    again, back = unique("again"), unique("back")
    first, kept = new_value(), new_value()
    old_version = seed.set_secret(again, first).properties.version
    seed.set_secret(back, kept)
    wait_fresh()
    secrets = [
        {"name": "again", "from": {"provider": "kv", "name": again}},
        {"name": "back", "from": {"provider": "kv", "name": back}},
    ]
    engine = Engine(load_config(write_config(tmp_path, provider_block(azure), secrets)))
    out = tmp_path / "out"
    try:
        assert engine.run_cycle().ok
        seed.begin_delete_secret(again).wait()
        seed.begin_delete_secret(back).wait()
        gone = engine.run_cycle()
        assert all("not found" in str(i.error) for i in gone.items) and gone.target_writes == 0
        assert (out / "again").read_text() == first
        with pytest.raises(HttpResponseError) as refused:
            seed.set_secret(again, new_value())  # a soft-deleted name can't be reused...
        assert refused.value.status_code == 409
        seed.purge_deleted_secret(again)  # ...until it is purged
        second = new_value()
        assert seed.set_secret(again, second).properties.version != old_version
        seed.begin_recover_deleted_secret(back).wait()
        wait_fresh()
        result = engine.run_cycle()
        assert result.ok, [i.error for i in result.items]
        assert {i.name: i.action for i in result.items} == {"again": "update", "back": "unchanged"}
        assert (out / "again").read_text() == second
        assert (out / "back").read_text() == kept
    finally:
        engine.close()


def test_fresh_timestamp_is_judged_on_the_vault_clock(
    tmp_path: Path, azure: dict[str, str], seed: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """This host's clock 30 s ahead of the vault's must not make a just-written timestamp
    look old: freshness is measured against the vault's Date header."""
    import providers.azure_key_vault as module

    ahead = SimpleNamespace(time=lambda: time.time() + 30.0, monotonic=time.monotonic)
    monkeypatch.setattr(module, "time", ahead)
    name = unique("skew")
    seed.set_secret(name, new_value())
    with provider_for(tmp_path, azure) as provider:
        ref = provider.ref_model.model_validate({"provider": "kv", "name": name})
        assert provider.versions([ref])[ref] is None
        got = provider.fetch([ref])[ref]
        assert not isinstance(got, Exception) and got.token is None
        wait_fresh()
        token = provider.versions([ref])[ref]
        assert isinstance(token, str) and token.startswith("u:")


@contextmanager
def provider_for(
    tmp_path: Path, azure: dict[str, str], **extra: Any
) -> Iterator[AzureKeyVaultProvider]:
    """A provider built from a real config block, closed after use."""
    config = load_config(
        write_config(
            tmp_path,
            provider_block(azure, **extra),
            [{"name": "x", "from": {"provider": "kv", "name": "unused"}}],
        )
    )
    provider = Engine(config).provider("kv")
    assert isinstance(provider, AzureKeyVaultProvider), provider
    try:
        yield provider
    finally:
        provider.close()


def test_expires_comes_from_the_listing_and_a_certificate_from_the_value(
    tmp_path: Path, azure: dict[str, str], seed: Any, admin: Admin
) -> None:
    """A secret's ``expires`` attribute is its expiry on every cycle, also on one that reads
    no value and in a new process (it comes with the listing); a certificate in the value that
    ends sooner wins, in a new process too (it is stored on the version, so nothing is read)."""
    plain, tls = unique("exp"), unique("tls")
    expires, sooner = days_from_now(30), days_from_now(3)
    seed.set_secret(plain, new_value(), expires_on=expires)
    seed.set_secret(tls, certificate(sooner).decode(), expires_on=expires)
    wait_fresh()
    config = write_config(
        tmp_path,
        provider_block(azure),
        [
            {"name": "plain", "from": {"provider": "kv", "name": plain}},
            {"name": "tls", "from": {"provider": "kv", "name": tls}},
        ],
    )
    engine = Engine(load_config(config))
    try:
        first = engine.run_cycle()
        assert first.ok, [i.error for i in first.items]
        assert {i.name: i.expires for i in first.items} == {
            "plain": {"plain": expires.timestamp()},
            "tls": {"tls": sooner.timestamp()},
        }
        before = admin.stats()
        second = engine.run_cycle()
        assert delta(before, admin.stats(), "get") == 0
        assert {i.name: i.expires for i in second.items} == {i.name: i.expires for i in first.items}
    finally:
        engine.close()
    restarted = Engine(load_config(config))
    try:
        before = admin.stats()
        third = restarted.run_cycle()
        assert delta(before, admin.stats(), "get") == 0
        # the listing's expires comes with the listing; the certificate's is on the version
        assert {i.name: i.expires for i in third.items} == {
            "plain": {"plain": expires.timestamp()},
            "tls": {"tls": sooner.timestamp()},
        }
    finally:
        restarted.close()


def test_a_new_version_without_expires_has_no_expiry(
    tmp_path: Path, azure: dict[str, str], seed: Any, admin: Admin
) -> None:
    name = unique("noexp")
    expires = days_from_now(2)
    seed.set_secret(name, new_value(), expires_on=expires)
    wait_fresh()
    with provider_for(tmp_path, azure) as provider:
        ref = provider.ref_model.model_validate({"provider": "kv", "name": name})
        assert isinstance(provider.versions([ref])[ref], str)
        assert provider.expiry([ref]) == {ref: expires.timestamp()}
        seed.set_secret(name, new_value())
        wait_fresh()
        assert isinstance(provider.versions([ref])[ref], str)
        assert provider.expiry([ref]) == {}


def test_version_pin_needs_no_listing(
    tmp_path: Path, azure: dict[str, str], seed: Any, admin: Admin
) -> None:
    name = unique("pin")
    old, new = new_value(), new_value()
    old_version = seed.set_secret(name, old).properties.version
    seed.set_secret(name, new)
    with provider_for(tmp_path, azure) as provider:
        pinned = provider.ref_model.model_validate(
            {"provider": "kv", "name": name, "version": old_version}
        )
        before = admin.stats()
        assert provider.versions([pinned]) == {pinned: f"v:{old_version}"}
        assert delta(before, admin.stats(), "list") == 0
        fetched = provider.fetch([pinned])[pinned]
        assert not isinstance(fetched, Exception)
        assert fetched.value == old.encode()
        assert fetched.token == f"v:{old_version}"
        latest = provider.ref_model.model_validate({"provider": "kv", "name": name})
        got = provider.fetch([latest])[latest]
        assert not isinstance(got, Exception) and got.value == new.encode()

        missing = provider.ref_model.model_validate(
            {"provider": "kv", "name": name, "version": uuid.uuid4().hex}
        )
        error = provider.fetch([missing])[missing]
        assert isinstance(error, Exception)
        assert "not found" in str(error) and name in str(error)


def test_base64_decode_gives_binary(
    tmp_path: Path, azure: dict[str, str], seed: Any, admin: Admin
) -> None:
    import base64

    name = unique("bin")
    blob = os.urandom(64)
    seed.set_secret(name, base64.b64encode(blob).decode())
    with provider_for(tmp_path, azure) as provider:
        ref = provider.ref_model.model_validate(
            {"provider": "kv", "name": name, "decode": "base64"}
        )
        got = provider.fetch([ref])[ref]
        assert not isinstance(got, Exception) and got.value == blob


# --------------------------------------------------------------------------- auth


def test_certificate_credential(
    tmp_path: Path, azure: dict[str, str], seed: Any, admin: Admin
) -> None:
    name = unique("cert")
    value = new_value()
    seed.set_secret(name, value)
    auth = {
        "method": "certificate",
        "tenant_id": azure["AZURE_KV_TENANT"],
        "client_id": azure["AZURE_KV_CLIENT_ID"],
        "certificate_path": azure["AZURE_KV_CLIENT_CERT"],
    }
    with provider_for(tmp_path, azure, auth=auth) as provider:
        ref = provider.ref_model.model_validate({"provider": "kv", "name": name})
        before = admin.stats()
        got = provider.fetch([ref])[ref]
        assert not isinstance(got, Exception), got
        assert got.value == value.encode()
        assert delta(before, admin.stats(), "token") == 1


def test_default_credential_uses_managed_identity(
    tmp_path: Path, azure: dict[str, str], seed: Any, admin: Admin, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IDENTITY_ENDPOINT", azure["AZURE_KV_IDENTITY_ENDPOINT"])
    monkeypatch.setenv("IDENTITY_HEADER", azure["AZURE_KV_IDENTITY_HEADER"])
    name = unique("mi")
    value = new_value()
    seed.set_secret(name, value)
    with provider_for(tmp_path, azure, auth={"method": "default"}) as provider:
        ref = provider.ref_model.model_validate({"provider": "kv", "name": name})
        before = admin.stats()
        got = provider.fetch([ref])[ref]
        assert not isinstance(got, Exception), got
        assert got.value == value.encode()
        assert delta(before, admin.stats(), "identity_token") == 1


def localhost_url(azure: dict[str, str]) -> str:
    """The same vault under another origin, whose auth challenge the SDK has not cached yet."""
    return azure["AZURE_KV_URL"].replace("127.0.0.1", "localhost")


def test_challenge_based_auth_and_claims_challenge(
    tmp_path: Path, azure: dict[str, str], seed: Any, admin: Admin
) -> None:
    """First request: 401 challenge, token, retry. A revoked token: CAE claims challenge."""
    name = unique("chal")
    value = new_value()
    seed.set_secret(name, value)
    with provider_for(tmp_path, azure, vault_url=localhost_url(azure)) as provider:
        ref = provider.ref_model.model_validate({"provider": "kv", "name": name})
        before = admin.stats()
        got = provider.fetch([ref])[ref]
        after = admin.stats()
        assert not isinstance(got, Exception), got
        assert got.value == value.encode()
        assert delta(before, after, "challenge") == 1
        assert delta(before, after, "token") == 1
        assert delta(before, after, "get") == 1
        counted = provider.context.calls.snapshot()["kv"]
        assert counted == {"auth_challenge": 1, "get_secret": 1}

        admin.post("revoke")
        before = admin.stats()
        got = provider.fetch([ref])[ref]
        after = admin.stats()
        assert not isinstance(got, Exception), got
        assert delta(before, after, "challenge") == 1
        assert delta(before, after, "token") == 1
        assert provider.context.calls.snapshot()["kv"]["auth_challenge"] == 2


def test_wrong_client_secret_is_a_clear_error(
    tmp_path: Path, azure: dict[str, str], seed: Any, admin: Admin, canary: str
) -> None:
    name = unique("auth")
    seed.set_secret(name, new_value())
    bad = tmp_path / "bad-secret"
    bad.write_text(canary)
    auth = {
        "method": "client-secret",
        "tenant_id": azure["AZURE_KV_TENANT"],
        "client_id": azure["AZURE_KV_CLIENT_ID"],
        "client_secret_file": str(bad),
    }
    with provider_for(tmp_path, azure, auth=auth, retry_total=0) as provider:
        ref = provider.ref_model.model_validate({"provider": "kv", "name": name})
        error = provider.versions([ref])[ref]
        assert isinstance(error, Exception)
        message = str(error)
        assert "authentication failed" in message and "'kv'" in message and name in message
        assert canary not in message


def test_client_secret_from_env_and_missing_env(
    tmp_path: Path, azure: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    auth = {
        "method": "client-secret",
        "tenant_id": azure["AZURE_KV_TENANT"],
        "client_id": azure["AZURE_KV_CLIENT_ID"],
        "client_secret_env": "SYNCD_TEST_AZURE_SECRET",
    }
    config = load_config(
        write_config(
            tmp_path,
            provider_block(azure, auth=auth),
            [{"name": "x", "from": {"provider": "kv", "name": "whatever"}}],
        )
    )
    broken = Engine(config).provider("kv")
    assert isinstance(broken, Exception)
    assert "SYNCD_TEST_AZURE_SECRET" in str(broken)
    monkeypatch.setenv(
        "SYNCD_TEST_AZURE_SECRET", Path(azure["AZURE_KV_CLIENT_SECRET_FILE"]).read_text().strip()
    )
    provider = Engine(config).provider("kv")
    assert isinstance(provider, AzureKeyVaultProvider)
    ref = provider.ref_model.model_validate({"provider": "kv", "name": "does-not-exist-here"})
    error = provider.versions([ref])[ref]
    assert isinstance(error, Exception) and "not found" in str(error)
    provider.close()


def test_inline_secret_is_refused(tmp_path: Path, azure: dict[str, str]) -> None:
    from syncd.errors import ConfigError

    auth = {
        "method": "client-secret",
        "tenant_id": "t",
        "client_id": "c",
        "client_secret": "inline-is-not-allowed",
    }
    secrets = [{"name": "x", "from": {"provider": "kv", "name": "x"}}]
    path = write_config(tmp_path, provider_block(azure, auth=auth), secrets)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "client_secret" in str(info.value)


# --------------------------------------------------------------------------- bad input


def test_untrusted_certificate_is_a_clear_error(
    tmp_path: Path, azure: dict[str, str], seed: Any
) -> None:
    name = unique("tls")
    seed.set_secret(name, new_value())
    # trust the wrong CA (the client certificate), and then no extra CA at all
    for ca in (azure["AZURE_KV_CLIENT_CERT"].replace("client.pem", "client.crt"), None):
        with provider_for(
            tmp_path, azure, ca_bundle=ca, retry_total=0, vault_url=localhost_url(azure)
        ) as provider:
            ref = provider.ref_model.model_validate({"provider": "kv", "name": name})
            error = provider.fetch([ref])[ref]
            assert isinstance(error, Exception)
            assert "TLS certificate" in str(error) and "not trusted" in str(error), str(error)
            assert name in str(error)


def test_unreachable_vault_is_transient(tmp_path: Path, azure: dict[str, str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with provider_for(
        tmp_path, azure, vault_url=f"https://127.0.0.1:{port}", retry_total=1
    ) as provider:
        ref = provider.ref_model.model_validate({"provider": "kv", "name": "anything"})
        error = provider.versions([ref])[ref]
        assert isinstance(error, Exception)
        assert "can't reach" in str(error)
        assert getattr(error, "transient", False) is True


def test_missing_secret_and_key_errors_leave_target_untouched(
    tmp_path: Path, azure: dict[str, str], seed: Any, admin: Admin, canary: str, caplog: Any
) -> None:
    good, doc, plain = unique("good"), unique("doc"), unique("plain")
    value = new_value()
    seed.set_secret(good, value)
    seed.set_secret(doc, json.dumps({"token": canary}))
    seed.set_secret(plain, canary)
    wait_fresh()
    secrets = [
        {"name": "good", "from": {"provider": "kv", "name": good}},
        {"name": "nokey", "from": {"provider": "kv", "name": doc, "key": "absent"}},
        {"name": "notjson", "from": {"provider": "kv", "name": plain, "key": "token"}},
        {"name": "gone", "from": {"provider": "kv", "name": unique("never-created")}},
    ]
    engine = Engine(load_config(write_config(tmp_path, provider_block(azure), secrets)))
    out = tmp_path / "out"
    try:
        result = engine.run_cycle()
        errors = {i.name: i.error for i in result.items}
        assert not result.ok
        assert errors["good"] is None and (out / "good").read_text() == value
        assert "key 'absent' not found" in str(errors["nokey"]) and doc in str(errors["nokey"])
        assert "not JSON" in str(errors["notjson"]) and plain in str(errors["notjson"])
        assert "not found" in str(errors["gone"])
        for name in ("nokey", "notjson", "gone"):
            assert not (out / name).exists()
        plan = json.dumps(result.to_json())
        assert canary not in plan
        assert canary not in caplog.text

        # the good secret disappears upstream: an error, and its file stays as it was
        seed.begin_delete_secret(good).wait()
        again = engine.run_cycle()
        assert {i.name: i.error for i in again.items}["good"] is not None
        assert (out / "good").read_text() == value
        for path in out.rglob("*"):
            if path.is_file() and not path.is_symlink():
                assert canary.encode() not in path.read_bytes(), path
    finally:
        engine.close()


# --------------------------------------------------------------------------- throttling


def test_429_retry_after_is_honoured(
    tmp_path: Path, azure: dict[str, str], seed: Any, admin: Admin
) -> None:
    name = unique("busy")
    value = new_value()
    seed.set_secret(name, value)
    with provider_for(tmp_path, azure, retry_total=3) as provider:
        ref = provider.ref_model.model_validate({"provider": "kv", "name": name})
        assert not isinstance(provider.fetch([ref])[ref], Exception)  # token and challenge done
        admin.post("faults", {"status": 429, "times": 2, "retry_after": "1", "match": "/secrets/"})
        gets = provider.context.calls.snapshot()["kv"]["get_secret"]
        started = time.monotonic()
        got = provider.fetch([ref])[ref]
        elapsed = time.monotonic() - started
        assert not isinstance(got, Exception), got
        assert got.value == value.encode()
        assert elapsed >= 2.0, f"Retry-After ignored: {elapsed:.2f}s"
        assert elapsed < 6.0
        assert admin.stats()["fault_429"] == 2
        assert provider.context.calls.snapshot()["kv"]["get_secret"] == gets + 3

        admin.post("faults", {"status": 503, "times": 1, "match": "/secrets"})
        assert not isinstance(provider.versions([ref])[ref], Exception)
        assert admin.stats()["fault_503"] == 1


def test_throttling_beyond_retries_is_a_transient_error(
    tmp_path: Path, azure: dict[str, str], seed: Any, admin: Admin
) -> None:
    name = unique("throttled")
    seed.set_secret(name, new_value())
    with provider_for(tmp_path, azure, retry_total=1) as provider:
        ref = provider.ref_model.model_validate({"provider": "kv", "name": name})
        assert not isinstance(provider.fetch([ref])[ref], Exception)
        admin.post("faults", {"status": 429, "times": 5, "retry_after": "0", "match": "/secrets/"})
        error = provider.fetch([ref])[ref]
        assert isinstance(error, Exception)
        assert "throttled" in str(error) and "429" in str(error)
        assert getattr(error, "transient", False) is True
        assert admin.stats()["fault_429"] == 2  # the call and its one retry


def test_retry_total_is_not_capped_by_azure_cores_status_default(
    tmp_path: Path, azure: dict[str, str], seed: Any, admin: Admin
) -> None:
    """azure-core stops status retries at 3 by default; retry_total: 5 means five."""
    name = unique("five")
    value = new_value()
    seed.set_secret(name, value)
    with provider_for(tmp_path, azure, retry_total=5) as provider:
        ref = provider.ref_model.model_validate({"provider": "kv", "name": name})
        assert not isinstance(provider.fetch([ref])[ref], Exception)
        admin.post("faults", {"status": 503, "times": 5, "retry_after": "0", "match": "/secrets/"})
        got = provider.fetch([ref])[ref]
        assert not isinstance(got, Exception), got
        assert got.value == value.encode()
        assert admin.stats()["fault_503"] == 5


def test_list_forbidden_falls_back_to_reading(
    tmp_path: Path, azure: dict[str, str], seed: Any, admin: Admin, caplog: Any
) -> None:
    """An identity that may read but not list still syncs, the naive way, and says so."""
    name = unique("nolist")
    value = new_value()
    seed.set_secret(name, value)
    with provider_for(tmp_path, azure) as provider:
        ref = provider.ref_model.model_validate({"provider": "kv", "name": name})
        assert not isinstance(provider.fetch([ref])[ref], Exception)
        admin.post("faults", {"status": 403, "times": 1, "match": "/secrets"})
        assert provider.versions([ref]) == {ref: None}
        assert "not allowed to list secrets" in caplog.text
        before = admin.stats()
        assert provider.versions([ref]) == {ref: None}
        assert delta(before, admin.stats(), "list") == 0
        got = provider.fetch([ref])[ref]
        assert not isinstance(got, Exception) and got.value == value.encode()


# --------------------------------------------------------------------------- CLI


def test_cli_once_exit_codes(
    tmp_path: Path, azure: dict[str, str], seed: Any, admin: Admin, canary: str
) -> None:
    name = unique("cli")
    seed.set_secret(name, canary)
    secrets: list[dict[str, Any]] = [{"name": "api_key", "from": {"provider": "kv", "name": name}}]
    config = write_config(tmp_path, provider_block(azure), secrets)
    syncd = str(ROOT / ".venv" / "bin" / "syncd")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AZURE_")}
    ok = subprocess.run(
        [syncd, "--config", str(config), "--once", "--output", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "out" / "api_key").read_text() == canary
    assert canary not in ok.stdout + ok.stderr
    report = json.loads(ok.stdout)
    assert report["provider_calls"]["kv"]["get_secret"] == 1

    secrets.append({"name": "missing", "from": {"provider": "kv", "name": unique("absent")}})
    config = write_config(tmp_path, provider_block(azure), secrets)
    bad = subprocess.run(
        [syncd, "--config", str(config), "--once"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "not found" in bad.stdout + bad.stderr
    assert canary not in bad.stdout + bad.stderr
    assert (tmp_path / "out" / "api_key").read_text() == canary


# --------------------------------------------------------------------------- dead vault


def default_block(azure: dict[str, str], **extra: Any) -> dict[str, Any]:
    """The test double's block with every time and retry setting left at its default."""
    block = {k: v for k, v in provider_block(azure).items() if not k.startswith("retry_")}
    block.update(extra)
    return block


def dead_engine(tmp_path: Path, azure: dict[str, str], **extra: Any) -> Engine:
    """Three listed secrets and nine pinned ones (fetched without a listing)."""
    secrets = [
        {"name": f"l{i}", "from": {"provider": "kv", "name": f"listed-{i}"}} for i in range(3)
    ]
    secrets += [
        {"name": f"p{i}", "from": {"provider": "kv", "name": f"pinned-{i}", "version": "a" * 32}}
        for i in range(9)
    ]
    return Engine(load_config(write_config(tmp_path, default_block(azure, **extra), secrets)))


def test_hung_vault_costs_a_cycle_two_timeouts_with_defaults(
    tmp_path: Path, azure: dict[str, str]
) -> None:
    """A vault that accepts and never answers (the TLS handshake hangs): the listing tries
    twice (5 s each) and the hold fails the nine reads at once, instead of 2 x 10 s more."""
    with dead_port("hang") as port:
        engine = dead_engine(tmp_path, azure, vault_url=f"https://127.0.0.1:{port}")
        elapsed, result = timed_cycle(engine, bound=15.0)
        engine.close()
    errors = [str(i.error) for i in result.items]
    assert len(errors) == 12 and all("can't reach 127.0.0.1" in e for e in errors), errors
    assert sum("not sent, because" in e for e in errors) == 9
    assert 9.5 < elapsed < 15.0, f"{elapsed:.1f}s"


def test_hung_authority_costs_a_cycle_two_timeouts_with_defaults(
    tmp_path: Path, azure: dict[str, str], seed: Any
) -> None:
    """The vault answers, Entra ID hangs: the credential has the same transport settings
    (azure-identity's own wait 300 s), and the hold covers the other reads."""
    with dead_port("hang") as port:
        engine = dead_engine(tmp_path, azure, authority_host=f"https://127.0.0.1:{port}")
        elapsed, result = timed_cycle(engine, bound=15.0)
        engine.close()
    errors = [str(i.error) for i in result.items]
    assert len(errors) == 12 and all("authentication failed" in e for e in errors), errors
    assert sum("not sent, because" in e for e in errors) == 9
    assert 9.5 < elapsed < 15.0, f"{elapsed:.1f}s"


@pytest.mark.parametrize("kind", ["refuse", "reset"])
def test_dead_vault_fails_a_cycle_fast_with_defaults(
    tmp_path: Path, azure: dict[str, str], kind: str
) -> None:
    with dead_port(kind) as port:
        engine = dead_engine(tmp_path, azure, vault_url=f"https://127.0.0.1:{port}")
        elapsed, result = timed_cycle(engine, bound=3.0)
        engine.close()
    assert all("can't reach 127.0.0.1" in str(i.error) for i in result.items)
    assert elapsed < 3.0, f"{elapsed:.1f}s"


def test_time_settings_take_durations(tmp_path: Path, azure: dict[str, str]) -> None:
    from syncd.errors import ConfigError

    secrets = [{"name": "x", "from": {"provider": "kv", "name": "x"}}]
    block = default_block(
        azure, timeout="30s", retry_backoff_factor="250ms", retry_backoff_max="1m"
    )
    config = load_config(write_config(tmp_path, block, secrets)).providers["kv"][1]
    assert (config.timeout, config.retry_backoff_factor, config.retry_backoff_max) == (
        30.0,
        0.25,
        60.0,
    )
    with pytest.raises(ConfigError, match="timeout"):
        load_config(write_config(tmp_path, default_block(azure, timeout="nan"), secrets))


def test_check_names_a_missing_sdk_with_file_and_line(
    tmp_path: Path, azure: dict[str, str]
) -> None:
    secrets = [{"name": "x", "from": {"provider": "kv", "name": "x"}}]
    config = write_config(tmp_path, default_block(azure), secrets)
    line = config.read_text().splitlines().index("    type: azure-key-vault") + 1
    run = check_without("azure.keyvault.secrets", config)
    assert run.returncode == 1, run.stdout + run.stderr
    assert f"{config}:{line}: providers.kv.type:" in run.stderr
    assert "needs azure.keyvault.secrets: pip install 'syncd[azure]'" in run.stderr
