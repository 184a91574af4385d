"""The command line as someone used to kubectl, helm and terraform tries it: flags anywhere,
one ``-o`` flag, a ``SYNCD_*`` variable per flag, "did you mean", ``plan``, ``version``,
completion, and documents a program can tell apart."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from syncd.cli import EXIT_USAGE, main
from syncd.cli.parser import COMMANDS, FLAGS, UsageError, build_parser, flags_for, parse
from tests.conftest import new_value

ROOT = Path(__file__).resolve().parents[2]


def syncd(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}
    return subprocess.run(
        [sys.executable, "-m", "syncd", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, "PYTHONPATH": str(ROOT), **(env or {})},
        cwd=cwd,
        check=False,
    )


def usage_error(argv: list[str], environ: dict[str, str] | None = None) -> str:
    with pytest.raises(UsageError) as caught:
        parse(argv, environ or {})
    return str(caught.value)


# ------------------------------------------------------------------ grammar


@pytest.mark.parametrize(
    "argv",
    [
        ["--config", "c.yaml", "--log-level", "DEBUG", "plan", "-o", "json"],
        ["plan", "--config", "c.yaml", "-o", "json", "--log-level", "debug"],
        ["-o", "json", "plan", "-c", "c.yaml", "--log-level=Debug"],
        ["--log-level", "debug", "-c", "c.yaml", "plan", "--output=json"],
    ],
)
def test_global_flags_go_before_or_after_the_command(argv):
    inv = parse(argv, {})
    assert (inv.command, inv.config, inv.log_level, inv.output) == (
        "plan",
        "c.yaml",
        "debug",
        "json",
    )


def test_every_flag_has_help_and_a_variable_and_every_command_examples_and_exit_codes():
    variables = [f.env for f in FLAGS]
    assert len(set(variables)) == len(variables)
    assert all(re.fullmatch(r"SYNCD_[A-Z_]+", v) for v in variables)
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for command, child in [("run", parser), *sub.choices.items()]:  # type: ignore[attr-defined]
        text = child.format_help()
        assert "examples:" in text and "exit codes:" in text, command
        for action in child._actions:
            assert action.help, (command, action.dest)
        for flag in flags_for(command):
            assert f"${flag.env}" in text, (command, flag.env)
    assert set(sub.choices) == set(COMMANDS)  # type: ignore[attr-defined]


def test_the_documented_variable_table_is_the_code():
    """docs/cli.md lists every flag with its variable and commands, and nothing else."""
    text = (ROOT / "docs" / "cli.md").read_text()
    rows = re.findall(r"^\| `([^`]+)` \| `(SYNCD_[A-Z_]+)` \| ([^|]+) \|", text, re.M)
    documented = {(flag, env, where.strip()) for flag, env, where in rows}
    expected = {
        (
            f.shown,
            f.env,
            ", ".join("syncd" if c == "run" else c for c in f.commands),
        )
        for f in FLAGS
    }
    assert documented == expected


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["chek"], "unknown command 'chek' (did you mean check?)"),
        (["--once", "--dry-rn"], "unknown flag --dry-rn (did you mean --dry-run?)"),
        (["plan", "--ignore-windw"], "did you mean --ignore-window?"),
        (["check", "--once"], "unknown flag --once (it belongs to syncd)"),
        (["--once", "check"], "--once doesn't apply to this command"),
        (
            ["doctor", "--secret", "a"],
            "unknown flag --secret (it belongs to syncd, syncd plan, syncd status, syncd import)",
        ),
        (["--trust-values", "import"], "--trust-values belongs to syncd import"),
        (["names", "--format", "json"], "--format is now -o/--output"),
        (["plan", "-o", "yml"], "--output 'yml': choose from text, json"),
        (["names", "-o", "text"], "--output 'text': choose from env, json"),
        (["--log-level", "loud", "check"], "--log-level 'loud': choose from debug"),
        (["--output", "json"], "--output needs --once"),
        (["--secret", "a"], "--secret needs --once"),
        (["-v"], "--verbose needs --once"),
        (["--once", "--listen", ":0"], "--listen is for the daemon"),
        (["completion", "tcsh"], "invalid choice: 'tcsh'"),
        (["--version", "plan"], "--version takes nothing else"),
        (["plan", "extra"], "unexpected argument 'extra'"),
    ],
)
def test_usage_errors_say_what_and_suggest(argv, said):
    assert said in usage_error(argv)


def test_a_usage_error_is_one_line_and_exit_64(capsys):
    assert main(["--config", "c.yaml", "plann"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "syncd: unknown command 'plann' (did you mean plan?)",
        "run 'syncd --help' for usage",
    ]


# ------------------------------------------------------------------ variables


def test_a_variable_stands_for_its_flag_and_the_flag_wins():
    env = {
        "SYNCD_CONFIG": "env.yaml",
        "SYNCD_OUTPUT": "JSON",
        "SYNCD_LOG_LEVEL": "Warning",
        "SYNCD_SECRET": "a, b,,",
        "SYNCD_ONCE": "yes",
        "SYNCD_VERBOSE": "1",
    }
    inv = parse([], env)
    assert (inv.command, inv.config, inv.output, inv.log_level, inv.secret, inv.verbose) == (
        "run",
        "env.yaml",
        "json",
        "warning",
        ["a", "b"],
        True,
    )
    flagged = parse(["-c", "flag.yaml", "-o", "text", "--secret", "c"], env)
    assert (flagged.config, flagged.output, flagged.secret) == ("flag.yaml", "text", ["c"])
    assert {k: flagged.origin[k] for k in ("config", "log_level", "output", "once")} == {
        "config": "--config",
        "log_level": "SYNCD_LOG_LEVEL",
        "output": "--output",
        "once": "SYNCD_ONCE",
    }


def test_a_variable_counts_only_where_its_flag_applies():
    """One environment serves every command: SYNCD_OUTPUT=json doesn't stop the daemon, and
    SYNCD_SECRET doesn't reach doctor."""
    env = {"SYNCD_OUTPUT": "json", "SYNCD_SECRET": "a", "SYNCD_LISTEN": ":9102"}
    daemon = parse(["-c", "c.yaml"], env)
    assert (daemon.output, daemon.secret, daemon.listen) == ("text", None, ":9102")
    once = parse(["-c", "c.yaml", "--once"], env)
    assert (once.output, once.secret, once.listen) == ("json", ["a"], None)
    doctor = parse(["doctor", "-c", "c.yaml"], env)
    assert doctor.output == "json" and "secret" not in doctor.values
    names = parse(["names"], {"SYNCD_OUTPUT": "json"})
    assert names.output == "json"


