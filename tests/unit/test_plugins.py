"""Third-party providers: how the registry finds them, what it says about a broken one, and
the worked example of docs/plugins.md (docs/plugins/http-json) run by syncd against a real
HTTPS server started here.

A plugin is registered the way an installed package is: a ``*.dist-info`` directory on
``sys.path`` whose ``entry_points.txt`` is written from the package's own ``pyproject.toml``,
which is what ``pip install`` writes, so the test reads the declaration the doc tells a
plugin author to write.
"""

from __future__ import annotations

import json
import re
import ssl
import threading
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import yaml

from syncd.config import load_config
from syncd.engine import Engine
from syncd.errors import ConfigError, ProviderError
from syncd.registry import PluginError, provider_class
from tests.certs import self_signed_ca
from tests.conftest import ROOT, new_value, run

EXAMPLE = ROOT / "docs" / "plugins" / "http-json"
DOC = ROOT / "docs" / "plugins.md"
TOKEN_ENV = "TEST_HTTP_JSON_TOKEN"


def install(site: Path, name: str, entry_points: dict[str, dict[str, str]]) -> None:
    """What ``pip install`` leaves for a distribution's entry points: ``<name>.dist-info``
    with ``METADATA`` and ``entry_points.txt``, in a directory on ``sys.path``."""
    dist = site / f"{name.replace('-', '_')}-0.1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1.0\n")
    lines = []
    for group, entries in entry_points.items():
        lines.append(f"[{group}]")
        lines.extend(f"{key} = {value}" for key, value in entries.items())
    (dist / "entry_points.txt").write_text("\n".join(lines) + "\n")


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory on ``sys.path`` (for this test only) to install plugins into."""
    path = tmp_path / "site"
    path.mkdir()
    monkeypatch.syspath_prepend(str(path))
    return path


@pytest.fixture
def example(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The example package installed as its pyproject.toml declares it."""
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    install(site, project["name"], project["entry-points"])
    monkeypatch.syspath_prepend(str(EXAMPLE))


# --------------------------------------------------------------------------- a real HTTPS server


@dataclass
class Store:
    """What the test server holds and answers, and every request it was sent."""

    token: str
    secrets: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: path -> the raw body answered instead of the real one (garbage, hostile shapes)
    raw: dict[str, bytes] = field(default_factory=dict)
    #: path -> statuses answered (once each, in order) before the real answer
    statuses: dict[str, list[int]] = field(default_factory=dict)
    #: extra entries in the listing (names and metadata no real secret has)
    listed: dict[str, Any] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def put(self, name: str, value: str, version: str) -> None:
        with self.lock:
            self.secrets[name] = {"version": version, "value": value}

    def answer(self, path: str, auth: str | None) -> tuple[int, bytes]:
        with self.lock:
            self.requests.append(path)
            if auth != f"Bearer {self.token}":
                return 401, b"{}"
            if self.statuses.get(path):
                return self.statuses[path].pop(0), b"{}"
            if path in self.raw:
                return 200, self.raw[path]
            if path == "/secrets":
                listing = {n: {"version": s["version"]} for n, s in self.secrets.items()}
                return 200, json.dumps(listing | self.listed).encode()
            secret = self.secrets.get(unquote(path.removeprefix("/secrets/")))
            if not path.startswith("/secrets/") or secret is None:
                return 404, b'{"error": "not found"}'
            return 200, json.dumps(secret).encode()


def _certificate(directory: Path) -> tuple[Path, Path]:
    """A generated self-signed certificate for 127.0.0.1 and its key, as PEM files."""
    cert, key = self_signed_ca()
    cert_file, key_file = directory / "ca.pem", directory / "server-key.pem"
    cert_file.write_bytes(cert)
    key_file.write_bytes(key)
    return cert_file, key_file


@dataclass
class Api:
    """The running server, its store, and a config file pointing syncd at it."""

    store: Store
    url: str
    config: Path

    def write(self, secrets: list[dict[str, Any]], **provider: Any) -> Path:
        block = {"type": "http-json", "url": self.url, "ca_file": "ca.pem", "token_env": TOKEN_ENV}
        doc = {
            "providers": {"api": block | provider},
            "target": {"type": "files", "directory": "out"},
            "secrets": secrets,
        }
        self.config.write_text(yaml.safe_dump(doc))
        return self.config

    def calls(self) -> list[str]:
        """The requests sent since the last look."""
        with self.store.lock:
            sent, self.store.requests[:] = list(self.store.requests), []
        return sent


