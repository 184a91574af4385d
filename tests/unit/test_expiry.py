"""Expiry: the ``notAfter`` of PEM certificates in values, the engine's memory of it across
cycles that read nothing, and ``syncd_secret_expiry_timestamp_seconds`` (labels: secret and
key only, never a value)."""

from __future__ import annotations

import base64
import secrets

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest

from providers.file import FileRef
from syncd.config import load_config
from syncd.engine import Engine
from syncd.expiry import Book, certificate_expiry, decode_stored, earliest, encode_stored
from syncd.metrics import Metrics
from syncd.model import PlanItem
from tests.certs import certificate
from tests.certs import days_from_now as at
from tests.conftest import new_value

METRIC = "syncd_secret_expiry_timestamp_seconds"


# ---------------------------------------------------------------------- PEM


def test_one_certificate_gives_its_not_after():
    when = at(30)
    assert certificate_expiry(certificate(when)) == when.timestamp()


def test_a_chain_gives_its_earliest_not_after_in_any_order():
    leaf, ca = at(10), at(400)
    assert certificate_expiry(certificate(ca) + certificate(leaf)) == leaf.timestamp()
    assert certificate_expiry(certificate(leaf) + certificate(ca)) == leaf.timestamp()


def test_a_certificate_inside_other_text_and_beside_a_key_is_found():
    when = at(5)
    key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    value = b"# bundle\n" + key + certificate(when) + b"trailing text\n"
    assert certificate_expiry(value) == when.timestamp()


@pytest.mark.parametrize(
    "value",
    [
        b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
        b"-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n-----END CERTIFICATE-----\n",
        b"-----BEGIN CERTIFICATE-----\nMIIB" + b"A" * 5000,  # no end line
        b"",
        b"\xff\xfe\x00binary",
        b"plain password",
    ],
    ids=["not-der", "not-base64", "unterminated", "empty", "binary", "text"],
)
def test_garbage_and_non_pem_values_have_no_expiry(value):
    assert certificate_expiry(value) is None


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=600))
def test_any_bytes_between_the_markers_are_no_error(body):
    """Base64 of arbitrary bytes (and the bytes themselves) inside certificate markers: a
    time or ``None``, never an exception."""
    for inner in (base64.encodebytes(body), body):
        value = b"-----BEGIN CERTIFICATE-----\n" + inner + b"-----END CERTIFICATE-----\n"
        assert certificate_expiry(value) is None or certificate_expiry(value) > 0


def test_a_garbled_certificate_does_not_hide_a_good_one():
    when = at(3)
    garbled = b"-----BEGIN CERTIFICATE-----\nbm9wZQ==\n-----END CERTIFICATE-----\n"
    assert certificate_expiry(garbled + certificate(when)) == when.timestamp()


def test_a_canary_value_with_a_certificate_gives_a_time_only(canary):
    when = at(7)
    value = canary.encode() + b"\n" + certificate(when) + canary.encode()
    assert certificate_expiry(value) == when.timestamp()


def test_earliest_ignores_unknown_times():
    assert earliest(None, 5.0, 3.0) == 3.0
    assert earliest(None, None) is None


def test_the_book_knows_an_expiry_only_at_the_reference_and_token_it_was_read_at():
    book = Book()
    pem = certificate(at(2))
    crt = FileRef(provider="local", key="crt")
    when = book.read("tls", "crt", (crt, "t1"), pem)
    assert when is not None
    assert book.known("tls", "crt", (crt, "t1")) == when
    assert book.known("tls", "crt", (crt, "t2")) is None
    assert book.known("tls", "crt", (FileRef(provider="other", key="crt"), "t1")) is None
    assert book.known("tls", "other", (crt, "t1")) is None
    book.read("tls", "nokey", (crt, None), pem)
    assert book.known("tls", "nokey", (crt, None)) is None  # no token: read every cycle
    book.retain("tls", {"nokey"})
    assert book.known("tls", "crt", (crt, "t1")) is None


# ---------------------------------------------------------------------- engine


def _bundle_config(write_config, tmp_path, values: dict[str, str]):
    path = write_config(
        values=values,
        secrets=[
            {
                "name": "tls",
                "data": {k: {"provider": "local", "key": k} for k in values},
            },
            {"name": "plain", "from": {"provider": "local", "key": "plain"}},
        ],
    )
    (tmp_path / "keys.yaml").write_text(yaml.safe_dump({**values, "plain": new_value()}))
    return path