def test_dry_run_from_the_environment_is_never_ignored():
    """Ignoring SYNCD_DRY_RUN would write: a daemon refuses to start with it."""
    assert "SYNCD_DRY_RUN needs --once" in usage_error(["-c", "c.yaml"], {"SYNCD_DRY_RUN": "1"})
    assert parse(["-c", "c.yaml", "--once"], {"SYNCD_DRY_RUN": "true"}).dry_run is True
    assert parse(["-c", "c.yaml"], {"SYNCD_DRY_RUN": "false"}).dry_run is False


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({"SYNCD_ONCE": "maybe"}, "SYNCD_ONCE='maybe': use true or false"),
        ({"SYNCD_LOG_FORMAT": "xml"}, "SYNCD_LOG_FORMAT 'xml': choose from text, json"),
        ({"SYNCD_OUTPUT": "yaml", "SYNCD_ONCE": "1"}, "SYNCD_OUTPUT 'yaml'"),
    ],
)
def test_a_bad_variable_is_a_usage_error_naming_it(env, said):
    assert said in usage_error(["-c", "c.yaml"], env)


def test_variables_end_to_end(write_config):
    path = write_config(values={"a": new_value()})
    run = syncd(env={"SYNCD_CONFIG": str(path), "SYNCD_ONCE": "1", "SYNCD_OUTPUT": "json"})
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["kind"] == "CycleResult"
    daemon = syncd(env={"SYNCD_CONFIG": str(path), "SYNCD_DRY_RUN": "1"})
    assert daemon.returncode == EXIT_USAGE and "SYNCD_DRY_RUN needs --once" in daemon.stderr


# ------------------------------------------------------------------ plan and output


