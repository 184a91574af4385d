"""Logging to stderr, as text for people or JSON lines for machines, always redacted."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import TextIO

from syncd.redact import REDACTOR, RedactingFilter

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
#: The text format's line: time, level, logger and message.
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: The SDKs' own INFO chatter ("Found credentials in environment variables", scheduler job
#: lines) drowns syncd's, and their DEBUG lines quote whole responses: these loggers say
#: nothing below WARNING, whatever ``--log-level`` is.
QUIET_LOGGERS = ("apscheduler", "botocore", "azure", "urllib3", "kubernetes", "docker")
#: Loggers that say only ERROR: each WARNING they log precedes an error syncd reports
#: itself, once, per secret. The Key Vault client's generated code logs a traceback for every
#: error body it can't read (a proxy's HTML page, a cut answer), whose text may quote the body;
#: urllib3 logs each connection retry (three lines per request to a server that is down).
SILENT_LOGGERS = ("azure.keyvault.secrets._generated", "urllib3.connectionpool")


class TextFormatter(logging.Formatter):
    """``TEXT_FORMAT`` lines, redacted whole: the filter scrubs only the message, and a
    traceback repeats its exception's message, which may quote a payload (an SDK's error,
    a failed job that APScheduler logs)."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        """The line, traceback and stack included, with every registered value masked."""
        return REDACTOR.redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any ``extra=`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        """Serialise the record; exceptions are reduced to their type (messages can quote
        data), and ``extra=`` fields are redacted like the message (as text, unless a number,
        a boolean or null)."""
        doc: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                plain = value is None or isinstance(value, bool | int | float)
                doc[key] = value if plain else REDACTOR.redact(str(value))
        if record.exc_info and record.exc_info[0] is not None:
            doc["exception"] = record.exc_info[0].__name__
        return json.dumps(doc)


def fields(**values: object) -> dict[str, object]:
    """``extra=`` for a log call: what the line is about as fields (``secret``, ``version``,
    ``provider``, ``consumer``, ``namespace``, ...), so ``--log-format json`` can be filtered
    on them; ``None`` is left out. The JSON formatter redacts each like the message."""
    return {key: value for key, value in values.items() if value is not None}


def formatter(fmt: str) -> logging.Formatter:
    """The formatter of ``--log-format`` ``text`` or ``json`` (shared with the tests' leak
    canaries, which render every record the way it would reach stderr)."""
    return JsonFormatter() if fmt == "json" else TextFormatter()


def handler(fmt: str, stream: TextIO) -> logging.Handler:
    """Lines in ``fmt`` to ``stream``, each scrubbed by the redaction filter."""
    out = logging.StreamHandler(stream)
    out.setFormatter(formatter(fmt))
    out.addFilter(RedactingFilter(REDACTOR))
    return out


def setup_logging(*, level: str = "info", fmt: str = "text") -> None:
    """Configure the root logger once: stderr, chosen format, redaction as the last filter."""
    root = logging.getLogger()
    root.handlers[:] = [handler(fmt, sys.stderr)]
    root.setLevel(level.upper())
    for quiet in QUIET_LOGGERS:
        logging.getLogger(quiet).setLevel(max(logging.WARNING, root.level))
    for silent in SILENT_LOGGERS:
        logging.getLogger(silent).setLevel(max(logging.ERROR, root.level))