@pytest.fixture
def api(
    example: None, tmp_path: Path, canary: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Api]:
    """An HTTPS server of the example's API in a thread; its bearer token is a canary."""
    cert_file, key_file = _certificate(tmp_path)
    store = Store(token=canary)
    monkeypatch.setenv(TOKEN_ENV, canary)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = store.answer(self.path, self.headers.get("Authorization"))
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the test reads the store's request log instead."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield Api(store, f"https://127.0.0.1:{server.server_address[1]}", tmp_path / "syncd.yaml")
    finally:
        server.shutdown()
        server.server_close()


def one(name: str, secret: str, **ref: Any) -> dict[str, Any]:
    return {"name": name, "from": {"provider": "api", "name": secret, **ref}}


def errors(result: Any) -> dict[str, str | None]:
    return {item.name: item.error for item in result.items}


# --------------------------------------------------------------------------- the example


def test_the_entry_point_in_its_pyproject_registers_the_example(example: None) -> None:
    from syncd_http_json import HttpJsonProvider

    assert provider_class("http-json") is HttpJsonProvider


def test_first_sync_then_a_cycle_that_reads_no_value_then_a_change(api: Api) -> None:
    first, second = new_value(), new_value()
    api.store.put("db-password", first, "v1")
    path = api.write([one("db", "db-password")])

    synced = run(path)
    assert synced.ok, synced.items
    assert (path.parent / "out" / "db").read_text() == first
    assert synced.calls["api"] == {"list": 1, "read": 1}
    assert api.calls() == ["/secrets", "/secrets/db-password"]

    quiet = run(path)  # a fresh engine, as a restarted process
    assert quiet.ok and quiet.target_writes == 0
    assert quiet.calls["api"] == {"list": 1}, "no value is read when nothing changed"
    assert api.calls() == ["/secrets"]

    api.store.put("db-password", second, "v2")
    changed = run(path)
    assert changed.ok and changed.items[0].action == "update"
    assert (path.parent / "out" / "db").read_text() == second
    assert api.calls() == ["/secrets", "/secrets/db-password"]


def test_many_secrets_cost_one_listing_and_one_read_per_secret(api: Api) -> None:
    """Two keys of one JSON secret are one read; ten secrets are one listing."""
    for i in range(10):
        api.store.put(f"s{i}", new_value(), "v1")
    api.store.put("db", json.dumps({"user": "app", "password": new_value()}), "v1")
    secrets = [one(f"s{i}", f"s{i}") for i in range(10)]
    keys = {k: {"provider": "api", "name": "db", "key": k} for k in ("user", "password")}
    secrets.append({"name": "db", "data": keys})
    result = run(api.write(secrets))
    assert result.ok, result.items
    assert result.calls["api"] == {"list": 1, "read": 11}
    assert (api.config.parent / "out" / "db" / "user").read_text() == "app"


def test_a_missing_secret_fails_alone(api: Api) -> None:
    value = new_value()
    api.store.put("here", value, "v1")
    result = run(api.write([one("ok", "here"), one("gone", "not-there")]))
    assert errors(result) == {"ok": None, "gone": "provider 'api', api:not-there: not found"}
    assert (api.config.parent / "out" / "ok").read_text() == value


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<html>oops</html>", "the answer to GET /secrets/bad is not JSON"),
        (b"[1, 2]", "the server's answer is not an object with a string 'value'"),
        (b'{"version": "v1", "value": 5}', "not an object with a string 'value'"),
        (b'{"version": "v1", "value": "\\ud800"}', "not valid Unicode text (a lone surrogate)"),
        (b"[" * 100_000, "the answer to GET /secrets/bad is not JSON"),
    ],
)
def test_a_hostile_answer_fails_its_secret_only(api: Api, body: bytes, reason: str) -> None:
    value = new_value()
    api.store.put("good", value, "v1")
    api.store.put("bad", new_value(), "v1")
    api.store.raw["/secrets/bad"] = body
    api.store.listed["bad"] = "not an object"  # the listing entry is garbage, too
    result = run(api.write([one("good", "good"), one("bad", "bad")]))
    assert result.items[0].error is None
    assert (api.config.parent / "out" / "good").read_text() == value
    assert reason in (errors(result)["bad"] or "")


