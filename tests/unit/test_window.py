"""Rotation windows, the rollout label read back from a target, and the retry schedule:
every one of them is input syncd reads at run time, so each is attacked with bad values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from syncd.backoff import backoff_delay
from syncd.model import Rollout
from syncd.window import Window

BERLIN = "Europe/Berlin"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("window", "moment", "open_"),
    [
        ({"hours": "02:00-05:00"}, "2026-07-01T02:00:00", True),
        ({"hours": "02:00-05:00"}, "2026-07-01T05:00:00", False),  # the end is exclusive
        ({"hours": "02:00-05:00"}, "2026-07-01T01:59:00", False),
        # wrapping past midnight: the evening of a listed day and the morning after it
        ({"days": ["fri"], "hours": "22:00-06:00"}, "2026-07-03T23:00:00", True),  # Fri
        ({"days": ["fri"], "hours": "22:00-06:00"}, "2026-07-04T05:59:00", True),  # Sat am
        ({"days": ["fri"], "hours": "22:00-06:00"}, "2026-07-03T05:00:00", False),  # Fri am
        ({"days": ["mon-fri"]}, "2026-07-04T12:00:00", False),  # a Saturday
        ({"days": ["fri-mon"]}, "2026-07-05T12:00:00", True),  # ranges wrap: Sunday
        ({"days": ["fri-mon"]}, "2026-07-01T12:00:00", False),  # Wednesday
        # 02:00 in Berlin is 00:00 UTC in summer (CEST) and 01:00 UTC in winter
        ({"hours": "02:00-03:00", "timezone": BERLIN}, "2026-07-01T00:30:00", True),
        ({"hours": "02:00-03:00", "timezone": BERLIN}, "2026-01-07T00:30:00", False),
        ({"hours": "02:00-03:00", "timezone": BERLIN}, "2026-01-07T01:30:00", True),
    ],
)
def test_is_open(window: dict[str, object], moment: str, open_: bool) -> None:
    assert Window.model_validate(window).is_open(at(moment)) is open_


def test_next_open_names_the_next_opening_in_utc() -> None:
    window = Window(days=["mon-fri"], hours="02:00-05:00", timezone=BERLIN)
    # Friday noon in Berlin: the next opening is Monday 02:00 CEST = 00:00 UTC
    assert window.next_open(at("2026-07-03T10:00:00")) == at("2026-07-06T00:00:00")
    inside = at("2026-07-06T01:00:00")
    assert window.next_open(inside) == inside


@given(
    st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1)),
    st.sampled_from(["UTC", BERLIN, "America/New_York", "Australia/Lord_Howe"]),
    st.sampled_from(["00:00-24:00", "02:30-03:00", "22:00-06:00", "23:59-00:01"]),
    st.lists(st.sampled_from(["mon", "wed", "sat", "sun", "fri-mon"]), min_size=1),
)
def test_next_open_is_open_and_never_in_the_past(
    moment: datetime, zone: str, hours: str, days: list[str]
) -> None:
    now = moment.replace(tzinfo=UTC)
    window = Window(days=days, hours=hours, timezone=zone)
    opening = window.next_open(now)
    assert opening >= now and window.is_open(opening)
    assert opening - now <= timedelta(days=8)


@pytest.mark.parametrize(
    ("window", "problem"),
    [
        ({"hours": "2-5"}, "HH:MM-HH:MM"),
        ({"hours": "25:00-26:00"}, "not a time of day"),
        ({"hours": "02:61-03:00"}, "not a time of day"),
        ({"hours": "03:00-03:00"}, "is empty"),
        ({"days": []}, "lists no day"),
        ({"days": ["monday"]}, "is not one of"),
        ({"days": ["mon-xyz"]}, "is not one of"),
        ({"timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"timezone": "../../etc/passwd"}, "unknown time zone"),
        ({"weekdays": ["mon"]}, "Extra inputs"),
    ],
)
def test_bad_windows_are_refused_with_the_reason(window: dict[str, object], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        Window.model_validate(window)


@pytest.mark.parametrize(
    "label",
    [
        "",
        "not json",
        "[]",
        '{"state": "exploded"}',
        '{"state": null}',
        "{" * 10_000,
        '"rolled-back"',
    ],
)
def test_a_rollout_label_that_does_not_parse_is_no_rollout(label: str) -> None:
    assert Rollout.from_label(label) is None


@pytest.mark.parametrize("attempts", [-1, "3", True, 1.5, None, 10**30])
def test_a_garbled_attempt_count_never_breaks_the_schedule(attempts: object) -> None:
    import json

    rollout = Rollout.from_label(json.dumps({"state": "rolling-back", "attempts": attempts}))
    assert rollout is not None and rollout.attempts >= 0
    assert 0 < backoff_delay(rollout.attempts + 1, 10, 600) <= 600


def test_a_rollout_label_round_trips() -> None:
    rollout = Rollout(
        "rolling-back", "2026-07-01T00:00:00Z", attempts=3, retry_at="2026-07-01T00:01:00Z"
    )
    assert Rollout.from_label(rollout.to_label()) == rollout


def test_the_retry_schedule_doubles_up_to_its_cap() -> None:
    assert [backoff_delay(n, 10, 600, jitter=False) for n in (1, 2, 3, 7, 100)] == [
        10,
        20,
        40,
        600,
        600,
    ]
    assert all(8 <= backoff_delay(1, 10, 600) <= 10 for _ in range(50))
