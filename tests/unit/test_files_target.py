"""The files target: atomic set swaps, stable paths, modes, bundle outputs, crash repair."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest
import yaml

from syncd.config import load_config
from syncd.engine import Engine
from syncd.envfile import parse_env
from tests.conftest import new_value, run, wait_until


def set_values(path: Path, **values: str) -> None:
    (path.parent / "keys.yaml").write_text(yaml.safe_dump(values))


def test_layout_modes_and_stable_path(write_config, tmp_path):
    value = new_value()
    path = write_config(values={"api": value})
    assert run(path).ok
    out = tmp_path / "out"
    assert (out / "api").read_text() == value
    assert os.readlink(out / "api") == "..data/api"
    assert os.readlink(out / "..data").startswith("..20")
    assert stat.S_IMODE(os.stat(out / "api").st_mode) == 0o400
    assert stat.S_IMODE(os.stat(out / "..syncd-key").st_mode) == 0o400
    state = (out / "..data" / "..syncd.json").read_text()
    assert value not in state


def test_no_change_cycle_touches_nothing(write_config, tmp_path):
    path = write_config(values={"api": new_value()})
    run(path)
    before = sorted(os.listdir(tmp_path / "out"))
    result = run(path)
    assert result.target_writes == 0
    assert sorted(os.listdir(tmp_path / "out")) == before


def test_mode_owner_and_group(write_config, tmp_path):
    if os.geteuid() != 0:
        pytest.fail("this test changes file owners and runs as root (as CI does)")
    path = write_config(
        values={"api": new_value()},
        target={"type": "files", "directory": "out", "mode": "0440", "owner": 1234, "group": 4321},
    )
    run(path)
    st = os.stat(tmp_path / "out" / "api")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o440, 1234, 4321)


def test_bundles_as_folder_and_rendered_env(write_config, tmp_path):
    a, b = new_value(), "two words"
    path = write_config(
        values={"a": a, "b": b},
        secrets=[
            {
                "name": "dir",
                "data": {
                    "A": {"provider": "local", "key": "a"},
                    "B": {"provider": "local", "key": "b"},
                },
            },
            {
                "name": "app.env",
                "format": "env",
                "data": {
                    "A": {"provider": "local", "key": "a"},
                    "B": {"provider": "local", "key": "b"},
                },
            },
        ],
    )
    assert run(path).ok
    out = tmp_path / "out"
    assert (out / "dir" / "A").read_text() == a
    assert (out / "dir" / "B").read_text() == b
    assert parse_env((out / "app.env").read_text()) == {"A": a, "B": b}


def test_env_and_yaml_outputs_for_compose(write_config, tmp_path):
    o, k = new_value(), new_value()
    path = write_config(
        values={"openai_api_key": o, "anthropic_api_key": k},
        target={
            "type": "files",
            "directory": "out",
            "env_file": ".env",
            "yaml_file": "user_keys.yaml",
        },
    )
    assert run(path).ok
    out = tmp_path / "out"
    assert parse_env((out / ".env").read_text()) == {"OPENAI_API_KEY": o, "ANTHROPIC_API_KEY": k}
    assert yaml.safe_load((out / "user_keys.yaml").read_text()) == {
        "openai_api_key": o,
        "anthropic_api_key": k,
    }


def test_atomic_swap_under_concurrent_reader(write_config, tmp_path):
    """A reader of out/<name> never sees a missing, empty or half-written file."""
    path = write_config(values={"api": "v0000-" + "x" * 4000})
    run(path)
    target = tmp_path / "out" / "api"
    stop = threading.Event()
    seen: list[int] = []
    failures: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                text = target.read_text()
            except OSError as exc:
                failures.append(repr(exc))
                continue
            if len(text) != 4006 or not text.startswith("v"):
                failures.append(f"partial read of {len(text)} chars")
            else:
                seen.append(int(text[1:5]))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for n in range(1, 41):
            set_values(path, api=f"v{n:04d}-" + "x" * 4000)
            assert run(path).ok
        # the reader may not have been scheduled since the last swap (a loaded machine)
        wait_until("the reader sees the last value", lambda: seen and seen[-1] == 40, 10)
    finally:
        stop.set()
        thread.join()
    assert failures == []
    assert len(seen) > 40
    assert seen == sorted(seen), "values went backwards"
    assert seen[-1] == 40


def test_history_keeps_previous_generations(write_config, tmp_path):
    path = write_config(
        values={"api": new_value()}, target={"type": "files", "directory": "out", "history": 2}
    )
    for _ in range(5):
        set_values(path, api=new_value())
        run(path)
    gens = [n for n in os.listdir(tmp_path / "out") if n.startswith("..20")]
    assert len(gens) == 3


def test_crash_leftovers_are_repaired(write_config, tmp_path):
    """Invariant 6: a temp folder from a crashed run and a missing link are fixed next cycle."""
    value = new_value()
    path = write_config(values={"api": value})
    run(path)
    out = tmp_path / "out"
    (out / "..tmp-crashed").mkdir()
    (out / "..tmp-crashed" / "api").write_text("half")
    os.unlink(out / "api")
    result = run(path)
    assert result.ok
    assert not (out / "..tmp-crashed").exists()
    assert (out / "api").read_text() == value


def test_crash_before_data_swap_keeps_old_set_and_next_run_finishes(
    write_config, tmp_path, monkeypatch
):
    old, new = new_value(), new_value()
    path = write_config(values={"api": old})
    run(path)
    set_values(path, api=new)
    real_rename = os.rename

    class Crash(BaseException):
        pass

    def crashing_rename(src, dst, *args, **kwargs):
        if str(dst).endswith("..data"):
            raise Crash
        return real_rename(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "rename", crashing_rename)
    with pytest.raises(Crash):
        run(path)
    monkeypatch.setattr(os, "rename", real_rename)
    assert (tmp_path / "out" / "api").read_text() == old
    assert run(path).ok
    assert (tmp_path / "out" / "api").read_text() == new
    assert run(path).target_writes == 0


def test_unmanaged_file_is_never_overwritten(write_config, tmp_path):
    path = write_config(values={"api": new_value()})
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "api").write_text("precious")
    result = run(path)
    assert not result.ok
    assert "not managed by syncd" in (result.items[0].error or "")
    assert (tmp_path / "out" / "api").read_text() == "precious"


def test_an_unmanaged_env_file_is_never_overwritten(write_config, tmp_path):
    path = write_config(
        values={"api": new_value()},
        target={"type": "files", "directory": "out", "env_file": ".env"},
    )
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / ".env").write_text("precious")
    result = run(path)
    assert not result.ok and "out/.env exists and is not managed" in (result.items[0].error or "")
    assert (tmp_path / "out" / ".env").read_text() == "precious"
    (tmp_path / "out" / ".env").unlink()
    assert run(path).ok


def test_failed_secret_keeps_its_previous_file(write_config, tmp_path):
    a, b = new_value(), new_value()
    path = write_config(values={"a": a, "b": b})
    run(path)
    set_values(path, b=new_value())  # "a" disappears from the source
    result = run(path)
    assert not result.ok
    assert (tmp_path / "out" / "a").read_text() == a
    assert (tmp_path / "out" / "b").read_text() != b


def test_data_link_left_on_a_removed_generation_is_repaired(write_config, tmp_path):
    """What two unlocked writers once did: ``..data`` names a generation that is gone. A dry
    run says so; the next writing run points it back at the newest complete generation and
    writes the current values again."""
    import shutil

    from syncd.errors import TargetError

    old, new = new_value(), new_value()
    path = write_config(
        values={"api": old}, target={"type": "files", "directory": "out", "history": 2}
    )
    assert run(path).ok
    set_values(path, api=new)
    assert run(path).ok
    out = tmp_path / "out"
    shutil.rmtree(out / os.readlink(out / "..data"))
    engine = Engine(load_config(path))
    try:
        with pytest.raises(TargetError, match="missing"):
            engine.target.list_versions(["api"])
        assert not engine.run_cycle(dry_run=True).ok
    finally:
        engine.close()
    result = run(path)
    assert result.ok and [i.action for i in result.items] == ["update"]
    assert (out / "api").read_text() == new
    assert run(path).target_writes == 0


def test_a_data_link_with_no_generation_left_is_removed_and_rewritten(write_config, tmp_path):
    value = new_value()
    path = write_config(values={"api": value})
    out = tmp_path / "out"
    out.mkdir()
    (out / "..data").symlink_to("..2020_01_01_00_00_00.000000")
    result = run(path)
    assert result.ok and (out / "api").read_text() == value


def test_prepare_finds_a_directory_that_cant_work(write_config, tmp_path):
    from syncd.errors import SyncdError

    path = write_config(values={"api": new_value()})
    (tmp_path / "out").write_text("a file, not a folder")
    engine = Engine(load_config(path))
    try:
        with pytest.raises(SyncdError, match="out exists and is not a directory"):
            engine.build()
    finally:
        engine.close()


def test_the_local_example_runs_as_the_readme_says(tmp_path):
    """config/examples/local: one run writes the file, the next writes nothing."""
    import shutil

    from tests.conftest import ROOT

    example = ROOT / "config" / "examples" / "local"
    for name in ("syncd.yaml", "user_keys.yaml"):
        shutil.copy(example / name, tmp_path / name)
    assert run(tmp_path / "syncd.yaml").ok
    keys = yaml.safe_load((tmp_path / "user_keys.yaml").read_text())
    assert (tmp_path / "out" / "openai_api_key").read_text() == keys["openai_api_key"]
    assert run(tmp_path / "syncd.yaml").target_writes == 0