def test_the_engine_reports_each_keys_expiry_and_keeps_it_without_reading(write_config, tmp_path):
    leaf, ca = at(20), at(300)
    values = {
        "crt": (certificate(leaf) + certificate(ca)).decode(),
        "ca": certificate(ca).decode(),
        "key": new_value(),
    }
    engine = Engine(load_config(_bundle_config(write_config, tmp_path, values)))
    try:
        first = engine.run_cycle()
        assert first.ok, first.items
        items = {i.name: i for i in first.items}
        assert items["tls"].expires == {"crt": leaf.timestamp(), "ca": ca.timestamp()}
        assert items["plain"].expires == {}
        reads = first.calls["local"]["read"]
        again = engine.run_cycle()
        assert again.calls["local"]["read"] == reads  # nothing changed: nothing read
        assert {i.name: i for i in again.items}["tls"].expires == items["tls"].expires
        sooner = at(1)
        values["crt"] = certificate(sooner).decode()
        (tmp_path / "keys.yaml").write_text(yaml.safe_dump({**values, "plain": new_value()}))
        changed = engine.run_cycle()
        assert {i.name: i for i in changed.items}["tls"].expires == {
            "crt": sooner.timestamp(),
            "ca": ca.timestamp(),
        }
    finally:
        engine.close()


def test_a_fresh_engine_knows_the_certificates_stored_on_the_version_without_reading(
    write_config, tmp_path
):
    """A restart (a new engine, nothing read yet) takes a certificate's expiry from the
    version the target holds, without reading the value; a value without a certificate
    replacing it leaves no expiry behind."""
    when = at(9)
    path = _bundle_config(write_config, tmp_path, {"crt": certificate(when).decode()})
    first = Engine(load_config(path))
    try:
        assert {i.name: i for i in first.run_cycle().items}["tls"].expires == {
            "crt": when.timestamp()
        }
    finally:
        first.close()
    second = Engine(load_config(path))
    try:
        result = second.run_cycle()
        items = {i.name: i for i in result.items}
        assert items["tls"].action == "unchanged"
        assert items["tls"].expires == {"crt": when.timestamp()}
        assert result.calls["local"].get("read", 0) == 0, result.calls  # known unread
    finally:
        second.close()
    (tmp_path / "keys.yaml").write_text(yaml.safe_dump({"crt": new_value(), "plain": "p"}))
    third = Engine(load_config(path))
    try:
        assert {i.name: i for i in third.run_cycle().items}["tls"].expires == {}
    finally:
        third.close()
    fourth = Engine(load_config(path))
    try:
        assert {i.name: i for i in fourth.run_cycle().items}["tls"].expires == {}
    finally:
        fourth.close()


def test_the_stored_record_round_trips_whole_seconds():
    record = encode_stored({"crt": 1_900_000_000.7, "ca": 2_000_000_000.0})
    assert record == '{"ca":2000000000,"crt":1900000000}'
    assert decode_stored(record) == {"ca": 2_000_000_000.0, "crt": 1_900_000_000.0}
    assert encode_stored({}) == ""


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "not json",
        "[1900000000]",
        '"1900000000"',
        '{"crt": true}',
        '{"crt": "1900000000"}',
        '{"crt": 1.9e9}',
        '{"crt": -5}',
        '{"crt": 0}',
        '{"crt": 1e400}',
        '{"crt": 99999999999999999999}',
        '{"crt": null}',
        '{"crt": {"at": 1900000000}}',
        '{"crt": 1900000000, "pad": "' + "x" * (17 * 1024) + '"}',
    ],
)
def test_a_stored_record_someone_edited_is_no_expiry(raw):
    """Anyone who can write the target object can write the record: what isn't syncd's
    shape gives no expiry (never an error), entry by entry."""
    assert decode_stored(raw) == {}


def test_a_bad_entry_in_a_stored_record_leaves_the_good_ones():
    assert decode_stored('{"crt": 1900000000, "ca": "soon", "key": false}') == {
        "crt": 1_900_000_000.0
    }


# ---------------------------------------------------------------------- metrics


def _sample(text: str, secret: str, key: str) -> float | None:
    prefix = f'{METRIC}{{key="{key}",secret="{secret}"}} '
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    return None


def test_the_gauge_has_one_series_per_key_and_drops_keys_and_secrets_that_go(canary):
    metrics = Metrics()
    when = at(4).timestamp()
    item = PlanItem("tls", "unchanged", version=1, expires={"crt": when, "ca": when + 60})
    metrics.observe_cycle(_result(item), seconds=0.1, now=0)
    text = generate_latest(metrics.registry).decode()
    assert _sample(text, "tls", "crt") == when
    assert _sample(text, "tls", "ca") == when + 60
    assert canary not in text
    item = PlanItem("tls", "unchanged", version=1, expires={"crt": when})
    metrics.observe_cycle(_result(item), seconds=0.1, now=0)
    text = generate_latest(metrics.registry).decode()
    assert _sample(text, "tls", "ca") is None and _sample(text, "tls", "crt") == when
    failed = PlanItem("tls", "error", error="provider down", error_kind="provider")
    metrics.observe_cycle(_result(failed), seconds=0.1, now=0)
    text = generate_latest(metrics.registry).decode()
    assert _sample(text, "tls", "crt") == when  # a failure knows nothing new: kept
    metrics.forget({"tls"})
    assert f'{METRIC}{{key="crt"' not in generate_latest(metrics.registry).decode()


