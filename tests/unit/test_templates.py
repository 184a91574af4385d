"""Shaping secrets: templates (inline and from a file), the rename map and ``refresh: never``."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest
import yaml

from providers.file import FileProvider
from syncd.config import load_config
from syncd.daemon import Daemon
from syncd.engine import NEVER_NOTE, ONCE_NOTE, Engine
from syncd.errors import ConfigError
from syncd.template import TIME_BUDGET, TemplateError, compile_template, render_template
from tests.conftest import ROOT, new_value, run

URL = "postgres://{{ user }}:{{ password | urlencode }}@{{ host }}:5432/app"


def db_values(password: str) -> dict[str, str]:
    return {"user": "app", "password": password, "host": "db.internal"}


def db_data(*keys: str) -> dict[str, dict[str, str]]:
    return {key: {"provider": "local", "key": key} for key in keys}


def url_secret(template: str = URL, **extra: object) -> dict[str, object]:
    return {
        "name": "DATABASE_URL",
        "data": db_data("user", "password", "host"),
        "template": template,
        **extra,
    }


def render(source: str, limit: int = 1 << 20, **values: str) -> str:
    compiled = compile_template(source, "test")
    return render_template(
        compiled, "s", {k: v.encode() for k, v in values.items()}, limit=limit
    ).decode()


def sync_error(write_config, template: str, password: str) -> str:
    """The error of syncing DATABASE_URL rendered by ``template`` (nothing may be written)."""
    path = write_config(values=db_values(password), secrets=[url_secret(template)])
    result = run(path)
    (item,) = result.items
    assert item.action == "error" and item.error is not None
    assert not (path.parent / "out" / "DATABASE_URL").exists()
    return item.error


# --------------------------------------------------------------------------- rendering


def test_filters_users_need():
    assert render("{{ p | urlencode }}", p="a b/c@d:e") == "a%20b%2Fc%40d%3Ae"
    assert render("{{ p | b64encode }}", p="hé") == base64.b64encode("hé".encode()).decode()
    assert render("{{ p | b64encode | b64decode }}", p="hé") == "hé"
    assert json.loads(render("{{ p | tojson }}", p='q"<&>')) == 'q"<&>'
    assert render("x:\n{{ p | indent(2, first=true) }}", p="a\nb") == "x:\n  a\n  b"
    assert render("{{ p | trim | upper }}-{{ p | trim | lower }}", p=" Ab ") == "AB-ab"
    assert render("{{ p | default('none', true) }}", p="") == "none"
    assert render("{{ p.split(':')[1].strip().upper() }}", p="a: b ") == "B"


@pytest.mark.parametrize(
    ("source", "why"),
    [
        ("{% include 'x.txt' %}", "'include' is not allowed"),
        ("{% import 'x' as y %}", "'import' is not allowed"),
        ("{% extends 'base' %}", "'extends' is not allowed"),
        ("{% if p %}{{ p | attr('x') }}{% endif %}", "no filter 'attr'"),
        ("ok\n{% if p %}\n{{ p | length }}{% endif %}", "line 3: no filter 'length'"),
        ("{{ p ", "line 1: unexpected end of template"),
    ],
)
def test_a_template_that_reads_files_or_uses_what_is_not_offered_does_not_compile(source, why):
    with pytest.raises(TemplateError, match=why):
        compile_template(source, "test")


@pytest.mark.parametrize(
    ("source", "why"),
    [
        ("a\n{{ p.__class__.__mro__ }}", "line 2: uses a construct the sandbox forbids"),
        ("{{ range.__self__.left }}", "line 1: uses a construct the sandbox forbids"),
        ("{{ lipsum(10) }}", "line 1: reads a name, attribute or item that is not defined"),
        ("{{ cycler }}{{ namespace }}", "line 1: reads a name"),
        ("{{ '%09999999d' % 1 }}", "line 1: uses a construct the sandbox forbids"),
        ("{{ p.center(10**9) }}", "line 1: uses a construct the sandbox forbids"),
        ("{{ p.replace('', p) }}", "line 1: uses a construct the sandbox forbids"),
        ("{{ '{:>999999999}'.format(p) }}", "line 1: uses a construct the sandbox forbids"),
        ("{{ 'x' * 10**9 }}", "line 1: stopped: it repeats to more than"),
        ("{{ 2 ** 100000 }}", "line 1: stopped: it raises to a power above"),
        ("{{ p | indent(10**9) }}", "line 1: stopped: it indents wider than"),
        ("\n\n{% for i in range(10**9) %}x{% endfor %}", "line 3: stopped: it loops over more"),
    ],
)
def test_forbidden_constructs_fail_with_the_line(source, why):
    with pytest.raises(TemplateError, match=why):
        render(source, p="pw")


def test_a_runaway_loop_fails_fast():
    start = time.monotonic()
    with pytest.raises(TemplateError, match="loops over more than"):
        render("{% for i in range(10**9) %}{% endfor %}")
    with pytest.raises(TemplateError, match="loops over more than"):
        render("{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}")
    assert time.monotonic() - start < 1
    # no range at all: nested loops over a literal list run into the time budget
    nested = "{% set l = [1,2,3,4,5,6,7,8,9,10] %}" + "{% for a in l %}" * 9 + "{% endfor %}" * 9
    start = time.monotonic()
    budget = f"line 1: stopped: it runs longer than {TIME_BUDGET:g}s"
    with pytest.raises(TemplateError, match=budget):
        render(nested)
    assert time.monotonic() - start < TIME_BUDGET + 2


def test_the_render_stops_at_the_size_limit():
    started = time.monotonic()
    with pytest.raises(TemplateError, match="renders more than the target's limit of 1000 bytes"):
        render("{% for i in range(100000) %}{{ p }}{% endfor %}", limit=1000, p="x" * 500)
    assert time.monotonic() - started < 1
    assert render("{{ p }}", limit=3, p="abc") == "abc"


def test_binary_values_are_refused_by_name():
    compiled = compile_template("{{ k }}", "test")
    with pytest.raises(TemplateError, match="key 'k' is binary"):
        render_template(compiled, "s", {"k": b"\xff\xfe"}, limit=100)


# --------------------------------------------------------------------------- config


def test_unknown_key_is_a_config_error_with_file_secret_and_line(write_config, tmp_path):
    path = write_config(
        values=db_values(new_value()),
        secrets=[url_secret("{{ user }}\n{{ pasword }}")],
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    text = str(caught.value)
    assert str(path) in text and "secrets[0].template" in text
    assert "line 2: 'pasword' is not a key of 'data' (keys: host, password, user)" in text


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        ({"format": "env"}, "give 'format' or a template, not both"),
        ({"key_style": "upper"}, "'key_style' and 'rename' don't apply"),
        ({"template_file": "x.j2"}, "give 'template' or 'template_file', not both"),
    ],
)
def test_a_template_excludes_what_else_renders_the_bundle(write_config, extra, why):
    path = write_config(values=db_values(new_value()), secrets=[url_secret(**extra)])
    with pytest.raises(ConfigError, match=why):
        load_config(path)


def test_template_keys_must_be_names_and_need_data(write_config):
    bad = {"name": "x", "data": db_data("db-user"), "template": "{{ x }}"}
    single = {"name": "y", "from": {"provider": "local", "key": "user"}, "template": "{{ y }}"}
    path = write_config(values=db_values(new_value()), secrets=[bad, single])
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "'db-user' can't be one" in str(caught.value)
    assert "it needs 'data'" in str(caught.value)


def test_template_file_stays_in_the_config_directory(write_config, tmp_path):
    outside = tmp_path.parent / f"{tmp_path.name}-outside.j2"
    outside.write_text("{{ user }}")
    (tmp_path / "link.j2").symlink_to(outside)
    secrets = [
        {"name": "a", "data": db_data("user"), "template_file": f"../{outside.name}"},
        {"name": "b", "data": db_data("user"), "template_file": "link.j2"},
        {"name": "c", "data": db_data("user"), "template_file": "missing.j2"},
    ]
    path = write_config(values=db_values(new_value()), secrets=secrets)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    text = str(caught.value)
    assert f"template_file '../{outside.name}' is outside the config's directory" in text
    assert "template_file 'link.j2' is outside the config's directory" in text
    assert "can't read template_file" in text and "missing.j2" in text
    outside.unlink()


# --------------------------------------------------------------------------- end to end


def test_templated_url_end_to_end_into_files(write_config, tmp_path):
    password = new_value("p@ss/") + ":x"
    path = write_config(values=db_values(password), secrets=[url_secret()])
    assert run(path).ok
    quoted = urllib.parse.quote(password, safe="")
    expected = f"postgres://app:{quoted}@db.internal:5432/app"
    assert (tmp_path / "out" / "DATABASE_URL").read_text() == expected
    assert run(path).target_writes == 0
    # a template edit is a new version, though no value changed
    path = write_config(
        values=db_values(password), secrets=[url_secret(URL.replace("5432", "6432"))]
    )
    result = run(path)
    (item,) = result.items
    assert (item.action, item.version) == ("update", 2)
    assert (tmp_path / "out" / "DATABASE_URL").read_text() == expected.replace("5432", "6432")


def test_over_the_files_max_bytes_nothing_is_written(write_config, tmp_path):
    path = write_config(
        values=db_values(new_value()),
        secrets=[url_secret("{% for i in range(50) %}{{ password }}{% endfor %}")],
        target={"type": "files", "directory": "out", "max_bytes": 1000},
    )
    (item,) = run(path).items
    assert item.error is not None and "limit of 1000 bytes" in item.error
    assert not (tmp_path / "out" / "DATABASE_URL").exists()


def test_the_worked_example_renders_the_url_and_the_ini_file(tmp_path):
    example = ROOT / "config" / "examples" / "templates"
    for name in ("syncd.yaml", "db.yaml", "app.ini.j2"):
        shutil.copy(example / name, tmp_path / name)
    assert run(tmp_path / "syncd.yaml").ok
    values = yaml.safe_load((tmp_path / "db.yaml").read_text())
    out = tmp_path / "out"
    password = urllib.parse.quote(values["password"], safe="")
    assert (out / "DATABASE_URL").read_text() == (
        f"postgres://{values['user']}:{password}@{values['host']}:5432/app"
    )
    ini = (out / "app.ini").read_text()
    key = values["api_key"].strip()
    assert f"password = {json.dumps(values['password'])}\n" in ini
    assert f"key = {key}\nkey_base64 = {base64.b64encode(key.encode()).decode()}\n" in ini
    assert (out / "bootstrap-token").read_text() == values["bootstrap_token"]
    assert run(tmp_path / "syncd.yaml").target_writes == 0
    # editing the template file: the next cycle makes a new version of app.ini only
    template = tmp_path / "app.ini.j2"
    template.write_text(template.read_text().replace("[api]", "[service]"))
    changed = {i.name: i.action for i in run(tmp_path / "syncd.yaml").items}
    assert changed == {
        "DATABASE_URL": "unchanged",
        "app.ini": "update",
        "bootstrap-token": "unchanged",
    }
    assert "[service]" in (out / "app.ini").read_text()


def test_a_template_file_error_names_the_file_the_config_and_the_line(write_config, tmp_path):
    (tmp_path / "url.j2").write_text("first line\n{{ password.__class__ }}\n")
    secret = {"name": "url", "data": db_data("password"), "template_file": "url.j2"}
    path = write_config(values=db_values(new_value()), secrets=[secret])
    line = path.read_text().splitlines().index("  template_file: url.j2") + 1
    (item,) = run(path).items
    assert item.error == (
        f"secret 'url': template {tmp_path / 'url.j2'} (secrets[0].template_file in "
        f"{path}:{line}), line 2: uses a construct the sandbox forbids (internals, %-formatting, "
        "big ranges)"
    )


def test_swarm_takes_a_templated_bundle_as_its_one_blob(write_config):
    secret = url_secret()
    untemplated = {k: v for k, v in secret.items() if k != "template"} | {"name": "raw"}
    path = write_config(
        values=db_values(new_value()), secrets=[secret, untemplated], target={"type": "swarm"}
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "secrets[1]" in str(caught.value) and "secrets[0]" not in str(caught.value)
    assert "needs 'format' (env, yaml or json) or a template" in str(caught.value)


def test_the_config_names_template_files_so_the_daemon_reloads_on_an_edit(tmp_path):
    example = ROOT / "config" / "examples" / "templates"
    for name in ("syncd.yaml", "db.yaml", "app.ini.j2"):
        shutil.copy(example / name, tmp_path / name)
    assert (tmp_path / "app.ini.j2").resolve() in load_config(tmp_path / "syncd.yaml").files


# --------------------------------------------------------------------------- rename


def test_rename_after_key_style_end_to_end(write_config, tmp_path):
    a, b = new_value(), new_value()
    secret = {
        "name": "keys",
        "data": db_data("openai_api_key", "other"),
        "key_style": "upper",
        "rename": {"OPENAI_API_KEY": "openai-key"},
    }
    path = write_config(values={"openai_api_key": a, "other": b}, secrets=[secret])
    assert run(path).ok
    assert (tmp_path / "out" / "keys" / "openai-key").read_text() == a
    assert (tmp_path / "out" / "keys" / "OTHER").read_text() == b
    assert run(path).target_writes == 0
    secret["rename"] = {"OPENAI_API_KEY": "openai"}
    path = write_config(values={"openai_api_key": a, "other": b}, secrets=[secret])
    (item,) = run(path).items
    assert (item.action, item.changed_keys) == ("update", ["openai", "openai-key"])
    assert (tmp_path / "out" / "keys" / "openai").read_text() == a


def test_rename_in_a_rendered_format_and_for_data_from(write_config, tmp_path):
    a = new_value()
    secret = {
        "name": "env",
        "data_from": {"provider": "local"},
        "rename": {"api": "API_TOKEN"},
        "format": "env",
    }
    path = write_config(values={"api": a}, secrets=[secret])
    assert run(path).ok
    assert (tmp_path / "out" / "env").read_text() == f"API_TOKEN={a}\n"


def test_two_keys_on_one_name_is_an_error(write_config, tmp_path):
    clash = {"name": "k", "data": db_data("user", "host"), "rename": {"user": "host"}}
    unknown = {"name": "u", "data": db_data("user"), "rename": {"USER": "x"}}
    path = write_config(values=db_values(new_value()), secrets=[clash, unknown])
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "keys 'host' and 'user' both become 'host'" in str(caught.value)
    assert "'rename' names 'USER', which 'data' doesn't make" in str(caught.value)
    # a listed source: found at run time, and only that secret fails
    listed = {"name": "d", "data_from": {"provider": "local"}, "rename": {"user": "host"}}
    path = write_config(values=db_values(new_value()), secrets=[listed])
    (item,) = run(path).items
    assert item.error == "keys 'host' and 'user' both become 'host' with key_style as-is and rename"
    assert not (tmp_path / "out" / "d").exists()


def test_rename_needs_a_bundle(write_config):
    single = {"name": "s", "from": {"provider": "local", "key": "user"}, "rename": {"a": "b"}}
    path = write_config(values=db_values(new_value()), secrets=[single])
    with pytest.raises(ConfigError, match="'rename' renames bundle keys"):
        load_config(path)


# --------------------------------------------------------------------------- refresh: never


class CountingReads:
    """Counts what the file provider is asked, per secret key, while installed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.keys: list[str] = []
        for method in ("versions", "fetch"):
            original = getattr(FileProvider, method)

            def counted(provider, refs, _original=original):
                self.keys.extend(ref.key or "" for ref in refs)
                return _original(provider, refs)

            monkeypatch.setattr(FileProvider, method, counted)


