"""Hostile names and keys: whatever a source lists, nothing is written outside the directory,
nothing takes syncd's own ``..`` names, and each bad one fails alone."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.calls import CallCounter
from syncd.errors import TargetError
from syncd.model import NewVersion
from syncd.targets.base import TargetContext
from syncd.targets.files import FilesTarget, FilesTargetConfig
from syncd.targets.files.fsdir import UnsafeName, check_name
from syncd.targets.files.settings import name_problem
from tests.conftest import new_value, run

#: The class of bad names: traversal, absolute, separators, NUL, reserved, too long, not ASCII,
#: control characters, dotfiles.
HOSTILE = [
    "..",
    ".",
    "a/b",
    "../x",
    "../../../x",
    "/abs",
    "a\0b",
    "x" * 300,
    "..data",
    "..syncd-key",
    "..syncd.json",
    "..syncd.lock",
    "..tmp-x",
    "..2026_01_01_00_00_00.000000",
    "é",
    "naïve-key",
    "a\nb",
    "trailing\n",
    " ",
    "-dash",
    ".hidden",
]


def tree(top: Path, *, skip: Path | None = None) -> dict[str, tuple[int, int, int]]:
    """Every path under ``top`` (not following links) with inode, size and mtime."""
    found = {}
    for folder, dirs, files in os.walk(top):
        if skip is not None and Path(folder) == skip:
            dirs[:] = []
            continue
        for name in dirs + files:
            path = Path(folder) / name
            if skip is not None and path == skip:
                continue
            st = path.lstat()
            found[str(path.relative_to(top))] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return found


def leftovers(out: Path) -> list[str]:
    return [n for n in os.listdir(out) if n.startswith("..tmp-")]


def write_project(tmp_path: Path, sources: dict[str, dict[str, str]], secrets: list) -> Path:
    """A config in tmp_path whose target lies three folders down (so ``../../../x`` from it
    stays inside tmp_path, where the test can see it)."""
    for name, values in sources.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(values))
    doc = {
        "providers": {n: {"type": "file", "path": f"{n}.json"} for n in sources},
        "target": {"type": "files", "directory": "a/b/c/out"},
        "secrets": secrets,
    }
    path = tmp_path / "syncd.yaml"
    path.write_text(yaml.safe_dump(doc))
    (tmp_path / "a" / "b" / "c" / "out").mkdir(parents=True)
    return path


def test_for_each_hostile_keys_fail_alone_and_nothing_escapes(tmp_path):
    good = {f"good{i}": new_value() for i in range(3)}
    source = {**good, **{key: new_value() for key in HOSTILE}}
    path = write_project(
        tmp_path, {"src": source}, [{"name": "{key}", "for_each": {"provider": "src"}}]
    )
    out = tmp_path / "a" / "b" / "c" / "out"
    before = tree(tmp_path, skip=out)
    result = run(path)
    errors = {i.name: i.error for i in result.items if i.error}
    assert sorted(errors) == sorted(HOSTILE)
    for key in HOSTILE:
        assert repr(key)[:30] in errors[key] and "src:" in errors[key], errors[key]
        assert all(value not in errors[key] for value in source.values())
    for key, value in good.items():
        assert (out / key).read_text() == value
    assert tree(tmp_path, skip=out) == before
    assert not Path("/abs").exists()
    assert sorted(n for n in os.listdir(out) if not n.startswith("..")) == sorted(good)
    assert leftovers(out) == []
    again = run(path)
    assert [i.name for i in again.items if i.error and "unavailable" in i.error] == []
    assert again.target_writes == 0
    (tmp_path / "src.json").write_text(json.dumps(good))
    assert run(path).ok


@pytest.mark.parametrize("fmt", ["json", "chit"])
def test_data_from_hostile_keys_fail_their_bundle_alone(tmp_path, fmt):
    """One source per hostile key (JSON keys, CHIT labels): each bundle fails naming the key,
    the clean bundle syncs, and nothing escapes."""
    sources = {f"bad{i}": {"fine": new_value(), key: new_value()} for i, key in enumerate(HOSTILE)}
    sources["clean"] = {"one": new_value(), "two": new_value()}
    secrets = [{"name": n, "data_from": {"provider": n}} for n in sources]
    path = write_project(tmp_path, {}, secrets)
    for name, values in sources.items():
        if fmt == "chit":
            points = [{"label": k, "value": v} for k, v in values.items()]
            body = json.dumps({"version": "1", "namespace": "t", "points": points})
        else:
            body = json.dumps(values)
        (tmp_path / f"{name}.{fmt}").write_text(body)
    doc = yaml.safe_load(path.read_text())
    doc["providers"] = {n: {"type": "file", "path": f"{n}.{fmt}"} for n in sources}
    path.write_text(yaml.safe_dump(doc))
    out = tmp_path / "a" / "b" / "c" / "out"
    before = tree(tmp_path, skip=out)
    result = run(path)
    by_name = {i.name: i for i in result.items}
    for i, key in enumerate(HOSTILE):
        error = by_name[f"bad{i}"].error or ""
        assert repr(key)[:30] in error and f"bad{i}:" in error, error
        assert all(value not in error for value in sources[f"bad{i}"].values())
    assert by_name["clean"].error is None
    assert {p.name: p.read_text() for p in (out / "clean").iterdir()} == sources["clean"]
    assert sorted(n for n in os.listdir(out) if not n.startswith("..")) == ["clean"]
    assert tree(tmp_path, skip=out) == before
    assert leftovers(out) == []
    assert run(path).target_writes == 0


def target_in(root: Path, **settings) -> FilesTarget:
    config = FilesTargetConfig(type="files", directory=str(root), **settings)
    return FilesTarget(config, context=TargetContext(base_dir=root.parent, calls=CallCounter()))


def item(name: str, data: dict[str, bytes], version: int = 1) -> NewVersion:
    return NewVersion(
        secret=name,
        version=version,
        data=data,
        fingerprint=os.urandom(16).hex(),
        keys={k: "x" for k in data},
        source="",
        created_at="",
    )


def test_the_directory_layer_refuses_what_the_rules_would_have(tmp_path):
    """Even a name no rule checked (straight into create_versions) can't escape or take a
    reserved name: it fails alone, the good ones land, nothing is left over."""
    out = tmp_path / "a" / "b" / "c" / "out"
    target = target_in(out)
    target.store_key(os.urandom(32))
    key_before = (out / "..syncd-key").read_bytes()
    good = item("good", {"good": b"value"})
    bundle = item("bundle", {"k": b"v"})
    bad = [item(n, {n: b"payload"}) for n in HOSTILE]
    bad_keys = [item(f"keys{i}", {"fine": b"1", k: b"2"}) for i, k in enumerate(HOSTILE)]
    before = tree(tmp_path, skip=out)
    with target.exclusive():
        results = target.create_versions([good, *bad, bundle, *bad_keys])
    assert all(isinstance(results[i.secret], TargetError) for i in bad + bad_keys)
    assert not isinstance(results["good"], TargetError)
    assert not isinstance(results["bundle"], TargetError)
    assert (out / "good").read_bytes() == b"value"
    assert (out / "bundle" / "k").read_bytes() == b"v"
    assert tree(tmp_path, skip=out) == before
    assert (out / "..syncd-key").read_bytes() == key_before
    assert sorted(target.list_versions([])) == ["bundle", "good"]
    assert leftovers(out) == []


def test_names_at_the_length_limit(write_config, tmp_path):
    longest = "n" * 255
    key = "k" * 255
    value, inner = new_value(), new_value()
    path = write_config(
        values={"v": value, "w": inner},
        secrets=[
            {"name": longest, "from": {"provider": "local", "key": "v"}},
            {"name": "b" * 254 + "x", "data": {key: {"provider": "local", "key": "w"}}},
        ],
    )
    result = run(path)
    assert result.ok, [i.error for i in result.items]
    out = tmp_path / "out"
    assert (out / longest).read_text() == value
    assert (out / ("b" * 254 + "x") / key).read_text() == inner
    assert run(path).target_writes == 0
    assert name_problem("n" * 256, "name") is not None


@given(st.text(alphabet=st.sampled_from(["a", ".", "/", "\0", "\n", "é", "_", "-"]), max_size=8))
@settings(max_examples=300, deadline=None)
def test_check_name_only_passes_one_plain_component(name):
    try:
        checked = check_name(name)
    except UnsafeName:
        return
    assert checked == name and name not in ("", ".", "..")
    assert "/" not in name and "\0" not in name and not name.startswith("..")
    assert os.path.basename(os.path.normpath(name)) == name


@given(st.text(max_size=20))
@settings(max_examples=300, deadline=None)
def test_every_name_the_rules_accept_the_directory_layer_accepts(name):
    """The config-time rules are never looser than the last line of defence."""
    if name_problem(name, "name") is None:
        assert check_name(name) == name


@given(st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=4, unique=True))
@settings(max_examples=40, deadline=None)
def test_any_names_never_write_outside(names):
    with tempfile.TemporaryDirectory() as top:
        root = Path(top) / "x" / "y" / "out"
        target = target_in(root)
        results = target.create_versions([item(n, {n: b"1"}) for n in names])
        outside = [p for p in Path(top).rglob("*") if root not in (p, *p.parents)]
        assert sorted(str(p.relative_to(top)) for p in outside) == ["x", "x/y"]
        written = [n for n, r in results.items() if not isinstance(r, TargetError)]
        assert sorted(written) == sorted(n for n in names if name_problem(n, "name") is None)
        assert leftovers(root) == []
