#!/usr/bin/env python3
"""Time one secret rotation on the test Swarm: syncd versus the same swap done by hand.

syncd: the upstream value changes (the file provider's file is rewritten) and one cycle runs
at once: detect, fetch, create ``<name>-vN``, repoint the service, wait until it converged,
collect old versions. The scheduler's ``refresh`` wait is left out: it is a setting.

By hand: ``docker secret create`` of the new version, then ``docker service update
--secret-rm OLD --secret-add source=NEW,target=FILE --detach=false`` (with
``--no-resolve-image``: images here come from no registry).

Both services are identical (busybox, ``order: start-first``, same monitor window), and the
two kinds of rotation alternate so that machine load hits both alike. Prints the median,
min and max of each, and the overhead ratio syncd / by hand.

    scripts/backends up swarm
    .venv/bin/python bench/swarm_rotation.py [--rotations 5] [--monitor 1] [--mode engine|cli]
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

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
    parser.add_argument("--rotations", type=int, default=5)
    parser.add_argument("--monitor", default="1s", help="the services' update monitor window")
    parser.add_argument(
        "--mode",
        choices=["engine", "cli"],
        default="engine",
        help="engine: one long-lived engine, as the daemon runs; cli: syncd --once per rotation",
    )
    args = parser.parse_args()
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
    config.write_text(
        yaml.safe_dump(
            {
                "providers": {"local": {"type": "file", "path": "keys.yaml"}},
                "target": {
                    "type": "swarm",
                    "docker_host": env["DOCKER_HOST"],
                    "key_config": f"{prefix}key",
                },
                "defaults": {"keep": 1, "timeout": "5m"},
                "secrets": [{"name": name, "from": {"provider": "local", "key": "token"}}],
            }
        )
    )

    def upstream(value: str) -> None:
        keys.write_text(yaml.safe_dump({"token": value}))

    engine = Engine(load_config(config))
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

        for n in range(2, args.rotations + 2):
            start = time.perf_counter()
            upstream("bench-" + secrets.token_urlsafe(16))
            if args.mode == "cli":
                run = subprocess.run(
                    [str(ROOT / ".venv" / "bin" / "syncd"), "--config", str(config), "--once"],
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
    finally:
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

    def show(label: str, values: list[float]) -> None:
        print(
            f"{label:<34} median {statistics.median(values):6.2f}s   "
            f"min {min(values):6.2f}s   max {max(values):6.2f}s"
        )

    print(
        f"{args.rotations} rotations, 1 replica, order start-first, monitor {args.monitor}, "
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