def test_refresh_never_syncs_once_and_is_never_read_again(write_config, tmp_path, monkeypatch):
    first = new_value()
    secrets = [
        {"name": "token", "from": {"provider": "local", "key": "token"}, "refresh": "never"},
        {"name": "other", "from": {"provider": "local", "key": "other"}},
    ]
    path = write_config(values={"token": first, "other": new_value()}, secrets=secrets)
    (token, _) = run(path).items
    assert (token.action, token.notes) == ("create", [ONCE_NOTE])
    reads = CountingReads(monkeypatch)
    path = write_config(values={"token": new_value(), "other": new_value()}, secrets=secrets)
    engine = Engine(load_config(path))
    try:
        plan = engine.run_cycle(dry_run=True)
        result = engine.run_cycle()
    finally:
        engine.close()
    for cycle in (plan, result):
        by_name = {i.name: i for i in cycle.items}
        assert (by_name["token"].action, by_name["token"].notes) == ("unchanged", [NEVER_NOTE])
        assert by_name["other"].action == "update"
    assert "token" not in reads.keys and "other" in reads.keys
    assert (tmp_path / "out" / "token").read_text() == first


def test_refresh_never_is_retried_until_its_first_sync_succeeds(
    write_config, tmp_path, monkeypatch
):
    secrets = [{"name": "token", "from": {"provider": "local", "key": "token"}, "refresh": "never"}]
    path = write_config(values={"other": new_value()}, secrets=secrets, daemon={"listen": None})
    daemon = Daemon(path)
    daemon.scheduler.start(paused=True)
    try:
        daemon.run_group(300.0, ["token"])
        job = daemon.scheduler.get_job("retry:token")
        assert job is not None and job.args == (None, ["token"])
        value = new_value()
        (tmp_path / "keys.yaml").write_text(yaml.safe_dump({"token": value}))
        daemon.run_group(None, ["token"])
        assert (tmp_path / "out" / "token").read_text() == value
        assert "token" not in daemon.health.failing_since
        reads = CountingReads(monkeypatch)
        (tmp_path / "keys.yaml").write_text(yaml.safe_dump({"token": new_value()}))
        daemon.run_group(300.0, ["token"])
        assert reads.keys == []
        assert (tmp_path / "out" / "token").read_text() == value
    finally:
        daemon.scheduler.shutdown(wait=False)
        daemon.engine.close()


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        ({"data_from": {"provider": "local"}}, "a listing is read every cycle"),
        ({"from": {"provider": "local", "key": "a"}, "group": "g"}, "can't join a group"),
    ],
)
def test_refresh_never_needs_a_fixed_source_and_no_group(write_config, extra, why):
    path = write_config(
        values={"a": new_value()}, secrets=[{"name": "s", "refresh": "never", **extra}]
    )
    with pytest.raises(ConfigError, match=why):
        load_config(path)


