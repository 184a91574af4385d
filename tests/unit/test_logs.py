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
