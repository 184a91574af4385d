"""Provider calls per cycle for Azure Key Vault: syncd, one read per secret, and the floor.

One read per secret per refresh is what External Secrets Operator does: one ``get_secret`` per
secret per cycle. syncd lists the vault and reads only what changed. The floor: Key Vault has
no filtered listing and no batch read, and ``list_properties_of_secrets`` returns at most 25
secrets a page (the service's ``maxresults`` limit; the SDK's ``max_page_size`` can't raise
it), so seeing what changed costs ceil(secrets in the vault / 25) calls, whatever share of the
vault is configured, and a change adds one ``get_secret``.

Runs against the loopback Key Vault double (``scripts/backends env azure``), which pages like
the service. The double is shared, so the vault may hold other clients' secrets: the floor is
computed from what the vault held when measured. The server counts calls too; the row note says
whether its count matches syncd's.

    .venv/bin/python bench/calls_azure.py [--rows] [--full] [--count N]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import calls_common as calls  # noqa: E402
from bench.rows import Row, note  # noqa: E402
from providers.azure_key_vault import FRESH_SECONDS, PAGE_SIZE  # noqa: E402
from tests.backends import require_env  # noqa: E402

PRICE = calls.Price(0.03, "Azure Key Vault list price: $0.03 per 10,000 secret transactions")
#: Threads seeding and cleaning up.
SEED_THREADS = 8


def server_stats(env: dict[str, str]) -> dict[str, int]:
    """The double's own call counts (``list``, ``get``, ...), since it started."""
    response = requests.get(f"{env['AZURE_KV_ADMIN']}/stats", verify=env["AZURE_KV_CA"], timeout=10)
    response.raise_for_status()
    data: dict[str, int] = response.json()
    return data


def client(env: dict[str, str]) -> Any:
    """An SDK client for seeding, with the same credentials syncd gets."""
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


def provider(env: dict[str, str]) -> dict[str, Any]:
    """syncd's provider block for the double."""
    return {
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


def server_check(env: dict[str, str], before: dict[str, int], cycles: list[calls.Cycle]) -> str:
    """Whether the double counted the same list and get calls as syncd's counter."""
    after = server_stats(env)
    server = {k: after.get(k, 0) - before.get(k, 0) for k in ("list", "get")}
    ours = {
        "list": sum(c.ops.get("list_secrets", 0) for c in cycles),
        "get": sum(c.ops.get("get_secret", 0) for c in cycles),
    }
    if server == ours:
        return "the double's own count agrees"
    return f"the double counted {server} against syncd's {ours} (other clients share it)"


def run(env: dict[str, str], count: int) -> tuple[list[Row], int]:
    """Rows at one count, and syncd's no-change calls for the cost rows."""
    kv = client(env)
    names = [f"bench{uuid.uuid4().hex[:6]}-{i:05d}" for i in range(count)]
    note(f"azure-key-vault: seeding {count:,} secrets")
    try:
        with ThreadPoolExecutor(SEED_THREADS) as pool:
            list(pool.map(lambda n: kv.set_secret(n, os.urandom(16).hex()), names))
        in_vault = sum(1 for _ in kv.list_properties_of_secrets())
        time.sleep(FRESH_SECONDS + 0.2)
        with tempfile.TemporaryDirectory() as tmp:
            eng = calls.engine(
                Path(tmp),
                {"kv": provider(env)},
                [
                    {"name": n.replace("-", "_"), "from": {"provider": "kv", "name": n}}
                    for n in names
                ],
            )
            before = server_stats(env)
            try:
                cycles = calls.run_cycles(
                    eng, "kv", lambda: kv.set_secret(names[count // 2], os.urandom(16).hex())
                )
            finally:
                eng.close()
            checked = server_check(env, before, cycles)
    finally:
        with ThreadPoolExecutor(SEED_THREADS) as pool:
            list(pool.map(lambda n: kv.begin_delete_secret(n).wait(), names))
        kv.close()
    floor = calls.Floor(
        calls.pages(in_vault, PAGE_SIZE),
        f"ceil({in_vault:,} secrets in the vault / {PAGE_SIZE}) list pages (+1 get_secret)",
    )
    return calls.call_rows("azure-key-vault", count, cycles, floor, checked), cycles[1].total


def main() -> None:
    args = calls.parse_args(__doc__)
    for name in [n for n in os.environ if n.startswith(("AZURE_", "IDENTITY_"))]:
        del os.environ[name]
    env = require_env("azure")
    rows: list[Row] = []
    measured: dict[int, int] = {}
    for count in args.counts:
        found, measured[count] = run(env, count)
        rows += found
    rows += calls.cost_rows("azure-key-vault", PRICE, measured, (1000, 10_000))
    calls.output(rows, args.rows)


if __name__ == "__main__":
    main()