def test_plan_shows_changes_and_a_summary_and_exits_like_a_dry_run(write_config, tmp_path):
    values = {f"s{i}": new_value() for i in range(5)}
    path = write_config(values=values)
    assert syncd("--config", str(path), "--once").returncode == 0
    values["s3"] = new_value()
    (tmp_path / "keys.yaml").write_text(json.dumps(values))
    plan = syncd("plan", "--config", str(path))
    assert plan.returncode == 2, plan.stderr
    assert plan.stdout.splitlines() == [
        "~ s3: would update v2 (keys: s3)",
        "plan: 0 to create, 1 to update, 0 to delete, 4 unchanged",
    ]
    every = syncd("plan", "-v", "--config", str(path))
    assert len(every.stdout.splitlines()) == 6
    doc = json.loads(syncd("plan", "-c", str(path), "-o", "json").stdout)
    assert (doc["apiVersion"], doc["kind"], doc["dry_run"]) == ("syncd.io/v1", "Plan", True)
    assert doc["summary"] == "0 to create, 1 to update, 0 to delete, 4 unchanged"
    assert (tmp_path / "out" / "s3").read_text() != values["s3"]  # the plan wrote nothing
    assert syncd("--once", "-c", str(path)).returncode == 0
    assert syncd("plan", "-c", str(path)).returncode == 0


def test_a_json_error_is_an_object_naming_provider_reference_and_transience(write_config):
    path = write_config(
        values={"a": new_value()},
        secrets=[
            {"name": "a", "from": {"provider": "local", "key": "a"}},
            {"name": "b", "from": {"provider": "local", "key": "missing"}},
        ],
    )
    run = syncd("--once", "-c", str(path), "-o", "json")
    assert run.returncode == 1
    by_name = {s["name"]: s for s in json.loads(run.stdout)["secrets"]}
    assert by_name["a"]["error"] is None
    error = by_name["b"]["error"]
    assert error.pop("message").startswith("provider 'local', local:missing: key 'missing' not")
    assert error == {
        "kind": "provider",
        "provider": "local",
        "ref": "local:missing",
        "transient": False,
    }


def test_every_document_says_its_schema(write_config):
    path = write_config(values={"a": new_value()})
    assert syncd("--once", "-c", str(path)).returncode == 0
    kinds = {
        ("check",): "ConfigCheck",
        ("names",): "Names",
        ("doctor",): "DoctorReport",
        ("import",): "ImportResult",
        ("plan",): "Plan",
        ("--once",): "CycleResult",
    }
    for args, kind in kinds.items():
        doc = json.loads(syncd(*args, "-c", str(path), "-o", "json").stdout)
        assert (doc["apiVersion"], doc["kind"]) == ("syncd.io/v1", kind), args
    version = json.loads(syncd("version", "-o", "json").stdout)
    assert (version["apiVersion"], version["kind"]) == ("syncd.io/v1", "Version")


def test_check_json_on_a_bad_config(write_config):
    path = write_config(values={"a": new_value()})
    path.write_text(path.read_text().replace("provider: local", "provider: local\n    colour: x"))
    run = syncd("check", "-c", str(path), "-o", "json")
    assert run.returncode == 1
    assert json.loads(run.stdout)["valid"] is False
    assert "unknown key" in run.stderr


# ------------------------------------------------------------------ --secret and for_each


def for_each(write_config, values: dict[str, str]) -> Path:
    return write_config(
        values=values,
        secrets=[
            {"name": "app_{key}", "for_each": {"provider": "local"}},
            {"name": "plain", "from": {"provider": "local", "key": "x"}},
        ],
    )


def test_secret_accepts_a_name_a_for_each_makes(write_config, tmp_path):
    path = for_each(write_config, {"x": new_value(), "y": new_value(), "z": new_value()})
    run = syncd("--once", "-c", str(path), "--secret", "app_y", "-v")
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [
        "+ app_y: create v1 (keys: app_y)",
        "done: 1 created, 0 updated, 0 deleted, 0 unchanged",
    ]
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")) == [
        "app_y"
    ]
    template = syncd("plan", "-c", str(path), "--secret", "app_{key}")
    assert "+ app_x: would create v1" in template.stdout
    assert "+ app_z: would create v1" in template.stdout and "plain" not in template.stdout


def test_secret_with_an_unknown_name_fails_and_names_it(write_config, tmp_path):
    path = for_each(write_config, {"x": new_value()})
    run = syncd("--once", "-c", str(path), "--secret", "app_q")
    assert run.returncode == 1
    assert f"error: app_q: no secret named 'app_q' in {path}, nor made by a for_each" in run.stderr
    assert not (tmp_path / "out").exists() or not any(
        p for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")
    )


