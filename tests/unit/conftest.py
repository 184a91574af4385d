"""Fixtures for unit tests: a scratch project folder and the in-memory target."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from syncd import registry
from syncd.config import Config, load_config
from tests.unit.memory_target import WORLDS, World

Writer = Callable[..., Path]


@pytest.fixture(autouse=True)
def _memory_target(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.BUILTIN_TARGETS, "memory", "tests.unit.memory_target:MemoryTarget")


@pytest.fixture
def world() -> Iterator[World]:
    name = uuid.uuid4().hex
    yield WORLDS.setdefault(name, World())
    WORLDS.pop(name, None)


@pytest.fixture
def write_config(tmp_path: Path) -> Writer:
    """Write ``syncd.yaml`` (and a ``keys.yaml`` source) under tmp_path and return its path."""

    def write(
        *,
        values: dict[str, str] | None = None,
        secrets: list[dict[str, Any]] | None = None,
        target: dict[str, Any] | None = None,
        **extra: Any,
    ) -> Path:
        if values is not None:
            (tmp_path / "keys.yaml").write_text(yaml.safe_dump(values))
        doc: dict[str, Any] = {
            "providers": {"local": {"type": "file", "path": "keys.yaml"}},
            "target": target or {"type": "files", "directory": "out"},
            "secrets": secrets
            if secrets is not None
            else [{"name": k, "from": {"provider": "local", "key": k}} for k in (values or {})],
            **extra,
        }
        path = tmp_path / "syncd.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path

    return write


def load(path: Path) -> Config:
    return load_config(path)
