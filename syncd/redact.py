"""The last line of defence against a value reaching a log line or an error message.

syncd never formats a value into text on purpose; this catches the accidental case (an SDK
exception that quotes a payload, say). The engine registers each value it fetches for the
length of a cycle, and every error message and log record is scrubbed before it leaves.
"""

from __future__ import annotations

import logging
import threading

MASK = "[REDACTED]"
#: Values shorter than this are not scrubbed: masking "1" or "true" would garble every message.
MIN_LENGTH = 6


class Redactor:
    """Holds the values fetched in the current cycle and masks them in text."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()

    def register(self, value: bytes) -> None:
        """Remember a fetched value (as text, and each of its lines) until ``clear``."""
        text = value.decode("utf-8", errors="ignore")
        with self._lock:
            for line in (text, *text.splitlines()):
                candidate = line.strip()
                if len(candidate) >= MIN_LENGTH:
                    self._values.add(candidate)

    def clear(self) -> None:
        """Forget every value (end of cycle)."""
        with self._lock:
            self._values.clear()

    def redact(self, text: str) -> str:
        """``text`` with every registered value masked, longest first."""
        with self._lock:
            values = sorted(self._values, key=len, reverse=True)
        for value in values:
            if value in text:
                text = text.replace(value, MASK)
        return text


class RedactingFilter(logging.Filter):
    """A logging filter that scrubs each record's final message with a ``Redactor``."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        """Render the message once, scrub it, and freeze it on the record."""
        message = record.getMessage()
        clean = self.redactor.redact(message)
        if clean != message or record.args:
            record.msg, record.args = clean, None
        return True


#: The process-wide redactor the engine feeds and the log handlers consult.
REDACTOR = Redactor()
