"""Crashes and dry runs: a real SIGKILL after any single write of a run leaves a directory a
reader can trust and the next run finishes; a dry run and ``syncd names`` write nothing."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from syncd.cli import main
from syncd.config import load_config
from syncd.engine import Engine
from tests.conftest import new_value

GENERATION = re.compile(r"\.\.\d{4}(?:_\d{2}){5}\.\d{6}(?:-\d+)?")
#: Every call that changes a directory: a crash is tried after each one.
WRITES = ("mkdir", "rename", "link", "symlink", "unlink", "rmdir")
CHILD_ERROR = 3


def run(path: Path, *, dry_run: bool = False):
    engine = Engine(load_config(path))
    try:
        return engine.run_cycle(dry_run=dry_run)
    finally:
        engine.close()


def crashing(path: Path, *, after: Callable[[str, tuple], bool]) -> bool:
    """Run one cycle in a forked child that SIGKILLs itself right after the first write for
    which ``after(call, args)`` is true; True if it was killed, False if it finished first."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 0
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 2)
            _install(after)
            run(path)
        except BaseException:  # reported to the parent by the exit code
            code = CHILD_ERROR
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == CHILD_ERROR), "child failed"
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def _install(after: Callable[[str, tuple], bool]) -> None:
    def wrap(call: str, real: Callable) -> Callable:
        def hooked(*args, **kwargs):
            result = real(*args, **kwargs)
            if after(call, args):
                os.kill(os.getpid(), signal.SIGKILL)
            return result

        return hooked

    for call in WRITES:
        setattr(os, call, wrap(call, getattr(os, call)))
    real_open = os.open

    def hooked_open(path, flags, *args, **kwargs):
        fd = real_open(path, flags, *args, **kwargs)
        if flags & os.O_CREAT and after("create", (path,)):
            os.kill(os.getpid(), signal.SIGKILL)
        return fd

    os.open = hooked_open


def nth_write(n: int) -> Callable[[str, tuple], bool]:
    seen = [0]

    def after(call: str, args: tuple) -> bool:
        del call, args
        seen[0] += 1
        return seen[0] == n

    return after


def project(tmp_path: Path, values: dict[str, str], *, history: int = 1) -> Path:
    (tmp_path / "keys.yaml").write_text(yaml.safe_dump(values))
    doc = {
        "providers": {"local": {"type": "file", "path": "keys.yaml"}},
        "target": {"type": "files", "directory": "out", "env_file": ".env", "history": history},
        "secrets": [
            {"name": "api", "from": {"provider": "local", "key": "api"}},
            {"name": "keep", "from": {"provider": "local", "key": "keep"}},
            {
                "name": "dir",
                "data": {
                    "A": {"provider": "local", "key": "a"},
                    "B": {"provider": "local", "key": "b"},
                },
            },
        ],
    }
    path = tmp_path / "syncd.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def values_seen(out: Path) -> tuple[str, str, str] | None:
    """What a reader sees through the stable paths (None: a path is missing)."""
    try:
        return (
            (out / "api").read_text(),
            (out / "dir" / "A").read_text(),
            (out / "keep").read_text(),
        )
    except FileNotFoundError:
        return None


def assert_healthy(out: Path, *, history: int, names: set[str]) -> None:
    """No temporary leftovers, no generation beyond history, a valid ..data, exact links."""
    entries = os.listdir(out)
    assert [n for n in entries if n.startswith("..tmp-")] == []
    gens = [n for n in entries if GENERATION.fullmatch(n)]
    assert 1 <= len(gens) <= history + 1, gens
    current = os.readlink(out / "..data")
    assert current in gens
    assert json.loads((out / current / "..syncd.json").read_text())["secrets"]
    assert [n for n in os.listdir(out / current) if n.startswith("..tmp-")] == []
    assert {n for n in entries if not n.startswith("..")} == names
    for name in names:
        assert os.readlink(out / name) == f"..data/{name}"
        assert (out / name).exists()


NAMES = {"api", "keep", "dir", ".env"}


def test_sigkill_after_any_write_of_a_swap_is_repaired(tmp_path):
    """Crash after write 1, 2, 3 ... of an update (carry, new files, ..data switch, links,
    pruning): a reader always sees the complete old set or the complete new one, and the next
    run ends healthy with nothing beyond history, then writes nothing."""
    old = {"api": new_value(), "keep": new_value(), "a": new_value(), "b": new_value()}
    path = project(tmp_path, old)
    out = tmp_path / "out"
    assert run(path).ok
    old["api"], old["a"] = new_value(), new_value()
    project(tmp_path, old)
    assert run(path).ok  # two generations now: the swap below also prunes one
    baseline = tmp_path / "baseline"
    shutil.copytree(out, baseline, symlinks=True)
    new = {**old, "api": new_value(), "a": new_value()}
    project(tmp_path, new)
    before, after = (old["api"], old["a"], old["keep"]), (new["api"], new["a"], new["keep"])
    n = 0
    while True:
        n += 1
        shutil.rmtree(out)
        shutil.copytree(baseline, out, symlinks=True)
        if not crashing(path, after=nth_write(n)):
            break
        assert values_seen(out) in (before, after), f"crash after write {n}"
        result = run(path)
        assert result.ok, (n, [i.error for i in result.items])
        assert values_seen(out) == after
        assert_healthy(out, history=1, names=NAMES)
        assert run(path).target_writes == 0, f"crash after write {n}"
    assert n > 15, "the swap should have been crashed at every one of its writes"


