"""The vault provider against real OpenBao servers (``scripts/backends up vault``).

Three servers (see ``scripts/backends.d/vault.sh``): a dev server for reading, change
detection, quotas and namespaces; a dev server with TLS; and a non-dev server (real config
file, initialised and unsealed by the script) for AppRole, JWT and Kubernetes auth, token
renewal and expiry, and 5xx retries (it is sealed for a moment in one test).

Kubernetes auth needs a Kubernetes API server for its TokenReview call; here a small local
HTTP server answers TokenReview, so OpenBao's real kubernetes auth plugin runs end to end,
but against a stand-in API server, not a real cluster.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import hvac
import jwt as pyjwt
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from providers.base import ProviderContext, Unverified, json_field
from providers.vault import VaultProvider, VaultProviderConfig, VaultRef
from providers.vault.metadata import timestamp
from syncd.calls import CallCounter
from syncd.config import load_config
from syncd.engine import Engine
from syncd.errors import ProviderError
from syncd.model import Fetched
from tests.certs import certificate, days_from_now, self_signed_ca
from tests.conftest import ROOT, backend_env, new_value
from tests.integration.faults import check_without, dead_port, timed_cycle

pytestmark = pytest.mark.backend("vault")

SYNCD = ROOT / ".venv" / "bin" / "syncd"


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    return backend_env("vault")


@pytest.fixture(scope="module")
def dev(env: dict[str, str]) -> hvac.Client:
    """Root client of the dev server (test setup only; the provider is what is tested)."""
    return hvac.Client(url=env["VAULT_ADDR"], token=env["VAULT_TOKEN"])


@pytest.fixture(scope="module")
def prod(env: dict[str, str]) -> hvac.Client:
    """Root client of the non-dev server."""
    return hvac.Client(url=env["SYNCD_VAULT_PROD_ADDR"], token=env["SYNCD_VAULT_PROD_TOKEN"])


@pytest.fixture
def prefix() -> str:
    """A fresh KV folder per test, so tests never see each other's secrets."""
    return f"t-{uuid.uuid4().hex[:12]}"


