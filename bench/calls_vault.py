"""Vault calls per cycle for 1,000 secrets: syncd against the naive refresh.

The naive way is what External Secrets Operator does on each refresh when it does not cache
its client: log in, then read every secret's value. syncd logs in once per process, asks
"what changed?" with metadata (one detailed-metadata LIST per folder on OpenBao, or one
metadata read per secret), and reads only the values that changed.

Runs against the dev OpenBao server of ``scripts/backends up vault`` (started if needed), with
AppRole auth on both sides so logins are comparable. Prints one markdown table.

    .venv/bin/python bench/calls_vault.py [--secrets 1000]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import hvac
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from syncd.config import load_config  # noqa: E402
from syncd.engine import Engine  # noqa: E402
from tests.backends import require_env  # noqa: E402

CONCURRENCY = 8


def backend() -> dict[str, str]:
    subprocess.run([str(ROOT / "scripts" / "backends"), "up", "vault"], check=True)
    return require_env("vault")


def seed(admin: hvac.Client, folder: str, n: int) -> list[str]:
    names = [f"s{i:04d}" for i in range(n)]

    def put(name: str) -> None:
        admin.secrets.kv.v2.create_or_update_secret(
            path=f"{folder}/{name}", secret={"value": uuid.uuid4().hex}, mount_point="secret"
        )

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, names))
    return names


def approle(admin: hvac.Client, work: Path) -> tuple[str, Path]:
    admin.auth.approle.create_or_update_approle(
        role_name="bench", token_policies=["syncd-read"], token_ttl="1h"
    )
    role_id = admin.auth.approle.read_role_id(role_name="bench")["data"]["role_id"]
    secret_id = admin.auth.approle.generate_secret_id(role_name="bench")["data"]["secret_id"]
    path = work / "secret-id"
    path.write_text(secret_id)
    return role_id, path


def syncd_cycles(
    env: dict[str, str],
    work: Path,
    *,
    folder: str,
    names: list[str],
    role_id: str,
    admin: hvac.Client,
    listing: bool,
) -> dict[str, tuple[dict[str, int], float]]:
    """Run syncd's initial, no-change and one-change cycles; calls and seconds of each."""
    doc = {
        "providers": {
            "vault": {
                "type": "vault",
                "addr": env["VAULT_ADDR"],
                "list_metadata": listing,
                "concurrency": CONCURRENCY,
                "auth": {"method": "approle", "role_id": role_id, "secret_id_file": "secret-id"},
            }
        },
        "target": {"type": "files", "directory": f"out-{listing}"},
        "secrets": [
            {"name": n, "from": {"provider": "vault", "path": f"{folder}/{n}", "key": "value"}}
            for n in names
        ],
    }
    config = work / f"syncd-{listing}.yaml"
    config.write_text(yaml.safe_dump(doc))
    engine = Engine(load_config(config))
    results: dict[str, tuple[dict[str, int], float]] = {}
    try:
        for label in ("initial", "no change", "one change"):
            if label == "one change":
                admin.secrets.kv.v2.create_or_update_secret(
                    path=f"{folder}/{names[len(names) // 2]}",
                    secret={"value": uuid.uuid4().hex},
                    mount_point="secret",
                )
            before = engine.calls.snapshot().get("vault", {})
            start = time.perf_counter()
            result = engine.run_cycle()
            seconds = time.perf_counter() - start
            assert result.ok, [i.error for i in result.items if i.error][:3]
            after = result.calls["vault"]
            delta = {op: after[op] - before.get(op, 0) for op in after}
            results[label] = ({k: v for k, v in delta.items() if v}, seconds)
    finally:
        engine.close()
    return results


def naive_cycle(
    env: dict[str, str], *, folder: str, names: list[str], role_id: str, secret_id: str
) -> tuple[dict[str, int], float]:
    """Log in, read every value (what a refresh does without a cached client or metadata)."""
    start = time.perf_counter()
    client = hvac.Client(url=env["VAULT_ADDR"])
    client.auth.approle.login(role_id=role_id, secret_id=secret_id)

    def read(name: str) -> None:
        client.secrets.kv.v2.read_secret_version(
            path=f"{folder}/{name}", mount_point="secret", raise_on_deleted_version=True
        )

    with ThreadPoolExecutor(CONCURRENCY) as pool:
        list(pool.map(read, names))
    return {"login": 1, "read": len(names)}, time.perf_counter() - start


def fmt(calls: dict[str, int]) -> str:
    return " + ".join(f"{v} {k}" for k, v in sorted(calls.items())) or "0"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--secrets", type=int, default=1000)
    args = parser.parse_args()
    env = backend()
    admin = hvac.Client(url=env["VAULT_ADDR"], token=env["VAULT_TOKEN"])
    folder = f"bench-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        names = seed(admin, folder, args.secrets)
        role_id, secret_file = approle(admin, work)
        secret_id = secret_file.read_text()
        rows = []
        for listing in (True, False):
            mode = "folder LIST" if listing else "metadata per secret"
            cycles = syncd_cycles(
                env, work, folder=folder, names=names, role_id=role_id, admin=admin, listing=listing
            )
            for label in ("no change", "one change"):
                calls, seconds = cycles[label]
                naive, naive_seconds = naive_cycle(
                    env, folder=folder, names=names, role_id=role_id, secret_id=secret_id
                )
                total, naive_total = sum(calls.values()), sum(naive.values())
                rows.append(
                    f"| vault ({mode}) | {len(names)} | {label} | {fmt(calls)} "
                    f"| {calls.get('login', 0)} | {seconds:.2f}s | {fmt(naive)} "
                    f"| {naive.get('login', 0)} | {naive_seconds:.2f}s "
                    f"| {naive_total / max(total, 1):.0f}x |"
                )
        with ThreadPoolExecutor(16) as pool:
            list(
                pool.map(
                    lambda n: admin.secrets.kv.v2.delete_metadata_and_all_versions(
                        path=f"{folder}/{n}", mount_point="secret"
                    ),
                    names,
                )
            )
    print(
        "| provider | secrets | cycle | syncd calls | syncd logins | syncd time "
        "| naive calls | naive logins | naive time | fewer calls |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
