"""Bench: 1,000 secrets into the test cluster, syncd beside the naive way.

syncd: a cold sync, then a no-change cycle, counting API requests (by operation) and seconds.
Naive (what a simple controller does each refresh): GET every Secret, and replace it when the
data differs (so a cold run creates them all, a no-change run is N GETs).

Needs the kubernetes backend: ``scripts/backends up kubernetes``, then
``.venv/bin/python bench/kubernetes_cycle.py [--secrets N]``.
"""

from __future__ import annotations

import argparse
import base64
import secrets
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

from syncd.config import load_config
from syncd.engine import Engine

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.backends import require_env  # noqa: E402


def kube_env() -> dict[str, str]:
    return require_env("kubernetes")


def naive_cycle(core: Any, ns: str, values: dict[str, str]) -> tuple[float, dict[str, int]]:
    from kubernetes.client.exceptions import ApiException

    calls = {"get": 0, "create": 0, "replace": 0}
    start = time.perf_counter()
    for name, value in values.items():
        data = {"value": base64.b64encode(value.encode()).decode()}
        calls["get"] += 1
        try:
            current = core.read_namespaced_secret(name, ns)
        except ApiException as exc:
            if exc.status != 404:
                raise
            calls["create"] += 1
            core.create_namespaced_secret(ns, {"metadata": {"name": name}, "data": data})
            continue
        if current.data != data:
            calls["replace"] += 1
            current.data = data
            core.replace_namespaced_secret(name, ns, current)
    return time.perf_counter() - start, calls


def syncd_cycle(path: Path) -> tuple[float, dict[str, int], int]:
    engine = Engine(load_config(path))
    start = time.perf_counter()
    result = engine.run_cycle()
    seconds = time.perf_counter() - start
    engine.close()
    assert result.ok, [i.error for i in result.items if i.error][:3]
    reads = result.calls.get("target-read", {})
    writes = result.calls.get("target", {})
    return seconds, {**reads, **writes}, result.target_writes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--secrets", type=int, default=1000)
    args = parser.parse_args()
    env = kube_env()
    from kubernetes import client, config

    config.load_kube_config(config_file=env["KUBECONFIG"])
    core = client.CoreV1Api()
    values = {f"bench-{i:04d}": secrets.token_urlsafe(24) for i in range(args.secrets)}
    ns_syncd, ns_naive = f"bench-{uuid.uuid4().hex[:6]}", f"naive-{uuid.uuid4().hex[:6]}"
    for ns in (ns_syncd, ns_naive):
        core.create_namespace({"metadata": {"name": ns}})
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            (root / "keys.yaml").write_text(yaml.safe_dump(values))
            doc = {
                "providers": {"local": {"type": "file", "path": "keys.yaml"}},
                "target": {
                    "type": "kubernetes",
                    "namespace": ns_syncd,
                    "kubeconfig": env["KUBECONFIG"],
                },
                "secrets": [{"name": k, "from": {"provider": "local", "key": k}} for k in values],
            }
            (root / "syncd.yaml").write_text(yaml.safe_dump(doc))
            rows = []
            seconds, calls, _ = syncd_cycle(root / "syncd.yaml")
            rows.append(("syncd cold sync", seconds, calls))
            seconds, calls, writes = syncd_cycle(root / "syncd.yaml")
            assert writes == 0
            rows.append(("syncd no change", seconds, calls))
            seconds, calls = naive_cycle(core, ns_naive, values)
            rows.append(("naive cold", seconds, calls))
            seconds, calls = naive_cycle(core, ns_naive, values)
            rows.append(("naive no change", seconds, calls))
        print(f"{args.secrets} secrets")
        print(f"{'cycle':<18} {'seconds':>8} {'requests':>9}  by operation")
        for label, seconds, calls in rows:
            ops = ", ".join(f"{k}={v}" for k, v in sorted(calls.items()) if v)
            print(f"{label:<18} {seconds:>8.2f} {sum(calls.values()):>9}  {ops}")
    finally:
        for ns in (ns_syncd, ns_naive):
            core.delete_namespace(ns)


if __name__ == "__main__":
    main()
