"""``syncd history``: the ledger's model, its bounds, hostile input, the write side's records
on the in-memory target, and the command's text and JSON output on the files target."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from syncd import history
from syncd.cli import main
from syncd.config import load_config
from syncd.engine import Engine
from syncd.history import MAX_BYTES, MAX_CONSUMERS, MAX_ENTRIES, Entry, decode, encode
from syncd.model import VersionInfo
from tests.conftest import new_value
from tests.unit.memory_target import Crash, Service, World
from tests.unit.test_engine import memory_config, rotate, world_name

AT = "2026-12-01T10:00:00Z"


def entry(version: int, **extra: object) -> Entry:
    fields: dict[str, object] = {
        "source": f"vault:kv/app#key@{version}",
        "created_at": AT,
        "outcome": "converged",
        "at": AT,
        **extra,
    }
    return Entry(version=version, **fields)  # type: ignore[arg-type]


def version(n: int, ledger: str = "", source: str = "") -> VersionInfo:
    return VersionInfo("api", n, f"api-v{n}", "f", source=source, created_at=AT, history=ledger)


# ------------------------------------------------------------------ model and bounds


def test_a_ledger_reads_back_what_was_written():
    entries = [entry(1, collected_at=AT), entry(2, consumers=("service/web",), outcome="held")]
    ledger = decode(encode(entries), where="api-v2")
    assert (list(ledger.entries), ledger.problem, ledger.object_name) == (entries, None, "api-v2")


def test_the_ledger_keeps_the_newest_fifty_entries():
    ledger = decode(encode(entry(n) for n in range(1, 81)))
    assert [e.version for e in ledger.entries] == list(range(31, 81))
    assert len(ledger.entries) == MAX_ENTRIES and ledger.problem is None


def test_long_texts_are_cut_and_the_whole_fits_the_byte_bound():
    huge = [
        entry(n, source="x" * 5000, consumers=tuple(f"service/{'c' * 300}{i}" for i in range(9)))
        for n in range(1, 51)
    ]
    text = encode(huge)
    assert len(text.encode()) <= MAX_BYTES
    kept = decode(text).entries
    assert kept and kept[-1].version == 50  # the oldest went first
    assert all(len(e.source) <= history.MAX_TEXT for e in kept)
    assert all(len(e.consumers) == MAX_CONSUMERS and e.consumers_omitted == 4 for e in kept)


def test_recording_twice_changes_nothing_and_the_time_moves_with_the_outcome():
    v2 = version(2, source=json.dumps({"api": "vault:kv/app#api@7", "~format": "env"}))
    once = history.record([entry(1)], v2, "rolling-out", at="2026-12-01T10:00:01Z")
    assert once[-1] == Entry(2, "vault:kv/app#api@7", AT, "rolling-out", "2026-12-01T10:00:01Z")
    moved = ["service/a", "service/b"]
    done = history.record(once, v2, "converged", at="2026-12-01T10:00:05Z", consumers=moved)
    again = history.record(done, v2, "converged", at="2026-12-01T10:09:00Z", consumers=moved)
    assert encode(again) == encode(done)
    assert (done[-1].outcome, done[-1].at, done[-1].consumers) == (
        "converged",
        "2026-12-01T10:00:05Z",
        ("service/a", "service/b"),
    )
    many = [f"service/s{i}" for i in range(8)]
    crowded = history.record(done, v2, "converged", at=AT, consumers=many)
    assert len(crowded[-1].consumers) == MAX_CONSUMERS and crowded[-1].consumers_omitted == 5
    assert history.record(crowded, v2, "converged", at=AT, consumers=many) == crowded


def test_a_name_with_a_newline_is_written_escaped_and_reads_back():
    v2 = version(2, source=json.dumps({"k": "local:a\nb@1"}))
    entries = history.record([], v2, "converged", at=AT, consumers=["service/x\x1b"])
    ledger = decode(encode(entries))
    assert ledger.problem is None
    assert (ledger.entries[0].source, ledger.entries[0].consumers) == (
        "local:a\\nb@1",
        ("service/x\\x1b",),
    )


def test_collected_marks_only_what_is_not_marked_yet():
    entries = history.collected([entry(1, collected_at=AT), entry(2), entry(3)], [1, 2], at="Z")
    assert [e.collected_at for e in entries] == [AT, "Z", ""]


def test_a_source_summary_is_short_and_value_free():
    refs = {f"key{i:03}": f"vault:kv/app#key{i:03}@4" for i in range(100)}
    text = history.summary(json.dumps({**refs, "~settings": "{}"}))
    assert len(text) <= history.MAX_TEXT and text.endswith("more)")
    assert text.startswith("vault:kv/app#key000@4, vault:kv/app#key001@4")
    assert history.summary(json.dumps({"a": "x@1", "b": "x@1"})) == "x@1"


# ------------------------------------------------------------------ hostile input


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("not json", "not JSON"),
        ("[" * 100_000, "characters, more than syncd writes"),
        ("[" * 50_000, "not JSON"),
        (json.dumps({"format": 2, "entries": []}), "not a ledger of format 1"),
        (json.dumps([1, 2]), "not a ledger of format 1"),
        (json.dumps({"format": 1, "entries": {"1": {}}}), "no list of entries"),
        (json.dumps({"format": 1, "entries": [], "pad": "x" * 70_000}), "more than syncd"),
    ],
)
def test_a_ledger_that_is_no_ledger_is_reported_and_ignored(text, said):
    ledger = decode(text, where="ns/api-v3")
    assert ledger.entries == ()
    assert ledger.problem and said in ledger.problem and "ns/api-v3" in ledger.problem


@pytest.mark.parametrize(
    "bad",
    [
        "x",
        {"version": True, "outcome": "converged"},
        {"version": 0, "outcome": "converged"},
        {"version": 10**10, "outcome": "converged"},
        {"version": 2, "outcome": "exploded"},
        {"version": 2, "outcome": "converged", "source": "a\nb"},
        {"version": 2, "outcome": "converged", "source": "\x1b[2J"},
        {"version": 2, "outcome": "converged", "source": "x" * 1000},
        {"version": 2, "outcome": "converged", "at": "yesterday"},
        {"version": 2, "outcome": "converged", "consumers": "service/web"},
        {"version": 2, "outcome": "converged", "consumers": [f"c{i}" for i in range(6)]},
        {"version": 2, "outcome": "converged", "consumers": [3]},
        {"version": 2, "outcome": "converged", "consumers_omitted": -1},
    ],
)
def test_an_entry_syncd_did_not_write_is_skipped_and_counted(bad):
    good = json.loads(encode([entry(1)]))["entries"]
    ledger = decode(json.dumps({"format": 1, "entries": [*good, bad]}), where="api-v2")
    assert [e.version for e in ledger.entries] == [1]
    assert ledger.problem == "the history on api-v2: 1 ledger entry not understood; ignored"


def test_the_newest_readable_ledger_is_used_and_an_unreadable_newer_one_named():
    versions = [version(1, encode([entry(1)])), version(2, "garbage"), version(3)]
    ledger = history.latest(versions)
    assert [e.version for e in ledger.entries] == [1]
    assert ledger.object_name == "api-v1"
    assert ledger.problem == "the history on api-v2: not JSON; ignored"
    assert history.latest([version(1)]) == history.Ledger()


# ------------------------------------------------------------------ the write side


def engine_for(write_config, world: World, values: dict[str, str], **extra: object) -> Engine:
    return Engine(load_config(memory_config(write_config, world_name(world), values, **extra)))


def fresh(engine: Engine) -> Engine:
    """A new process on the same config: everything is read from the target again."""
    return Engine(load_config(engine.config.path))


def ledger_of(world: World, obj: str) -> list[Entry]:
    info, _ = world.objects[obj]
    ledger = decode(info.history)
    assert ledger.problem is None
    return list(ledger.entries)


def test_rotations_record_consumers_outcomes_and_collection(write_config, world):
    """v1, then v2 web converges on (v1 collected, keep 0), then v3 web never converges on
    (rolled back): the ledger on the newest object says all of it, and survives v1's
    deletion; a quiet cycle writes nothing."""
    engine = engine_for(write_config, world, {"api": new_value()}, defaults={"keep": 0})
    assert engine.run_cycle().ok
    world.services["web"] = Service(
        "web", refs={"api-v1"}, native_rollback=False, keeps_previous=False
    )
    rotate(engine.config.path, api=new_value())
    assert engine.run_cycle().ok
    assert "api-v1" not in world.objects
    world.services["web"].bad = {"api-v3"}
    rotate(engine.config.path, api=new_value())
    failed = engine.run_cycle()
    assert not failed.ok
    entries = ledger_of(world, "api-v3")
    assert [(e.version, e.outcome, bool(e.collected_at)) for e in entries] == [
        (1, "converged", True),
        (2, "converged", False),
        (3, "rolled-back", False),
    ]
    assert entries[1].consumers == ("service/web",) and entries[2].consumers == ("service/web",)
    assert all(e.source.startswith("local:api@") for e in entries)
    quiet = engine.run_cycle()
    assert quiet.target_writes == 0 and ledger_of(world, "api-v3") == entries


def test_a_swap_a_crash_left_rolling_out_is_recorded_once_it_settled(write_config, world):
    """Killed while waiting: the next run has nothing to wait for (web runs v2), and still
    records v2 converged with web; a run after that writes nothing."""
    engine = engine_for(write_config, world, {"api": new_value()}, defaults={"keep": 5})
    assert engine.run_cycle().ok
    world.services["web"] = Service("web", refs={"api-v1"})
    rotate(engine.config.path, api=new_value())
    world.crash_on = "wait web"
    with pytest.raises(Crash):
        engine.run_cycle()
    assert [e.outcome for e in ledger_of(world, "api-v2")] == ["converged", "rolling-out"]
    rerun = fresh(engine).run_cycle()
    assert rerun.ok and rerun.calls["target"] == {"history": 1}
    assert [(e.outcome, e.consumers) for e in ledger_of(world, "api-v2")] == [
        ("converged", ()),
        ("converged", ("service/web",)),
    ]
    assert fresh(engine).run_cycle().target_writes == 0


def test_a_ledger_write_that_fails_never_fails_the_swap(write_config, world, caplog):
    engine = engine_for(write_config, world, {"api": new_value()})
    assert engine.run_cycle().ok
    world.services["web"] = Service("web", refs={"api-v1"})
    world.history_fails = True
    rotate(engine.config.path, api=new_value())
    with caplog.at_level(logging.WARNING, logger="syncd.swap"):
        result = engine.run_cycle()
    assert result.ok and world.services["web"].refs == {"api-v2"}
    assert "api: can't record the history: api-v2: history write refused" in caplog.text
    # the new version was created carrying the ledger, its swap still under way
    assert [(e.version, e.outcome) for e in ledger_of(world, "api-v2")] == [
        (1, "converged"),
        (2, "rolling-out"),
    ]


def test_garbage_on_the_newest_object_is_reported_and_replaced(write_config, world, caplog):
    engine = engine_for(write_config, world, {"api": new_value()}, defaults={"keep": 5})
    assert engine.run_cycle().ok
    info, data = world.objects["api-v1"]
    world.objects["api-v1"] = (replace(info, history="{" * 10_000), data)
    rotate(engine.config.path, api=new_value())
    with caplog.at_level(logging.WARNING, logger="syncd.swap"):
        assert engine.run_cycle().ok
    assert "the history on api-v1: not JSON; ignored" in caplog.text
    assert [(e.version, e.outcome) for e in ledger_of(world, "api-v2")] == [(2, "converged")]


# ------------------------------------------------------------------ the command


def files_project(tmp_path: Path, history_kept: int = 1) -> Path:
    doc = {
        "providers": {"local": {"type": "file", "path": "keys.yaml"}},
        "target": {"type": "files", "directory": "out", "history": history_kept},
        "secrets": [{"name": "api", "from": {"provider": "local", "key": "api"}}],
    }
    (tmp_path / "syncd.yaml").write_text(yaml.safe_dump(doc))
    return tmp_path / "syncd.yaml"


def cycle(path: Path, value: str) -> None:
    (path.parent / "keys.yaml").write_text(yaml.safe_dump({"api": value}))
    assert Engine(load_config(path)).run_cycle().ok


def test_history_on_the_files_target_text_and_json(tmp_path, capsys):
    """Three rotations with one previous generation kept: v1 is collected once no
    generation holds it. The table and the document say the same; no value is printed."""
    path = files_project(tmp_path)
    values = [new_value() for _ in range(3)]
    for value in values:
        cycle(path, value)
    capsys.readouterr()
    assert main(["history", "api", "-c", str(path)]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert lines[0] == "api: 3 versions (on api-v3)"
    assert lines[1].split() == [
        "VERSION",
        "CREATED",
        "OUTCOME",
        "AT",
        "COLLECTED",
        "CONSUMERS",
        "SOURCE",
    ]
    rows = [line.split() for line in lines[2:]]
    assert [(r[0], r[2]) for r in rows] == [(f"v{n}", "converged") for n in (1, 2, 3)]
    assert rows[0][4].endswith("Z") and rows[1][4] == rows[2][4] == "-"  # collected
    assert all(r[6].startswith("local:api@") for r in rows)
    assert main(["history", "api", "-c", str(path), "-o", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["apiVersion"], doc["kind"], doc["name"], doc["object"]) == (
        "syncd.io/v1",
        "History",
        "api",
        "api-v3",
    )
    assert [
        (e["version"], e["outcome"], e["collected_at"] is not None) for e in doc["entries"]
    ] == [
        (1, "converged", True),
        (2, "converged", False),
        (3, "converged", False),
    ]
    assert doc["problem"] is None and doc["held"] == ["api-v3"]
    assert not any(v in text or v in json.dumps(doc) for v in values)
    print(text)  # pytest -s shows the table


def test_history_of_a_name_the_target_does_not_hold_fails(tmp_path, capsys):
    path = files_project(tmp_path)
    cycle(path, new_value())
    assert main(["history", "nope", "-c", str(path)]) == 1
    assert "error: the target holds no version of nope" in capsys.readouterr().err


def test_history_reports_garbage_on_the_target_and_still_answers(tmp_path, capsys):
    path = files_project(tmp_path)
    cycle(path, new_value())
    state = tmp_path / "out" / "..data" / "..syncd.json"
    doc = json.loads(state.read_text())
    doc["secrets"]["api"]["history"] = "\x1b[2J" * 50_000
    state.chmod(0o644)
    state.write_text(json.dumps(doc))
    assert main(["history", "api", "-c", str(path), "-o", "json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["entries"] == []
    assert "warning: the history on api-v1:" in err and "more than syncd writes" in err
    cycle(path, new_value())  # a cycle on top of it works, and writes a good ledger
    assert main(["history", "api", "-c", str(path)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "api: 1 version (on api-v2)"


def test_history_takes_one_name(tmp_path):
    assert main(["history", "-c", str(files_project(tmp_path))]) == 64
    assert main(["history", "a", "b", "-c", str(files_project(tmp_path))]) == 64
    assert main(["history", "a", "--secret", "b", "-c", str(files_project(tmp_path))]) == 64