# ------------------------------------------------------------------ version and completion


def test_version_names_python_and_each_extra():
    text = syncd("version")
    assert text.returncode == 0
    lines = text.stdout.splitlines()
    assert re.fullmatch(r"syncd \d+\.\d+\.\d+\S*", lines[0])
    assert lines[1].startswith(f"python {sys.version_info.major}.{sys.version_info.minor}.")
    doc = json.loads(syncd("version", "-o", "json").stdout)
    assert set(doc["extras"]) == {"vault", "aws", "azure", "kubernetes", "swarm"}
    assert set(doc["extras"]["azure"]["packages"]) == {"azure-keyvault-secrets", "azure-identity"}
    assert doc["extras"]["vault"]["installed"] is True  # the test environment has every extra
    assert syncd("--version").stdout == lines[0] + "\n"


def test_version_says_what_to_install_when_an_extra_is_missing(capsys, monkeypatch):
    from importlib import metadata

    real = metadata.version

    def without_boto3(name: str) -> str:
        if name == "boto3":
            raise metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(metadata, "version", without_boto3)
    assert main(["version"]) == 0
    aws = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("aws"))
    assert "boto3 missing" in aws and "pip install 'syncd[aws]'" in aws


def complete(line: str, tmp_path: Path) -> list[str]:
    """What the shell would offer for ``line`` (argcomplete's protocol, as bash runs it)."""
    out = tmp_path / "completions"
    env = {
        "_ARGCOMPLETE": "1",
        "_ARGCOMPLETE_SHELL": "bash",
        "_ARGCOMPLETE_STDOUT_FILENAME": str(out),
        "_ARGCOMPLETE_IFS": "\n",
        "COMP_LINE": line,
        "COMP_POINT": str(len(line)),
        "COMP_TYPE": "9",
    }
    run = syncd(env=env)
    assert run.returncode == 0, run.stderr
    return [word.strip() for word in out.read_text().split("\n")]


def test_completion_offers_commands_flags_and_choices(tmp_path):
    assert "plan" in complete("syncd pl", tmp_path)
    assert set(complete("syncd ", tmp_path)) >= set(COMMANDS)
    assert "--ignore-window" in complete("syncd plan --ig", tmp_path)
    offered = set(complete("syncd completion ", tmp_path))
    assert offered >= {"bash", "zsh", "fish"} and "tcsh" not in offered


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts(shell):
    run = syncd("completion", shell)
    assert run.returncode == 0 and "syncd" in run.stdout
    if shell == "bash":
        check = subprocess.run(
            ["bash", "-c", f"{run.stdout}\ncomplete -p syncd"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert check.returncode == 0 and "syncd" in check.stdout, check.stderr


# ------------------------------------------------------------------ config typos


@pytest.mark.parametrize(
    ("typo", "said"),
    [
        ({"prnue": True}, "prnue: unknown key (did you mean prune?)"),
        ({"defaults": {"refrsh": "1m"}}, "defaults.refrsh: unknown key (did you mean refresh?)"),
        ({"daemon": {"listn": ":0"}}, "daemon.listn: unknown key (did you mean listen?)"),
        (
            {"secrets": [{"name": "a", "from": {"provider": "local", "key": "a"}, "keep_": 2}]},
            "secrets[0].keep_: unknown key (did you mean keep?)",
        ),
        (
            {"providers": {"local": {"type": "file", "path": "keys.yaml", "formt": "yaml"}}},
            "providers.local.formt: unknown key (did you mean format?)",
        ),
        (
            {"target": {"type": "files", "directory": "out", "mdoe": "0400"}},
            "target.mdoe: unknown key (did you mean mode?)",
        ),
        (
            {"secrets": [{"name": "a", "from": {"provider": "local", "kye": "a"}}]},
            "secrets[0].from.kye: unknown key (did you mean key?)",
        ),
        ({"defaults": {"zzz": 1}}, "defaults.zzz: unknown key\n"),
    ],
)
def test_a_config_typo_gets_the_nearest_key_of_its_place(write_config, typo, said):
    path = write_config(values={"a": new_value()}, **typo)
    run = syncd("check", "-c", str(path))
    assert run.returncode == 1
    assert said in run.stderr, run.stderr
