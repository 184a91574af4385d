"""The progress bar of ``syncd --once`` and ``syncd plan`` on a terminal (tqdm).

A cold sync of thousands of secrets runs for a while; on a terminal a bar per stage of the
cycle (``syncd.progress``: checking sources, fetching values, creating versions) shows how
far it is. Only there: never with ``-o json``, never in the daemon, never when stderr is not
a terminal (CI logs, a pipe, a file), never with ``--no-progress``. The bar shows a stage and
counts, nothing else: no name and no value reaches it.

Log lines go to the same stderr; while a bar is drawn they are written through tqdm, which
lifts the bar, prints the line and draws it again, so neither garbles the other. The log
handlers keep their formatter and redaction filter: only the stream they write to changes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Never, TextIO

from syncd.progress import ProgressHook

if TYPE_CHECKING:
    from tqdm import tqdm


class CycleBar:
    """One tqdm bar for the stage being reported; a new stage closes the last one."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._bar: tqdm[Never] | None = None
        self._stage: str | None = None
        #: a terminal that went away: stop drawing, never fail the cycle for it
        self._broken = False

    def __call__(self, stage: str, done: int, total: int) -> None:
        """``done`` of ``total`` items of ``stage`` are finished."""
        if self._broken:
            return
        try:
            bar = self._bar
            if bar is None or stage != self._stage or total != bar.total:
                from tqdm import tqdm  # only once a bar is drawn: --once off a terminal skips it

                self.close()
                self._stage = stage
                bar = tqdm(
                    total=total,
                    desc=stage,
                    unit="",
                    file=self._stream,
                    leave=False,
                    dynamic_ncols=True,
                )
                self._bar = bar
            bar.update(done - bar.n)
            if done >= total:
                bar.refresh()
        except OSError:
            self._broken = True

    def write(self, text: str) -> None:
        """Print ``text`` (a log line) above the bar."""
        if self._bar is None or self._broken:
            self._stream.write(text)
            return
        from tqdm import tqdm

        tqdm.write(text, file=self._stream, end="")

    def flush(self) -> None:
        with suppress(OSError):
            self._stream.flush()

    def close(self) -> None:
        """Remove the bar from the terminal."""
        if self._bar is not None:
            with suppress(OSError):
                self._bar.close()
        self._bar = None


def wanted(stream: TextIO, *, output: str, disabled: bool) -> bool:
    """Whether to draw a bar on ``stream``: text output, not turned off, a terminal."""
    if output != "text" or disabled:
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty is not None and isatty())


@contextmanager
def progress_bar(stream: TextIO, *, output: str, disabled: bool) -> Iterator[ProgressHook | None]:
    """The hook for ``Engine.progress`` while the block runs (``None``: no bar here), with
    the log lines meant for ``stream`` routed above the bar; the bar is gone afterwards."""
    if not wanted(stream, output=output, disabled=disabled):
        yield None
        return
    bar = CycleBar(stream)
    handlers = [
        h
        for h in logging.getLogger().handlers
        if isinstance(h, logging.StreamHandler) and h.stream is stream
    ]
    for handler in handlers:
        handler.setStream(bar)
    try:
        yield bar
    finally:
        bar.close()
        for handler in handlers:
            handler.setStream(stream)