# --------------------------------------------------------------------------- canary


@pytest.mark.parametrize(
    "template",
    [
        "{{ {}[password] }}",
        "{{ password.__class__ }}",
        "{{ password | b64decode }}",
        "{{ password ~ {}[password | upper] }}",
        "{{ password.missing }}",
        "{% for c in password %}{{ {}[c ~ password] }}{% endfor %}",
    ],
)
def test_template_errors_never_hold_a_value(write_config, canary, template):
    error = sync_error(write_config, template, canary)
    assert "syncd.yaml:" in error and "(secrets[0].template), line 1:" in error
    assert "secret 'DATABASE_URL'" in error
    assert canary not in error and canary.lower() not in error.lower()


def test_the_canary_never_reaches_plan_output_or_labels(write_config, tmp_path, canary):
    path = write_config(
        values=db_values(canary),
        secrets=[url_secret(), url_secret("{{ {}[password] }}", name="BROKEN")],
    )
    for output in ("text", "json"):
        plan = subprocess.run(
            [sys.executable, "-m", "syncd", "--config", str(path), "plan", "-o", output],
            capture_output=True,
            text=True,
            check=False,
            cwd=ROOT,
        )
        assert "BROKEN" in plan.stdout + plan.stderr
        assert canary not in plan.stdout + plan.stderr
    result = run(path)
    rendered = (tmp_path / "out" / "DATABASE_URL").read_text()
    assert urllib.parse.quote(canary, safe="") in rendered
    for state in Path(tmp_path / "out").rglob("..syncd*"):
        if state.is_file():
            assert canary not in state.read_text(errors="replace")
    assert {i.name: bool(i.error) for i in result.items} == {"DATABASE_URL": False, "BROKEN": True}
