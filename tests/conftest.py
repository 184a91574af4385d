"""Shared test harness.

Backends are reached through ``scripts/backends env NAME``, the same code a developer uses.
A test that needs a backend that is not running fails under ``CI=true`` and skips elsewhere:
CI must never pass by skipping.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable
from typing import TypeVar

import pytest

from tests.backends import ROOT, read_env

__all__ = ["CANARY_PREFIX", "ROOT", "backend_env", "new_value", "wait_until"]

T = TypeVar("T")

CANARY_PREFIX = "CANARY-"


#: How long each target's soak runs by default (the test command keeps it short).
DEFAULT_SOAK_SECONDS = 45.0


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--soak-minutes N`` runs every soak test for N minutes instead of the short default."""
    parser.addoption(
        "--soak-minutes",
        type=float,
        default=None,
        help="run each soak test this long (default: SYNCD_SOAK_MINUTES, else 0.75)",
    )


@pytest.fixture
def soak_seconds(request: pytest.FixtureRequest) -> float:
    """How long a soak test rotates and reads."""
    minutes = request.config.getoption("--soak-minutes")
    if minutes is None and os.environ.get("SYNCD_SOAK_MINUTES"):
        minutes = float(os.environ["SYNCD_SOAK_MINUTES"])
    return DEFAULT_SOAK_SECONDS if minutes is None else minutes * 60


def backend_env(name: str) -> dict[str, str]:
    """The running backend's settings; fail under ``CI=true``, skip elsewhere, if absent."""
    env = read_env(name)
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


def wait_until(what: str, probe: Callable[[], T | None], timeout: float = 60.0) -> T:
    """Poll ``probe`` until it returns something truthy, and return it; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")
