"""The long-running daemon: scheduling, error backoff, reload, health and a clean stop.

Secrets are grouped by their ``refresh`` interval and each group is one APScheduler job, so a
group's provider reads stay batched (one ``ListSecrets`` for all of them, not one per secret).
Jobs run on a single worker thread: cycles, retries and reloads never overlap, which is what
keeps the engine's swaps one at a time. ``coalesce`` folds missed runs into one, and
``misfire_grace_time=None`` runs a late job instead of dropping it.

A failed secret is retried on its own schedule, exponential from ``backoff_min`` to
``backoff_max`` with jitter, separate from the refresh interval. With ``prune: true`` the
group with the shortest refresh also prunes, over the whole config, exactly as ``--once``
does. SIGTERM lets the running cycle finish; SIGHUP or a change of the config file (or of a
base it ``extends``) reloads: the new config is validated and its engine fully built first,
and on any error the running one stays, the failure is counted and ``/readyz`` says so.

With ``daemon.trigger``, ``POST /sync`` (``syncd.endpoints``) queues a cycle on the same
worker, after whatever runs now; requests that arrive while one is queued join it, and a
replica that isn't the leader refuses them.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from syncd.backoff import backoff_delay
from syncd.config import Config, load_config
from syncd.display import shown
from syncd.endpoints import Server, handler
from syncd.engine import Engine
from syncd.errors import ConfigError, SyncdError
from syncd.logs import fields
from syncd.metrics import Metrics
from syncd.model import ROLLOUT_STATES, PlanItem
from syncd.swap import parse_stamp
from syncd.trigger import SyncQueue, TokenFile

if TYPE_CHECKING:
    from syncd.leader import LeaderElector

log = logging.getLogger("syncd.daemon")

WATCH_INTERVAL = 2.0


@dataclass
class Health:
    """What ``/healthz`` and ``/readyz`` decide from; updated by the scheduler thread."""

    started: float = field(default_factory=time.monotonic)
    intervals: dict[float, float] = field(default_factory=dict)  # interval -> last cycle end
    failing_since: dict[str, float] = field(default_factory=dict)
    #: the failing secrets whose last failure won't pass by itself (``PlanItem.needs_fix``)
    needs_fix: set[str] = field(default_factory=set)
    config_loaded: bool = False
    running_since: float | None = None
    #: why the last reload was refused (the previous config keeps running)
    reload_failed: str | None = None
    #: secret -> (outcome, until) of swaps that didn't simply converge
    outcomes: dict[str, tuple[str, str | None]] = field(default_factory=dict)

    def outcome_lines(self) -> list[str]:
        """One line per secret waiting for a window or with a failed version."""
        return [
            f"{name}: {outcome}" + (f" until {until}" if until else "")
            for name, (outcome, until) in sorted(self.outcomes.items())
        ]

    def stalled(self, *, now: float, margin: float, jitter: float) -> str | None:
        """Why the loop is stalled, or None: a group is overdue by more than ``margin``."""
        for interval, last in self.intervals.items():
            due = last + interval * (1 + jitter)
            if now > due + margin:
                return f"the {interval:.0f}s refresh is {now - due:.0f}s overdue"
        return None

    def unready(self, *, now: float, grace: float) -> str | None:
        """Why the daemon isn't ready, or None."""
        if not self.config_loaded:
            return "no valid config loaded"
        if self.reload_failed:
            return f"config reload failed, running the previous config: {self.reload_failed}"
        old = {n: t for n, t in self.failing_since.items() if now - t > grace}
        if old:
            named = (f"{n} (needs a fix)" if n in self.needs_fix else n for n in sorted(old))
            return f"failing for over {grace:.0f}s: {', '.join(named)}"
        return None


