"""Read a running backend's connection settings, as ``scripts/backends env NAME`` prints them.

Shared by the test fixtures (which fail or skip when a backend is missing) and the bench
scripts (which exit with a hint).
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def read_env(name: str) -> dict[str, str]:
    """``{KEY: VALUE}`` from the backend's ``export KEY=VALUE`` lines; empty when not running."""
    out = subprocess.run(
        [str(ROOT / "scripts" / "backends"), "env", name],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    env: dict[str, str] = {}
    for line in out.splitlines():
        if line.startswith("export ") and "=" in line:
            key, _, value = line[len("export ") :].partition("=")
            env[key] = shlex.split(value)[0] if value else ""
    return env


def require_env(name: str) -> dict[str, str]:
    """``read_env`` for scripts: exit with the command that starts the backend."""
    env = read_env(name)
    if not env:
        raise SystemExit(f"the {name} backend is not running: scripts/backends up {name}")
    return env
