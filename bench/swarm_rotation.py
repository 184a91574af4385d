#!/usr/bin/env python3
"""Time one secret rotation on the test Swarm: syncd versus the same swap done by hand.

syncd: the upstream value changes (the file provider's file is rewritten) and one cycle runs
at once: detect, fetch, create ``<name>-vN``, repoint the service, wait until it converged,
collect old versions. The scheduler's ``refresh`` wait is left out: it is a setting. The
cycle runs in the daemon (``python -m syncd``, ``POST /sync`` right after the change, done
when ``/metrics`` counts the cycle finished), in one long-lived engine, or as ``--once``.

By hand: ``docker secret create`` of the new version, then ``docker service update
--secret-rm OLD --secret-add source=NEW,target=FILE --detach=false`` (with
``--no-resolve-image``: images here come from no registry).

Both services are identical (busybox, ``order: start-first``, same monitor window), and the
two kinds of rotation alternate so that machine load hits both alike. Prints the median,
min and max of each, and the overhead ratio syncd / by hand; with ``--rows``, syncd's
overhead per rotation (syncd - the paired by-hand time), p50 and p99, as ``bench/run`` rows.

    scripts/backends up swarm
    .venv/bin/python bench/swarm_rotation.py [--rotations 20] [--monitor 1s]
        [--mode daemon|engine|cli] [--rows] [--full]
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.rows import Row, note  # noqa: E402
from bench.syncd_daemon import Daemon  # noqa: E402
from bench.table import Report, percentile  # noqa: E402
from tests.backends import require_env  # noqa: E402

IDLE = "trap 'exit 0' TERM; while true; do sleep 0.2; done"


def swarm_env() -> dict[str, str]:
    """DOCKER_HOST and the test image, from the running backend."""
    return require_env("swarm")


def docker(env: dict[str, str], *args: str, stdin: bytes | None = None) -> None:
    subprocess.run(
        ["docker", *args],
        input=stdin,
        capture_output=True,
        check=True,
        env={**os.environ, "DOCKER_HOST": env["DOCKER_HOST"]},
    )


def create_service(env: dict[str, str], name: str, secret: str, target: str, monitor: str) -> None:
    docker(
        env,
        "service",
        "create",
        "--detach=false",
        "--quiet",
        "--no-resolve-image",
        "--name",
        name,
        "--update-order",
        "start-first",
        "--update-monitor",
        monitor,
        "--update-parallelism",
        "1",
        "--update-delay",
        "0s",
        "--stop-grace-period",
        "2s",
        "--secret",
        f"source={secret},target={target}",
        env["SYNCD_TEST_IMAGE"],
        "sh",
        "-c",
        IDLE,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rotations", type=int, default=20)
    parser.add_argument("--monitor", default="1s", help="the services' update monitor window")
    parser.add_argument(
        "--mode",
        choices=["daemon", "engine", "cli"],
        default="daemon",
        help="daemon: python -m syncd with POST /sync; engine: one long-lived engine in this "
        "process; cli: syncd --once per rotation",
    )
    parser.add_argument("--rows", action="store_true", help="print JSON rows for bench/run")
    parser.add_argument("--full", action="store_true", help="nothing more: 20 is the default")
    args = parser.parse_args()
    rotations = args.rotations
    env = swarm_env()
    os.environ["DOCKER_HOST"] = env["DOCKER_HOST"]

    import docker as docker_sdk
    import yaml

    from syncd.config import load_config
    from syncd.engine import Engine

    api: Any = docker_sdk.APIClient(base_url=env["DOCKER_HOST"], version="auto")
    prefix = f"bench{secrets.token_hex(3)}-"
    name = f"{prefix}token"
    work = Path(tempfile.mkdtemp(prefix="syncd-bench-"))
    keys = work / "keys.yaml"
    config = work / "syncd.yaml"
    doc = {
        "providers": {"local": {"type": "file", "path": "keys.yaml"}},
        "target": {
            "type": "swarm",
            "docker_host": env["DOCKER_HOST"],
            "key_config": f"{prefix}key",
        },
        "defaults": {"keep": 1, "timeout": "5m", "refresh": "1h"},
        "secrets": [{"name": name, "from": {"provider": "local", "key": "token"}}],
    }
    config.write_text(yaml.safe_dump(doc))

    def upstream(value: str) -> None:
        keys.write_text(yaml.safe_dump({"token": value}))

    engine = Engine(load_config(config))
    # the daemon replaces the engine once v1 exists (two syncd must not share the target)
    running = ExitStack()
    manual_secret = f"{prefix}manual-1"
    services = [f"{prefix}syncd", f"{prefix}manual"]
    synced: list[float] = []
    manual: list[float] = []
    calls: list[dict[str, Any]] = []
    try:
        upstream("bench-" + secrets.token_urlsafe(16))
        first = engine.run_cycle()
        if not first.ok:
            sys.exit(f"first sync failed: {first.items}")
        docker(env, "secret", "create", manual_secret, "-", stdin=secrets.token_bytes(16))
        create_service(env, services[0], f"{name}-v1", "token", args.monitor)
        create_service(env, services[1], manual_secret, "token", args.monitor)

        engine.close()
        daemon = running.enter_context(Daemon(work, doc)) if args.mode == "daemon" else None
        if daemon is not None:
            daemon.wait_cycles(1)
        else:
            engine = Engine(load_config(config))
        for n in range(2, rotations + 2):
            start = time.perf_counter()
            upstream("bench-" + secrets.token_urlsafe(16))
            if daemon is not None:
                daemon.sync()
                ok = True
            elif args.mode == "cli":
                run = subprocess.run(
                    [sys.executable, "-m", "syncd", "--config", str(config), "--once"],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                ok = run.returncode == 0
            else:
                result = engine.run_cycle()
                ok = result.ok
                calls.append(result.calls)
            synced.append(time.perf_counter() - start)
            if not ok:
                sys.exit(f"syncd rotation {n} failed")

            start = time.perf_counter()
            new = f"{prefix}manual-{n}"
            docker(env, "secret", "create", new, "-", stdin=secrets.token_bytes(16))
            docker(
                env,
                "service",
                "update",
                "--detach=false",
                "--quiet",
                "--no-resolve-image",
                "--secret-rm",
                manual_secret,
                "--secret-add",
                f"source={new},target=token",
                services[1],
            )
            manual.append(time.perf_counter() - start)
            manual_secret = new
            note(f"swarm rotation {n}: syncd {synced[-1]:.2f} s, by hand {manual[-1]:.2f} s")
    finally:
        running.close()
        engine.close()
        for service in services:
            try:
                api.remove_service(service)
            except docker_sdk.errors.APIError:
                continue
        time.sleep(1)
        for secret in api.secrets(filters={"name": prefix}):
            try:
                api.remove_secret(secret["ID"])
            except docker_sdk.errors.APIError:
                continue
        for cfg in api.configs(filters={"name": prefix}):
            api.remove_config(cfg["ID"])
        api.close()
        shutil.rmtree(work, ignore_errors=True)  # the config, the values and the trigger token

    if args.rows:
        report = Report(as_rows=True)
        overhead = [a - b for a, b in zip(synced, manual, strict=True)]
        for label, q in (("p50", 0.5), ("p99", 0.99)):
            value = percentile(overhead, q)
            report.add(
                Row(
                    "Propagation",
                    f"Swarm service (1 replica, start-first), {args.mode}: overhead {label}",
                    value,
                    "s",
                    "the same swap by hand (docker secret create + service update), p50",
                    statistics.median(manual),
                    "< 1 s",
                    value < 1.0,
                    f"{rotations} rotations, monitor {args.monitor}; syncd - the paired by-hand "
                    "time; from the upstream write to the end of the cycle (converged)",
                )
            )
        return 0

    def show(label: str, values: list[float]) -> None:
        print(
            f"{label:<34} median {statistics.median(values):6.2f}s   "
            f"min {min(values):6.2f}s   max {max(values):6.2f}s"
        )

    print(
        f"{rotations} rotations, 1 replica, order start-first, monitor {args.monitor}, "
        f"syncd mode {args.mode}"
    )
    show("syncd (change -> converged)", synced)
    show("by hand (secret create + update)", manual)
    ratio = statistics.median(synced) / statistics.median(manual)
    print(f"overhead ratio syncd / by hand: {ratio:.2f}")
    if len(calls) >= 2:
        last = {
            f"{component}:{op}": n - calls[-2].get(component, {}).get(op, 0)
            for component, ops in calls[-1].items()
            if component.startswith("target")
            for op, n in ops.items()
        }
        print("syncd Docker API calls in the last rotation:", {k: v for k, v in last.items() if v})
    return 0


if __name__ == "__main__":
    sys.exit(main())
