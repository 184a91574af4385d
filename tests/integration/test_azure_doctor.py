"""``syncd doctor`` for azure-key-vault against the Key Vault double: a listed secret passes,
a missing one is a problem, and what the listing can't judge (a pinned version; every secret
while this identity may not list the vault) is a warning, never a pass: the next cycle's read
decides, as the warning says."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from syncd.cli import main
from syncd.config import load_config
from syncd.engine import Engine
from tests.integration.test_azure_key_vault import (  # noqa: F401 - fixtures
    Admin,
    _no_ambient_azure,
    admin_fixture,
    azure_fixture,
    provider_block,
    seed_fixture,
    unique,
    write_config,
)

pytestmark = pytest.mark.backend("azure")


def doctor(capsys: Any, path: Path) -> tuple[int, dict[str, Any]]:
    code = main(["doctor", "-c", str(path), "-o", "json"])
    return code, json.loads(capsys.readouterr().out)


def by_subject(entries: list[dict[str, str]], field: str) -> dict[str, str]:
    return {e["subject"]: e[field] for e in entries}


def secrets(name: str, version: str, missing: str) -> list[dict[str, Any]]:
    return [
        {"name": "db", "from": {"provider": "kv", "name": name}},
        {"name": "pinned", "from": {"provider": "kv", "name": name, "version": version}},
        {"name": "gone", "from": {"provider": "kv", "name": missing}},
    ]


def test_listed_passes_missing_fails_pinned_warns(
    tmp_path: Path, azure: dict[str, str], seed: Any, admin: Admin, capsys: Any, canary: str
) -> None:
    name = unique("db")
    version = seed.set_secret(name, canary).properties.version
    path = write_config(tmp_path, provider_block(azure), secrets(name, version, unique("no")))
    code, report = doctor(capsys, path)
    assert code == 1, report
    assert set(by_subject(report["problems"], "problem")) == {"secret/gone"}
    warned = by_subject(report["warnings"], "warning")
    assert set(warned) == {"secret/pinned"}, warned  # "db" passes
    assert "the listing doesn't show pinned versions" in warned["secret/pinned"]
    assert canary not in json.dumps(report)


def test_a_forbidden_listing_warns_for_every_secret_instead_of_passing(
    tmp_path: Path, azure: dict[str, str], seed: Any, admin: Admin, capsys: Any
) -> None:
    """The listing answers 403, so ``versions`` knows nothing: before, doctor passed every
    secret, the missing one too. Now each is a warning, and the cycle's read decides."""
    name, missing = unique("db"), unique("no")
    version = seed.set_secret(name, "value").properties.version
    path = write_config(tmp_path, provider_block(azure), secrets(name, version, missing))
    admin.post("faults", {"status": 403, "times": 1, "match": "/secrets"})
    code, report = doctor(capsys, path)
    assert code == 0, report
    assert report["problems"] == []
    warned = by_subject(report["warnings"], "warning")
    assert set(warned) == {"secret/db", "secret/pinned", "secret/gone"}
    assert "this identity may not list the vault" in warned["secret/gone"]
    assert all(w.endswith("it is judged when read, next cycle") for w in warned.values())

    engine = Engine(load_config(path))
    result = engine.run_cycle()
    engine.close()
    assert {i.name for i in result.items if i.error} == {"gone"}
    assert (tmp_path / "out" / "db").read_text() == "value"
