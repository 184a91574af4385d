"""One duration type for every time setting, in the core and in every plugin.

A duration is seconds (``90``, ``1.5``) or a string like ``30s``, ``5m``, ``1h30m``, ``250ms``.
Whatever a setting means, some values can't mean anything: negative, NaN, infinite or absurdly
long durations are refused here, with the setting's own bounds (``gt=0``, ``ge=1``) on top.
"""

from __future__ import annotations

import math
import re
from typing import Annotated

from pydantic import BeforeValidator, Field, WithJsonSchema

_DURATION = re.compile(r"(?P<n>\d+(?:\.\d+)?)(?P<unit>ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
#: No time setting may be longer than this (a typo like 5000d, or 1e400, is an error).
MAX_DURATION = 366 * 86400.0


def parse_duration(value: object) -> float:
    """``"90s"``, ``"5m"``, ``"1h30m"`` or a number of seconds, as seconds.

    Refuses what no time setting can mean: negative, NaN, infinite, or over a year.
    """
    seconds: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:
            seconds = math.inf
    elif isinstance(value, str):
        text = value.strip()
        pos, total = 0, 0.0
        for match in _DURATION.finditer(text):
            if match.start() != pos:
                break
            total += float(match["n"]) * _UNITS[match["unit"]]
            pos = match.end()
        if text and pos == len(text):
            seconds = total
        elif re.fullmatch(r"\d+(?:\.\d+)?", text):
            seconds = float(text)
    if seconds is None:
        raise ValueError("not a duration (use seconds, or e.g. 30s, 5m, 1h30m)")
    if math.isnan(seconds):
        raise ValueError("NaN is not a duration")
    if seconds < 0:
        raise ValueError("a duration can't be negative")
    if seconds > MAX_DURATION:
        raise ValueError("a duration can be at most a year (366d)")
    return seconds


#: Every time setting of every plugin uses this one type: seconds or ``30s``/``5m``/``1h30m``.
Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0, "maximum": MAX_DURATION},
                {
                    "type": "string",
                    "pattern": r"^(?:\d+(?:\.\d+)?|(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+)$",
                },
            ],
            "description": "Seconds, or a duration like 30s, 5m, 1h30m.",
        }
    ),
]
#: A share between 0 and 1.
Share = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]

__all__ = ["MAX_DURATION", "Duration", "Share", "parse_duration"]
