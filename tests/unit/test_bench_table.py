"""bench/run's table: every bench shows up, as rows or as a failed line, never dropped."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from bench import table
from bench.rows import Row

EMITS = """\
import sys
sys.path.insert(0, {root!r})
from bench.rows import Row, emit
assert "--rows" in sys.argv
print("progress", file=sys.stderr)
emit(Row("Cold sync", "files, 100 secrets", 200.0, "secrets/s", "naive", 100.0, "", None))
emit(Row("Target requests", "no change | piped", 0, "writes", goal="0", met=True))
"""


@pytest.fixture(name="bench_dir")
def bench_dir_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty bench/ the table reads instead of the real one."""
    monkeypatch.setattr(table, "BENCH", tmp_path)
    monkeypatch.setattr(table, "EXPECTED", ("expected_missing", "emits"))
    return tmp_path


def script(folder: Path, name: str, body: str) -> None:
    (folder / f"{name}.py").write_text(textwrap.dedent(body))


def run_all(timeout: float = 20) -> list[table.Outcome]:
    return [
        table.run_script(name, full=False, timeout=timeout, python=sys.executable)
        for name in table.scripts([])
    ]


def test_rows_and_every_kind_of_failure_reach_the_table(bench_dir: Path) -> None:
    root = str(Path(table.__file__).resolve().parent.parent)
    script(bench_dir, "emits", EMITS.format(root=root))
    script(
        bench_dir,
        "crashes",
        "# --rows\nimport sys\nprint('first\\nlast words', file=sys.stderr)\nsys.exit(3)\n",
    )
    script(bench_dir, "unconverted", "print('a table for people only')\n")
    script(bench_dir, "silent", "# --rows\n")
    script(bench_dir, "rows", "# not a bench: the row module's name\n")

    outcomes = {o.script: o for o in run_all()}

    assert set(outcomes) == {"expected_missing", "emits", "crashes", "unconverted", "silent"}
    assert outcomes["emits"].failure is None
    assert [r.what for r in outcomes["emits"].rows] == ["files, 100 secrets", "no change | piped"]
    assert outcomes["expected_missing"].failure == "missing: the script does not exist"
    assert outcomes["crashes"].failure == "exit 3"
    assert outcomes["crashes"].stderr_tail == "first\nlast words"
    assert outcomes["unconverted"].failure == "no --rows mode"
    assert outcomes["silent"].failure == "printed no rows"

    text = table.markdown(list(outcomes.values()))
    lines = text.splitlines()
    assert lines[0].startswith("| group | what | syncd | baseline | ratio |")
    assert (
        "| Cold sync | files, 100 secrets | 200 secrets/s | naive: 100 secrets/s | 2.00x |" in text
    )
    assert "no change \\| piped" in text, "a | in a cell must not split the row"
    failed = [line for line in lines if line.startswith("| failed |")]
    assert len(failed) == 4
    assert any(
        "bench/crashes.py: exit 3" in line and "first<br>last words" in line for line in failed
    )


def test_a_script_past_its_timeout_is_a_failed_line_with_the_rows_it_printed(
    bench_dir: Path,
) -> None:
    root = str(Path(table.__file__).resolve().parent.parent)
    body = EMITS.format(root=root) + "import sys, time\nsys.stdout.flush()\ntime.sleep(30)\n"
    script(bench_dir, "emits", body)

    outcome = table.run_script("emits", full=False, timeout=3, python=sys.executable)

    assert outcome.failure == "timed out after 3 s"
    assert len(outcome.rows) == 2, "rows printed before the timeout are kept"
    assert "progress" in outcome.stderr_tail


def test_the_readme_block_is_replaced_between_its_markers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{table.README_START}\nold table\n{table.README_END}\nafter\n")
    monkeypatch.setattr(table, "ROOT", tmp_path)
    rows = [Row("Cold sync", "x", 1.0, "s")]

    table.update_readme(table.markdown([table.Outcome("b", rows=rows)]), 12.0, False)

    text = readme.read_text()
    assert text.startswith("before\n") and text.endswith("after\n")
    assert "old table" not in text
    assert "| Cold sync | x | 1 s |" in text
    assert "12 s wall" in text


def test_the_fitted_exponent_and_percentiles() -> None:
    from bench.cold_sync import fit_exponent

    assert fit_exponent([(100, 1.0), (1000, 10.0), (10_000, 100.0)]) == pytest.approx(1.0)
    assert fit_exponent([(100, 1.0), (1000, 100.0)]) == pytest.approx(2.0)
    assert table.percentile([1.0, 2.0, 3.0], 0.5) == 2.0
    assert table.percentile([float(i) for i in range(1, 21)], 0.99) == pytest.approx(19.81)
