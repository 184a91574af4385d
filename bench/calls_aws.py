"""Provider calls per cycle for 1,000 AWS secrets: syncd versus reading every value each cycle.

The naive way is what External Secrets Operator does on each refresh: one GetSecretValue (or
GetParameter) per secret per cycle, 1,000 calls whether anything changed or not. syncd lists
metadata first and reads only what changed. Runs against moto:

    scripts/backends up aws
    .venv/bin/python bench/calls_aws.py [--count 1000] [--skip-ssm]

Counts come from syncd's own call counter (every HTTP attempt, every page), so this is the
number AWS would bill and throttle. Note: moto pages DescribeParameters by 10 whatever
MaxResults asks; AWS returns up to 50, so real SSM change detection costs a fifth as much.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from syncd.config import load_config  # noqa: E402
from syncd.engine import Engine  # noqa: E402
from tests.backends import require_env  # noqa: E402


def moto_env() -> dict[str, str]:
    return require_env("aws")


def engine(workdir: Path, provider: dict[str, Any], secrets: list[dict[str, Any]]) -> Engine:
    doc = {
        "providers": {"aws": provider},
        "target": {"type": "files", "directory": "out"},
        "secrets": secrets,
    }
    path = workdir / "syncd.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return Engine(load_config(path))


def cycle_calls(eng: Engine) -> tuple[int, dict[str, int], float]:
    before = eng.calls.snapshot().get("aws", {})
    started = time.monotonic()
    result = eng.run_cycle()
    elapsed = time.monotonic() - started
    if not result.ok:
        sys.exit(f"cycle failed: {[i.error for i in result.items if i.error][:3]}")
    after = result.calls.get("aws", {})
    ops = {op: n - before.get(op, 0) for op, n in after.items() if n - before.get(op, 0)}
    return sum(ops.values()), ops, elapsed


def run(
    kind: str, count: int, env: dict[str, str]
) -> list[tuple[str, str, int, dict[str, int], float]]:
    endpoint = env["AWS_ENDPOINT_URL"]
    tag = uuid.uuid4().hex[:8]
    names = [f"k{i:04d}" for i in range(count)]
    if kind == "aws-secrets-manager":
        client = boto3.client("secretsmanager", endpoint_url=endpoint)
        ids = {n: f"bench-{tag}/{n}" for n in names}
        for n in names:
            client.create_secret(Name=ids[n], SecretString=f"value-{uuid.uuid4().hex}")

        def change(n: str) -> None:
            client.put_secret_value(SecretId=ids[n], SecretString=f"value-{uuid.uuid4().hex}")

    else:
        client = boto3.client("ssm", endpoint_url=endpoint)
        ids = {n: f"/bench-{tag}/{n}" for n in names}
        for n in names:
            client.put_parameter(
                Name=ids[n], Value=f"value-{uuid.uuid4().hex}", Type="SecureString"
            )

        def change(n: str) -> None:
            client.put_parameter(
                Name=ids[n], Value=f"value-{uuid.uuid4().hex}", Type="SecureString", Overwrite=True
            )

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        eng = engine(
            Path(tmp),
            {"type": kind, "endpoint_url": endpoint},
            [{"name": n, "from": {"provider": "aws", "name": ids[n]}} for n in names],
        )
        rows.append((kind, "first sync", *cycle_calls(eng)))
        rows.append((kind, "no change", *cycle_calls(eng)))
        change(names[count // 2])
        rows.append((kind, "one change", *cycle_calls(eng)))
        eng.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--skip-ssm", action="store_true")
    args = parser.parse_args()
    env = moto_env()
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        os.environ[key] = env[key]
    os.environ.pop("AWS_ENDPOINT_URL", None)
    kinds = ["aws-secrets-manager"] + ([] if args.skip_ssm else ["aws-ssm"])
    rows = [row for kind in kinds for row in run(kind, args.count, env)]
    naive = args.count
    print(f"{args.count} secrets; naive = one value read per secret per cycle = {naive} calls\n")
    print(
        "| provider | cycle | syncd calls | naive calls | fewer | time | syncd calls by operation |"
    )
    print("|---|---|---:|---:|---:|---:|---|")
    for kind, label, total, ops, elapsed in rows:
        ratio = f"{naive / total:.0f}x" if total else "-"
        detail = ", ".join(f"{op} {n}" for op, n in sorted(ops.items()))
        print(f"| {kind} | {label} | {total} | {naive} | {ratio} | {elapsed:.2f}s | {detail} |")


if __name__ == "__main__":
    main()
