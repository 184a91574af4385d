"""Faults on loopback that every provider's tests inflict the same way.

A server that accepts and never answers, one that resets every connection, a port nobody
listens on; a cycle timed against a bound; ``syncd check`` run with an SDK made unimportable.
One copy here so each provider is attacked alike.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from syncd.engine import CycleResult, Engine
from tests.conftest import ROOT

Fault = Literal["hang", "reset", "refuse"]


def timed_cycle(engine: Engine, *, bound: float) -> tuple[float, CycleResult]:
    """One engine cycle and its wall time; fails as soon as it runs over ``bound`` seconds."""
    box: dict[str, CycleResult] = {}
    thread = threading.Thread(target=lambda: box.setdefault("r", engine.run_cycle()), daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(bound + 1.0)
    elapsed = time.monotonic() - started
    assert not thread.is_alive(), f"the cycle was still running after {elapsed:.1f}s"
    return elapsed, box["r"]


@contextmanager
def dead_port(kind: Fault) -> Iterator[int]:
    """A loopback port that accepts and never answers ("hang"), resets every connection at
    once ("reset"), or has no listener ("refuse")."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = int(listener.getsockname()[1])
    if kind == "refuse":
        listener.close()
        yield port
        return
    listener.listen(64)
    listener.settimeout(0.1)
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            if kind == "reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
            else:
                held.append(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()


@contextmanager
def dead_endpoint(kind: Fault) -> Iterator[str]:
    """``dead_port`` as an ``http://`` URL."""
    with dead_port(kind) as port:
        yield f"http://127.0.0.1:{port}"


def check_without(module: str, config: Path) -> subprocess.CompletedProcess[str]:
    """``syncd check --config CONFIG`` in a process where ``module`` can't be imported."""
    blocked = (
        f"import sys; sys.modules[{module!r}] = None; from syncd.cli import main; sys.exit(main())"
    )
    return subprocess.run(
        [str(ROOT / ".venv" / "bin" / "python"), "-c", blocked, "check", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
