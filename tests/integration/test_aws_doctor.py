"""``syncd doctor`` for aws-secrets-manager against moto: a listed secret passes, a stage no
version carries is a problem, and a secret the listing doesn't show (missing, another
account's ARN, ``ListSecrets`` denied) is a warning, not a pass and not a failure: the next
cycle's read judges it, as the warning says."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from syncd.cli import main
from syncd.config import load_config
from syncd.engine import Engine
from tests.conftest import new_value
from tests.integration.faults import Answer, FaultProxy
from tests.integration.test_aws_secrets_manager import (  # noqa: F401 - sm, prefix: fixtures
    one,
    prefix_fixture,
    sm_fixture,
    write_config,
)

pytestmark = pytest.mark.backend("aws")


#: A secret of another account, shared by ARN: this account's listing never shows it.
FOREIGN = "arn:aws:secretsmanager:us-east-1:999999999999:secret:shared/db-AbCdEf"


def doctor(capsys: Any, path: Path) -> tuple[int, dict[str, Any]]:
    code = main(["doctor", "-c", str(path), "-o", "json"])
    return code, json.loads(capsys.readouterr().out)


def by_subject(entries: list[dict[str, str]], field: str) -> dict[str, str]:
    return {e["subject"]: e[field] for e in entries}


def test_unlisted_secrets_are_warnings_the_next_read_judges(
    tmp_path: Path, aws: dict[str, str], sm: Any, prefix: str, capsys: Any, canary: str
) -> None:
    sm.create_secret(Name=f"{prefix}here", SecretString=canary)
    secrets = [
        one("here", name=f"{prefix}here"),
        one("missing", name=f"{prefix}missing"),
        one("foreign", name=FOREIGN),
    ]
    path = write_config(tmp_path, aws, secrets)
    code, report = doctor(capsys, path)
    assert code == 0, report
    assert report["problems"] == []
    warned = by_subject(report["warnings"], "warning")
    assert set(warned) == {"secret/missing", "secret/foreign"}  # "here" passes
    assert "not in the listing (a missing secret" in warned["secret/missing"]
    assert "not in this account's listing" in warned["secret/foreign"]
    assert all(w.endswith("it is judged when read, next cycle") for w in warned.values())
    assert canary not in json.dumps(report)

    assert main(["doctor", "-c", str(path)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("warning: secret/missing: provider 'aws', aws:")
    assert text.endswith("no problems found (2 warnings)\n")

    # as said: the read decides, and here both fail while the listed one syncs
    engine = Engine(load_config(path))
    result = engine.run_cycle()
    engine.close()
    failed = {i.name for i in result.items if i.error}
    assert failed == {"missing", "foreign"}
    assert (tmp_path / "out" / "here").read_text() == canary


def test_a_stage_no_version_carries_is_a_problem(
    tmp_path: Path, aws: dict[str, str], sm: Any, prefix: str, capsys: Any
) -> None:
    sm.create_secret(Name=f"{prefix}db", SecretString=new_value())
    path = write_config(tmp_path, aws, [one("db", name=f"{prefix}db", version_stage="NOSUCHSTAGE")])
    code, report = doctor(capsys, path)
    assert code == 1
    assert report["warnings"] == []
    problem = by_subject(report["problems"], "problem")["secret/db"]
    assert "no version carries the staging label 'NOSUCHSTAGE'" in problem


def test_a_denied_listing_warns_for_every_secret_instead_of_passing(
    tmp_path: Path, aws: dict[str, str], sm: Any, prefix: str, capsys: Any
) -> None:
    sm.create_secret(Name=f"{prefix}db", SecretString=new_value())
    proxy = FaultProxy(aws["AWS_ENDPOINT_URL"])
    denied = json.dumps({"__type": "AccessDeniedException", "message": "not authorized"})
    proxy.fault(
        Answer(400, denied.encode(), (("Content-Type", "application/x-amz-json-1.1"),)),
        when=lambda seen: seen.operation == "ListSecrets",
    )
    try:
        path = write_config(
            tmp_path, {**aws, "AWS_ENDPOINT_URL": proxy.url}, [one("db", name=f"{prefix}db")]
        )
        code, report = doctor(capsys, path)
    finally:
        proxy.close()
    assert code == 0, report
    warning = by_subject(report["warnings"], "warning")["secret/db"]
    assert "ListSecrets is not allowed for this identity" in warning
