"""Rotation windows: when consumers may be restarted.

A ``window:`` names days and hours in a time zone. Outside it a changed secret still gets its
new version (creating one restarts nothing), but consumers are not repointed until the window
opens; the plan says until when. Hours may wrap past midnight (``22:00-06:00``: the night
from each listed day into the next), and ``00:00-24:00`` is the whole day.
"""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HOURS = re.compile(r"^(?P<a>\d\d):(?P<am>\d\d)-(?P<b>\d\d):(?P<bm>\d\d)$")
#: How far ahead the next opening is searched (a week of minutes always finds one).
_HORIZON = timedelta(days=8)


def _minutes(hours: str) -> tuple[int, int]:
    match = _HOURS.match(hours)
    if match is None:
        raise ValueError(f"hours {hours!r} must be HH:MM-HH:MM (e.g. 02:00-05:00, 22:00-06:00)")
    start = int(match["a"]) * 60 + int(match["am"])
    end = int(match["b"]) * 60 + int(match["bm"])
    if int(match["am"]) > 59 or int(match["bm"]) > 59 or start >= 24 * 60 or end > 24 * 60:
        raise ValueError(f"hours {hours!r}: not a time of day (00:00 to 24:00)")
    if start == end:
        raise ValueError(f"hours {hours!r} is empty; use 00:00-24:00 for the whole day")
    return start, end


def _days(entries: list[str]) -> frozenset[int]:
    """``[mon, wed]``, ``[mon-fri]`` or ``[fri-mon]`` (wrapping) as weekday numbers."""
    chosen: set[int] = set()
    for entry in entries:
        first, _, last = entry.strip().lower().partition("-")
        if first not in DAYS or (last and last not in DAYS):
            raise ValueError(
                f"day {entry!r} is not one of {', '.join(DAYS)} or a range like mon-fri"
            )
        a = DAYS.index(first)
        b = DAYS.index(last) if last else a
        chosen.update((a + i) % 7 for i in range((b - a) % 7 + 1))
    if not chosen:
        raise ValueError("'days' lists no day")
    return frozenset(chosen)


class Window(BaseModel):
    """When consumers may be repointed (restarted)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    days: list[str] = Field(
        default_factory=lambda: list(DAYS),
        description="Days the window opens on: mon..sun, or ranges like mon-fri.",
    )
    hours: str = Field(
        "00:00-24:00",
        description="HH:MM-HH:MM on those days; may wrap past midnight (22:00-06:00).",
    )
    timezone: str = Field("UTC", description="IANA time zone of days and hours (Europe/Berlin).")

    @field_validator("days")
    @classmethod
    def _check_days(cls, value: list[str]) -> list[str]:
        _days(value)
        return value

    @field_validator("hours")
    @classmethod
    def _check_hours(cls, value: str) -> str:
        _minutes(value)
        return value

    @field_validator("timezone")
    @classmethod
    def _check_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (use an IANA name like UTC)") from exc
        return value

    def is_open(self, now: datetime) -> bool:
        """Whether ``now`` (any aware datetime) is inside the window."""
        local = now.astimezone(ZoneInfo(self.timezone))
        start, end = _minutes(self.hours)
        days = _days(self.days)
        minute = local.hour * 60 + local.minute
        if start < end:
            return local.weekday() in days and start <= minute < end
        # wraps past midnight: the evening of a listed day, or the morning after one
        if local.weekday() in days and minute >= start:
            return True
        return (local.weekday() - 1) % 7 in days and minute < end

    def next_open(self, now: datetime) -> datetime:
        """When the window opens next (``now`` itself when it is open), in UTC."""
        if self.is_open(now):
            return now
        zone = ZoneInfo(self.timezone)
        local = now.astimezone(zone)
        start, _ = _minutes(self.hours)
        opening = time(start // 60, start % 60)
        day = local.date()
        while day <= (local + _HORIZON).date():
            candidate = datetime.combine(day, opening, tzinfo=zone)
            if candidate > local and self.is_open(candidate):
                return candidate.astimezone(ZoneInfo("UTC"))
            day += timedelta(days=1)
        raise AssertionError("a window with at least one day opens within a week")

    def describe(self) -> str:
        """``mon-fri 02:00-05:00 Europe/Berlin`` style, for plans and logs."""
        return f"{','.join(self.days)} {self.hours} {self.timezone}"
