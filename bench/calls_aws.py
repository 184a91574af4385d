"""Provider calls per cycle for AWS Secrets Manager and SSM: syncd, one read per secret, floor.

One read per secret per refresh is what External Secrets Operator does: one GetSecretValue (or
GetParameter) per secret, N calls whether anything changed or not. syncd lists metadata and
reads only what changed. The floor: Secrets Manager lists at most 100 secrets a ListSecrets
page, so a no-change cycle needs ceil(N/100) calls; SSM describes at most 50 parameters a
DescribeParameters page, ceil(N/50). A change adds one read.

Runs against moto (``scripts/backends env aws``). Counts come from syncd's own call counter
(every HTTP attempt, every page), so they are what AWS would bill and throttle. moto pages
DescribeParameters by 10 whatever MaxResults asks, so the SSM goal is judged against the floor
at moto's page size (ceil(N/10)), and the AWS floor is reported beside it.

    .venv/bin/python bench/calls_aws.py [--rows] [--full] [--count N] [--skip-ssm]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import calls_common as calls  # noqa: E402
from bench.rows import Row, note  # noqa: E402
from tests.backends import require_env  # noqa: E402

#: Threads seeding and cleaning up (moto answers one at a time, but HTTP round trips overlap).
SEED_THREADS = 8
#: moto's DescribeParameters page, whatever MaxResults asks (AWS: up to 50).
MOTO_DESCRIBE_PAGE = 10
PRICES = {
    "aws-secrets-manager": calls.Price(
        0.05, "AWS Secrets Manager list price: $0.05 per 10,000 API calls"
    ),
    "aws-ssm": calls.Price(
        0.05,
        "SSM Parameter Store: standard-tier API interactions are free at standard throughput "
        "(then both cost $0); priced here at the higher-throughput rate, $0.05 per 10,000",
    ),
}


def seed(kind: str, endpoint: str, names: list[str]) -> tuple[dict[str, str], Any, Any]:
    """Create the secrets; their ids, a function changing one, and one cleaning all up."""
    tag = uuid.uuid4().hex[:8]
    if kind == "aws-secrets-manager":
        client = boto3.client("secretsmanager", endpoint_url=endpoint)
        ids = {n: f"bench-{tag}/{n}" for n in names}

        def put(n: str) -> None:
            client.create_secret(Name=ids[n], SecretString=f"value-{uuid.uuid4().hex}")

        def change(n: str) -> None:
            client.put_secret_value(SecretId=ids[n], SecretString=f"value-{uuid.uuid4().hex}")

        def drop(chunk: list[str]) -> None:
            for n in chunk:
                client.delete_secret(SecretId=ids[n], ForceDeleteWithoutRecovery=True)

    else:
        client = boto3.client("ssm", endpoint_url=endpoint)
        ids = {n: f"/bench-{tag}/{n}" for n in names}

        def put(n: str) -> None:
            client.put_parameter(
                Name=ids[n], Value=f"value-{uuid.uuid4().hex}", Type="SecureString"
            )

        def change(n: str) -> None:
            client.put_parameter(
                Name=ids[n], Value=f"value-{uuid.uuid4().hex}", Type="SecureString", Overwrite=True
            )

        def drop(chunk: list[str]) -> None:
            client.delete_parameters(Names=[ids[n] for n in chunk])

    with ThreadPoolExecutor(SEED_THREADS) as pool:
        list(pool.map(put, names))

    def cleanup() -> None:
        chunks = [names[i : i + 10] for i in range(0, len(names), 10)]
        with ThreadPoolExecutor(SEED_THREADS) as pool:
            list(pool.map(drop, chunks))

    return ids, change, cleanup


def floors(kind: str, count: int) -> tuple[calls.Floor, str]:
    """The floor the goal is judged against, and the note on the emulator's limit."""
    if kind == "aws-secrets-manager":
        return calls.Floor(
            calls.pages(count, 100), "ceil(N/100) ListSecrets pages of 100 (+1 read)"
        ), ""
    aws = calls.pages(count, 50)
    moto = calls.pages(count, MOTO_DESCRIBE_PAGE)
    return (
        calls.Floor(
            moto, f"ceil(N/{MOTO_DESCRIBE_PAGE}) DescribeParameters pages at moto's page size"
        ),
        f"moto pages DescribeParameters by {MOTO_DESCRIBE_PAGE} whatever MaxResults asks; "
        f"on AWS (50 a page) the floor is ceil(N/50) = {aws} (+1 read on a change)",
    )


def run(kind: str, count: int, endpoint: str) -> tuple[list[Row], int]:
    """Rows for one provider at one count, and syncd's no-change calls for the cost rows."""
    note(f"{kind}: seeding {count:,} secrets")
    names = [f"k{i:05d}" for i in range(count)]
    ids, change, cleanup = seed(kind, endpoint, names)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            eng = calls.engine(
                Path(tmp),
                {"aws": {"type": kind, "endpoint_url": endpoint}},
                [{"name": n, "from": {"provider": "aws", "name": ids[n]}} for n in names],
            )
            try:
                cycles = calls.run_cycles(eng, "aws", lambda: change(names[count // 2]))
            finally:
                eng.close()
    finally:
        cleanup()
    floor, limits = floors(kind, count)
    return calls.call_rows(kind, count, cycles, floor, limits), cycles[1].total


def main() -> None:
    def extra(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--skip-ssm", action="store_true")

    args = calls.parse_args(__doc__, extra)
    env = require_env("aws")
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        os.environ[key] = env[key]
    os.environ.pop("AWS_ENDPOINT_URL", None)
    kinds = ["aws-secrets-manager"] + ([] if args.skip_ssm else ["aws-ssm"])
    rows: list[Row] = []
    for kind in kinds:
        measured: dict[int, int] = {}
        for count in args.counts:
            found, measured[count] = run(kind, count, env["AWS_ENDPOINT_URL"])
            rows += found
        rows += calls.cost_rows(kind, PRICES[kind], measured, (1000, 10_000))
    calls.output(rows, args.rows)


if __name__ == "__main__":
    main()
