"""A token bucket for one API client's requests, shared by the threads that use the client.

It limits as client-go's ``--kube-api-qps``/``--kube-api-burst`` do: up to ``burst`` requests
at once, then ``qps`` a second on average. It is written in the "virtual scheduling" form of
the generic cell rate algorithm, which is a token bucket: under the lock each request is given
its own send time, and it sleeps outside the lock, so waiting threads go in the order they
asked and none of them polls.

A server that answers ``Retry-After`` speaks for every request sent to it, not only the one it
refused: ``pause`` holds the whole bucket for that long (client-go's backoff manager does so
per host). Requests already waiting for a slot inside the pause take a new slot after it, and
the bucket starts empty when the pause ends, refilling at ``qps``: a server that just said it
is overloaded gets no burst the moment it said to come back.

No library is used: the well-kept ones (``pyrate-limiter``, ``limits``) have no way to hold a
bucket for a server's ``Retry-After``, and this is a few lines.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable


class TokenBucket:
    """``burst`` requests at once, then ``qps`` a second; ``math.inf`` qps sets no limit but
    still lets a ``Retry-After`` pause it. Thread-safe."""

    def __init__(
        self,
        qps: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not qps > 0 or burst < 1:
            raise ValueError(f"a token bucket needs qps > 0 and burst >= 1, not {qps}, {burst}")
        self.qps = qps
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        #: seconds between two requests once the burst is spent
        self._interval = 1.0 / qps
        #: how far ahead of now the next slot may be and still be given at once (the burst)
        self._tolerance = (burst - 1) * self._interval
        #: when the bucket would be full again: the theoretical arrival time of the next request
        self._full_at = -math.inf
        #: the end of the latest ``pause``
        self._held_until = -math.inf
        self._lock = threading.Lock()

    def acquire(self) -> None:
        """Wait until this request may be sent."""
        while True:
            with self._lock:
                now = self._clock()
                at = max(now, self._full_at - self._tolerance)
                self._full_at = max(self._full_at, now) + self._interval
            if at > now:
                self._sleep(at - now)
            with self._lock:
                if self._held_until <= at:
                    return
            # a pause began while this request waited, and its slot lies inside it

    def pause(self, seconds: float) -> None:
        """Send nothing for ``seconds`` (a server's ``Retry-After``), then refill from empty."""
        with self._lock:
            until = self._clock() + seconds
            self._held_until = max(self._held_until, until)
            self._full_at = max(self._full_at, until + self._tolerance)
