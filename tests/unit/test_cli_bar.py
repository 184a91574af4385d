"""The progress bar of ``--once`` / ``plan``: the engine's counts, and a bar drawn only on a
terminal, with text output, never carrying a value."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest

from syncd.cli import main
from syncd.cli.bar import progress_bar
from syncd.config import load_config
from syncd.engine import Engine
from syncd.model import NewVersion, VersionInfo
from syncd.progress import CHECKING, CREATING, FETCHING
from syncd.targets.base import Target, TargetConfig, TargetContext
from tests.conftest import new_value


class Terminal(io.StringIO):
    """A stream that says it is a terminal, keeping what was drawn on it."""

    def isatty(self) -> bool:
        return True


def three(write_config) -> tuple[Path, list[str]]:
    values = [new_value(), new_value(), new_value()]
    return write_config(values=dict(zip("abc", values, strict=True))), values


def test_the_engine_counts_each_stage_up_to_its_total(write_config):
    path, _ = three(write_config)
    heard: list[tuple[str, int, int]] = []
    engine = Engine(load_config(path))
    engine.progress = lambda stage, done, total: heard.append((stage, done, total))
    assert engine.run_cycle().ok
    assert [h for h in heard if h[0] == CHECKING] == [(CHECKING, 0, 3), (CHECKING, 3, 3)]
    assert [h for h in heard if h[0] == FETCHING] == [(FETCHING, 0, 3), (FETCHING, 3, 3)]
    assert [h for h in heard if h[0] == CREATING] == [(CREATING, 0, 3), (CREATING, 3, 3)]
    heard.clear()
    assert engine.run_cycle().ok  # nothing changed: versions asked for, nothing read or made
    assert {h[0] for h in heard} == {CHECKING}
    assert engine.target.created is None
    engine.close()


class OneByOne(Target[TargetConfig]):
    """A target that makes one version per call, like Kubernetes and Swarm."""

    type_name = "one-by-one"
    config_model = TargetConfig

    def load_key(self) -> bytes | None:
        return None

    def store_key(self, key: bytes) -> None:
        del key

    def list_versions(self, names: object) -> dict[str, list[VersionInfo]]:
        return {}

    def create_version(self, item: NewVersion) -> VersionInfo:
        if item.secret == "bad":
            from syncd.errors import TargetError

            raise TargetError("refused")
        return item.stored_as(f"{item.secret}-v{item.version}")


def test_a_target_writing_one_version_at_a_time_counts_each_made_or_failed(tmp_path):
    from syncd.calls import CallCounter

    target = OneByOne(
        TargetConfig(type="one-by-one"), context=TargetContext(tmp_path, CallCounter())
    )
    counted: list[int] = []
    target.created = counted.append
    items = [
        NewVersion(name, 1, {"k": b"x"}, "fp", {}, "src", "2026-01-01T00:00:00Z")
        for name in ("a", "bad", "c")
    ]
    results = target.create_versions(items)
    assert counted == [1, 1, 1]
    assert sorted(k for k, v in results.items() if isinstance(v, VersionInfo)) == ["a", "c"]


def test_on_a_terminal_the_bar_advances_to_the_total_and_shows_no_value(write_config):
    path, values = three(write_config)
    terminal = Terminal()
    engine = Engine(load_config(path))
    with progress_bar(terminal, output="text", disabled=False) as hook:
        assert hook is not None
        engine.progress = hook
        assert engine.run_cycle().ok
    engine.close()
    drawn = terminal.getvalue()
    for stage in (CHECKING, FETCHING, CREATING):
        assert f"{stage}: 100%" in drawn and "3/3" in drawn
    assert not any(v in drawn for v in values)


@pytest.mark.parametrize(
    ("stream", "output", "disabled"),
    [
        (io.StringIO(), "text", False),  # not a terminal
        (Terminal(), "json", False),
        (Terminal(), "text", True),  # --no-progress / SYNCD_NO_PROGRESS
    ],
)
def test_no_bar_off_a_terminal_with_json_or_when_turned_off(stream, output, disabled):
    with progress_bar(stream, output=output, disabled=disabled) as hook:
        assert hook is None
    assert stream.getvalue() == ""


def test_log_lines_go_above_the_bar_through_the_same_handler_and_come_back(write_config):
    terminal = Terminal()
    handler = logging.StreamHandler(terminal)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with progress_bar(terminal, output="text", disabled=False) as hook:
            assert hook is not None
            hook(FETCHING, 1, 2)
            assert handler.stream is not terminal
            logging.getLogger("syncd.test").warning("a line while drawing")
        assert handler.stream is terminal
    finally:
        root.removeHandler(handler)
    assert "a line while drawing\n" in terminal.getvalue()


def run(monkeypatch, capsys, argv: list[str], env: dict[str, str] | None = None):
    """``main(argv)`` with stderr a terminal: (exit code, stdout, what stderr got)."""
    terminal = Terminal()
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr("sys.stderr", terminal)
    code = main(argv)
    return code, capsys.readouterr().out, terminal.getvalue()


def test_once_on_a_terminal_draws_the_bar_and_prints_the_report_after(
    write_config, monkeypatch, capsys
):
    path, values = three(write_config)
    code, out, err = run(monkeypatch, capsys, ["-c", str(path), "--once"])
    assert code == 0
    assert f"{CREATING}: 100%" in err and "3/3" in err
    assert "INFO syncd.swap: created a version 1\n" in err  # written above the bar, whole
    assert out.endswith("done: 3 created, 0 updated, 0 deleted, 0 unchanged\n")
    assert not any(v in err + out for v in values)


def test_plan_draws_the_bar_too(write_config, monkeypatch, capsys):
    path, _ = three(write_config)
    code, out, err = run(monkeypatch, capsys, ["plan", "-c", str(path)])
    assert code == 2
    assert f"{FETCHING}: 100%" in err and CREATING not in err
    assert out.endswith("plan: 3 to create, 0 to update, 0 to delete, 0 unchanged\n")


@pytest.mark.parametrize(
    ("extra", "env"),
    [
        (["-o", "json"], {}),
        (["--no-progress"], {}),
        ([], {"SYNCD_NO_PROGRESS": "true"}),
    ],
)
def test_json_output_and_no_progress_draw_nothing(write_config, monkeypatch, capsys, extra, env):
    path, _ = three(write_config)
    code, out, err = run(monkeypatch, capsys, ["-c", str(path), "--once", *extra], env)
    assert code == 0
    assert "\r" not in err and CHECKING not in err
    assert "created a version 1\n" in err  # the log lines are there, as without a terminal
    if "json" in extra:
        assert json.loads(out)["kind"] == "CycleResult"


def test_no_progress_is_for_one_cycle_only(write_config, capsys):
    path, _ = three(write_config)
    assert main(["-c", str(path), "--no-progress"]) == 64
    assert "--no-progress needs --once" in capsys.readouterr().err