class Harness:
    """Builds providers in a scratch folder and reads their call counts and statuses."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.calls = CallCounter()
        self.statuses: list[tuple[str, str]] = []
        self.calls.add_listener(lambda _c, op, status: self.statuses.append((op, status)))
        self.providers: list[VaultProvider] = []

    def provider(self, **config: Any) -> VaultProvider:
        cfg = VaultProviderConfig.model_validate({"type": "vault", **config})
        context = ProviderContext(name="vault", base_dir=self.tmp_path, calls=self.calls)
        provider = VaultProvider(cfg, context=context)
        self.providers.append(provider)
        return provider

    def file(self, name: str, text: str) -> str:
        path = self.tmp_path / name
        path.write_text(text)
        return name

    def counts(self) -> dict[str, int]:
        return self.calls.snapshot().get("vault", {})

    def close(self) -> None:
        for provider in self.providers:
            provider.close()


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path)
    yield harness
    harness.close()


def ref(path: str, **kw: Any) -> VaultRef:
    return VaultRef(provider="vault", path=path, **kw)


def value_of(result: Fetched | ProviderError | str | None) -> bytes:
    assert isinstance(result, Fetched), f"expected a value, got {result!r}"
    return result.value


def numbers(tokens: Mapping[VaultRef, object]) -> dict[VaultRef, object]:
    """The version numbers of ``<version>@<created_time>`` tokens (anything else as it is)."""
    return {r: t.split("@")[0] if isinstance(t, str) else t for r, t in tokens.items()}


def error_of(result: object) -> str:
    assert isinstance(result, ProviderError), f"expected an error, got {result!r}"
    return str(result)


def dev_provider(h: Harness, env: dict[str, str], **config: Any) -> VaultProvider:
    token = h.file("token", env["VAULT_TOKEN"])
    return h.provider(
        addr=env["VAULT_ADDR"], auth={"method": "token", "token_file": token}, **config
    )


def put(client: hvac.Client, path: str, data: dict[str, Any], mount: str = "secret") -> int:
    response = client.secrets.kv.v2.create_or_update_secret(
        path=path, secret=data, mount_point=mount
    )
    return int(response["data"]["version"])


def child_token(client: hvac.Client, *, policies: list[str], **kw: Any) -> str:
    response = client.auth.token.create(policies=policies, no_parent=True, **kw)
    return str(response["auth"]["client_token"])


# --------------------------------------------------------------------------- reading


def test_kv2_field_and_whole_map_share_one_read(
    h: Harness, env: dict[str, str], dev: hvac.Client, prefix: str
) -> None:
    password = new_value()
    put(dev, f"{prefix}/db", {"user": "app", "password": password, "port": 5432})
    p = dev_provider(h, env)
    field, whole = ref(f"{prefix}/db", key="password"), ref(f"{prefix}/db")
    versions = p.versions([field, whole])
    assert numbers(versions) == {field: "1", whole: "1"}
    got = p.fetch([field, whole])
    assert value_of(got[field]) == password.encode()
    assert json.loads(value_of(got[whole])) == {"user": "app", "password": password, "port": 5432}
    assert got[field].token == versions[field]  # type: ignore[union-attr]
    assert h.counts() == {"lookup_self": 1, "read_metadata": 1, "read": 1}


def test_kv1_reads_without_versions(
    h: Harness, env: dict[str, str], dev: hvac.Client, prefix: str
) -> None:
    value = new_value()
    dev.secrets.kv.v1.create_or_update_secret(
        path=f"{prefix}/api", secret={"token": value}, mount_point="kv1"
    )
    p = dev_provider(h, env, mount="kv1", kv_version=1)
    r = ref(f"{prefix}/api", key="token")
    assert p.versions([r]) == {r: None}
    # without metadata doctor can't tell it's there: a warning, never a pass
    checked = p.check([r])[r]
    assert isinstance(checked, Unverified) and "no metadata to look at" in checked.reason
    got = p.fetch([r])
    assert value_of(got[r]) == value.encode()
    assert got[r].token is None  # type: ignore[union-attr]
    assert "read_metadata" not in h.counts()
    pinned = ref(f"{prefix}/api", key="token", version=1)
    assert "needs a KV v2 mount" in error_of(p.fetch([pinned])[pinned])


def test_binary_value_with_decode_base64(
    h: Harness, env: dict[str, str], dev: hvac.Client, prefix: str
) -> None:
    blob = secrets.token_bytes(64) + b"\x00\xff"
    put(dev, f"{prefix}/tls", {"key.der": base64.b64encode(blob).decode()})
    p = dev_provider(h, env)
    r = ref(f"{prefix}/tls", key="key.der", decode="base64")
    assert value_of(p.fetch([r])[r]) == blob


def test_ref_mount_override_and_namespace(
    h: Harness, env: dict[str, str], dev: hvac.Client, prefix: str
) -> None:
    value = new_value()
    dev.secrets.kv.v1.create_or_update_secret(
        path=f"{prefix}/x", secret={"v": value}, mount_point="kv1"
    )
    p = dev_provider(h, env, kv_version=1, mount="nowhere")
    r = ref(f"{prefix}/x", key="v", mount="kv1")
    assert value_of(p.fetch([r])[r]) == value.encode()
    assert r.describe() == f"vault:kv1/{prefix}/x#v"

    # a namespace with its own KV mount (OpenBao namespaces)
    dev.sys.create_namespace(prefix)
    ns = hvac.Client(url=env["VAULT_ADDR"], token=env["VAULT_TOKEN"], namespace=prefix)
    ns.sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
    put(ns, "app", {"k": value})
    in_ns = dev_provider(h, env, namespace=prefix)
    r2 = ref("app", key="k")
    assert numbers(in_ns.versions([r2])) == {r2: "1"}
    assert value_of(in_ns.fetch([r2])[r2]) == value.encode()
    outside = dev_provider(h, env)
    assert "not found" in error_of(outside.versions([r2])[r2])


def test_version_pins(h: Harness, env: dict[str, str], dev: hvac.Client, prefix: str) -> None:
    first, second = new_value(), new_value()
    put(dev, f"{prefix}/k", {"v": first})
    put(dev, f"{prefix}/k", {"v": second})
    p = dev_provider(h, env)
    pinned, latest = ref(f"{prefix}/k", key="v", version=1), ref(f"{prefix}/k", key="v")
    assert numbers(p.versions([pinned, latest])) == {pinned: "1", latest: "2"}
    assert h.counts()["read_metadata"] == 1  # the pin shares the path's metadata read
    got = p.fetch([pinned, latest])
    assert value_of(got[pinned]) == first.encode()
    assert value_of(got[latest]) == second.encode()
    assert h.counts()["read"] == 2  # two versions of one path: two reads
    missing = ref(f"{prefix}/k", key="v", version=9)
    assert "not found" in error_of(p.fetch([missing])[missing])


def test_folder_listing_pages_and_stops_early(
    h: Harness, env: dict[str, str], dev: hvac.Client, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("providers.vault.LIST_PAGE", 2)
    for name in ("a", "b", "c", "d", "e", "f", "g", "h"):
        put(dev, f"{prefix}/{name}", {"v": new_value()})
    put(dev, f"{prefix}/c", {"v": new_value()})
    put(dev, f"{prefix}/b/nested", {"v": new_value()})  # "b/" is a sub-folder entry
    p = dev_provider(h, env)
    refs = [ref(f"{prefix}/{name}", key="v") for name in ("a", "c", "e")]
    assert numbers(p.versions(refs)) == dict(zip(refs, ["1", "2", "1"], strict=True))
    # pages [a, b] [b/, c] [d, e]: stops once "e" is passed, never reads f, g, h
    assert h.counts() == {"lookup_self": 1, "list_metadata": 3}


# --------------------------------------------------------------------------- version tokens


@pytest.mark.parametrize("listing", [True, False], ids=["folder-list", "metadata-per-secret"])
def test_recreated_secret_gets_its_new_value(
    tmp_path: Path, env: dict[str, str], dev: hvac.Client, prefix: str, listing: bool
) -> None:
    """Deleted (metadata and all) and written again, a secret restarts at version 1: its new
    value must still be synced, by the current and by a pinned reference."""
    first, other = new_value(), new_value()
    put(dev, f"{prefix}/re", {"v": first})
    put(dev, f"{prefix}/other", {"v": other})  # two in the folder: the LIST path is taken
    config = _config(
        tmp_path,
        env,
        [
            {"name": "re", "from": {"provider": "vault", "path": f"{prefix}/re", "key": "v"}},
            {
                "name": "pinned",
                "from": {"provider": "vault", "path": f"{prefix}/re", "key": "v", "version": 1},
            },
            {"name": "other", "from": {"provider": "vault", "path": f"{prefix}/other", "key": "v"}},
        ],
        list_metadata=listing,
    )
    engine = Engine(load_config(config))
    try:
        assert engine.run_cycle().ok
        assert (tmp_path / "out" / "re").read_text() == first
        dev.secrets.kv.v2.delete_metadata_and_all_versions(path=f"{prefix}/re")
        second = new_value()
        assert put(dev, f"{prefix}/re", {"v": second}) == 1  # version 1 again
        result = engine.run_cycle()
        assert result.ok, [i.error for i in result.items]
        actions = {i.name: i.action for i in result.items}
        assert actions == {"re": "update", "pinned": "update", "other": "unchanged"}
        assert (tmp_path / "out" / "re").read_text() == second
        assert (tmp_path / "out" / "pinned").read_text() == second
        assert (tmp_path / "out" / "other").read_text() == other
    finally:
        engine.close()


def test_every_path_to_a_token_agrees(
    h: Harness, env: dict[str, str], dev: hvac.Client, prefix: str
) -> None:
    """Folder LIST, metadata read, data read and a pin give one token for one version: two
    paths that disagreed would make the engine fetch every cycle."""
    put(dev, f"{prefix}/a", {"v": new_value()})
    put(dev, f"{prefix}/a", {"v": new_value()})
    put(dev, f"{prefix}/b", {"v": new_value()})
    latest, pinned = ref(f"{prefix}/a", key="v"), ref(f"{prefix}/a", key="v", version=2)
    sibling = ref(f"{prefix}/b", key="v")
    listing = dev_provider(h, env)
    listed = listing.versions([latest, pinned, sibling])
    assert h.counts() == {"lookup_self": 1, "list_metadata": 1}
    per_secret = dev_provider(h, env, list_metadata=False).versions([latest, pinned])
    fetched = listing.fetch([latest, pinned])
    token = listed[latest]
    assert isinstance(token, str) and token.startswith("2@")
    created = dev.secrets.kv.v2.read_secret_metadata(path=f"{prefix}/a")["data"]["versions"]["2"]
    assert token == f"2@{created['created_time']}"
    assert listed[pinned] == per_secret[latest] == per_secret[pinned] == token
    assert {r: f.token for r, f in fetched.items()} == {latest: token, pinned: token}  # type: ignore[union-attr]
    old = ref(f"{prefix}/a", key="v", version=1)
    assert listing.versions([old])[old] != token
    gone = ref(f"{prefix}/a", key="v", version=7)
    assert "version 7 not found" in error_of(listing.versions([gone])[gone])


def test_delete_version_after_is_the_expiry_not_a_deletion(
    tmp_path: Path, env: dict[str, str], dev: hvac.Client, prefix: str
) -> None:
    """``delete_version_after`` gives a new version a future ``deletion_time``: the version
    is readable until then (synced, not "deleted") and that time is its expiry, by every
    path to the metadata and in a new process that reads no value; a certificate in the
    value that ends sooner wins, in that new process too (it is stored on the version)."""
    dev.secrets.kv.v2.update_metadata(path=f"{prefix}/tls", delete_version_after="2h")
    sooner = days_from_now(0.01)
    put(dev, f"{prefix}/tls", {"crt": certificate(sooner).decode(), "key": new_value()})
    put(dev, f"{prefix}/plain", {"v": new_value()})  # two in the folder: the LIST path is taken
    record = dev.secrets.kv.v2.read_secret_metadata(path=f"{prefix}/tls")["data"]
    deletion = timestamp(record["versions"]["1"]["deletion_time"])
    assert deletion is not None and deletion > time.time() + 3600
    config = _config(
        tmp_path,
        env,
        [
            {
                "name": "tls",
                "data": {
                    "crt": {"provider": "vault", "path": f"{prefix}/tls", "key": "crt"},
                    "key": {"provider": "vault", "path": f"{prefix}/tls", "key": "key"},
                },
            },
            {"name": "plain", "from": {"provider": "vault", "path": f"{prefix}/plain", "key": "v"}},
        ],
    )
    engine = Engine(load_config(config))
    try:
        first = engine.run_cycle()
        assert first.ok, [i.error for i in first.items]
        expires = {i.name: i.expires for i in first.items}
        assert expires == {"tls": {"crt": sooner.timestamp(), "key": deletion}, "plain": {}}
        second = engine.run_cycle()
        assert second.calls["vault"].get("read") == first.calls["vault"].get("read")
        assert {i.name: i.expires for i in second.items} == expires
    finally:
        engine.close()
    restarted = Engine(load_config(config))
    try:
        third = restarted.run_cycle()
        assert "read" not in third.calls["vault"]
        assert {i.name: i.expires for i in third.items}["tls"] == {
            "crt": sooner.timestamp(),
            "key": deletion,
        }
    finally:
        restarted.close()
    crt, plain = ref(f"{prefix}/tls", key="crt"), ref(f"{prefix}/plain", key="v")
    harness = Harness(tmp_path)
    try:
        for list_metadata in (True, False):
            p = dev_provider(harness, env, list_metadata=list_metadata)
            assert all(isinstance(t, str) for t in p.versions([crt, plain]).values())
            assert p.expiry([crt, plain]) == {crt: deletion}
    finally:
        harness.close()


def test_one_json_rule_for_fields_and_the_whole_map(
    h: Harness, env: dict[str, str], dev: hvac.Client, prefix: str
) -> None:
    """A string field is its text; any other field, and the whole map, compact JSON with
    sorted keys and non-ASCII as is: the same bytes as every other provider's JSON pick."""
    secret = {
        "s": "two words",
        "b": {"z": 1, "y": "\u00e9t\u00e9", "x": [True, None, 1.5]},
        "n": 5432,
        "t": False,
    }
    put(dev, f"{prefix}/doc", secret)
    p = dev_provider(h, env)
    refs = {k: ref(f"{prefix}/doc", key=k) for k in secret}
    whole = ref(f"{prefix}/doc")
    got = p.fetch([*refs.values(), whole])
    nested = '{"x":[true,null,1.5],"y":"\u00e9t\u00e9","z":1}'
    assert value_of(got[whole]) == f'{{"b":{nested},"n":5432,"s":"two words","t":false}}'.encode()
    assert value_of(got[refs["b"]]) == nested.encode()
    for key, r in refs.items():
        assert value_of(got[r]) == json_field(json.dumps(secret), key), key


