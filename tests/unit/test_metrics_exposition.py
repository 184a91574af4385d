"""``/metrics`` renders one scrape at a time: scrapes that arrive during a rendering share
the next one instead of each rendering (seconds of CPU apiece at 10,000 secrets), and no
scrape gets output older than itself."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from syncd import metrics as metrics_module
from syncd.metrics import Metrics


def test_scrapes_during_a_rendering_share_one_and_none_is_stale(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    renders: list[float] = []
    gate = threading.Event()

    def slow(registry: Any) -> bytes:
        renders.append(time.monotonic())
        if len(renders) == 1:
            gate.wait(5)  # the first rendering is slow; 8 scrapes arrive meanwhile
        return f"render {len(renders)}\n".encode()

    monkeypatch.setattr(metrics_module, "generate_latest", slow)
    metrics = Metrics()
    got: list[bytes] = []
    first = threading.Thread(target=lambda: got.append(metrics.exposition()))
    first.start()
    while not renders:
        time.sleep(0.01)
    waiting = [threading.Thread(target=lambda: got.append(metrics.exposition())) for _ in range(8)]
    for thread in waiting:
        thread.start()
    time.sleep(0.2)
    gate.set()
    for thread in (first, *waiting):
        thread.join(5)
    assert got[0] == b"render 1\n"
    # the 8 that arrived during the first rendering waited for one more, and shared it
    assert sorted(got[1:]) == [b"render 2\n"] * 8
    assert len(renders) == 2
    # a scrape after that renders afresh: it never gets output older than itself
    assert metrics.exposition() == b"render 3\n"