def test_a_hostile_version_id_is_kept_out_of_the_labels(api: Api) -> None:
    hostile = 'v1"\n\x00<script>' + "x" * 300
    api.store.put("db", new_value(), hostile)
    path = api.write([one("db", "db")])
    assert run(path).ok
    labels = next((path.parent / "out").glob("..20*/..syncd.json")).read_text()
    assert "<script>" not in labels and "xxxxxxxxxx" not in labels
    assert run(path).calls["api"] == {"list": 1}, "the digest is a stable token"


def test_a_listing_that_is_not_json_fails_every_secret_clearly(api: Api) -> None:
    api.store.put("a", new_value(), "v1")
    api.store.raw["/secrets"] = b"<html>maintenance</html>"
    result = run(api.write([one("a", "a"), one("b", "b")]))
    assert errors(result) == {
        name: f"provider 'api', api:{name}: the answer to GET /secrets is not JSON"
        for name in ("a", "b")
    }
    assert result.calls["api"] == {"list": 1}


def test_a_busy_server_is_tried_again_and_every_attempt_counted(api: Api) -> None:
    value = new_value()
    api.store.put("a", value, "v1")
    api.store.statuses["/secrets"] = [503]
    api.store.statuses["/secrets/a"] = [429, 502]
    seen: list[tuple[str, str]] = []
    engine = Engine(load_config(api.write([one("a", "a")])))
    engine.calls.add_listener(
        lambda component, op, status: seen.append((op, status)) if component == "api" else None
    )
    result = engine.run_cycle()
    engine.close()
    assert result.ok, result.items
    assert seen == [
        ("list", "error"),
        ("list", "ok"),
        ("read", "throttled"),
        ("read", "error"),
        ("read", "ok"),
    ]


def test_an_unending_busy_answer_is_transient_and_a_denial_is_not(api: Api) -> None:
    api.store.put("a", new_value(), "v1")
    path = api.write([one("a", "a")], retries=1)
    api.store.statuses["/secrets"] = [503, 503]
    busy = run(path).items[0]
    assert busy.error == "provider 'api', api:a: the server is busy (HTTP 503)"
    assert busy.transient and busy.error_provider == "api" and busy.error_ref == "api:a"
    api.store.token = "another"
    denied = run(path).items[0]
    assert denied.error == (
        f"provider 'api', api:a: access denied (HTTP 401): check the token in {TOKEN_ENV}"
    )
    assert not denied.transient


def test_a_server_whose_certificate_is_not_trusted_fails_permanently(api: Api) -> None:
    api.store.put("a", new_value(), "v1")
    config = yaml.safe_load(api.write([one("a", "a")]).read_text())
    del config["providers"]["api"]["ca_file"]  # the system's CAs don't know the test's
    api.config.write_text(yaml.safe_dump(config))
    item = run(api.config).items[0]
    assert (item.error or "").startswith(f"provider 'api', api:a: TLS with {api.url} failed: ")
    assert not item.transient
    assert api.calls() == [], "no request is sent over a connection that isn't trusted"


