"""Progress lines during a rollout wait: said on change, repeated while it lasts, not more."""

from __future__ import annotations

import logging

from syncd import progress
from syncd.progress import WaitProgress


def test_a_wait_says_what_it_sees_on_change_and_every_half_minute(monkeypatch, caplog):
    now = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    caplog.set_level(logging.INFO, logger="syncd.progress")
    wait = WaitProgress(300)
    wait.note("Deployment/ns/web", "0 of 3 updated replicas")
    now[0] += 2
    wait.note("Deployment/ns/web", "0 of 3 updated replicas")  # the same, soon: nothing
    wait.note("service/api", "1/2 up-to-date tasks running, update updating")
    now[0] += 3
    wait.note("Deployment/ns/web", "1 of 3 updated replicas")  # changed: said
    now[0] += progress.EVERY
    wait.note("Deployment/ns/web", "1 of 3 updated replicas")  # unchanged for long: said again
    assert [r.getMessage() for r in caplog.records] == [
        "waiting for Deployment/ns/web: 0 of 3 updated replicas (0 s of 300 s)",
        "waiting for service/api: 1/2 up-to-date tasks running, update updating (2 s of 300 s)",
        "waiting for Deployment/ns/web: 1 of 3 updated replicas (5 s of 300 s)",
        "waiting for Deployment/ns/web: 1 of 3 updated replicas (35 s of 300 s)",
    ]


def test_a_hostile_consumer_name_is_quoted(caplog):
    caplog.set_level(logging.INFO, logger="syncd.progress")
    WaitProgress(10).note("service/evil\nERROR forged", "pending")
    (record,) = caplog.records
    assert "\n" not in record.getMessage()
