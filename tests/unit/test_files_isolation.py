"""One bad secret fails alone: the others land in the new generation; and values at the edges
(empty, binary, NUL, CRLF, trailing newlines, the size limit) round-trip byte for byte."""

from __future__ import annotations

import base64
import errno
import os
from pathlib import Path

import pytest
import yaml

from syncd.targets.files import fsdir
from tests.conftest import new_value, run


def binary_project(tmp_path: Path, values: dict[str, bytes], **target) -> Path:
    """The file provider with ``encoding: base64``: exact bytes in, one secret per key."""
    (tmp_path / "keys.yaml").write_text(
        yaml.safe_dump({k: base64.b64encode(v).decode() for k, v in values.items()})
    )
    doc = {
        "providers": {"local": {"type": "file", "path": "keys.yaml", "encoding": "base64"}},
        "target": {"type": "files", "directory": "out", **target},
        "secrets": [{"name": k, "from": {"provider": "local", "key": k}} for k in values],
    }
    path = tmp_path / "syncd.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


EDGE_VALUES = {
    "empty": b"",
    "random": os.urandom(257),
    "not_utf8": b"\xff\xfe\xfd" + os.urandom(8),
    "nul": b"a\0b\0",
    "crlf": b"line1\r\nline2\r\n",
    "trailing": b"value\n\n\n",
    "newline_only": b"\n",
    "spaces": b"  padded  ",
    "at_limit": b"z" * 4096,
}


def test_edge_values_round_trip_byte_exact(tmp_path):
    path = binary_project(tmp_path, EDGE_VALUES, max_bytes=4096)
    result = run(path)
    assert result.ok, [(i.name, i.error) for i in result.items if i.error]
    for name, value in EDGE_VALUES.items():
        assert (tmp_path / "out" / name).read_bytes() == value, name
    assert run(path).target_writes == 0


def test_a_value_over_max_bytes_fails_alone(tmp_path):
    values = {"small": os.urandom(16), "big": os.urandom(4097), "edge": os.urandom(4096)}
    path = binary_project(tmp_path, values, max_bytes=4096)
    result = run(path)
    by_name = {i.name: i for i in result.items}
    assert "max_bytes" in (by_name["big"].error or "") and "4097 bytes" in by_name["big"].error
    assert by_name["small"].error is None and by_name["edge"].error is None
    assert not (tmp_path / "out" / "big").exists()
    assert (tmp_path / "out" / "edge").read_bytes() == values["edge"]


def test_each_kind_of_failure_fails_alone_and_the_rest_rotates(tmp_path, monkeypatch):
    """A write error, a name taken by someone else's file, a value over max_bytes and a
    value the env_file can't hold: each fails its own secret, every other secret gets its
    new value in the same new generation, and each failed one keeps its previous file."""
    names = ["ok1", "enospc", "taken", "big", "cr", "ok2"]
    first = {n: new_value().encode() for n in names}
    path = binary_project(
        tmp_path, {n: v for n, v in first.items() if n != "taken"}, env_file=".env", max_bytes=64
    )
    assert run(path).ok
    out = tmp_path / "out"
    (out / "taken").write_bytes(b"someone else's")
    second = {n: new_value().encode() for n in names}
    second["big"] = b"x" * 65
    second["cr"] = b"\xff not text"
    path = binary_project(tmp_path, second, env_file=".env", max_bytes=64)
    real_write = fsdir.Dir.write_new

    def failing_write(self, name, data, **kwargs):
        if name == "enospc":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(self, name, data, **kwargs)

    monkeypatch.setattr(fsdir.Dir, "write_new", failing_write)
    result = run(path)
    errors = {i.name: i.error for i in result.items if i.error}
    assert sorted(errors) == ["big", "cr", "enospc", "taken"]
    assert "No space left" in errors["enospc"]
    assert "not managed by syncd" in errors["taken"]
    assert "max_bytes" in errors["big"]
    assert "env_file" in errors["cr"]
    for text in errors.values():
        assert "not text" not in text and "x" * 65 not in text
    for name in ("ok1", "ok2"):
        assert (out / name).read_bytes() == second[name]
    for name in ("enospc", "big", "cr"):
        assert (out / name).read_bytes() == first[name]
    assert (out / "taken").read_bytes() == b"someone else's"
    assert [n for n in os.listdir(out) if n.startswith("..tmp-")] == []
    monkeypatch.setattr(fsdir.Dir, "write_new", real_write)
    (out / "taken").unlink()
    second["big"], second["cr"] = b"small", b"plain"
    path = binary_project(tmp_path, second, env_file=".env", max_bytes=64)
    assert run(path).ok
    for name in names:
        assert (out / name).read_bytes() == second[name]


def test_env_and_yaml_outputs_hold_edge_text_exactly(tmp_path):
    from syncd.envfile import parse_env

    values = {
        "quote": b'he said "hi" $HOME \\ end',
        "multi": b"line1\nline2\n",
        "unicode": "naïve ✓".encode(),
        "empty": b"",
    }
    path = binary_project(tmp_path, values, env_file=".env", yaml_file="all.yaml")
    assert run(path).ok
    out = tmp_path / "out"
    env = parse_env((out / ".env").read_text())
    assert env == {k.upper(): v.decode() for k, v in values.items()}
    assert yaml.safe_load((out / "all.yaml").read_text()) == {
        k: v.decode() for k, v in values.items()
    }


@pytest.mark.parametrize("output", ["env_file", "yaml_file"])
@pytest.mark.parametrize("value", [b"\xff\xfe", b"ok\xc3", bytes(range(256))])
def test_a_binary_value_fails_alone_when_an_output_needs_text(tmp_path, output, value):
    path = binary_project(tmp_path, {"bad": value, "fine": b"ok"}, **{output: "all.out"})
    result = run(path)
    by_name = {i.name: i for i in result.items}
    assert "not UTF-8" in (by_name["bad"].error or "") and output in by_name["bad"].error
    assert by_name["fine"].error is None
    assert "ok" in (tmp_path / "out" / "all.out").read_text()


def test_a_value_the_env_file_would_change_fails_alone(tmp_path, monkeypatch):
    """Whatever the env renderer can't round-trip (here: a renderer that drops a character)
    is refused for that secret, never written altered."""
    from syncd.targets.files import generation

    def lossy(values):
        return "".join(f"{k}={v.replace('!', '')}\n" for k, v in sorted(values.items()))

    monkeypatch.setattr(generation, "render_env", lossy)
    path = binary_project(tmp_path, {"bang": b"a!b", "fine": b"ok"}, env_file=".env")
    result = run(path)
    by_name = {i.name: i for i in result.items}
    assert "env_file .env can't hold" in (by_name["bang"].error or "")
    assert by_name["fine"].error is None
    assert (tmp_path / "out" / ".env").read_text() == "FINE=ok\n"
