"""What ``setup_logging`` lets through: syncd's own lines at the chosen level, the SDKs' only
from WARNING, and the warnings that precede an error syncd reports itself (the Key Vault
client's failsafe-deserialization tracebacks, urllib3's connection retries) not at all."""

from __future__ import annotations

import logging

import pytest

from syncd.logs import QUIET_LOGGERS, SILENT_LOGGERS, setup_logging


@pytest.fixture
def levels():
    """Put back every level and the root's handlers that ``setup_logging`` changes."""
    names = ["", *QUIET_LOGGERS, *SILENT_LOGGERS]
    saved = {name: logging.getLogger(name).level for name in names}
    handlers = list(logging.getLogger().handlers)
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)
    logging.getLogger().handlers[:] = handlers


def test_debug_shows_syncd_and_only_the_sdks_warnings(levels, capsys):
    setup_logging(level="debug")
    logging.getLogger("syncd.engine").debug("own debug line")
    logging.getLogger("botocore.credentials").info("sdk chatter")
    logging.getLogger("azure.core.pipeline").warning("sdk warning")
    logging.getLogger("azure.keyvault.secrets._generated._utils.model_base").warning(
        "Ran into a deserialization error", exc_info=ValueError("a body")
    )
    logging.getLogger("urllib3.connectionpool").warning("Retrying after connection broken")
    err = capsys.readouterr().err
    assert "own debug line" in err
    assert "sdk warning" in err
    assert "sdk chatter" not in err
    assert "deserialization" not in err and "a body" not in err
    assert "Retrying" not in err


def test_an_sdk_error_still_comes_through(levels, capsys):
    setup_logging(level="info", fmt="json")
    logging.getLogger("azure.keyvault.secrets._generated").error("sdk error")
    assert '"sdk error"' in capsys.readouterr().err


def test_json_lines_carry_what_they_are_about_as_redacted_fields(
    write_config, world, caplog, canary
):
    """A cycle's lines about a secret, a version and a consumer carry them as fields, so a
    log pipeline filters on ``secret`` instead of parsing words; a value in a field is
    masked like one in the message."""
    import json

    import yaml

    from syncd.config import load_config
    from syncd.engine import Engine
    from syncd.logs import JsonFormatter, fields
    from syncd.redact import MASK, REDACTOR
    from tests.conftest import new_value
    from tests.unit.memory_target import WORLDS, Service

    name = next(n for n, w in WORLDS.items() if w is world)
    path = write_config(values={"a": new_value()}, target={"type": "memory", "world": name})
    caplog.set_level(logging.INFO)
    Engine(load_config(path)).run_cycle()
    world.services["web"] = Service("web", refs={"a-v1"})
    (path.parent / "keys.yaml").write_text(yaml.safe_dump({"a": new_value()}))
    Engine(load_config(path)).run_cycle()
    lines = [json.loads(JsonFormatter().format(r)) for r in caplog.records]
    created = [d for d in lines if d["message"].startswith("created a version")]
    assert [(d["secret"], d["version"]) for d in created] == [("a", 1), ("a", 2)]
    (repointed,) = [d for d in lines if d["message"].startswith("repointed")]
    assert (repointed["consumer"], repointed["secret"]) == ("service/web", "a")
    assert any(d.get("consumer") == "service/web" and "converged" in d["message"] for d in lines)

    REDACTOR.register(canary.encode())
    try:
        record = logging.LogRecord("syncd", logging.ERROR, "f", 1, "x", None, None)
        for key, value in fields(secret=f"a {canary}", version=3).items():
            setattr(record, key, value)
        doc = json.loads(JsonFormatter().format(record))
    finally:
        REDACTOR.clear()
    assert doc["secret"] == f"a {MASK}" and doc["version"] == 3