def test_sigkill_after_any_write_of_a_first_run_is_repaired(tmp_path):
    """From an empty directory (the key, the lock, the first generation): whatever exists
    after the crash is complete, the key is never replaced, and the next run finishes."""
    values = {"api": new_value(), "keep": new_value(), "a": new_value(), "b": new_value()}
    path = project(tmp_path, values)
    out = tmp_path / "out"
    want = (values["api"], values["a"], values["keep"])
    n = 0
    while True:
        n += 1
        shutil.rmtree(out, ignore_errors=True)
        if not crashing(path, after=nth_write(n)):
            break
        key = out / "..syncd-key"
        crashed_key = key.read_bytes() if key.exists() else None
        assert crashed_key is None or len(crashed_key) == 32
        for name in ("api", "keep"):
            if os.path.lexists(out / name):
                assert (out / name).read_text() == values[name]
        assert run(path).ok
        assert values_seen(out) == want
        assert crashed_key is None or key.read_bytes() == crashed_key
        assert_healthy(out, history=1, names=NAMES)
        assert run(path).target_writes == 0
    assert n > 8


def test_sigkill_between_the_data_switch_and_cleanup_then_a_no_change_run(tmp_path):
    """The review's case: killed right after ..data moved, so the swap is done but nothing
    was cleaned. The next run has nothing upstream to change and must still tidy up."""
    values = {"api": new_value(), "keep": new_value(), "a": new_value(), "b": new_value()}
    path = project(tmp_path, values, history=1)
    out = tmp_path / "out"
    for _ in range(2):
        values["api"] = new_value()
        project(tmp_path, values, history=1)
        assert run(path).ok
    values["api"] = new_value()
    project(tmp_path, values, history=1)

    def after_switch(call: str, args: tuple) -> bool:
        return call == "rename" and len(args) > 1 and os.path.basename(args[1]) == "..data"

    assert crashing(path, after=after_switch)
    gens = [n for n in os.listdir(out) if GENERATION.fullmatch(n)]
    assert len(gens) == 3  # the crash left one beyond history
    result = run(path)
    assert [i.action for i in result.items] == ["unchanged"] * 3
    assert result.target_writes > 0
    assert_healthy(out, history=1, names=NAMES)
    assert (out / "api").read_text() == values["api"]
    assert run(path).target_writes == 0


def messy(tmp_path: Path) -> tuple[Path, Path]:
    """A synced directory with every kind of leftover a crash can leave."""
    values = {"api": new_value(), "keep": new_value(), "a": new_value(), "b": new_value()}
    path = project(tmp_path, values, history=1)
    out = tmp_path / "out"
    for _ in range(3):
        values["api"] = new_value()
        project(tmp_path, values, history=1)
        assert run(path).ok
    current = os.readlink(out / "..data")
    for stamp in ("..2000_01_01_00_00_00.000000", "..2001_01_01_00_00_00.000000"):
        shutil.copytree(out / current, out / stamp, symlinks=True)
    (out / "..tmp-crashed").mkdir()
    (out / "..tmp-crashed" / "api").write_text("half")
    (out / "..tmp-link").symlink_to("..data/api")
    (out / current / "..tmp-state").write_text("{")
    os.unlink(out / "keep")
    (out / "gone").symlink_to("..data/gone")
    values["api"] = new_value()
    project(tmp_path, values, history=1)  # a change pending, too
    return path, out


def snapshot(top: Path) -> dict[str, tuple[int, ...]]:
    """Every entry under ``top`` with everything a write would change (not atime)."""
    found = {}
    for folder, dirs, files in os.walk(top):
        for name in [*dirs, *files, "."]:
            st = (Path(folder) / name).lstat()
            found[os.path.join(folder, name)] = (
                st.st_ino,
                st.st_mode,
                st.st_uid,
                st.st_size,
                st.st_mtime_ns,
                st.st_ctime_ns,
                st.st_nlink,
            )
    return found


def test_dry_run_and_names_write_nothing_even_with_leftovers(tmp_path, capsys):
    path, out = messy(tmp_path)
    before = snapshot(out)
    result = run(path, dry_run=True)
    assert result.changed and result.target_writes == 0
    assert snapshot(out) == before
    assert main(["--config", str(path), "--once", "--dry-run"]) == 2
    assert snapshot(out) == before
    assert main(["names", "--config", str(path)]) == 0
    assert "API_SECRET=api-v" in capsys.readouterr().out
    assert snapshot(out) == before
    assert run(path).ok
    assert_healthy(out, history=1, names=NAMES)


@pytest.mark.parametrize("exists", [False, True])
def test_dry_run_of_a_first_run_creates_nothing(tmp_path, exists):
    path = project(tmp_path, {"api": new_value(), "keep": "k", "a": "a", "b": "b"})
    out = tmp_path / "out"
    if exists:
        out.mkdir()
    before = snapshot(tmp_path)
    result = run(path, dry_run=True)
    assert result.changed and result.target_writes == 0
    assert snapshot(tmp_path) == before


def test_sigkill_after_any_write_of_a_repair(tmp_path):
    """Repair itself can be killed anywhere; the run after that still finishes it."""
    path, out = messy(tmp_path)
    baseline = tmp_path / "baseline"
    shutil.copytree(out, baseline, symlinks=True)
    n = 0
    while True:
        n += 1
        shutil.rmtree(out)
        shutil.copytree(baseline, out, symlinks=True)
        if not crashing(path, after=nth_write(n)):
            break
        assert (out / "api").exists() and (out / "dir" / "A").exists(), f"after write {n}"
        assert run(path).ok
        assert_healthy(out, history=1, names=NAMES)
    assert n > 10
