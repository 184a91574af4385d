"""The aws-ssm provider against moto's server (scripts/backends up aws).

Each test works under its own random path, so tests share one server. Values are generated.
"""

from __future__ import annotations

import json
import math
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from providers.base import Unverified
from syncd.config import load_config
from syncd.engine import CycleResult, Engine
from syncd.errors import ProviderError
from tests.conftest import new_value
from tests.integration.faults import dead_endpoint, timed_cycle

pytestmark = pytest.mark.backend("aws")


@pytest.fixture
def ssm(aws: dict[str, str]) -> Any:
    return boto3.client("ssm", endpoint_url=aws["AWS_ENDPOINT_URL"])


@pytest.fixture
def base() -> str:
    return f"/t{uuid.uuid4().hex[:10]}"


def engine_for(
    tmp_path: Path, aws: dict[str, str], secrets: list[dict[str, Any]], **provider: Any
) -> Engine:
    block = {"type": "aws-ssm", "endpoint_url": aws["AWS_ENDPOINT_URL"], **provider}
    doc = {
        "providers": {"ssm": block},
        "target": {"type": "files", "directory": "out"},
        "secrets": secrets,
    }
    path = tmp_path / "syncd.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return Engine(load_config(path))


def one(secret: str, /, **ref: Any) -> dict[str, Any]:
    return {"name": secret, "from": {"provider": "ssm", **ref}}


def out(tmp_path: Path, name: str) -> bytes:
    return (tmp_path / "out" / name).read_bytes()


def delta(before: dict[str, dict[str, int]], after: CycleResult) -> dict[str, int]:
    old = before.get("ssm", {})
    return {
        op: n - old.get(op, 0) for op, n in after.calls.get("ssm", {}).items() if n - old.get(op, 0)
    }


def errors(result: CycleResult) -> dict[str, str]:
    return {i.name: i.error for i in result.items if i.error}


def test_check_passes_a_listed_parameter_and_never_a_missing_one(tmp_path, aws, ssm, base):
    """``syncd doctor``'s question: DescribeParameters shows the listed one; a missing name
    (or an ARN it can't look up) is not a pass but a warning the next read settles."""
    ssm.put_parameter(Name=f"{base}/here", Value=new_value(), Type="SecureString")
    engine = engine_for(
        tmp_path,
        aws,
        [one("here", name=f"{base}/here"), one("gone", name=f"{base}/gone")],
    )
    try:
        provider = engine.provider("ssm")
        assert not isinstance(provider, ProviderError)
        here, gone = (next(iter(s.refs.values())) for s in engine.config.secrets)
        checked = provider.check([here, gone])
        assert checked[here] is None
        assert isinstance(checked[gone], Unverified), checked[gone]
        assert checked[gone].reason.endswith("it is judged when read, next cycle")
    finally:
        engine.close()


def test_by_name_securestring_key_and_version(tmp_path, aws, ssm, base):
    plain, secure, old, new = new_value(), new_value(), new_value("old-"), new_value("new-")
    ssm.put_parameter(Name=f"{base}/plain", Value=plain, Type="String")
    ssm.put_parameter(Name=f"{base}/secure", Value=secure, Type="SecureString")
    ssm.put_parameter(
        Name=f"{base}/json", Value=json.dumps({"token": secure, "n": 3}), Type="SecureString"
    )
    ssm.put_parameter(Name=f"{base}/rotated", Value=old, Type="SecureString")
    ssm.put_parameter(Name=f"{base}/rotated", Value=new, Type="SecureString", Overwrite=True)
    engine = engine_for(
        tmp_path,
        aws,
        [
            one("plain", name=f"{base}/plain"),
            one("secure", name=f"{base}/secure"),
            one("token", name=f"{base}/json", key="token"),
            one("n", name=f"{base}/json", key="n"),
            one("latest", name=f"{base}/rotated"),
            one("first", name=f"{base}/rotated", version=1),
        ],
    )
    result = engine.run_cycle()
    assert result.ok, errors(result)
    assert out(tmp_path, "plain") == plain.encode()
    assert out(tmp_path, "secure") == secure.encode()  # decrypted, not the ciphertext
    assert out(tmp_path, "token") == secure.encode()
    assert out(tmp_path, "n") == b"3"
    assert out(tmp_path, "latest") == new.encode()
    assert out(tmp_path, "first") == old.encode()
    assert result.calls["ssm"]["GetParameters"] == 1  # 5 selectors, one batch
    before = result.calls
    again = engine.run_cycle()
    assert delta(before, again) == {"DescribeParameters": 1}


def test_by_path_renders_a_json_map(tmp_path, aws, ssm, base):
    values = {"db/password": new_value(), "db/user": "app", "token": new_value()}
    for rel, value in values.items():
        ssm.put_parameter(Name=f"{base}/{rel}", Value=value, Type="SecureString")
    engine = engine_for(
        tmp_path,
        aws,
        [
            one("deep", path=base, recursive=True),
            one("flat", path=base),
        ],
    )
    result = engine.run_cycle()
    assert result.ok, errors(result)
    deep = json.loads(out(tmp_path, "deep"))
    assert deep == {
        "db.password": values["db/password"],
        "db.user": "app",
        "token": values["token"],
    }
    assert json.loads(out(tmp_path, "flat")) == {"token": values["token"]}
    assert list(deep) == sorted(deep)

    before = result.calls
    quiet = engine.run_cycle()
    assert delta(before, quiet) == {"DescribeParameters": 2} and quiet.target_writes == 0

    extra = new_value()
    ssm.put_parameter(Name=f"{base}/db/host", Value=extra, Type="String")
    changed = engine.run_cycle()
    assert changed.ok, errors(changed)
    assert {i.name: i.action for i in changed.items} == {"deep": "update", "flat": "unchanged"}
    assert json.loads(out(tmp_path, "deep"))["db.host"] == extra
    assert delta(quiet.calls, changed) == {"DescribeParameters": 2, "GetParametersByPath": 1}


