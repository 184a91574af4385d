"""Provider calls per cycle for Vault / OpenBao KV v2: syncd, one read per secret, and the floor.

One read per secret per refresh is what External Secrets Operator does: N value reads a cycle.
syncd logs in once per process, asks "what changed?" with metadata and reads only the values
that changed. How few calls that can take depends on the server:

- OpenBao lists a folder with every secret's metadata in one detailed-metadata LIST (paged
  with ``limit``/``after``; without a limit one answer holds the whole folder). The floor is
  one LIST per folder, plus one read per change. syncd asks for ``LIST_PAGE`` entries a page
  to bound the answer's size, so it needs ceil(N / LIST_PAGE) LISTs a folder; the rows show
  both and judge the goal against the one-call floor.
- HashiCorp Vault has no such listing (a KV v2 LIST gives names only, no versions), so the only
  way to see a version is one metadata read per secret: the floor is N, the same count as
  reading every value; what syncd saves there is value traffic, not calls.

Runs against the dev OpenBao of ``scripts/backends env vault``, AppRole auth. All secrets are
in one folder.

    .venv/bin/python bench/calls_vault.py [--rows] [--full] [--count N]
"""

from __future__ import annotations

import sys
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import hvac

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import calls_common as calls  # noqa: E402
from bench.rows import Row, note  # noqa: E402
from providers.vault import LIST_PAGE  # noqa: E402
from tests.backends import require_env  # noqa: E402

CONCURRENCY = 8
PRICE = calls.Price(None, "Vault/OpenBao is self-hosted: no per-call price, so calls per month")


def put(admin: hvac.Client, path: str) -> None:
    """Write a fresh random value at ``path``."""
    admin.secrets.kv.v2.create_or_update_secret(
        path=path, secret={"value": uuid.uuid4().hex}, mount_point="secret"
    )


def approle(admin: hvac.Client, work: Path) -> tuple[str, str]:
    """A read-only AppRole for syncd: its role id and the secret-id file (relative to work)."""
    admin.auth.approle.create_or_update_approle(
        role_name="bench", token_policies=["syncd-read"], token_ttl="1h"
    )
    role_id = admin.auth.approle.read_role_id(role_name="bench")["data"]["role_id"]
    secret_id = admin.auth.approle.generate_secret_id(role_name="bench")["data"]["secret_id"]
    (work / "secret-id").write_text(secret_id)
    return role_id, str(work / "secret-id")


def run(env: dict[str, str], admin: hvac.Client, count: int) -> tuple[list[Row], int]:
    """Rows for both listing modes at one count, and the OpenBao no-change calls for cost."""
    folder = f"bench-{uuid.uuid4().hex[:8]}"
    names = [f"s{i:05d}" for i in range(count)]
    note(f"vault: seeding {count:,} secrets")
    rows: list[Row] = []
    listed_calls = 0
    try:
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda n: put(admin, f"{folder}/{n}"), names))
        for listing in (True, False):
            with tempfile.TemporaryDirectory() as tmp:
                work = Path(tmp)
                role_id, secret_file = approle(admin, work)
                eng = calls.engine(
                    work,
                    {
                        "vault": {
                            "type": "vault",
                            "addr": env["VAULT_ADDR"],
                            "list_metadata": listing,
                            "concurrency": CONCURRENCY,
                            "auth": {
                                "method": "approle",
                                "role_id": role_id,
                                "secret_id_file": secret_file,
                            },
                        }
                    },
                    [
                        {"name": n, "from": {"provider": "vault", "path": f"{folder}/{n}"}}
                        for n in names
                    ],
                )
                try:
                    cycles = calls.run_cycles(
                        eng, "vault", lambda: put(admin, f"{folder}/{names[count // 2]}")
                    )
                finally:
                    eng.close()
            if listing:
                listed_calls = cycles[1].total
                floor = calls.Floor(1, "one detailed-metadata LIST per folder (1 folder; +1 read)")
                limits = (
                    f"syncd pages the LIST at {LIST_PAGE} entries to bound an answer's size: "
                    f"ceil(N/{LIST_PAGE}) = {calls.pages(count, LIST_PAGE)} LISTs"
                )
                rows += calls.call_rows("openbao (folder LIST)", count, cycles, floor, limits)
            else:
                floor = calls.Floor(
                    count, "one metadata read per secret (no versioned listing; +1 read)"
                )
                rows += calls.call_rows("vault (metadata per secret)", count, cycles, floor)
    finally:
        with ThreadPoolExecutor(16) as pool:
            list(
                pool.map(
                    lambda n: admin.secrets.kv.v2.delete_metadata_and_all_versions(
                        path=f"{folder}/{n}", mount_point="secret"
                    ),
                    names,
                )
            )
    return rows, listed_calls


def main() -> None:
    args = calls.parse_args(__doc__)
    env = require_env("vault")
    admin = hvac.Client(url=env["VAULT_ADDR"], token=env["VAULT_TOKEN"])
    rows: list[Row] = []
    measured: dict[int, int] = {}
    for count in args.counts:
        found, measured[count] = run(env, admin, count)
        rows += found
    rows += calls.cost_rows("openbao (folder LIST)", PRICE, measured, (1000, 10_000))
    calls.output(rows, args.rows)


if __name__ == "__main__":
    main()
