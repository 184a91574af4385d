"""The CLI as a user runs it: exit codes, plan output, JSON output, daemon stop, no value leaks."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import yaml

from syncd.redact import MASK, RedactingFilter, Redactor
from tests.conftest import new_value, wait_until

ROOT = Path(__file__).resolve().parents[2]


def syncd(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "syncd", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


def two_secrets(write_config, a: str, b: str) -> Path:
    return write_config(values={"a": a, "b": b})


def test_once_exit_zero_and_text_report(write_config, tmp_path):
    path = two_secrets(write_config, new_value(), new_value())
    run = syncd("--config", str(path), "--once")
    assert run.returncode == 0, run.stderr
    assert "+ a: create v1 (keys: a)" in run.stdout
    assert (tmp_path / "out" / "b").exists()
    assert run.stdout.endswith("done: 2 created, 0 updated, 0 deleted, 0 unchanged\n")
    again = syncd("--config", str(path), "--once")
    assert (again.returncode, again.stdout) == (
        0,
        "done: 0 created, 0 updated, 0 deleted, 2 unchanged\n",
    )
    every = syncd("--config", str(path), "--once", "-v")
    assert every.stdout.splitlines() == [
        "= a: unchanged v1",
        "= b: unchanged v1",
        "done: 0 created, 0 updated, 0 deleted, 2 unchanged",
    ]


def test_once_exit_one_names_the_failure_and_syncs_the_rest(write_config, tmp_path):
    path = write_config(
        values={"a": new_value()},
        secrets=[
            {"name": "a", "from": {"provider": "local", "key": "a"}},
            {"name": "b", "from": {"provider": "local", "key": "missing"}},
        ],
    )
    run = syncd("--config", str(path), "--once")
    assert run.returncode == 1
    assert "error: b: provider 'local', local:missing: key 'missing' not found" in run.stderr
    assert (tmp_path / "out" / "a").exists()
    assert not (tmp_path / "out" / "b").exists()


def test_dry_run_exit_codes_and_writes_nothing(write_config, tmp_path):
    path = two_secrets(write_config, new_value(), new_value())
    plan = syncd("--config", str(path), "--once", "--dry-run")
    assert plan.returncode == 2, plan.stderr
    assert "+ a: would create v1 (keys: a)" in plan.stdout
    assert not (tmp_path / "out").exists()
    assert syncd("--config", str(path), "--once").returncode == 0
    assert syncd("--config", str(path), "--once", "--dry-run").returncode == 0
    (tmp_path / "keys.yaml").unlink()
    assert syncd("--config", str(path), "--once", "--dry-run").returncode == 1


def test_dry_run_needs_once(write_config):
    run = syncd("--config", str(write_config(values={"a": "x"})), "--dry-run")
    assert run.returncode == 64 and "--dry-run needs --once" in run.stderr


def test_json_output_document(write_config):
    path = two_secrets(write_config, new_value(), new_value())
    run = syncd("--config", str(path), "--once", "--output", "json")
    doc = json.loads(run.stdout)
    assert (doc["apiVersion"], doc["kind"]) == ("syncd.io/v1", "CycleResult")
    assert doc["summary"] == "2 created, 0 updated, 0 deleted, 0 unchanged"
    assert [(s["name"], s["action"], s["version"], s["error"]) for s in doc["secrets"]] == [
        ("a", "create", 1, None),
        ("b", "create", 1, None),
    ]
    assert doc["provider_calls"] == {"local": {"read": 1, "stat": 2}}
    assert doc["target_writes"] >= 2
    doc = json.loads(syncd("--config", str(path), "--once", "--output", "json").stdout)
    assert doc["target_writes"] == 0
    assert doc["provider_calls"] == {"local": {"stat": 1}}


def test_check_and_bad_config_writes_nothing(write_config, tmp_path):
    path = write_config(values={"a": new_value()})
    ok = syncd("check", "--config", str(path))
    assert ok.returncode == 0 and "ok (1 secrets)" in ok.stdout
    doc = yaml.safe_load(path.read_text())
    doc["secrets"][0]["from"]["colour"] = "red"
    path.write_text(yaml.safe_dump(doc))
    for args in (("check",), ("--once",), ()):
        run = syncd(*args, "--config", str(path))
        assert run.returncode == 1
        assert f"{path}:" in run.stderr and "secrets[0].from.colour: unknown key" in run.stderr
    assert not (tmp_path / "out").exists()


def test_config_from_environment(write_config):
    path = write_config(values={"a": new_value()})
    assert syncd("--once", env={"SYNCD_CONFIG": str(path)}).returncode == 0
    assert syncd("--once", env={"SYNCD_CONFIG": ""}).returncode == 1


def test_names_for_stack_pinning(write_config):
    path = write_config(values={"openai_api_key": new_value()})
    assert syncd("names", "--config", str(path)).returncode == 1  # nothing synced yet
    syncd("--config", str(path), "--once")
    run = syncd("names", "--config", str(path))
    assert run.stdout == "OPENAI_API_KEY_SECRET=openai_api_key-v1\n"
    doc = json.loads(syncd("names", "--config", str(path), "-o", "json").stdout)
    assert doc == {
        "apiVersion": "syncd.io/v1",
        "kind": "Names",
        "names": {"openai_api_key": "openai_api_key-v1"},
        "missing": [],
    }
    renamed = syncd("names", "--config", str(path), "--format", "json")
    assert renamed.returncode == 64 and "--format is now -o/--output" in renamed.stderr


def test_schema_command_prints_json_schema():
    doc = json.loads(syncd("schema").stdout)
    assert doc["title"] == "syncd config"
    assert "secrets" in doc["properties"]


def test_canary_never_appears_in_any_output(write_config, tmp_path, canary):
    """Invariant 5: values reach the target and nothing else: not logs, plans, errors or labels."""
    path = write_config(
        values={"good": canary, "bad64": canary},
        secrets=[
            {"name": "good", "from": {"provider": "local", "key": "good"}},
            {"name": "bad64", "from": {"provider": "local", "key": "bad64", "decode": "base64"}},
        ],
    )
    outputs = []
    for args in (
        ("--once", "--dry-run", "--log-level", "debug"),
        ("--once", "--log-level", "debug"),
        ("--once", "--output", "json", "--log-format", "json", "--log-level", "debug"),
    ):
        (tmp_path / "keys.yaml").write_text(
            yaml.safe_dump({"good": canary + args[0], "bad64": canary})
        )
        run = syncd("--config", str(path), *args)
        outputs += [run.stdout, run.stderr]
    outputs.append(syncd("names", "--config", str(path), "-o", "json").stdout)
    outputs.append((tmp_path / "out" / "..data" / "..syncd.json").read_text())
    assert "not valid base64" in "".join(outputs)
    for text in outputs:
        assert canary not in text
    assert (tmp_path / "out" / "good").read_text().startswith(canary)


def test_redaction_is_the_last_line_of_defence(canary):
    redactor = Redactor()
    redactor.register(canary.encode())
    record = logging.LogRecord("x", logging.ERROR, "f", 1, "sdk said %s", (f"bad {canary}!",), None)
    RedactingFilter(redactor).filter(record)
    assert record.getMessage() == f"sdk said bad {MASK}!"
    redactor.clear()
    assert redactor.redact(canary) == canary


def test_daemon_syncs_changes_and_stops_cleanly_on_sigterm(write_config, tmp_path):
    path = write_config(values={"a": "first-value"}, defaults={"refresh": "1s"})
    proc = subprocess.Popen(
        [sys.executable, "-m", "syncd", "--config", str(path), "--listen", ""],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out = tmp_path / "out" / "a"
        wait_until("the first value", lambda: out.exists() and out.read_text() == "first-value")
        (tmp_path / "keys.yaml").write_text(yaml.safe_dump({"a": "second-value"}))
        wait_until("the second value", lambda: out.read_text() == "second-value")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        _, err = proc.communicate()
    assert "received SIGTERM" in err and "stopped" in err
    assert "second-value" not in err


def test_usage_errors_have_their_own_exit_code(write_config):
    """A typo must not look like "changes pending" (2) to ``--dry-run || test $? -eq 2``."""
    path = str(write_config(values={"a": "x"}))
    for args in (
        ["--config", path, "--once", "--dry-rn"],
        ["check", "--config", path, "--colour"],
        ["--config", path, "--output", "json"],  # applies to --once only
        ["--config", path, "--secret", "a"],
        ["--config", path, "--once", "--listen", ":0"],
        ["--config", path, "--log-level", "loud"],
    ):
        run = syncd(*args)
        assert run.returncode == 64, (args, run.stderr)
        assert "Traceback" not in run.stderr


def test_log_level_takes_any_case(write_config):
    run = syncd("check", "--config", str(write_config(values={"a": "x"})), "--log-level", "DEBUG")
    assert run.returncode == 0, run.stderr


def test_a_closed_pipe_is_not_a_traceback():
    run = subprocess.run(
        f"{sys.executable} -m syncd schema | head -c 10",
        shell=True,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0
    assert run.stderr == ""


HOSTILE_CONFIGS = {
    "date": "defaults: {refresh: 2001-13-45}\n",
    "tag": "defaults: {refresh: !!int 5}\n",
    "float-tag": "defaults: {keep: !!float 1}\n",
    "recursive": "x: &x [*x]\n",
    "nan": "defaults: {timeout: .nan}\n",
    "listen": "daemon: {listen: nope}\n",
    "nul": 'extends: "a\\0b"\n',
}


def test_hostile_configs_end_in_one_error_line_on_every_command(tmp_path):
    base = (
        "providers: {local: {type: file, path: k.yaml}}\n"
        "target: {type: files, directory: out}\n"
        "secrets: [{name: a, from: {provider: local, key: a}}]\n"
    )
    for name, extra in HOSTILE_CONFIGS.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(base + extra)
        for command in (["check"], ["--once"], ["names"], ["doctor"], ["import"]):
            args = (
                [*command, "--config", str(path)]
                if command[0] != "--once"
                else [
                    "--config",
                    str(path),
                    "--once",
                ]
            )
            run = syncd(*args, timeout=20)
            assert run.returncode == 1, (name, command, run.stderr)
            assert "Traceback" not in run.stderr, (name, command)
            assert run.stderr.startswith(f"error: {path}:"), (name, command, run.stderr)
    assert not (tmp_path / "out").exists()


def test_names_refuses_two_secrets_on_one_variable(write_config):
    path = write_config(
        values={"a": new_value()},
        secrets=[
            {"name": "a-b", "from": {"provider": "local", "key": "a"}},
            {"name": "a_b", "from": {"provider": "local", "key": "a"}},
        ],
    )
    assert syncd("--config", str(path), "--once").returncode == 0
    run = syncd("names", "--config", str(path))
    assert run.returncode == 1
    assert "'a-b' and 'a_b' both become A_B_SECRET" in run.stderr
    assert run.stdout == ""
    assert json.loads(syncd("names", "--config", str(path), "-o", "json").stdout)["names"] == {
        "a-b": "a-b-v1",
        "a_b": "a_b-v1",
    }


def test_plan_text_shows_notes(write_config, tmp_path):
    path = write_config(values={"a": new_value()})
    assert syncd("--config", str(path), "--once").returncode == 0
    doc = yaml.safe_load(path.read_text())
    doc["target"]["mode"] = "0440"
    path.write_text(yaml.safe_dump(doc))
    run = syncd("--config", str(path), "--once", "--dry-run")
    assert run.returncode == 2, run.stderr
    assert "~ a: would update v2" in run.stdout
    assert "    note: stored with new settings: mode" in run.stdout
