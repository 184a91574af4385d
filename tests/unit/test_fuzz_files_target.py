"""Any bytes arrive byte for byte: from a source file (base64, so binary is possible) through
the engine into the files target, one file per secret and a folder per bundle, and back.

One engine runs every input (as the daemon runs cycle after cycle), so each input is also a
rotation of the last one: a changed value is a new generation, an unchanged one is kept.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from syncd.config import load_config
from syncd.engine import Engine
from tests.unit.test_fuzz_inputs import EXAMPLES, PROPERTY

NAMES = ["a", "b.c", "d_e", "F-1"]
KEYS = ["k", "k.2", "_k"]
#: Values of any bytes: empty, NUL, invalid UTF-8, line breaks, a byte order mark, long.
VALUES = st.binary(max_size=300) | st.sampled_from(
    [b"", b"\0", b"\xff\xfe", b"\r\n", b"\xef\xbb\xbf"]
)


class Project:
    """A source file and a config with one secret per name and one bundle of keys."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.source = root / "keys.yaml"
        self.out = root / "out"
        secrets = [{"name": n, "from": {"provider": "local", "key": n}} for n in NAMES]
        bundle = {k: {"provider": "local", "key": f"bundle-{k}"} for k in KEYS}
        config = {
            "providers": {"local": {"type": "file", "path": "keys.yaml", "encoding": "base64"}},
            "target": {"type": "files", "directory": "out", "history": 1},
            "secrets": [*secrets, {"name": "bundle", "data": bundle}],
        }
        (root / "syncd.yaml").write_text(yaml.safe_dump(config))

    def write(self, values: dict[str, bytes]) -> None:
        """The source, replaced whole (a new inode: the provider sees a new version)."""
        encoded = {key: base64.b64encode(value).decode() for key, value in values.items()}
        partial = self.source.with_suffix(".tmp")
        partial.write_text(yaml.safe_dump(encoded))
        os.replace(partial, self.source)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Project, Engine]]:
    project = Project(tmp_path_factory.mktemp("roundtrip"))
    project.write({n: b"first" for n in [*NAMES, *(f"bundle-{k}" for k in KEYS)]})
    running = Engine(load_config(project.root / "syncd.yaml"))
    try:
        yield project, running
    finally:
        running.close()


@settings(PROPERTY, max_examples=max(50, EXAMPLES // 100), deadline=None)
@given(
    singles=st.fixed_dictionaries({name: VALUES for name in NAMES}),
    bundle=st.fixed_dictionaries({key: VALUES for key in KEYS}),
)
@example(singles=dict.fromkeys(NAMES, b"\0\xff"), bundle=dict.fromkeys(KEYS, b""))
def test_any_bytes_land_byte_for_byte(engine, singles, bundle):
    project, running = engine
    project.write({**singles, **{f"bundle-{k}": v for k, v in bundle.items()}})
    result = running.run_cycle()
    assert result.ok, [item.error for item in result.items if item.error]
    for name, value in singles.items():
        assert (project.out / name).read_bytes() == value, name
    for key, value in bundle.items():
        assert (project.out / "bundle" / key).read_bytes() == value, key