class Daemon:
    """Owns the scheduler, the engine for the current config, and the HTTP endpoints."""

    def __init__(
        self,
        config_path: str | Path,
        *,
        listen: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config_path = Path(config_path)
        self.clock = clock
        self.metrics = Metrics()
        self.health = Health(started=clock())
        self.stop_event = threading.Event()
        self.reload_event = threading.Event()
        self._failures: dict[str, int] = defaultdict(int)
        self._config_stat: tuple[tuple[str, int, int], ...] = ()
        #: secret names each refresh group reported last, so metric series of secrets that
        #: left the config (or a for_each listing) are dropped
        self._group_names: dict[float, set[str]] = {}
        self._series: set[str] = set()
        #: every name the last cycle of each group (and any run since) reported, for_each
        #: ones included, for ``POST /sync?secret=``; replaced whole, so an HTTP thread reads
        #: it without a lock
        self._reported: frozenset[str] = frozenset()
        self._requests = SyncQueue()
        #: unique job ids: a run requested while the previous one runs must not be refused
        #: as a second instance of the same job
        self._request_ids = itertools.count(1)
        self.config = self._load_initial()
        self._listen = listen if listen is not None else self.config.daemon.listen
        self.trigger = _token_file(self.config)
        self.engine, self.elector = self._new_engine(self.config)
        self.scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=1)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        self.server: Server | None = None

    # ------------------------------------------------------------------ setup

    def _load_initial(self) -> Config:
        config = load_config(self.config_path)  # a bad config at start is fatal (exit 1)
        self._config_stat = self._stat(config)
        self.health.config_loaded = True
        self.metrics.config_loaded.set(1)
        return config

    def _new_engine(self, config: Config) -> tuple[Engine, LeaderElector | None]:
        """An engine fully built for ``config`` (raises ``SyncdError``); nothing of the
        running one is touched, so a failure leaves it running."""
        engine = Engine(config)
        try:
            engine.build()
            elector = engine.target.leader_elector(
                identity=_identity(), on_change=lambda leader: self.metrics.leader.set(int(leader))
            )
        except Exception:
            engine.close()
            raise
        if elector is not None:
            engine.target.write_guard = elector.check
        engine.target.watch()
        engine.calls.add_listener(self.metrics.count_call)
        return engine, elector

    def _stat(self, config: Config | None = None) -> tuple[tuple[str, int, int], ...]:
        """Size and mtime of the config and every base it extends (a base edit reloads too)."""
        files = (config or self.config).files or (self.config_path,)
        stats = []
        for path in files:
            try:
                st = path.stat()
            except OSError:
                stats.append((str(path), -1, -1))
                continue
            stats.append((str(path), st.st_mtime_ns, st.st_size))
        return tuple(stats)

    def groups(self) -> dict[float, list[str]]:
        """Secret names by refresh interval; the secrets of a ``group:`` all run with the
        shortest refresh among them, so a cut-over group is always planned as one."""
        shortest: dict[str, float] = {}
        for secret in self.config.secrets:
            if secret.group:
                shortest[secret.group] = min(
                    secret.refresh, shortest.get(secret.group, secret.refresh)
                )
        grouped: dict[float, list[str]] = defaultdict(list)
        for secret in self.config.secrets:
            interval = shortest[secret.group] if secret.group else secret.refresh
            grouped[interval].append(secret.name)
        return dict(grouped)

    def schedule(self) -> None:
        """(Re)create one job per refresh group, each first running right away."""
        for job in self.scheduler.get_jobs():
            if job.id.startswith(("group:", "retry:")):
                job.remove()
        now = datetime.now().astimezone()
        self.health.intervals = {}
        self._group_names = {}
        self._reported = frozenset()
        groups = sorted(self.groups().items())
        for interval, names in groups:
            self.health.intervals[interval] = self.clock()
            self.scheduler.add_job(
                self.run_group,
                IntervalTrigger(seconds=interval, jitter=interval * self.config.daemon.jitter),
                args=[interval, names],
                kwargs={"prune": interval == groups[0][0]},
                id=f"group:{interval:g}",
                next_run_time=now,
            )

    # ------------------------------------------------------------------ jobs

    def run_group(self, interval: float | None, names: list[str], *, prune: bool = False) -> None:
        """One cycle over ``names``; failures get their own backoff retry.

        ``prune`` (the shortest-refresh group) also deletes what left the whole config.
        """
        start = self.clock()
        if self.elector is not None and not self.elector.is_leader:
            log.debug("not the leader: skipping %s", ", ".join(names))
            if interval is not None:
                self.health.intervals[interval] = start  # a follower is idle, not stalled
            return
        self.health.running_since = start
        try:
            result = self.engine.run_cycle(names=names, prune=prune)
        finally:
            self.health.running_since = None
        end = self.clock()
        self.metrics.observe_cycle(result, seconds=end - start, now=time.time())
        reported = {i.name for i in result.items}
        if interval is not None:
            self.health.intervals[interval] = end
            self._forget_series(interval, reported)
        else:  # a retry or a request: what it made is known until its group runs again
            self._reported = self._reported | reported
        failed: list[tuple[str, bool]] = []
        for item in result.items:
            self._note_outcome(item)
            if item.error:
                log.error(
                    "%s: %s",
                    shown(item.name),
                    item.error,
                    extra=fields(
                        secret=item.name,
                        version=item.version,
                        provider=item.error_provider,
                        ref=item.error_ref,
                        kind=item.error_kind,
                        transient=item.transient,
                    ),
                )
                self.health.failing_since.setdefault(item.name, end)
                if item.needs_fix:
                    self.health.needs_fix.add(item.name)
                else:
                    self.health.needs_fix.discard(item.name)
                if item.outcome in ("rolled-back", "held"):
                    continue  # final until the upstream value changes: the refresh sees that
                if item.until:
                    self._schedule_retry(item.name, at=item.until)
                else:
                    failed.append((item.name, not item.needs_fix))
            else:
                if item.action != "unchanged":
                    log.info("%s: %s v%s", shown(item.name), item.action, item.version)
                self.health.failing_since.pop(item.name, None)
                self.health.needs_fix.discard(item.name)
                self._failures.pop(item.name, None)
                if item.outcome == "waiting-window" and item.until:
                    self._schedule_retry(item.name, at=item.until)
        for name, transient in failed:
            self._schedule_retry(name, transient=transient)

    def _note_outcome(self, item: PlanItem) -> None:
        """Keep what ``/readyz`` says besides failures: who waits for a window, and which
        versions failed."""
        if item.outcome == "waiting-window" or item.outcome in ROLLOUT_STATES:
            self.health.outcomes[item.name] = (item.outcome, item.until)
        else:
            self.health.outcomes.pop(item.name, None)

    def _forget_series(self, interval: float, reported: set[str]) -> None:
        """Drop the metric series of secrets no group reports any more, once every group of
        the current config has reported (a removed secret must not look stale forever)."""
        self._group_names[interval] = reported
        self._reported = frozenset().union(*self._group_names.values())
        if set(self._group_names) != set(self.health.intervals):
            return
        alive = set().union(*self._group_names.values())
        gone = self._series - alive
        if gone:
            self.metrics.forget(gone)
            for name in gone:
                self.health.failing_since.pop(name, None)
                self.health.needs_fix.discard(name)
        self._series = alive

    # ------------------------------------------------------------------ POST /sync

    @property
    def leading(self) -> bool:
        """Whether this replica may write now (no election: always)."""
        return self.elector is None or self.elector.is_leader

    def known_secrets(self) -> set[str]:
        """Names ``POST /sync?secret=`` takes: the config's, and the ones its ``for_each``
        templates made in their group's last cycle or in any cycle since."""
        return {s.name for s in self.config.secrets} | self._reported

    def request_sync(self, names: list[str] | None) -> bool:
        """Queue a cycle of ``names`` (None: every secret, pruning like ``--once``) on the
        worker; True when it joined a run already queued."""
        if not self._requests.add(names):
            return True
        self.scheduler.add_job(self._run_requested, id=f"sync:{next(self._request_ids)}")
        return False

    def _run_requested(self) -> None:
        """Run what was requested since the last such run (one run for all of it)."""
        names = self._requests.take()
        if names is None:
            self.run_group(None, [s.name for s in self.config.secrets], prune=True)
        elif names:
            self.run_group(None, names)

    def backoff(self, name: str, *, transient: bool = True) -> float:
        """The retry schedule's delay before the next retry of ``name``.

        A failure that may pass by itself steps up from ``backoff_min``; one that needs a fix
        (credentials refused, a missing reference, bad input) waits ``backoff_max`` at once:
        retrying it sooner only repeats the same error and spends the provider's quota. Its
        refresh, a reload or ``POST /sync`` still runs it as soon as those come.
        """
        settings = self.config.daemon
        if not transient:
            return backoff_delay(1, settings.backoff_max, settings.backoff_max)
        self._failures[name] += 1
        return backoff_delay(self._failures[name], settings.backoff_min, settings.backoff_max)

    def _schedule_retry(self, name: str, *, at: str | None = None, transient: bool = True) -> None:
        """Run ``name`` again: on the retry schedule, or at ``at`` (a window opening, a
        rollback's next attempt stored in the target)."""
        when = _parse_time(at) if at else None
        if when is None:
            delay = self.backoff(name, transient=transient)
            when = datetime.now().astimezone() + timedelta(seconds=delay)
        why = "" if transient or at else " (needs a fix, so not sooner unless its refresh comes)"
        log.info("running %s again at %s%s", shown(name), when.isoformat(timespec="seconds"), why)
        self.scheduler.add_job(
            self.run_group,
            "date",
            run_date=when,
            args=[None, [name]],
            id=f"retry:{name}",
            replace_existing=True,
        )

    def watch(self) -> None:
        """Reload on SIGHUP or when the config file changed (runs between cycles)."""
        changed = self.config.daemon.watch_config and self._stat() != self._config_stat
        if self.reload_event.is_set() or changed:
            self.reload_event.clear()
            self.reload()

    def reload(self) -> bool:
        """Validate the new config and build its engine; switch to it only when both work.

        On any failure the running config and engine stay, the failure is counted
        (``syncd_config_reloads_total{result="error"}``) and ``/readyz`` reports it until a
        reload succeeds.
        """
        self._config_stat = self._stat()
        try:
            config = load_config(self.config_path)
            self._config_stat = self._stat(config)
            engine, elector = self._new_engine(config)
        except ConfigError as exc:
            for issue in exc.issues:
                log.error("config reload refused, keeping the running config: %s", issue)
            return self._reload_failed(str(exc.issues[0]) if exc.issues else "invalid config")
        except SyncdError as exc:
            log.error("config reload refused, keeping the running config: %s", exc)
            return self._reload_failed(str(exc))
        except Exception as exc:  # noqa: BLE001 - a plugin's bug must not kill the daemon
            reason = f"{type(exc).__name__}: {exc}"
            log.error("config reload refused, keeping the running config: %s", reason)
            return self._reload_failed(reason)
        old, old_elector = self.engine, self.elector
        engine.certificates = old.certificates  # values aren't read again for a reload
        if old_elector is not None:
            old_elector.stop()
        self.config, self.engine, self.elector = config, engine, elector
        self.trigger = _token_file(config)
        if self.trigger is not None:
            self.trigger.usable()
        if elector is not None:
            elector.start()
        old.close()
        self.metrics.leader.set(0 if elector else 1)
        self.health.reload_failed = None
        self.health.failing_since.clear()
        self.health.needs_fix.clear()
        self._failures.clear()
        self.schedule()
        self.metrics.config_reloads.labels("ok").inc()
        log.info("config reloaded: %d secrets", len(config.secrets))
        return True

    def _reload_failed(self, reason: str) -> bool:
        self.health.reload_failed = reason
        self.metrics.config_reloads.labels("error").inc()
        return False

    # ------------------------------------------------------------------ HTTP

    def start_http(self) -> None:
        """Serve /metrics, /healthz and /readyz (read-only), and POST /sync when
        ``daemon.trigger`` is set, on ``listen``."""
        if not self._listen:
            if self.trigger is not None:
                log.warning("daemon.trigger is set but there is no listener: POST /sync is off")
            return
        host, _, port = self._listen.rpartition(":")
        try:
            self.server = Server((host or "0.0.0.0", int(port)), handler(self))  # noqa: S104
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise SyncdError(f"can't listen on {self._listen}: {reason}") from exc
        threading.Thread(target=self.server.serve_forever, name="http", daemon=True).start()
        sync = ", POST /sync" if self.trigger is not None else ""
        log.info("serving /metrics, /healthz, /readyz%s on %s", sync, self._listen)
        if self.trigger is not None:
            self.trigger.usable()

    @property
    def address(self) -> tuple[str, int]:
        """Where the HTTP server listens (tests bind port 0)."""
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return str(host), int(port)

    def healthz(self) -> str | None:
        """Why the daemon is unhealthy, or None."""
        now = self.clock()
        settings = self.config.daemon
        running = self.health.running_since
        longest = max((s.timeout for s in self.config.secrets), default=0.0)
        if running is not None and now - running > longest + settings.stall_margin:
            return f"a cycle has been running for {now - running:.0f}s"
        if running is not None:
            return None
        return self.health.stalled(now=now, margin=settings.stall_margin, jitter=settings.jitter)

    def readyz(self) -> str | None:
        """Why the daemon isn't ready, or None."""
        return self.health.unready(now=self.clock(), grace=self.config.daemon.ready_grace)

    # ------------------------------------------------------------------ run

    def run(self) -> int:
        """Run until SIGTERM/SIGINT; the running cycle always completes first."""
        self.start_http()
        self.metrics.leader.set(0 if self.elector else 1)
        if self.elector is not None:
            self.elector.start()
        self.schedule()
        self.scheduler.add_job(self.watch, "interval", seconds=WATCH_INTERVAL, id="watch")
        self.scheduler.start()
        log.info(
            "syncd started: %d secrets in %d refresh groups",
            len(self.config.secrets),
            len(self.groups()),
        )
        self.stop_event.wait()
        log.info("stopping: letting the running cycle finish")
        self.scheduler.shutdown(wait=True)
        # everything but the Lease first: once it is released a successor writes at once
        self.engine.target.stop_watching()
        if self.elector is not None:
            self.elector.stop()
        self.engine.close()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        log.info("stopped")
        return 0

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT stop, SIGHUP reloads."""

        def stop(signum: int, frame: Any) -> None:
            del frame
            log.info("received %s", signal.Signals(signum).name)
            self.stop_event.set()

        def hup(signum: int, frame: Any) -> None:
            del signum, frame
            log.info("received SIGHUP: reloading the config")
            self.reload_event.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, hup)


def _token_file(config: Config) -> TokenFile | None:
    """The trigger's token file, relative to the config file like every path in it."""
    trigger = config.daemon.trigger
    if trigger is None:
        return None
    return TokenFile((config.base_dir / os.path.expanduser(trigger.token_file)).absolute())


def _parse_time(text: str) -> datetime | None:
    """A time the engine stored or reported, a second late (so it is due)."""
    moment = parse_stamp(text)
    return None if moment is None else moment + timedelta(seconds=1)


def _identity() -> str:
    """Who holds the lease: the pod name in Kubernetes, else host and pid."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
