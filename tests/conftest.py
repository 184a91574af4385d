"""Shared test harness.

Backends are reached through ``scripts/backends env NAME``, the same code a developer uses.
A test that needs a backend that is not running fails under ``CI=true`` and skips elsewhere:
CI must never pass by skipping.

**Leak canaries.** Every value a test generates (``new_value``, the ``canary`` fixture) is a
canary of that test. When the test ends, everything syncd put out while it ran is searched
for each canary, as written, with its case changed, in base64 (any alignment), hex and
URL-encoded; a hit fails the test and says where. What is searched:

- every log record of every logger, at every level syncd's ``--log-level debug`` lets
  through, rendered as syncd renders it (text and JSON, after redaction);
- the test's captured stdout and stderr (what ``capsys``/``capfd`` read, too), which holds
  the plan and the JSON report of an in-process CLI;
- the argv of every subprocess, and the stdout and stderr of every Python or ``syncd`` one
  (a daemon sent to ``/dev/null`` writes to a file that is searched instead);
- every ``SyncdError`` created and every exception ``pytest.raises`` caught;
- every ``CycleResult`` an ``Engine`` returned (its JSON document);
- the ``/metrics`` text of every ``Metrics`` created;
- the files target's labels (``..syncd.json`` under ``tmp_path``);
- for a test on the Swarm (the ``swarm`` fixture): the labels of every secret, config and
  service; on a Kubernetes namespace (``ns``): the labels and annotations of its objects
  and pod templates, its Leases' holders and its Events.

A value a test reads back from a target itself is the target's data, not output: it isn't
searched. The search is skipped for a test that generated no value.
"""

from __future__ import annotations

import base64
import bisect
import json
import logging
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import warnings
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

import pytest
from prometheus_client import generate_latest

from syncd.config import load_config
from syncd.daemon import Daemon
from syncd.engine import CycleResult, Engine
from syncd.errors import SyncdError
from syncd.logs import QUIET_LOGGERS, formatter
from syncd.metrics import Metrics
from syncd.redact import REDACTOR, RedactingFilter
from tests.backends import ROOT, read_env

__all__ = [
    "CANARY_PREFIX",
    "ROOT",
    "Leak",
    "backend_env",
    "find_leaks",
    "new_value",
    "run",
    "wait_until",
]

T = TypeVar("T")

CANARY_PREFIX = "CANARY-"


#: How long each target's soak runs by default (the test command keeps it short).
DEFAULT_SOAK_SECONDS = 45.0


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--soak-minutes N`` runs every soak test for N minutes instead of the short default."""
    parser.addoption(
        "--soak-minutes",
        type=float,
        default=None,
        help="run each soak test this long (default: SYNCD_SOAK_MINUTES, else 0.75)",
    )


@pytest.fixture
def soak_seconds(request: pytest.FixtureRequest) -> float:
    """How long a soak test rotates and reads."""
    minutes = request.config.getoption("--soak-minutes")
    if minutes is None and os.environ.get("SYNCD_SOAK_MINUTES"):
        minutes = float(os.environ["SYNCD_SOAK_MINUTES"])
    return DEFAULT_SOAK_SECONDS if minutes is None else minutes * 60


def backend_env(name: str) -> dict[str, str]:
    """The running backend's settings; fail under ``CI=true``, skip elsewhere, if absent."""
    env = read_env(name)
    if not env:
        message = f"backend {name!r} is not running (start it: scripts/backends up {name})"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return env


def new_value(prefix: str = "test-") -> str:
    """A generated test value (never a real credential), and a leak canary of the test."""
    value = prefix + secrets.token_urlsafe(24)
    _register(value)
    return value


@pytest.fixture
def canary() -> str:
    """A unique value that must never appear in any output, label or error."""
    value = CANARY_PREFIX + secrets.token_hex(16)
    _register(value)
    return value


def run(path: Path) -> CycleResult:
    """One cycle of a fresh engine on the config at ``path`` (a new process would do the
    same), closed afterwards."""
    engine = Engine(load_config(path))
    try:
        return engine.run_cycle()
    finally:
        engine.close()