# --------------------------------------------------------------------------- bad input


def test_bad_inputs_are_one_error_per_ref(
    h: Harness, env: dict[str, str], dev: hvac.Client, prefix: str, canary: str
) -> None:
    put(dev, f"{prefix}/app", {"password": canary, "nothing": None})
    put(dev, f"{prefix}/gone", {"v": canary})
    dev.secrets.kv.v2.delete_latest_version_of_secret(path=f"{prefix}/gone", mount_point="secret")
    p = dev_provider(h, env)
    good = ref(f"{prefix}/app", key="password")
    no_path = ref(f"{prefix}/missing", key="x")
    no_field = ref(f"{prefix}/app", key="user")
    null = ref(f"{prefix}/app", key="nothing")
    deleted = ref(f"{prefix}/gone", key="v")
    not_b64 = ref(f"{prefix}/app", key="password", decode="base64")
    versions = p.versions([good, no_path, deleted])
    assert numbers(versions)[good] == "1"
    assert f"secret/metadata/{prefix}/missing: not found" in error_of(versions[no_path])
    assert "current version 1 is deleted" in error_of(versions[deleted])
    got = p.fetch([good, no_path, no_field, null, deleted, not_b64])
    assert value_of(got[good]) == canary.encode()
    messages = {
        no_path: f"secret/data/{prefix}/missing: not found",
        no_field: f"secret/data/{prefix}/app: field 'user' not found",
        null: "field 'nothing' is null",
        deleted: "the current version is deleted",
        not_b64: "not valid base64",
    }
    for r, expected in messages.items():
        text = error_of(got[r])
        assert expected in text
        assert text.startswith(f"provider 'vault', {r.describe()}: ")
        assert canary not in text
    assert h.counts()["read"] == 3  # app, missing, gone: one read per distinct path