def test_data_from_leaves_out_a_listed_name_that_is_not_valid(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    api.store.put("app-user", "app", "v1")
    api.store.put("app-password", new_value(), "v1")
    api.store.listed["app-../../etc"] = {"version": "v1"}
    bundle = {"name": "app", "data_from": {"provider": "api", "prefix": "app-"}}
    result = run(api.write([bundle]))
    assert result.ok, result.items
    out = api.config.parent / "out" / "app"
    assert sorted(p.name for p in out.iterdir()) == ["password", "user"]
    assert result.calls["api"] == {"list": 2, "read": 2}, "list_keys, then versions"
    assert "left out a listed name that is not valid: 'app-../../etc'" in caplog.text


def test_doctor_check_names_what_the_listing_does_not_show(api: Api) -> None:
    from syncd_http_json import HttpJsonRef

    api.store.put("here", new_value(), "v1")
    config = load_config(api.write([one("a", "here")]))
    engine = Engine(config)
    provider = engine.provider("api")
    assert not isinstance(provider, ProviderError)
    here, gone = HttpJsonRef(provider="api", name="here"), HttpJsonRef(provider="api", name="gone")
    checked = provider.check([here, gone])
    engine.close()
    assert checked[here] is None
    assert "not in the listing" in str(checked[gone])
    assert api.calls() == ["/secrets"], "check reads no value"


def test_a_token_env_that_is_not_set_fails_the_provider_at_start(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TOKEN_ENV)
    result = run(api.write([one("a", "a")]))
    assert f"the environment variable {TOKEN_ENV} (token_env) is empty" in (
        result.items[0].error or ""
    )
    assert api.calls() == []


# --------------------------------------------------------------------------- broken plugins


def _broken(site: Path, code: str, spec: str = "broken_plugin:Thing", name: str = "broken") -> str:
    """Install a package ``syncd-broken`` registering ``name`` as ``spec``, whose module
    (a new name each time: an imported one stays imported) holds ``code``; write a config
    using it next to ``site``. Returns the entry point's value."""
    module = f"broken_{uuid.uuid4().hex[:8]}"
    (site / f"{module}.py").write_text(code)
    spec = spec.replace("broken_plugin", module)
    install(site, "syncd-broken", {"syncd.providers": {name: spec}})
    config = site.parent / "syncd.yaml"
    config.write_text(
        f"providers:\n  x: {{type: {name}}}\n"
        "target: {type: files, directory: out}\n"
        "secrets:\n  - {name: a, from: {provider: x}}\n"
    )
    return spec


@pytest.mark.parametrize(
    ("code", "spec", "message"),
    [
        (
            "raise RuntimeError('boom')",
            "broken_plugin:Thing",
            "fails to import: RuntimeError: boom",
        ),
        ("import not_installed_anywhere", "broken_plugin:Thing", "can't be loaded: No module"),
        ("", "broken_plugin:Thing", "is not a providers.base.Provider subclass"),
        ("class Thing: pass", "broken_plugin:Thing", "is not a providers.base.Provider subclass"),
        ("", "broken_plugin", "is not a providers.base.Provider subclass"),
        (
            "from providers.file import FileProvider as Thing",
            "broken_plugin:Thing",
            "is registered as 'broken' but its type_name is 'file'",
        ),
    ],
)
def test_a_broken_plugin_is_a_config_error_naming_its_package(
    site: Path, code: str, spec: str, message: str
) -> None:
    spec = _broken(site, code, spec)
    with pytest.raises(ConfigError) as caught:
        load_config(site.parent / "syncd.yaml", env={})
    text = str(caught.value)
    assert f"providers.x.type: provider type 'broken' ({spec}, package 'syncd-broken')" in text
    assert message in text


def test_two_packages_registering_one_name_are_both_named(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(site, "syncd-one", {"syncd.providers": {"twice": "one:P"}})
    other = site.parent / "other-site"
    install(other, "syncd-two", {"syncd.providers": {"twice": "two:P"}})
    monkeypatch.syspath_prepend(str(other))
    with pytest.raises(PluginError) as caught:
        provider_class("twice")
    message = str(caught.value)
    assert message.startswith("provider type 'twice' is registered by package ")
    assert "'syncd-one'" in message and "'syncd-two'" in message


def test_a_package_cannot_take_over_a_built_in_type(site: Path) -> None:
    from providers.file import FileProvider

    _broken(site, "raise RuntimeError('never imported')", name="file")
    assert provider_class("file") is FileProvider


def test_an_unknown_type_lists_the_installed_plugins(example: None) -> None:
    with pytest.raises(PluginError, match=r"unknown provider type 'nope' \(known: .*http-json"):
        provider_class("nope")


# --------------------------------------------------------------------------- the doc


def test_every_excerpt_in_the_doc_is_in_the_file_it_names() -> None:
    """docs/plugins.md shows the example's code; each excerpt must be the code as it is."""
    text = DOC.read_text()
    excerpts = re.findall(r"<!-- excerpt: (\S+) -->\n```\w*\n(.*?)```", text, re.S)
    assert len(excerpts) >= 5
    for path, excerpt in excerpts:
        source = (ROOT / path).read_text()
        assert excerpt in source, f"docs/plugins.md shows code that {path} doesn't hold:\n{excerpt}"
