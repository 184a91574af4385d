"""Reading a server's ``Retry-After`` header: one parser for every client syncd drives
(Vault, AWS, Key Vault, the Kubernetes API server)."""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime


def retry_after(value: object) -> float | None:
    """A ``Retry-After`` header in seconds (delay seconds or an HTTP date), or ``None`` when
    absent or unreadable: it is server input, never trusted to be well formed."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text[:9])
    try:
        when = parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, when - time.time())
