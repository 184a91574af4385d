"""Shared test harness.

Backends are reached through ``scripts/backends env NAME``, the same code a developer uses.
A test that needs a backend that is not running fails under ``CI=true`` and skips elsewhere:
CI must never pass by skipping.
"""

from __future__ import annotations

import os
import secrets
import shlex
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CANARY_PREFIX = "CANARY-"


def backend_env(name: str) -> dict[str, str]:
    """The ``export KEY=VALUE`` lines of a running backend, parsed; fail or skip if absent."""
    out = subprocess.run(
        [str(ROOT / "scripts" / "backends"), "env", name],
        capture_output=True,
        text=True,
        check=False,
    )
    env: dict[str, str] = {}
    for line in out.stdout.splitlines():
        if line.startswith("export ") and "=" in line:
            key, _, value = line[len("export ") :].partition("=")
            env[key] = shlex.split(value)[0] if value else ""
    if not env:
        message = f"backend {name!r} is not running (start it: scripts/backends up {name})"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return env


def new_value(prefix: str = "test-") -> str:
    """A generated test value: never a real credential."""
    return prefix + secrets.token_urlsafe(24)


@pytest.fixture
def canary() -> str:
    """A unique value that must never appear in any output, label or error."""
    return CANARY_PREFIX + secrets.token_hex(16)
