"""``Retry-After`` is server input: seconds or an HTTP date are read, anything else is
ignored (the client's own backoff applies), never an exception."""

from __future__ import annotations

import time
from email.utils import formatdate

import pytest

from syncd.retry_after import retry_after


def test_seconds_and_dates_are_read():
    assert retry_after("3") == 3.0
    assert retry_after(" 120 ") == 120.0
    later = retry_after(formatdate(time.time() + 30, usegmt=True))
    assert later is not None and 28 <= later <= 30
    assert retry_after(formatdate(time.time() - 30, usegmt=True)) == 0.0


@pytest.mark.parametrize(
    "value", [None, "", "  ", "-1", "1.5", "soon", "9" * 5000 + "x", b"3", 3, "Mon, 99 Foo"]
)
def test_garbage_is_ignored(value):
    assert retry_after(value) is None


def test_a_huge_number_stays_finite():
    assert retry_after("9" * 5000) == 999_999_999.0
