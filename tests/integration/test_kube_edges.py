"""Values, sizes, names and keys at the edges of what a Kubernetes Secret holds, on the real
API server.

Bytes go through byte for byte whatever they are (empty, NUL, CR LF, trailing newlines, not
UTF-8, random). syncd's own limits are the API server's, established here against the server
itself rather than assumed: the values of a Secret (not its keys) may total 1 MiB, its
annotations (syncd's per-key fingerprints among them) 256 KiB, names and keys 253
characters. At each limit syncd writes; one byte over, it refuses the secret with its own
message before any request, and the other secrets still sync.
"""

from __future__ import annotations

import base64
import random
from typing import Any

import pytest

from tests.conftest import new_value
from tests.integration.kube_util import (  # noqa: F401 - ns, project, proxy: fixtures
    Project,
    ns_fixture,
    project_fixture,
    proxy_fixture,
    ref,
    secret_names,
)

pytestmark = pytest.mark.timeout(180)

MIB = 1024 * 1024
#: ``metadata.annotations`` of any object: keys and values together (apimachinery).
ANNOTATIONS_LIMIT = 256 * 1024

EDGES = {
    "empty": b"",
    "nul": b"\x00",
    "nuls-inside": b"a\x00b\x00",
    "crlf": b"one\r\ntwo\r\n",
    "lone-cr": b"\r",
    "newline": b"\n",
    "trailing-newlines": b"value\n\n\n",
    "padded": b"  padded \t",
    "not-utf-8": b"\xff\xfe\xc3\x28\x80",
    "utf-8-bom": b"\xef\xbb\xbfvalue",
    "every-byte": bytes(range(256)),
}


def _b64(ref_key: str) -> dict[str, str]:
    return {**ref(ref_key), "decode": "base64"}


def _data(api: Any, ns: str, name: str) -> dict[str, bytes]:
    secret = api.CoreV1Api().read_namespaced_secret(name, ns)
    return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}


def _raw_secret(api: Any, ns: str, name: str, data: dict[str, bytes], **meta: Any) -> int:
    """Create a Secret with the admin client; the HTTP status the API server answered."""
    from kubernetes.client.exceptions import ApiException

    body = {
        "metadata": {"name": name, **meta},
        "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
    }
    try:
        api.CoreV1Api().create_namespaced_secret(ns, body)
    except ApiException as exc:
        return int(exc.status)
    return 201


def test_values_at_the_edges_arrive_byte_exact(api, project, ns):
    """Every edge value and a batch of random ones, in a bundle and as a single value: what
    the Secret holds is exactly the bytes the source gave. An unchanged run writes nothing;
    one trailing newline less is a change of that key alone."""
    rng = random.Random()
    values = dict(EDGES)
    values.update({f"random-{i}": rng.randbytes(rng.randrange(0, 4096)) for i in range(24)})
    values["single"] = rng.randbytes(100) + b"\r\n\x00"
    project.values(**{k: base64.b64encode(v).decode() for k, v in values.items()})
    path = project.config(
        [
            {"name": "edges", "data": {k: _b64(k) for k in values if k != "single"}},
            {"name": "single", "from": _b64("single")},
        ]
    )
    first = project.cycle(path)
    assert first.ok, first.items
    expected = {k: v for k, v in values.items() if k != "single"}
    assert _data(api, ns, "edges-v1") == expected
    assert _data(api, ns, "single-v1") == {"single": values["single"]}
    again = project.cycle(path)
    assert (again.ok, again.target_writes) == (True, 0)
    values["trailing-newlines"] = b"value\n\n"
    project.values(**{k: base64.b64encode(v).decode() for k, v in values.items()})
    changed = project.cycle(path)
    by_name = {i.name: i for i in changed.items}
    assert (by_name["edges"].version, by_name["edges"].changed_keys) == (2, ["trailing-newlines"])
    assert by_name["single"].action == "unchanged"
    assert _data(api, ns, "edges-v2")["trailing-newlines"] == b"value\n\n"


def test_the_size_limit_is_the_api_servers_values_not_keys(api, project, ns, proxy, tmp_path):
    """The API server counts a Secret's values, not its keys, against 1 MiB (so does syncd):
    values of exactly 1 MiB under two 253-character keys are written; one byte more, split
    over two keys, is refused by syncd itself, and the other secret still syncs."""
    long_a, long_b = "a" * 253, "b" * 253
    half = MIB // 2
    assert _raw_secret(api, ns, "probe-at", {long_a: b"x" * half, long_b: b"y" * half}) == 201
    assert _raw_secret(api, ns, "probe-over", {"a": b"x" * half, "b": b"y" * (half + 1)}) == 422
    project.values(a="x" * half, b="y" * half, c="z" * (half + 1), ok=new_value())
    path = project.config(
        [
            {"name": "at-limit", "data": {long_a: ref("a"), long_b: ref("b")}},
            {"name": "over-limit", "data": {"a": ref("a"), "c": ref("c")}},
            {"name": "fine", "from": ref("ok")},
        ],
        kubeconfig=proxy.kubeconfig(tmp_path / "proxy.kubeconfig"),
    )
    result = project.cycle(path)
    by_name = {i.name: i for i in result.items}
    assert by_name["at-limit"].error is None, by_name["at-limit"].error
    assert by_name["fine"].error is None
    error = by_name["over-limit"].error or ""
    assert f"values are {MIB + 1} bytes" in error and "at most 1 MiB" in error, error
    assert _data(api, ns, "at-limit-v1") == {long_a: b"x" * half, long_b: b"y" * half}
    assert "over-limit-v1" not in secret_names(api, ns)
    posts = [p for _, m, p in proxy.requests if m == "POST" and not p.endswith("/events")]
    assert len(posts) == 3  # the key, at-limit, fine: over-limit never reached the server


