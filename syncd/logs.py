"""Logging to stderr, as text for people or JSON lines for machines, always redacted."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from syncd.redact import REDACTOR, RedactingFilter

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any ``extra=`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        """Serialise the record; exceptions are reduced to their type (messages can quote data)."""
        doc: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                doc[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            doc["exception"] = record.exc_info[0].__name__
        return json.dumps(doc, default=str)


def setup_logging(*, level: str = "info", fmt: str = "text") -> None:
    """Configure the root logger once: stderr, chosen format, redaction as the last filter."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter(REDACTOR))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # the SDKs' own INFO chatter ("Found credentials in environment variables", scheduler
    # job lines) drowns syncd's; their warnings still come through
    for noisy in ("apscheduler", "botocore", "azure", "urllib3", "kubernetes", "docker"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