def test_permission_denied_names_the_path(
    h: Harness, env: dict[str, str], dev: hvac.Client, prefix: str
) -> None:
    dev.sys.create_or_update_policy(
        name=f"only-{prefix}",
        policy=f'path "secret/data/{prefix}/ok" {{ capabilities = ["read"] }}',
    )
    token = child_token(dev, policies=[f"only-{prefix}"], ttl="1h")
    put(dev, f"{prefix}/ok", {"v": new_value()})
    put(dev, f"{prefix}/no", {"v": new_value()})
    p = h.provider(
        addr=env["VAULT_ADDR"], auth={"method": "token", "token_file": h.file("t", token)}
    )
    ok, no = ref(f"{prefix}/ok", key="v"), ref(f"{prefix}/no", key="v")
    # metadata is not granted: change detection falls back to read-and-compare, no error
    assert p.versions([ok, no]) == {ok: None, no: None}
    got = p.fetch([ok, no])
    assert isinstance(got[ok], Fetched)
    assert f"secret/data/{prefix}/no: permission denied" in error_of(got[no])
    assert h.counts().get("login", 0) == 0  # a denied path never triggers a login


def test_bad_token_and_unreachable_server(h: Harness, env: dict[str, str], prefix: str) -> None:
    r = ref(f"{prefix}/x", key="v")
    wrong = h.provider(
        addr=env["VAULT_ADDR"], auth={"method": "token", "token_file": h.file("w", "nope")}
    )
    text = error_of(wrong.versions([r])[r])
    assert "the token was refused (HTTP 403" in text and r.describe() in text

    port = _closed_port()
    down = h.provider(
        addr=f"http://127.0.0.1:{port}",
        retries=2,
        backoff="10ms",
        auth={"method": "token", "token_file": h.file("t", env["VAULT_TOKEN"])},
    )
    result = down.versions([r])[r]
    assert isinstance(result, ProviderError) and result.transient
    # a refused connection is retried once, whatever 'retries' says (that is for 429/5xx)
    assert f"Vault at http://127.0.0.1:{port} is unreachable" in str(result)
    assert "(after 2 attempts)" in str(result)
    assert h.calls.snapshot()["vault"]["lookup_self"] == 1 + 2


def test_config_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="auth"):
        VaultProviderConfig.model_validate({"type": "vault", "auth": {"method": "ldap"}})
    with pytest.raises(ValueError, match="path"):
        VaultRef(provider="vault", path="//")
    with pytest.raises(ValueError, match="version"):
        VaultRef(provider="vault", path="a", version=0)


# --------------------------------------------------------------------------- TLS


def test_tls_good_ca_works_wrong_ca_fails(
    h: Harness, env: dict[str, str], prefix: str, tmp_path: Path
) -> None:
    tls = hvac.Client(
        url=env["SYNCD_VAULT_TLS_ADDR"],
        token=env["SYNCD_VAULT_TLS_TOKEN"],
        verify=env["SYNCD_VAULT_TLS_CACERT"],
    )
    value = new_value()
    put(tls, f"{prefix}/t", {"v": value})
    token = h.file("tls-token", env["SYNCD_VAULT_TLS_TOKEN"])
    auth = {"method": "token", "token_file": token}
    r = ref(f"{prefix}/t", key="v")
    good = h.provider(
        addr=env["SYNCD_VAULT_TLS_ADDR"], ca_cert=env["SYNCD_VAULT_TLS_CACERT"], auth=auth
    )
    assert numbers(good.versions([r])) == {r: "1"}
    assert value_of(good.fetch([r])[r]) == value.encode()

    other_ca = tmp_path / "other-ca.pem"
    other_ca.write_bytes(_self_signed_ca())
    wrong = h.provider(
        addr=env["SYNCD_VAULT_TLS_ADDR"], ca_cert=str(other_ca), auth=auth, retries=3
    )
    text = error_of(wrong.versions([r])[r])
    assert "certificate verify failed" in text and "set ca_cert" in text
    assert h.statuses.count(("lookup_self", "error")) == 1  # a TLS failure is not retried

    with pytest.raises(Exception, match="does not exist"):
        h.provider(addr=env["SYNCD_VAULT_TLS_ADDR"], ca_cert="missing.pem", auth=auth)