def test_change_detection_30_parameters(tmp_path, aws, ssm, base):
    names = [f"p{i:02d}" for i in range(30)]
    for n in names:
        ssm.put_parameter(Name=f"{base}/{n}", Value=new_value(), Type="SecureString")
    engine = engine_for(tmp_path, aws, [one(n, name=f"{base}/{n}") for n in names])
    first = engine.run_cycle()
    assert first.ok, errors(first)
    assert first.calls["ssm"]["GetParameters"] == 3  # 10 a call
    pages = first.calls["ssm"]["DescribeParameters"]
    # moto pages by 10 whatever MaxResults says (AWS: 50) and hands out a NextToken after a
    # full last page: once all 30 names are described, that empty page is not asked for
    assert pages == math.ceil(30 / 10)

    quiet = engine.run_cycle()
    assert delta(first.calls, quiet) == {"DescribeParameters": pages}
    changed_value = new_value()
    ssm.put_parameter(Name=f"{base}/p07", Value=changed_value, Type="SecureString", Overwrite=True)
    once = engine.run_cycle()
    assert delta(quiet.calls, once) == {"DescribeParameters": pages, "GetParameters": 1}
    assert [i.name for i in once.items if i.action != "unchanged"] == ["p07"]
    assert out(tmp_path, "p07") == changed_value.encode()


def test_recreated_parameter_is_noticed(tmp_path, aws, ssm, base):
    """Deleted and put again, a parameter restarts at version 1: the current reference and a
    pin on version 1 both get the new value (the token holds LastModifiedDate)."""
    first, second = new_value(), new_value()
    ssm.put_parameter(Name=f"{base}/re", Value=first, Type="String")
    engine = engine_for(
        tmp_path, aws, [one("re", name=f"{base}/re"), one("pinned", name=f"{base}/re", version=1)]
    )
    assert engine.run_cycle().ok
    assert out(tmp_path, "pinned") == first.encode()
    ssm.delete_parameter(Name=f"{base}/re")
    ssm.put_parameter(Name=f"{base}/re", Value=second, Type="String")  # version 1 again
    result = engine.run_cycle()
    assert result.ok, errors(result)
    assert {i.name: i.action for i in result.items} == {"re": "update", "pinned": "update"}
    assert out(tmp_path, "re") == out(tmp_path, "pinned") == second.encode()
    quiet = engine.run_cycle()
    assert set(delta(result.calls, quiet)) == {"DescribeParameters"}  # nothing read again
    engine.close()


def test_bad_references(tmp_path, aws, ssm, base, canary):
    good = new_value()
    ssm.put_parameter(Name=f"{base}/good", Value=good, Type="String")
    ssm.put_parameter(Name=f"{base}/text", Value=canary, Type="SecureString")
    engine = engine_for(
        tmp_path,
        aws,
        [
            one("good", name=f"{base}/good"),
            one("missing", name=f"{base}/missing"),
            one("notjson", name=f"{base}/text", key="a"),
            one("noversion", name=f"{base}/good", version=9),
            one("empty", path=f"{base}/nothing-here"),
        ],
    )
    result = engine.run_cycle()
    errs = errors(result)
    assert set(errs) == {"missing", "notjson", "noversion", "empty"}
    assert out(tmp_path, "good") == good.encode()
    assert "parameter not found" in errs["missing"] and f"ssm:{base}/missing" in errs["missing"]
    assert "not JSON" in errs["notjson"]
    assert "version 9" in errs["noversion"]
    assert (
        "no parameters under this path" in errs["empty"]
        and f"{base}/nothing-here/*" in errs["empty"]
    )
    assert canary not in json.dumps(result.to_json())


def test_ref_validation_names_the_place(tmp_path, aws, base):
    from syncd.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        engine_for(tmp_path, aws, [one("both", name=f"{base}/a", path=base)])
    assert "secrets[0].from" in str(info.value) and "exactly one of 'name'" in str(info.value)


def test_hung_endpoint_costs_a_cycle_two_read_timeouts_with_defaults(tmp_path, aws, base):
    """Default settings, named parameters and three paths, an endpoint that accepts and never
    answers: the first DescribeParameters times out twice (5 s each); the hold fails the
    other listings at once instead of 4 x 10 s."""
    with dead_endpoint("hang") as url:
        secrets = [one(f"n{i}", name=f"{base}/n{i}") for i in range(3)]
        secrets += [one(f"p{i}", path=f"{base}/p{i}") for i in range(3)]
        engine = engine_for(tmp_path, aws, secrets, endpoint_url=url)
        elapsed, result = timed_cycle(engine, bound=15.0)
        engine.close()
    errs = errors(result)
    assert len(errs) == 6
    assert sum("endpoint timed out (after 2 attempts)" in e for e in errs.values()) >= 1
    assert all("endpoint timed out" in e for e in errs.values())
    assert result.calls["ssm"] == {"DescribeParameters": 2}  # the held ones are never sent
    assert 9.5 < elapsed < 15.0, f"{elapsed:.1f}s"
