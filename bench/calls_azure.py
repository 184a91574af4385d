"""Provider calls per cycle for 1,000 Azure Key Vault secrets: syncd vs the naive way.

The naive way is what External Secrets Operator does on each refresh: one ``get_secret`` per
secret per cycle. syncd lists the vault (25 secrets a page) and reads only what changed.

Runs against the loopback Key Vault double (``scripts/backends up azure``); every number is
counted twice, by syncd's call counter and by the server, and the two must agree.

    .venv/bin/python bench/calls_azure.py [--secrets 1000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from providers.azure_key_vault import FRESH_SECONDS  # noqa: E402
from syncd.config import load_config  # noqa: E402
from syncd.engine import Engine  # noqa: E402
from tests.backends import require_env  # noqa: E402


def backend_env() -> dict[str, str]:
    return require_env("azure")


def stats(env: dict[str, str]) -> dict[str, int]:
    response = requests.get(f"{env['AZURE_KV_ADMIN']}/stats", verify=env["AZURE_KV_CA"], timeout=10)
    response.raise_for_status()
    data: dict[str, int] = response.json()
    return data


def client(env: dict[str, str]) -> Any:
    from azure.identity import ClientSecretCredential
    from azure.keyvault.secrets import SecretClient

    credential = ClientSecretCredential(
        env["AZURE_KV_TENANT"],
        env["AZURE_KV_CLIENT_ID"],
        Path(env["AZURE_KV_CLIENT_SECRET_FILE"]).read_text().strip(),
        authority=env["AZURE_KV_AUTHORITY"],
        disable_instance_discovery=True,
        connection_verify=env["AZURE_KV_CA"],
    )
    return SecretClient(
        env["AZURE_KV_URL"],
        credential,
        verify_challenge_resource=False,
        connection_verify=env["AZURE_KV_CA"],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--secrets", type=int, default=1000)
    args = parser.parse_args()
    for name in [n for n in os.environ if n.startswith(("AZURE_", "IDENTITY_"))]:
        del os.environ[name]
    env = backend_env()
    kv = client(env)
    prefix = f"bench{uuid.uuid4().hex[:6]}"
    names = [f"{prefix}-{i:04d}" for i in range(args.secrets)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: kv.set_secret(n, os.urandom(16).hex()), names))
    in_vault = sum(1 for _ in kv.list_properties_of_secrets())
    time.sleep(FRESH_SECONDS + 0.2)

    work = Path(tempfile.mkdtemp(prefix="syncd-bench-azure-"))
    doc = {
        "providers": {
            "kv": {
                "type": "azure-key-vault",
                "vault_url": env["AZURE_KV_URL"],
                "auth": {
                    "method": "client-secret",
                    "tenant_id": env["AZURE_KV_TENANT"],
                    "client_id": env["AZURE_KV_CLIENT_ID"],
                    "client_secret_file": env["AZURE_KV_CLIENT_SECRET_FILE"],
                },
                "authority_host": env["AZURE_KV_AUTHORITY"],
                "ca_bundle": env["AZURE_KV_CA"],
                "verify_challenge_resource": False,
            }
        },
        "target": {"type": "files", "directory": str(work / "out")},
        "secrets": [
            {"name": n.replace("-", "_"), "from": {"provider": "kv", "name": n}} for n in names
        ],
    }
    (work / "syncd.yaml").write_text(yaml.safe_dump(doc))
    engine = Engine(load_config(work / "syncd.yaml"))

    def cycle() -> tuple[dict[str, int], dict[str, int], float]:
        before_calls = dict(engine.calls.snapshot().get("kv", {}))
        before_server = stats(env)
        started = time.monotonic()
        result = engine.run_cycle()
        elapsed = time.monotonic() - started
        assert result.ok, [i.error for i in result.items if i.error][:3]
        after_calls = engine.calls.snapshot().get("kv", {})
        after_server = stats(env)
        ours = {k: after_calls.get(k, 0) - before_calls.get(k, 0) for k in after_calls}
        server = {k: after_server.get(k, 0) - before_server.get(k, 0) for k in after_server}
        assert ours.get("get_secret", 0) == server.get("get", 0), (ours, server)
        assert ours.get("list_secrets", 0) == server.get("list", 0), (ours, server)
        return ours, server, elapsed

    first, _, first_s = cycle()
    no_change, _, no_change_s = cycle()
    kv.set_secret(names[len(names) // 2], os.urandom(16).hex())
    one_change, _, one_change_s = cycle()
    engine.close()

    before = stats(env)
    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(kv.get_secret, names))
    naive_s = time.monotonic() - started
    naive = stats(env).get("get", 0) - before.get("get", 0)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: kv.begin_delete_secret(n).wait(), names))
    kv.close()

    def total(counts: dict[str, int]) -> int:
        return sum(counts.values())

    rows = [
        ("first (cold)", first, first_s),
        ("no change", no_change, no_change_s),
        ("one change", one_change, one_change_s),
    ]
    print(
        f"Azure Key Vault, {args.secrets} secrets synced ({in_vault} in the vault, "
        f"{-(-in_vault // 25)} list pages)"
    )
    print(
        f"{'cycle':<14}{'list':>6}{'get':>7}{'other':>7}{'syncd':>7}{'naive':>7}{'fewer':>8}"
        f"{'time s':>8}"
    )
    for label, counts, seconds in rows:
        calls = total(counts)
        lists, gets = counts.get("list_secrets", 0), counts.get("get_secret", 0)
        print(
            f"{label:<14}{lists:>6}{gets:>7}{calls - lists - gets:>7}{calls:>7}{naive:>7}"
            f"{naive / calls:>7.1f}x{seconds:>8.2f}"
        )
    print(f"naive cycle: {naive} get_secret calls in {naive_s:.2f}s (8 threads)")
    worst = max(total(no_change), total(one_change))
    if naive / worst < 10:
        sys.exit(f"FAIL: only {naive / worst:.1f}x fewer calls than naive (target 10x)")


if __name__ == "__main__":
    main()