# --------------------------------------------------------------------------- retries


def test_throttling_is_retried_with_backoff(
    h: Harness, env: dict[str, str], dev: hvac.Client, prefix: str
) -> None:
    mount = f"q{prefix}"
    dev.sys.enable_secrets_engine("kv", path=mount, options={"version": "2"})
    values = {f"s{i}": new_value() for i in range(6)}
    for name, value in values.items():
        put(dev, name, {"v": value}, mount=mount)
    dev.write_data(
        f"sys/quotas/rate-limit/{mount}", data={"path": f"{mount}/", "rate": 2, "interval": "1s"}
    )
    try:
        p = dev_provider(h, env, mount=mount, retries=8, backoff="300ms", concurrency=6)
        refs = [ref(name, key="v") for name in values]
        got = p.fetch(refs)
        for r in refs:
            assert value_of(got[r]) == values[r.path].encode()
        throttled = h.statuses.count(("read", "throttled"))
        assert throttled >= 1
        assert h.counts()["read"] == 6 + throttled

        impatient = dev_provider(h, env, mount=mount, retries=0, concurrency=6)
        failed = [v for v in impatient.fetch(refs).values() if isinstance(v, ProviderError)]
        assert failed and all("throttled (HTTP 429)" in str(e) and e.transient for e in failed)
    finally:
        dev.delete(f"sys/quotas/rate-limit/{mount}")


def test_sealed_server_5xx_is_retried_then_transient(
    h: Harness, env: dict[str, str], prod: hvac.Client, prefix: str
) -> None:
    value = new_value()
    put(prod, f"{prefix}/s", {"v": value})
    token = h.file("t", env["SYNCD_VAULT_PROD_TOKEN"])
    r = ref(f"{prefix}/s", key="v")
    quick = h.provider(
        addr=env["SYNCD_VAULT_PROD_ADDR"],
        retries=2,
        backoff="20ms",
        auth={"method": "token", "token_file": token},
    )
    patient = h.provider(
        addr=env["SYNCD_VAULT_PROD_ADDR"],
        retries=8,
        backoff="200ms",
        auth={"method": "token", "token_file": token},
    )
    assert numbers(quick.versions([r])) == {r: "1"} and numbers(patient.versions([r])) == {r: "1"}
    prod.sys.seal()
    unsealer = threading.Timer(
        1.0, lambda: prod.sys.submit_unseal_key(env["SYNCD_VAULT_PROD_UNSEAL_KEY"])
    )
    try:
        result = quick.fetch([r])[r]
        assert isinstance(result, ProviderError) and result.transient
        assert "server error HTTP 503" in str(result) and "after 3 attempts" in str(result)
        unsealer.start()
        assert value_of(patient.fetch([r])[r]) == value.encode()  # retried until unsealed
        assert h.statuses.count(("read", "error")) >= 3 + 1
    finally:
        unsealer.join()
        if prod.sys.is_sealed():
            prod.sys.submit_unseal_key(env["SYNCD_VAULT_PROD_UNSEAL_KEY"])


# --------------------------------------------------------------------------- dead servers