def wait_until(what: str, probe: Callable[[], T | None], timeout: float = 60.0) -> T:
    """Poll ``probe`` until it returns something truthy, and return it; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


# --------------------------------------------------------------------------- finding a canary

_URLSAFE = str.maketrans("+/", "-_")


def canary_forms(value: str) -> list[tuple[str, str, bool]]:
    """``(form, needle, case_folded)`` for every form of ``value`` to look for; a folded
    needle is looked for in the lowercased text (hex and %-escapes come in either case)."""
    data = value.encode()
    forms = [("as written", value, False), ("with its case changed", value.lower(), True)]
    forms.append(("in hex", data.hex(), True))
    quoted_forms = [urllib.parse.quote(value, safe=""), urllib.parse.quote_plus(value)]
    for quoted in dict.fromkeys(quoted_forms):
        if quoted != value:
            forms.append(("URL-encoded", quoted.lower(), True))
    escaped = json.dumps(value)[1:-1]
    if escaped != value:
        forms.append(("JSON-escaped", escaped, False))
    # base64 of a longer text holds the value's base64 at one of three alignments: keep the
    # characters only the value's own bits decide
    for shift in range(3):
        encoded = base64.b64encode(bytes(shift) + data).decode()
        start, end = -(-4 * shift // 3), 4 * (shift + len(data)) // 3
        for alphabet in dict.fromkeys([encoded, encoded.translate(_URLSAFE)]):
            forms.append(("in base64", alphabet[start:end], False))
    return forms


@dataclass(frozen=True)
class Leak:
    """A canary found in ``source``, in ``form``; ``excerpt`` shows it in context."""

    source: str
    form: str
    excerpt: str

    def __str__(self) -> str:
        return f"a test value ({self.form}) in {self.source}: {self.excerpt}"


#: Leaks reported per canary (one per source): enough to see where it went.
MAX_REPORTED = 5


def find_leaks(canaries: Iterable[str], chunks: Iterable[tuple[str, str]]) -> list[Leak]:
    """Every canary found in the ``(source, text)`` chunks, once per source it is in."""
    sources, starts, texts = [], [], []
    size = 0
    for source, text in chunks:
        sources.append(source)
        starts.append(size)
        texts.append(text)
        size += len(text) + 1
    joined = "\n".join(texts)  # no needle holds a line break, so none spans two chunks
    folded = joined.lower()
    leaks: list[Leak] = []
    for value in dict.fromkeys(canaries):
        seen: set[str] = set()
        for form, needle, case_folded in canary_forms(value):
            haystack = folded if case_folded else joined
            at = haystack.find(needle)
            while at >= 0 and len(seen) < MAX_REPORTED:
                chunk = bisect.bisect_right(starts, at) - 1
                if sources[chunk] not in seen:
                    seen.add(sources[chunk])
                    before = joined[max(starts[chunk], at - 60) : at]
                    after = joined[at + len(needle) : at + len(needle) + 60].split("\n")[0]
                    leaks.append(Leak(sources[chunk], form, f"{before!r} <canary> {after!r}"))
                end = starts[chunk + 1] if chunk + 1 < len(starts) else len(joined)
                at = haystack.find(needle, end)  # the next chunk that has it
    return leaks


# --------------------------------------------------------------------------- what a test put out


@dataclass
class _Process:
    """A subprocess the test started: its argv and, for syncd, where its output went."""

    argv: list[str]
    syncd: bool
    #: files standing in for ``/dev/null``, and files the test gave as stdout/stderr
    files: list[IO[bytes] | str] = field(default_factory=list)


def _is_syncd(argv: list[str]) -> bool:
    """Whether a command's output is syncd's: the ``syncd`` script or a Python interpreter
    (``python -m syncd``, or code that imports it)."""
    name = Path(argv[0]).name if argv else ""
    return name == "syncd" or name.startswith("python") or argv[:1] == [sys.executable]


_TEXT_FORMAT = formatter("text")
_JSON_FORMAT = formatter("json")
_REDACTION = RedactingFilter(REDACTOR)


def _rendered(record: logging.LogRecord) -> str:
    """``record`` as syncd's handler would write it, in both formats: redacted, with its
    traceback (text) and its ``extra=`` fields (JSON). The record itself is left as it is."""
    copy = logging.makeLogRecord(vars(record))
    try:
        _REDACTION.filter(copy)
        return f"{_TEXT_FORMAT.format(copy)}\n{_JSON_FORMAT.format(copy)}"
    except Exception:  # arguments that don't fit the message: logging reports its own error
        return f"{record.msg} {record.args!r}"


class LeakWatch:
    """The canaries of one test and everything syncd put out while it ran."""

    def __init__(self) -> None:
        self.canaries: list[str] = []
        self._lock = threading.Lock()
        self._chunks: list[tuple[str, str]] = []
        self._searched = 0
        self._processes: list[_Process] = []
        self._read: dict[int, int] = {}  # id(file) -> bytes already searched
        self._levels: list[tuple[logging.Logger, int]] = []
        self._handlers: list[logging.Handler] = []
        self.registries: list[Any] = []

    def add(self, source: str, text: str) -> None:
        """Keep ``text`` (something syncd put out) for the search.

        What is put out before the test generated its first value can't hold one (a value
        that doesn't exist yet), so the recorders skip it: a test without values costs next
        to nothing. Output that is only read at the end (a process's) is always kept."""
        with self._lock:
            self._chunks.append((source, text))

    def install(self, mp: pytest.MonkeyPatch) -> None:
        """Watch logging, subprocesses, errors, ``pytest.raises``, engines and metrics."""
        self._watch_logs(mp)
        self._watch_processes(mp)
        watch = self
        exception_init = SyncdError.__init__

        def error_init(error: SyncdError, *args: Any, **kwargs: Any) -> None:
            exception_init(error, *args, **kwargs)
            if watch.canaries:  # its message is set by now
                watch.add(f"a {type(error).__name__}", str(error))

        mp.setattr(SyncdError, "__init__", error_init)
        fill = pytest.ExceptionInfo.fill_unfilled

        def filled(info: pytest.ExceptionInfo[Any], exc_info: Any) -> None:
            fill(info, exc_info)
            if watch.canaries:
                watch.add(f"the {exc_info[0].__name__} pytest.raises caught", str(exc_info[1]))

        mp.setattr(pytest.ExceptionInfo, "fill_unfilled", filled)
        run_cycle = Engine.run_cycle

        def cycle(engine: Engine, *args: Any, **kwargs: Any) -> CycleResult:
            result = run_cycle(engine, *args, **kwargs)
            if watch.canaries:
                watch.add("a cycle's result (JSON)", json.dumps(result.to_json()))
            return result

        mp.setattr(Engine, "run_cycle", cycle)
        metrics_init = Metrics.__init__

        def metrics(self: Metrics, *args: Any, **kwargs: Any) -> None:
            metrics_init(self, *args, **kwargs)
            watch.registries.append(self.registry)

        mp.setattr(Metrics, "__init__", metrics)
        readouterr = pytest.CaptureFixture.readouterr

        def read(capture: pytest.CaptureFixture[Any]) -> Any:
            result = readouterr(capture)
            for name, text in (("stdout", result.out), ("stderr", result.err)):
                watch.add(f"captured {name}", _text(text))
            return result

        mp.setattr(pytest.CaptureFixture, "readouterr", read)

    def _watch_logs(self, mp: pytest.MonkeyPatch) -> None:
        """Every record a logger hands to its handlers (whichever handlers a test installed),
        at the levels ``setup_logging`` gives ``--log-level debug``."""
        root = logging.getLogger()
        quiet = [logging.getLogger(name) for name in QUIET_LOGGERS]
        self._levels = [(logger, logger.level) for logger in (root, *quiet)]
        self._handlers = list(root.handlers)
        root.setLevel(logging.DEBUG)
        for logger in quiet:
            logger.setLevel(max(logging.WARNING, logger.level))
        call_handlers = logging.Logger.callHandlers
        watch = self

        def handle(logger: logging.Logger, record: logging.LogRecord) -> None:
            if watch.canaries:
                watch.add(f"a log record of {record.name} at {record.levelname}", _rendered(record))
            call_handlers(logger, record)

        mp.setattr(logging.Logger, "callHandlers", handle)

    def _watch_processes(self, mp: pytest.MonkeyPatch) -> None:
        """Record each subprocess's argv; keep a syncd process's output for the search."""
        popen_init = subprocess.Popen.__init__
        communicate = subprocess.Popen.communicate
        watch = self

        def init(popen: subprocess.Popen[Any], args: Any, *rest: Any, **kwargs: Any) -> None:
            single = isinstance(args, str | bytes | os.PathLike)
            argv = [os.fsdecode(a) for a in ([args] if single else args)]
            process = _Process(argv, _is_syncd(argv))
            if watch.canaries:
                watch.add(f"the command line of {argv[0] if argv else '?'}", " ".join(argv))
            if process.syncd:
                for stream in ("stdout", "stderr"):
                    given = kwargs.get(stream)
                    if given == subprocess.DEVNULL:
                        spool = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
                        kwargs[stream] = spool
                        process.files.append(spool)
                    elif isinstance(getattr(given, "name", None), str):
                        process.files.append(given.name)
            with watch._lock:
                watch._processes.append(process)
            popen._leak_process = process  # type: ignore[attr-defined]
            popen_init(popen, args, *rest, **kwargs)

        def talk(popen: subprocess.Popen[Any], *args: Any, **kwargs: Any) -> Any:
            out, err = communicate(popen, *args, **kwargs)
            process: _Process | None = getattr(popen, "_leak_process", None)
            if process is not None and process.syncd:
                source = f"the output of {' '.join(process.argv)[:120]}"
                watch.add(source, f"{_text(out)}\n{_text(err)}")
            return out, err

        mp.setattr(subprocess.Popen, "__init__", init)
        mp.setattr(subprocess.Popen, "communicate", talk)

    def _written(self) -> Iterator[tuple[str, str]]:
        """What syncd processes wrote to files since the last search."""
        for process in list(self._processes):
            for file in process.files:
                try:
                    if isinstance(file, str):
                        data = Path(file).read_bytes()
                    else:
                        file.seek(0)
                        data = file.read()
                except (OSError, ValueError):  # gone, or closed by the test
                    continue
                start = self._read.get(id(file), 0)
                self._read[id(file)] = len(data)
                yield f"the output of {' '.join(process.argv)[:120]}", _text(data[start:])

    def search(self, live: Iterable[tuple[str, str]] = ()) -> list[Leak]:
        """Leaks in what arrived since the last search, and in ``live`` (state read now)."""
        with self._lock:
            chunks = self._chunks[self._searched :]
            self._searched = len(self._chunks)
        if not self.canaries:
            return []
        return find_leaks(self.canaries, [*chunks, *self._written(), *live])

    def close(self) -> None:
        """Put the log levels (``setLevel`` also drops the loggers' caches) and the root's
        handlers back, and close files. An in-process CLI run installs syncd's handler on
        the root logger, writing to that test's captured stderr: left there, it writes every
        later test's records to a closed file, and logging prints the failure with the record
        (and its traceback) to the real stderr."""
        for logger, level in self._levels:
            logger.setLevel(level)
        logging.getLogger().handlers[:] = self._handlers
        for process in self._processes:
            for file in process.files:
                if not isinstance(file, str):
                    file.close()


def _text(data: str | bytes | None) -> str:
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else data or ""


_WATCH: LeakWatch | None = None
_WATCH_KEY = pytest.StashKey[LeakWatch]()


def _register(value: str) -> None:
    if _WATCH is not None:
        with _WATCH._lock:
            _WATCH.canaries.append(value)


# --------------------------------------------------------------------------- state read at the end


def _metrics(watch: LeakWatch) -> Iterator[tuple[str, str]]:
    for registry in watch.registries:
        yield "/metrics", generate_latest(registry).decode()


def _state_files(item: pytest.Item) -> Iterator[tuple[str, str]]:
    root = getattr(item, "funcargs", {}).get("tmp_path")
    if isinstance(root, Path):
        for path in root.rglob("..syncd.json"):
            try:
                yield str(path), path.read_text(errors="replace")
            except OSError:  # a generation collected meanwhile
                continue


def _swarm_labels(swarm: Any) -> Iterator[tuple[str, str]]:
    """The labels of every secret, config and service on the test swarm."""
    api = swarm.api
    for kind, objects in (("secret", api.secrets()), ("config", api.configs())):
        for obj in objects:
            spec = obj.get("Spec") or {}
            yield f"the labels of Swarm {kind} {spec.get('Name')}", json.dumps(spec.get("Labels"))
    for service in api.services():
        spec = service.get("Spec") or {}
        container = (spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}
        labels = [spec.get("Labels"), container.get("Labels")]
        yield f"the labels of Swarm service {spec.get('Name')}", json.dumps(labels)


#: What is listed in a test's namespace: (API class, list method).
_KUBE_LISTS = [
    ("CoreV1Api", "list_namespaced_secret"),
    ("CoreV1Api", "list_namespaced_config_map"),
    ("CoreV1Api", "list_namespaced_event"),
    ("AppsV1Api", "list_namespaced_deployment"),
    ("AppsV1Api", "list_namespaced_stateful_set"),
    ("AppsV1Api", "list_namespaced_daemon_set"),
    ("BatchV1Api", "list_namespaced_cron_job"),
    ("BatchV1Api", "list_namespaced_job"),
    ("CoordinationV1Api", "list_namespaced_lease"),
]


def _kube_metadata(obj: Any) -> Iterator[str]:
    """Labels and annotations of an object and of every template in it; never its data."""
    if isinstance(obj, dict):
        meta = obj.get("metadata")
        if isinstance(meta, dict):
            yield json.dumps([meta.get("labels"), meta.get("annotations")])
        for key, child in obj.items():
            if key in ("spec", "template", "jobTemplate"):
                yield from _kube_metadata(child)


def _kube_labels(client: Any, namespace: str) -> Iterator[tuple[str, str]]:
    """The namespace's labels, annotations, Lease holders and Events."""
    for api, method in _KUBE_LISTS:
        response = getattr(getattr(client, api)(), method)(
            namespace, _preload_content=False, _request_timeout=10
        )
        for obj in json.loads(response.data).get("items") or []:
            name = f"{obj.get('kind') or method.removeprefix('list_namespaced_')} "
            name += (obj.get("metadata") or {}).get("name", "?")
            texts = list(_kube_metadata(obj))
            if method == "list_namespaced_event":
                texts.append(f"{obj.get('reason')} {obj.get('message')} {obj.get('note')}")
            if method == "list_namespaced_lease":
                texts.append(str((obj.get("spec") or {}).get("holderIdentity")))
            yield f"{name} in namespace {namespace}", "\n".join(texts)


def _live_state(item: pytest.Item, watch: LeakWatch) -> list[tuple[str, str]]:
    """State that outlives the output: metrics, labels (files, Swarm, Kubernetes), Events."""
    found = [*_metrics(watch), *_state_files(item)]
    funcargs = getattr(item, "funcargs", {})
    listings: list[tuple[str, Callable[[], Iterator[tuple[str, str]]]]] = []
    if hasattr(funcargs.get("swarm"), "api"):
        listings.append(("Swarm", lambda: _swarm_labels(funcargs["swarm"])))
    if isinstance(funcargs.get("ns"), str) and hasattr(funcargs.get("api"), "CoreV1Api"):
        listings.append(("Kubernetes", lambda: _kube_labels(funcargs["api"], funcargs["ns"])))
    for what, listing in listings:
        try:
            found.extend(listing())
        except Exception as exc:  # the backend went away: the rest is still searched
            warnings.warn(f"leak canaries: can't list {what} labels ({exc})", stacklevel=1)
    return found


def _report(leaks: list[Leak]) -> str:
    lines = "\n".join(f"  - {leak}" for leak in leaks)
    return f"leak canaries: a value this test generated reached syncd's output\n{lines}"


# --------------------------------------------------------------------------- the fixture and hook


@pytest.fixture(autouse=True)
def _leak_canaries(request: pytest.FixtureRequest) -> Iterator[LeakWatch]:
    """Watch what syncd puts out during the test; fail it if a canary shows up.

    The test's own end (and the state it leaves: labels, metrics) is searched by
    ``pytest_runtest_makereport``, before any fixture is torn down; what arrives while the
    fixtures are torn down is searched here, last (this fixture is set up first).
    """
    global _WATCH  # noqa: PLW0603 - new_value() has no fixture to reach the test's watch
    watch = LeakWatch()
    request.node.stash[_WATCH_KEY] = watch
    with pytest.MonkeyPatch.context() as mp:
        watch.install(mp)
        _WATCH = watch
        try:
            yield watch
            leaks = watch.search()
        finally:
            _WATCH = None
            watch.close()
    if leaks:
        pytest.fail(_report(leaks), pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Search once the test has run: a leak fails the test itself."""
    report = yield
    watch = item.stash.get(_WATCH_KEY, None)
    if watch is None or report.when != "call" or report.skipped:
        return report
    captured = [("captured stdout", report.capstdout), ("captured stderr", report.capstderr)]
    leaks = watch.search([*captured, *_live_state(item, watch)]) if watch.canaries else []
    if leaks and report.passed:
        report.outcome = "failed"
        report.longrepr = _report(leaks)
    elif leaks:
        report.sections.append(("leak canaries", _report(leaks)))
    return report


@contextmanager
def running_daemons(stop_within: float) -> Iterator[Callable[[Path], Daemon]]:
    """``start(path)`` runs a daemon on a thread until its listener and scheduler are up;
    on exit every daemon is told to stop, then each must have stopped within
    ``stop_within`` seconds."""
    started: list[tuple[Daemon, threading.Thread]] = []

    def start(path: Path) -> Daemon:
        daemon = Daemon(path)
        thread = threading.Thread(target=daemon.run, daemon=True)
        thread.start()
        wait_until(
            "the daemon to start", lambda: daemon.server is not None and daemon.scheduler.running
        )
        started.append((daemon, thread))
        return daemon

    try:
        yield start
    finally:
        for daemon, _ in started:
            daemon.stop_event.set()
        for _, thread in started:
            thread.join(timeout=stop_within)
            assert not thread.is_alive(), f"the daemon did not stop within {stop_within:g}s"
