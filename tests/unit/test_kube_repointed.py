"""The repoint record on a Kubernetes workload (``syncd.io/repointed-<hash>``): written by
syncd, read back as hostile input, and what it says about a revert."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from syncd.config import Secret, SecretSpec
from syncd.model import Consumer, PlanItem, Revert, VersionInfo
from syncd.rollout_plan import RolloutPlanner
from syncd.targets.kubernetes.repointed import (
    FIX,
    MAX_ENTRIES,
    MAX_VALUE,
    Move,
    annotation_key,
    read_moves,
    write_moves,
)
from syncd.work import Work, reverted_again, stale_consumers


def workload(value: Any, instance: str = "default") -> dict[str, Any]:
    return {"metadata": {"name": "web", "annotations": {annotation_key(instance): value}}}


def record(instance: str = "default", **secrets: Any) -> str:
    return json.dumps({"instance": instance, "secrets": secrets})


def test_a_written_record_reads_back_and_keeps_other_annotations() -> None:
    body: dict[str, Any] = {"metadata": {"annotations": {"team.example/owner": "payments"}}}
    moves = {"app": Move("ns/app-v2", frozenset({"ns/app-v1"})), "db": Move("ns/db-v7")}
    write_moves(body, "default", moves, written=["app"])
    assert body["metadata"]["annotations"]["team.example/owner"] == "payments"
    assert read_moves(body, "default") == (moves, [])


def test_each_installation_has_its_own_key() -> None:
    assert annotation_key("default") != annotation_key("payments")
    assert annotation_key("x" * 500).startswith("syncd.io/repointed-")
    assert len(annotation_key("x" * 500).partition("/")[2]) <= 63


def test_another_installations_record_is_never_read_nor_touched() -> None:
    theirs = record("payments", app={"to": "ns/app-v9"})
    body = workload(theirs, "payments")
    assert read_moves(body, "default") == ({}, [])
    write_moves(body, "default", {"app": Move("ns/app-v2")}, written=["app"])
    assert body["metadata"]["annotations"][annotation_key("payments")] == theirs
    assert read_moves(body, "payments")[0] == {"app": Move("ns/app-v9")}


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("{not json", "not JSON"),
        (12, "not text"),
        (json.dumps(["a"]), "not a record of installation 'default'"),
        # another installation's record copied under our key
        (record("payments", app={"to": "ns/app-v2"}), "not a record of installation 'default'"),
        (json.dumps({"instance": "default", "secrets": []}), "'secrets' is not a mapping"),
        ("x" * (MAX_VALUE + 1), f"larger than {MAX_VALUE} bytes"),
        (
            json.dumps({"instance": "default", "secrets": {f"s{i}": {} for i in range(300)}}),
            "'secrets' is not a mapping",
        ),
    ],
)
def test_an_unreadable_record_is_ignored_as_a_whole(value: Any, problem: str) -> None:
    moves, problems = read_moves(workload(value), "default")
    assert moves == {}
    assert len(problems) == 1 and problems[0].startswith(problem)


def test_a_malformed_entry_is_ignored_alone_and_not_echoed() -> None:
    value = record(
        good={"to": "ns/good-v2", "reverted": ["ns/good-v1"]},
        no_to={"reverted": ["ns/x-v1"]},
        to_not_a_name={"to": "just-a-name"},
        reverted_not_list={"to": "ns/a-v1", "reverted": "ns/a-v0"},
        too_many_old={"to": "ns/a-v1", "reverted": [f"ns/a-v{i}" for i in range(17)]},
        long_name={"to": "ns/" + "a" * 400},
        **{"leaked-looking-name": 5, "": {"to": "ns/a-v1"}},
    )
    moves, problems = read_moves(workload(value), "default")
    assert moves == {"good": Move("ns/good-v2", frozenset({"ns/good-v1"}))}
    assert problems == ["7 malformed entries ignored"]


def test_an_oversized_record_keeps_only_what_this_repoint_wrote() -> None:
    many = {f"secret-{i:03d}-{'x' * 60}": Move(f"ns/secret-{i}-v1") for i in range(MAX_ENTRIES)}
    body: dict[str, Any] = {"metadata": {}}
    write_moves(body, "default", {**many, "app": Move("ns/app-v2")}, written=["app"])
    value = body["metadata"]["annotations"][annotation_key("default")]
    assert len(value) <= MAX_VALUE
    assert read_moves(body, "default") == ({"app": Move("ns/app-v2")}, [])


def test_what_a_record_says_about_the_references_found_now() -> None:
    move = Move("ns/app-v2")
    assert move.revert(frozenset({"ns/app-v2"})) is None  # still where syncd put it
    first = move.revert(frozenset({"ns/app-v1"}))
    assert first == Revert("ns/app-v2", frozenset({"ns/app-v1"}), again=False)
    assert first is not None and first.fix == FIX
    seen = Move("ns/app-v2", frozenset({"ns/app-v1"}))
    assert seen.revert(frozenset({"ns/app-v1"})) == Revert(
        "ns/app-v2", frozenset({"ns/app-v1"}), again=True
    )
    # put back to something else than the revert syncd repointed: one more attempt
    other = seen.revert(frozenset({"ns/app"}))
    assert other is not None and not other.again


def _work(consumers: list[Consumer], *, current: int = 2) -> Work:
    spec = SecretSpec.model_validate({"name": "app", "from": {"provider": "p", "key": "k"}})
    versions = [
        VersionInfo("app", v, f"ns/app-v{v}", "f", {}, "", "") for v in range(1, current + 1)
    ]
    secret = Secret(spec, {}, None, refresh=60, keep=2, timeout=60, max_shrink=0.5)
    work = Work(secret, PlanItem("app", "unchanged"), versions)
    work.current = versions[-1]
    work.consumers = consumers
    return work


def test_a_second_revert_to_the_same_version_is_left_until_a_new_version() -> None:
    on_v1 = frozenset({"ns/app-v1"})
    again = Revert("ns/app-v2", on_v1, again=True)
    left = Consumer("Deployment", "web", "ns", refs={"app": on_v1}, reverted={"app": again})
    first = Consumer(
        "Deployment", "api", "ns", refs={"app": on_v1}, reverted={"app": Revert("ns/app-v2", on_v1)}
    )
    plain = Consumer("Deployment", "job", "ns", refs={"app": on_v1})
    work = _work([left, first, plain])
    assert reverted_again(work) == [left]
    assert [c.name for c in stale_consumers(work)] == ["api", "job"]
    # v3 upstream: the record names v2, so every consumer gets a normal attempt
    newer = _work([left, first, plain], current=3)
    assert reverted_again(newer) == []
    assert [c.name for c in stale_consumers(newer)] == ["web", "api", "job"]


def test_the_planner_repoints_a_first_revert_with_the_fix_and_notes_a_second(
    caplog: pytest.LogCaptureFixture,
) -> None:
    on_v1 = frozenset({"ns/app-v1"})
    first = Consumer(
        "Deployment",
        "api",
        "ns",
        refs={"app": on_v1},
        reverted={"app": Revert("ns/app-v2", on_v1, fix=FIX)},
    )
    planner = RolloutPlanner(now=lambda: datetime.now(UTC), converged=set())
    work = _work([first])
    with caplog.at_level(logging.WARNING):
        planner.plan(work)
    assert work.item.action == "repoint" and work.item.consumers == ["Deployment/ns/api"]
    assert "Deployment/ns/api was put back on ns/app-v1 after syncd repointed it to" in caplog.text
    assert "docs/kubernetes.md#gitops" in caplog.text and work.item.notes == []

    again = replace(
        first,
        unconverged="0 of 1 updated replicas",  # the sync's own rollout to v1
        reverted={"app": replace(first.reverted["app"], again=True)},
    )
    caplog.clear()
    for _ in range(2):
        work = _work([again])
        with caplog.at_level(logging.WARNING):
            planner.plan(work)
        assert work.item.action == "unchanged" and work.item.consumers == []
        assert work.item.error is None  # its old rollout is not this version's failure
        (note,) = work.item.notes
        assert note.startswith(
            "Deployment/ns/api was put back on ns/app-v1 again after syncd repointed it to "
            "ns/app-v2: left as it is"
        )
    assert caplog.text.count("stays on ns/app-v1") == 1  # warned once per process