class _HungVault(BaseHTTPRequestHandler):
    """A Vault that answers ``lookup-self`` (so a token is in hand) and hangs on the rest."""

    release: ClassVar[threading.Event]
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path.startswith("/v1/auth/token/lookup-self"):
            body = json.dumps({"data": {"ttl": 0, "renewable": False}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        type(self).release.wait(60)  # accepted, read, never answered

    def log_message(self, *args: Any) -> None:
        return


def test_hung_server_costs_a_cycle_two_timeouts_with_defaults(tmp_path: Path) -> None:
    """Default settings, 20 secrets, a server that accepts and never answers: the first
    reads time out twice (5 s each), and the hold fails the others at once."""
    handler = type("Hung", (_HungVault,), {"release": threading.Event()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    addr = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        engine = Engine(load_config(_dead_config(tmp_path, addr, 20)))
        elapsed, result = timed_cycle(engine, bound=15.0)
        engine.close()
    finally:
        handler.release.set()
        server.shutdown()
        server.server_close()
    errors = [i.error or "" for i in result.items]
    assert len(errors) == 20 and all(
        f"Vault at {addr} did not answer within 5 s" in e for e in errors
    )
    calls = result.calls["vault"]
    assert calls["lookup_self"] == 1
    assert calls["read_metadata"] <= 2 * 8, "only the first pool-full of reads is sent, twice"
    assert 9.5 < elapsed < 15.0, f"{elapsed:.1f}s"


@pytest.mark.parametrize("kind", ["refused", "reset"])
def test_dead_server_fails_a_cycle_fast_with_defaults(tmp_path: Path, kind: str) -> None:
    """A port nobody listens on, or a server that resets every connection: under a second."""
    with dead_port("reset") as port:
        target = _closed_port() if kind == "refused" else port
        engine = Engine(load_config(_dead_config(tmp_path, f"http://127.0.0.1:{target}", 5)))
        elapsed, result = timed_cycle(engine, bound=3.0)
        engine.close()
    assert all("is unreachable" in (i.error or "") for i in result.items)
    assert result.calls["vault"] == {"lookup_self": 2}  # tried, retried once, then given up
    assert elapsed < 3.0, f"{elapsed:.1f}s"


def _dead_config(tmp_path: Path, addr: str, n: int) -> Path:
    (tmp_path / "token").write_text("not-a-real-token")
    doc = {
        "providers": {
            "vault": {
                "type": "vault",
                "addr": addr,
                "auth": {"method": "token", "token_file": "token"},
            }
        },
        "target": {"type": "files", "directory": "out"},
        "secrets": [
            {"name": f"s{i}", "from": {"provider": "vault", "path": f"f{i}/s", "key": "v"}}
            for i in range(n)
        ],
    }
    path = tmp_path / "syncd.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


# --------------------------------------------------------------------------- auth + tokens


def _approle(prod: hvac.Client, name: str, **role: Any) -> tuple[str, str]:
    prod.auth.approle.create_or_update_approle(
        role_name=name, token_policies=["syncd-read"], **role
    )
    role_id = prod.auth.approle.read_role_id(role_name=name)["data"]["role_id"]
    secret_id = prod.auth.approle.generate_secret_id(role_name=name)["data"]["secret_id"]
    return role_id, secret_id


def _approle_provider(
    h: Harness, env: dict[str, str], prod: hvac.Client, name: str, **role: Any
) -> VaultProvider:
    role_id, secret_id = _approle(prod, name, **role)
    return h.provider(
        addr=env["SYNCD_VAULT_PROD_ADDR"],
        auth={"method": "approle", "role_id": role_id, "secret_id_file": h.file("sid", secret_id)},
    )


def test_approle_logs_in_once_per_process(
    h: Harness, env: dict[str, str], prod: hvac.Client, prefix: str
) -> None:
    value = new_value()
    put(prod, f"{prefix}/a", {"v": value})
    p = _approle_provider(h, env, prod, prefix, token_ttl="1h")
    r = ref(f"{prefix}/a", key="v")
    for _ in range(3):  # three cycles
        assert numbers(p.versions([r])) == {r: "1"}
    assert value_of(p.fetch([r])[r]) == value.encode()
    assert h.counts() == {"login": 1, "read_metadata": 3, "read": 1}
    p.close()
    assert h.counts()["revoke"] == 1

    bad = h.provider(
        addr=env["SYNCD_VAULT_PROD_ADDR"],
        auth={"method": "approle", "role_id": "nope", "secret_id_file": h.file("x", "nope")},
    )
    text = error_of(bad.versions([r])[r])
    assert "login with approle failed: HTTP 400" in text and r.describe() in text
    missing = h.provider(
        addr=env["SYNCD_VAULT_PROD_ADDR"],
        auth={"method": "approle", "role_id": "x", "secret_id_file": "absent"},
    )
    assert "can't read secret_id_file" in error_of(missing.versions([r])[r])


def test_renewal_at_two_thirds_of_ttl_then_login_at_max_ttl(
    h: Harness, env: dict[str, str], prod: hvac.Client, prefix: str
) -> None:
    put(prod, f"{prefix}/r", {"v": new_value()})
    # TTLs of seconds, not minutes, keep the test short; 6 s / 10 s rather than less leaves
    # every timer at least a second of slack on a loaded machine
    p = _approle_provider(h, env, prod, prefix, token_ttl="6s", token_max_ttl="10s")
    r = ref(f"{prefix}/r", key="v")
    assert numbers(p.versions([r])) == {r: "1"}
    assert h.counts() == {"login": 1, "read_metadata": 1}
    time.sleep(5.0)  # past 2/3 of 6 s: the timer renewed between "cycles"
    assert h.counts().get("renew") == 1
    # renewed again at ~8 s but capped by the 10 s max TTL (2 s granted), so the next step,
    # at ~9.3 s, was a fresh login
    time.sleep(6.0)
    assert h.counts()["login"] == 2 and h.counts()["renew"] == 2
    assert numbers(p.versions([r])) == {
        r: "1"
    }  # the token in hand works after the first one's max TTL
    assert h.counts()["read_metadata"] == 2


def test_revoked_token_logs_in_again_once(
    h: Harness, env: dict[str, str], prod: hvac.Client, prefix: str
) -> None:
    put(prod, f"{prefix}/v", {"v": new_value()})
    p = _approle_provider(h, env, prod, prefix, token_ttl="1h")
    r = ref(f"{prefix}/v", key="v")
    assert numbers(p.versions([r])) == {r: "1"}
    prod.auth.token.revoke(p._client.token)
    assert numbers(p.versions([r])) == {r: "1"}
    assert h.counts()["login"] == 2 and h.counts()["lookup_self"] == 1


def test_expired_static_token_is_reported_then_rereads_token_file(
    h: Harness, env: dict[str, str], prod: hvac.Client, prefix: str
) -> None:
    put(prod, f"{prefix}/e", {"v": new_value()})
    # 4 s: the first call must land inside it on a loaded machine, and the wait stays short
    short = child_token(prod, policies=["syncd-read"], ttl="4s", renewable=False)
    token_file = h.file("token", short)
    p = h.provider(
        addr=env["SYNCD_VAULT_PROD_ADDR"], auth={"method": "token", "token_file": token_file}
    )
    r = ref(f"{prefix}/e", key="v")
    assert numbers(p.versions([r])) == {r: "1"}
    time.sleep(4.5)
    text = error_of(p.versions([r])[r])
    assert "the token was refused (HTTP 403" in text and "expired, revoked or wrong" in text
    h.file("token", child_token(prod, policies=["syncd-read"], ttl="1h"))  # an agent rotates it
    assert numbers(p.versions([r])) == {r: "1"}


def test_renewable_static_token_is_renewed(
    h: Harness, env: dict[str, str], prod: hvac.Client, prefix: str
) -> None:
    put(prod, f"{prefix}/n", {"v": new_value()})
    # 6 s: renewed at two thirds (4 s), so a renewal may run 2 s late on a loaded machine
    token = child_token(prod, policies=["syncd-read"], ttl="6s", explicit_max_ttl="1h")
    p = h.provider(
        addr=env["SYNCD_VAULT_PROD_ADDR"],
        auth={"method": "token", "token_file": h.file("t", token)},
    )
    r = ref(f"{prefix}/n", key="v")
    assert numbers(p.versions([r])) == {r: "1"}
    time.sleep(10)  # past the original TTL: alive only because it was renewed (at 4 s, 8 s)
    assert numbers(p.versions([r])) == {r: "1"}
    assert h.counts()["renew"] >= 2 and h.counts()["lookup_self"] == 1


def _rsa_key() -> tuple[rsa.RSAPrivateKey, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key, public.decode()


def test_jwt_auth(h: Harness, env: dict[str, str], prod: hvac.Client, prefix: str) -> None:
    key, public = _rsa_key()
    mount = f"jwt-{prefix}"
    prod.sys.enable_auth_method("jwt", path=mount)
    prod.write(f"auth/{mount}/config", jwt_validation_pubkeys=[public], bound_issuer="syncd-tests")
    prod.write(
        f"auth/{mount}/role/ci",
        role_type="jwt",
        user_claim="sub",
        bound_audiences=["syncd"],
        token_policies=["syncd-read"],
        token_ttl="1h",
    )
    value = new_value()
    put(prod, f"{prefix}/j", {"v": value})
    claims = {
        "iss": "syncd-tests",
        "aud": "syncd",
        "sub": "ci-job",
        "iat": int(time.time()),
        "exp": int(time.time()) + 600,
    }
    token = pyjwt.encode(claims, key, algorithm="RS256")
    p = h.provider(
        addr=env["SYNCD_VAULT_PROD_ADDR"],
        auth={"method": "jwt", "role": "ci", "mount": mount, "jwt_file": h.file("jwt", token)},
    )
    r = ref(f"{prefix}/j", key="v")
    assert value_of(p.fetch([r])[r]) == value.encode()
    assert h.counts()["login"] == 1

    stranger, _ = _rsa_key()
    forged = pyjwt.encode(claims, stranger, algorithm="RS256")
    bad = h.provider(
        addr=env["SYNCD_VAULT_PROD_ADDR"],
        auth={"method": "jwt", "role": "ci", "mount": mount, "jwt_file": h.file("f", forged)},
    )
    text = error_of(bad.fetch([r])[r])
    assert "login with jwt failed" in text and forged not in text


class _TokenReview(BaseHTTPRequestHandler):
    """A stand-in Kubernetes API server: answers TokenReview for the tokens it issued."""

    issued: ClassVar[dict[str, str]] = {}  # token -> "namespace:name"
    reviews: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        token = body["spec"]["token"]
        type(self).reviews.append(self.path)
        who = type(self).issued.get(token)
        status: dict[str, Any] = {"authenticated": False, "error": "token not issued here"}
        if who:
            ns, name = who.split(":")
            status = {
                "authenticated": True,
                "user": {
                    "username": f"system:serviceaccount:{ns}:{name}",
                    "uid": f"uid-{name}",
                    "groups": ["system:serviceaccounts", f"system:serviceaccounts:{ns}"],
                },
            }
        out = json.dumps(
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "status": status}
        ).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args: Any) -> None:
        return


def _sa_token(key: rsa.RSAPrivateKey, ns: str, name: str) -> str:
    claims = {
        "iss": "kubernetes/serviceaccount",
        "sub": f"system:serviceaccount:{ns}:{name}",
        "kubernetes.io/serviceaccount/namespace": ns,
        "kubernetes.io/serviceaccount/service-account.name": name,
        "kubernetes.io/serviceaccount/service-account.uid": f"uid-{name}",
    }
    return pyjwt.encode(claims, key, algorithm="RS256")


def test_kubernetes_auth_against_a_tokenreview_stand_in(
    h: Harness, env: dict[str, str], prod: hvac.Client, prefix: str
) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _TokenReview)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        key, public = _rsa_key()
        mount = f"k8s-{prefix}"
        prod.sys.enable_auth_method("kubernetes", path=mount)
        prod.write(
            f"auth/{mount}/config",
            kubernetes_host=f"http://127.0.0.1:{server.server_port}",
            pem_keys=[public],
            disable_local_ca_jwt=True,
            kubernetes_ca_cert=_self_signed_ca().decode(),
        )
        prod.write(
            f"auth/{mount}/role/syncd",
            bound_service_account_names=["syncd"],
            bound_service_account_namespaces=["apps"],
            token_policies=["syncd-read"],
            token_ttl="1h",
        )
        good = _sa_token(key, "apps", "syncd")
        _TokenReview.issued[good] = "apps:syncd"
        value = new_value()
        put(prod, f"{prefix}/k", {"v": value})
        p = h.provider(
            addr=env["SYNCD_VAULT_PROD_ADDR"],
            auth={
                "method": "kubernetes",
                "role": "syncd",
                "mount": mount,
                "jwt_file": h.file("sa", good),
            },
        )
        r = ref(f"{prefix}/k", key="v")
        assert value_of(p.fetch([r])[r]) == value.encode()
        assert h.counts()["login"] == 1
        assert "/apis/authentication.k8s.io/v1/tokenreviews" in _TokenReview.reviews

        other = _sa_token(key, "apps", "intruder")  # a valid signature, a service account not bound
        _TokenReview.issued[other] = "apps:intruder"
        bad = h.provider(
            addr=env["SYNCD_VAULT_PROD_ADDR"],
            auth={
                "method": "kubernetes",
                "role": "syncd",
                "mount": mount,
                "jwt_file": h.file("sa2", other),
            },
        )
        assert "login with kubernetes failed" in error_of(bad.fetch([r])[r])
    finally:
        server.shutdown()
        server.server_close()


def test_token_from_environment(
    h: Harness, env: dict[str, str], dev: hvac.Client, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    put(dev, f"{prefix}/e", {"v": new_value()})
    monkeypatch.setenv("VAULT_ADDR", env["VAULT_ADDR"])
    monkeypatch.setenv("VAULT_TOKEN", env["VAULT_TOKEN"])
    p = h.provider()
    r = ref(f"{prefix}/e", key="v")
    assert numbers(p.versions([r])) == {r: "1"}
    monkeypatch.delenv("VAULT_TOKEN")
    text = error_of(h.provider().versions([r])[r])
    assert "no token: set VAULT_TOKEN or auth.token_file" in text


# --------------------------------------------------------------------------- engine + CLI


def _config(
    tmp_path: Path, env: dict[str, str], secrets_: list[dict[str, Any]], **provider: Any
) -> Path:
    (tmp_path / "token").write_text(env["VAULT_TOKEN"])
    doc = {
        "providers": {
            "vault": {
                "type": "vault",
                "addr": env["VAULT_ADDR"],
                "auth": {"method": "token", "token_file": "token"},
                **provider,
            }
        },
        "target": {"type": "files", "directory": "out"},
        "secrets": secrets_,
    }
    path = tmp_path / "syncd.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize("listing", [True, False], ids=["folder-list", "metadata-per-secret"])
def test_engine_no_change_cycle_reads_no_values(
    tmp_path: Path, env: dict[str, str], dev: hvac.Client, prefix: str, listing: bool
) -> None:
    values = {f"s{i}": new_value() for i in range(5)}
    for name, value in values.items():
        put(dev, f"{prefix}/{name}", {"value": value})
    config = _config(
        tmp_path,
        env,
        [
            {
                "name": name,
                "from": {"provider": "vault", "path": f"{prefix}/{name}", "key": "value"},
            }
            for name in values
        ],
        list_metadata=listing,
    )
    engine = Engine(load_config(config))
    try:

        def cycle() -> dict[str, int]:
            before = engine.calls.snapshot().get("vault", {})
            result = engine.run_cycle()
            assert result.ok, [i.error for i in result.items]
            after = result.calls["vault"]
            return {
                op: after[op] - before.get(op, 0) for op in after if after[op] != before.get(op, 0)
            }

        detect = {"list_metadata": 1} if listing else {"read_metadata": 5}
        assert cycle() == {"lookup_self": 1, **detect, "read": 5}
        for name, value in values.items():
            assert (tmp_path / "out" / name).read_bytes() == value.encode()
        assert cycle() == detect  # nothing changed: no value read, no login
        values["s3"] = new_value()
        put(dev, f"{prefix}/s3", {"value": values["s3"]})
        assert cycle() == {**detect, "read": 1}
        assert (tmp_path / "out" / "s3").read_bytes() == values["s3"].encode()
    finally:
        engine.close()


def _syncd(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
    return subprocess.run(
        [str(SYNCD), "--config", str(config), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_cli_once_end_to_end(
    tmp_path: Path, env: dict[str, str], dev: hvac.Client, prefix: str, canary: str
) -> None:
    put(dev, f"{prefix}/app", {"api_key": canary, "user": "svc"})
    secrets_: list[dict[str, Any]] = [
        {
            "name": "api_key",
            "from": {"provider": "vault", "path": f"{prefix}/app", "key": "api_key"},
        },
        {
            "name": "bundle",
            "data": {"user": {"provider": "vault", "path": f"{prefix}/app", "key": "user"}},
        },
    ]
    config = _config(tmp_path, env, secrets_)
    plan = _syncd(config, "--once", "--dry-run", "--output", "json")
    assert plan.returncode == 2, plan.stderr
    assert canary not in plan.stdout + plan.stderr
    run = _syncd(config, "--once", "--output", "json")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert [s["action"] for s in report["secrets"]] == ["create", "create"]
    assert report["provider_calls"]["vault"] == {"lookup_self": 1, "read_metadata": 1, "read": 1}
    assert (tmp_path / "out" / "api_key").read_bytes() == canary.encode()
    again = json.loads(_syncd(config, "--once", "--output", "json").stdout)
    assert again["provider_calls"]["vault"] == {"lookup_self": 1, "read_metadata": 1}

    # a broken reference: exit 1, the error names provider and path, the target is untouched
    secrets_[0]["from"]["key"] = "missing"
    _config(tmp_path, env, secrets_)
    broken = _syncd(config, "--once", "--output", "json")
    assert broken.returncode == 1
    errors = [s["error"]["message"] for s in json.loads(broken.stdout)["secrets"] if s["error"]]
    assert len(errors) == 1 and f"secret/data/{prefix}/app: field 'missing' not found" in errors[0]
    assert "provider 'vault'" in errors[0]
    assert canary not in broken.stdout + broken.stderr
    assert (tmp_path / "out" / "api_key").read_bytes() == canary.encode()


def test_check_names_a_missing_hvac_with_file_and_line(tmp_path: Path, env: dict[str, str]) -> None:
    """Without hvac, ``syncd check`` fails on the provider's ``type:`` line, naming the extra."""
    config = _config(tmp_path, env, [{"name": "x", "from": {"provider": "vault", "path": "a"}}])
    line = config.read_text().splitlines().index("    type: vault") + 1
    run = check_without("hvac", config)
    python = str(ROOT / ".venv" / "bin" / "python")
    assert run.returncode == 1, run.stdout + run.stderr
    assert f"{config}:{line}: providers.vault.type:" in run.stderr
    assert "needs hvac: pip install 'syncd[vault]'" in run.stderr
    ok = subprocess.run(
        [python, "-m", "syncd", "check", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr


# --------------------------------------------------------------------------- utilities


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _self_signed_ca() -> bytes:
    return self_signed_ca("not the vault CA")[0]