def test_too_many_keys_for_the_annotations_is_refused_before_the_server(
    api, project, ns, proxy, tmp_path
):
    """syncd stores a fingerprint per key in an annotation, and the API server allows 256 KiB
    of annotations: a bundle with so many keys that they don't fit is refused by syncd with
    why and what to do, without a request; one that fits is written."""
    assert (
        _raw_secret(api, ns, "probe-at", {}, annotations={"a": "x" * (ANNOTATIONS_LIMIT - 1)})
        == 201
    )
    assert _raw_secret(api, ns, "probe-over", {}, annotations={"a": "x" * ANNOTATIONS_LIMIT}) == 422
    # per key syncd stores its fingerprint and its source (the key and where it comes from)
    many = [f"{i:04d}-" + "k" * 195 for i in range(400)]  # about 268 KiB
    some = [f"{i:04d}-" + "k" * 195 for i in range(300)]  # about 201 KiB
    (project.root / "many.yaml").write_text("".join(f"{k}: v\n" for k in many))
    (project.root / "some.yaml").write_text("".join(f"{k}: v\n" for k in some))
    path = project.config(
        [
            {"name": "many", "data_from": {"provider": "many"}},
            {"name": "some", "data_from": {"provider": "some"}},
        ],
        kubeconfig=proxy.kubeconfig(tmp_path / "proxy.kubeconfig"),
        providers={
            "many": {"type": "file", "path": "many.yaml"},
            "some": {"type": "file", "path": "some.yaml"},
        },
    )
    result = project.cycle(path)
    by_name = {i.name: i for i in result.items}
    assert by_name["some"].error is None, by_name["some"].error
    assert len(_data(api, ns, "some-v1")) == 300
    written = api.CoreV1Api().read_namespaced_secret("some-v1", ns).metadata.annotations
    size = sum(len(k.encode()) + len(v.encode()) for k, v in written.items())
    assert 200 * 1024 < size <= ANNOTATIONS_LIMIT  # close to the limit, and within it
    error = by_name["many"].error or ""
    assert "400 keys" in error and "262144" in error and "fewer keys" in error, error
    assert not [p for _, m, p in proxy.requests if m == "POST" and "many" in p]
    assert "many-v1" not in secret_names(api, ns)


def _check(project: Project, secrets: list[dict[str, Any]]) -> str:
    path = project.config(secrets, file="check.yaml")
    run = project.syncd("check", "--config", str(path))
    return run.stderr if run.returncode else ""


def test_names_and_keys_at_the_length_limits(api, project, ns):
    """Kubernetes takes names and keys of up to 253 characters. A versioned secret's name
    must leave room for ``-v<version>`` (up to v999999), so 245 characters is its longest; an
    in-place secret and a key may use all 253. At each limit syncd writes, one over it refuses
    naming the limit, at load and for a key a source lists at run time."""
    versioned, in_place, key = "v" * 245, "p" * 253, "k" * 253
    project.values(a=new_value(), b=new_value(), c=new_value(), **{key: "listed", "x" * 254: "v"})
    over = _check(
        project,
        [
            {"name": versioned + "w", "from": ref("a")},
            {"name": in_place + "q", "from": ref("b"), "strategy": "in-place"},
            {"name": "keys", "data": {key + "k": ref("c")}},
        ],
    )
    said = {
        f"secrets[{i}]": " ".join(line for line in over.splitlines() if f"secrets[{i}]:" in line)
        for i in range(3)
    }
    assert "Secret name of 254 characters at version 999999" in said["secrets[0]"], over
    assert "allows 253: shorten it by 1" in said["secrets[0]"], over
    assert "Secret name of 254 characters;" in said["secrets[1]"], over
    assert "at most 253" in said["secrets[2]"], over
    path = project.config(
        [
            {"name": versioned, "from": ref("a")},
            {"name": in_place, "from": ref("b"), "strategy": "in-place"},
            {"name": "keys", "data": {key: ref("c")}},
            {"name": "listed", "data_from": {"provider": "local"}},
        ]
    )
    result = project.cycle(path)
    by_name = {i.name: i for i in result.items}
    for name in (versioned, in_place, "keys"):
        assert by_name[name].error is None, (name[:10], by_name[name].error)
    assert len(f"{versioned}-v1") == 248
    assert {f"{versioned}-v1", in_place, "keys-v1"} <= secret_names(api, ns)
    assert list(_data(api, ns, "keys-v1")) == [key]
    listed = by_name["listed"].error or ""
    assert "x" * 254 in listed and "at most 253" in listed, listed
    assert "listed-v1" not in secret_names(api, ns)