def _result(item: PlanItem):
    from syncd.engine import CycleResult

    return CycleResult(items=[item], calls={}, target_writes=0)


def test_a_secret_value_never_reaches_the_metrics(write_config, tmp_path, canary):
    when = at(11)
    value = f"{canary}\n{certificate(when).decode()}{secrets.token_hex(4)}"
    path = write_config(
        values={"bundle": value},
        secrets=[{"name": "tls", "from": {"provider": "local", "key": "bundle"}}],
    )
    metrics = Metrics()
    engine = Engine(load_config(path))
    try:
        metrics.observe_cycle(engine.run_cycle(), seconds=0.1, now=0)
    finally:
        engine.close()
    text = generate_latest(metrics.registry).decode()
    assert _sample(text, "tls", "tls") == when.timestamp()
    assert canary not in text


def test_the_daemon_serves_the_expiry_on_metrics(write_config, canary):
    """The whole path: a certificate in a source value, a running daemon, ``GET /metrics``."""
    from tests.conftest import running_daemons, wait_until
    from tests.unit.test_daemon import get

    when = at(6)
    path = write_config(
        values={"tls": f"{canary}\n{certificate(when).decode()}"},
        secrets=[{"name": "tls", "from": {"provider": "local", "key": "tls"}, "refresh": "1s"}],
        daemon={"listen": "127.0.0.1:0"},
    )
    with running_daemons(stop_within=30) as start:
        daemon = start(path)

        def scraped() -> str | None:
            text = get(daemon, "/metrics")[1]
            return text if f"{METRIC}{{" in text else None

        body = wait_until("the expiry series", scraped)
    assert _sample(body, "tls", "tls") == when.timestamp()
    assert canary not in body


def test_a_reload_keeps_the_certificate_expiries_without_reading(write_config, tmp_path):
    """A config edit builds a new engine; it takes over what the old one read, so the series
    doesn't vanish (and the alert doesn't resolve) until the value changes."""
    from syncd.daemon import Daemon

    when = at(8)
    path = write_config(
        values={"tls": certificate(when).decode(), "other": new_value()},
        secrets=[{"name": "tls", "from": {"provider": "local", "key": "tls"}, "refresh": "1s"}],
        daemon={"listen": None},
    )
    daemon = Daemon(path)
    daemon.scheduler.start(paused=True)
    try:
        daemon.run_group(1.0, ["tls"])
        text = generate_latest(daemon.metrics.registry).decode()
        assert _sample(text, "tls", "tls") == when.timestamp()
        doc = yaml.safe_load(path.read_text())
        doc["secrets"].append({"name": "other", "from": {"provider": "local", "key": "other"}})
        path.write_text(yaml.safe_dump(doc))
        assert daemon.reload()
        daemon.run_group(1.0, ["tls"])
        reads = daemon.engine.calls.snapshot().get("local", {}).get("read", 0)
        assert reads == 0  # the new engine read nothing: the file didn't change
        text = generate_latest(daemon.metrics.registry).decode()
        assert _sample(text, "tls", "tls") == when.timestamp()
    finally:
        daemon.scheduler.shutdown(wait=False)
        daemon.engine.close()


@pytest.mark.parametrize(
    "answer",
    [RuntimeError("plugin bug"), float("nan"), float("inf"), "2030-01-01", True],
    ids=["raises", "nan", "inf", "text", "bool"],
)
def test_a_providers_unusable_expiry_costs_the_expiry_not_the_cycle(
    write_config, monkeypatch, answer
):
    from providers.file import FileProvider

    def expiry(self, refs):
        if isinstance(answer, Exception):
            raise answer
        return dict.fromkeys(refs, answer)

    monkeypatch.setattr(FileProvider, "expiry", expiry)
    path = write_config(values={"plain": new_value()})
    engine = Engine(load_config(path))
    try:
        result = engine.run_cycle()
    finally:
        engine.close()
    assert result.ok, result.items
    assert [i.expires for i in result.items] == [{}]


def test_a_providers_expiry_is_exported_for_its_reference(write_config, monkeypatch):
    """The other half of the test above: a usable time does come through."""
    from providers.file import FileProvider

    monkeypatch.setattr(FileProvider, "expiry", lambda self, refs: dict.fromkeys(refs, 1e9))
    path = write_config(values={"plain": new_value()})
    engine = Engine(load_config(path))
    try:
        assert [i.expires for i in engine.run_cycle().items] == [{"plain": 1e9}]
    finally:
        engine.close()
