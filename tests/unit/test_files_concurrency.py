"""One writer per directory: two real ``syncd --once`` processes on one files target take
turns, readers never miss a file, and ``..data`` always names a complete generation."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from syncd.calls import CallCounter
from syncd.config import load_config
from syncd.engine import Engine
from syncd.errors import TargetError
from syncd.targets.base import TargetContext
from syncd.targets.files import FilesTarget, FilesTargetConfig
from tests.conftest import new_value

FILLERS = 40


def config(tmp_path: Path, who: str, **target) -> Path:
    """A config writing secret ``who`` (and fillers, so a swap takes a while) into the shared
    directory."""
    names = [who, *(f"{who}{i}" for i in range(FILLERS))]
    doc = {
        "providers": {"src": {"type": "file", "path": f"keys_{who}.yaml"}},
        "target": {"type": "files", "directory": "shared", **target},
        "secrets": [{"name": n, "from": {"provider": "src", "key": n}} for n in names],
    }
    path = tmp_path / f"{who}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def set_round(tmp_path: Path, who: str, n: int) -> str:
    value = f"{who}-{n:03d}-{new_value()}"
    values = {who: value, **{f"{who}{i}": f"{n}-{new_value()}" for i in range(FILLERS)}}
    (tmp_path / f"keys_{who}.yaml").write_text(yaml.safe_dump(values))
    return value


def syncd_once(path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "syncd", "--config", str(path), "--once"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_processes_take_turns_and_readers_never_fail(tmp_path):
    paths = {who: config(tmp_path, who) for who in ("a", "b")}
    want = {who: set_round(tmp_path, who, 0) for who in paths}
    for path in paths.values():
        assert syncd_once(path).wait(timeout=120) == 0
    out = tmp_path / "shared"
    stop = threading.Event()
    reads = [0]
    failures: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                seen = {who: (out / who).read_text() for who in paths}
                current = os.readlink(out / "..data")
                if not (out / current / "..syncd.json").is_file():
                    failures.append(f"..data points at {current}, which is incomplete")
            except OSError as exc:
                failures.append(f"{type(exc).__name__}: {exc.filename}")
                continue
            for who, text in seen.items():
                if not text.startswith(f"{who}-"):
                    failures.append(f"partial read of {who}")
            reads[0] += 1

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        for n in range(1, 9):
            want = {who: set_round(tmp_path, who, n) for who in paths}
            procs = {who: syncd_once(path) for who, path in paths.items()}
            for who, proc in procs.items():
                _, err = proc.communicate(timeout=120)
                assert proc.returncode == 0, f"round {n}, {who}: {err}"
            for who in paths:
                assert (out / who).read_text() == want[who], f"round {n}: lost update of {who}"
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert failures == []
    assert reads[0] > 100
    generations = [n for n in os.listdir(out) if n.startswith("..20")]
    assert len(generations) == 2  # current + history 1


def target_for(root: Path, **settings) -> FilesTarget:
    cfg = FilesTargetConfig(type="files", directory=str(root), **settings)
    return FilesTarget(cfg, context=TargetContext(base_dir=root.parent, calls=CallCounter()))


def test_a_held_lock_is_waited_for_briefly_then_named(tmp_path):
    path = config(tmp_path, "a", lock_timeout="300ms")
    set_round(tmp_path, "a", 1)
    out = tmp_path / "shared"
    out.mkdir()
    holder = target_for(out)
    other = target_for(out, lock_timeout=0.3)
    with holder.exclusive():
        start = time.monotonic()
        with pytest.raises(TargetError) as caught, other.exclusive():
            pass
        waited = time.monotonic() - start
        proc = syncd_once(path)
        _, err = proc.communicate(timeout=120)
    assert 0.25 < waited < 2
    message = str(caught.value)
    assert f"pid {os.getpid()}" in message and "lock_timeout" in message
    assert "stop the other one" in message
    assert proc.returncode == 1
    assert f"pid {os.getpid()}" in err and "target unavailable" in err
    assert sorted(os.listdir(out)) == ["..syncd.lock"]  # nothing written while locked
    with other.exclusive():
        pass  # free again once the holder is done


def test_the_lock_is_held_only_during_a_writing_cycle(tmp_path):
    path = config(tmp_path, "a", lock_timeout=0.2)
    set_round(tmp_path, "a", 1)
    engine = Engine(load_config(path))
    try:
        assert engine.run_cycle().ok
        with target_for(tmp_path / "shared", lock_timeout=0).exclusive():
            set_round(tmp_path, "a", 2)
            assert engine.run_cycle(dry_run=True).changed  # a dry run needs no lock
            result = engine.run_cycle()
            assert not result.ok and "target unavailable" in (result.items[0].error or "")
        assert engine.run_cycle().ok
    finally:
        engine.close()


def test_a_write_outside_a_cycle_takes_the_lock_too(tmp_path):
    """``store_key`` or ``create_versions`` called without ``exclusive()`` still wait for the
    directory's writer."""
    out = tmp_path / "shared"
    out.mkdir()
    holder, other = target_for(out), target_for(out, lock_timeout=0.1)
    with holder.exclusive(), pytest.raises(TargetError, match="another syncd"):
        other.store_key(os.urandom(32))
    assert not (out / "..syncd-key").exists()
