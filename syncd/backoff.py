"""syncd's one retry schedule: exponential from ``daemon.backoff_min`` to ``backoff_max``.

The daemon retries a failed secret on it (provider errors, an API that was away), and a
rollback that hasn't converged is retried on it too; that one keeps its attempt count and
next time on the failed version's object, so a restart neither forgets nor resets it.
"""

from __future__ import annotations

import random


def backoff_delay(attempt: int, low: float, high: float, *, jitter: bool = True) -> float:
    """Seconds before retry number ``attempt`` (1 for the first): ``low`` doubling up to
    ``high``, then shortened by up to 20% so that many failures don't retry in step."""
    # the exponent is capped: an attempt count read back from a label can be anything
    delay = min(high, low * 2.0 ** min(max(0, attempt - 1), 60))
    return delay * random.uniform(0.8, 1.0) if jitter else delay  # noqa: S311 - not crypto
