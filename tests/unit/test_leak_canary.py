"""The leak canaries (``tests/conftest.py``) can fail a test: each way a value can leave
syncd fails a test that leaks through it, and a test that only reads a value back from the
target passes.

The leaking tests run in a pytest of their own (a subprocess, with ``tests.conftest`` as its
plugin); this file reads their outcomes from its JUnit XML. Among them is the known defect
"a YAML source value tagged ``!!int`` is printed verbatim in an error", brought back by a
patch: the test that runs into it asserts nothing about values, and the canaries fail it.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import string
import subprocess
import sys
import urllib.parse
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.logs import handler
from syncd.redact import MASK, REDACTOR
from tests.conftest import ROOT, find_leaks

LEAKY_TESTS = '''
"""Tests that leak on purpose."""

import base64
import json
import logging
import os
import subprocess
import sys

import pytest
import yaml

import providers.file
from syncd.cli import main
from syncd.config import load_config
from syncd.engine import Engine
from syncd.errors import TargetError
from syncd.metrics import Metrics
from tests.conftest import new_value


def test_a_debug_log_line():
    logging.getLogger("syncd.engine").debug("fetched %s", new_value())


def test_a_traceback_in_a_log_line():
    try:
        raise KeyError(new_value())
    except KeyError:
        logging.getLogger("apscheduler.executors").error("job failed", exc_info=True)


def test_an_extra_field_of_a_log_line():
    logging.getLogger("syncd").info("fetched", extra={"data": new_value()})


def test_stdout(canary):
    print(f"+ api: would create v1 {canary}")


def test_capsys_reads_it_first(capsys):
    print(new_value())
    assert capsys.readouterr().out


def test_stderr_of_a_syncd_process():
    env = {**os.environ, "V": new_value()}
    code = "import os, sys; sys.stderr.write(os.environ['V'])"
    subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, check=True)


def test_a_daemon_sent_to_dev_null():
    env = {**os.environ, "V": new_value()}
    code = "import os; print(os.environ['V'])"
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL)
    assert proc.wait(timeout=30) == 0


def test_a_command_line():
    subprocess.run(["true", new_value()], check=True)


ENCODINGS = {
    "lowercase": lambda v: v.lower(),
    "uppercase": lambda v: v.upper(),
    "hex": lambda v: v.encode().hex(),
    "HEX": lambda v: v.encode().hex().upper(),
    "url": lambda v: "https://x/?q=" + __import__("urllib.parse").parse.quote(v, safe=""),
    "base64 at 0": lambda v: base64.b64encode(v.encode()).decode(),
    "base64 at 1": lambda v: base64.b64encode(b"k" + v.encode()).decode(),
    "base64 at 2": lambda v: base64.b64encode(b"k:" + v.encode()).decode(),
    "urlsafe base64": lambda v: base64.urlsafe_b64encode(b"\\xff" + v.encode()).decode(),
}


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_an_encoded_form(encoding):
    value = new_value("Mixed/Case+Value~")  # changed by case, by %-escapes and by base64url
    logging.getLogger("syncd").warning("data %s", ENCODINGS[encoding](value))


def test_a_syncd_error_never_raised():
    TargetError(f"refused {new_value()}")


def test_an_exception_pytest_raises_caught():
    with pytest.raises(ValueError):
        raise ValueError(f"bad {new_value()}")


def test_metrics():
    Metrics().syncs.labels(secret=new_value(), result="created").inc()


def test_a_state_file(tmp_path):
    (tmp_path / "..syncd.json").write_text(json.dumps({"source": new_value()}))


@pytest.fixture
def leaks_at_teardown():
    yield
    logging.getLogger("syncd.daemon").info("stopping with %s", new_value())


def test_a_fixture_tearing_down(leaks_at_teardown):
    pass


def _write(tmp_path, source):
    (tmp_path / "keys.yaml").write_text(source)
    config = {
        "providers": {"local": {"type": "file", "path": "keys.yaml"}},
        "target": {"type": "files", "directory": "out"},
        "secrets": [{"name": "api", "from": {"provider": "local", "key": "api"}}],
    }
    (tmp_path / "syncd.yaml").write_text(yaml.safe_dump(config))
    return tmp_path / "syncd.yaml"


def test_the_tagged_yaml_value_defect_brought_back(tmp_path, monkeypatch):
    entry = providers.file._yaml_entry

    def quoting(node, line):  # what the reader did before the fix
        if node.tag.startswith("tag:"):
            return providers.file.Unusable(f"has tag {node.tag} on {node.value}", line)
        return entry(node, line)

    monkeypatch.setattr(providers.file, "_yaml_entry", quoting)
    path = _write(tmp_path, f"api: !!int {new_value()}\\n")
    assert main(["--config", str(path), "--once"]) == 1  # the secret fails, as it should


def test_the_tagged_yaml_value_as_syncd_reads_it(tmp_path):
    path = _write(tmp_path, f"api: !!int {new_value()}\\n")
    assert main(["--config", str(path), "--once"]) == 1


def test_a_value_read_back_from_the_target(tmp_path):
    value = new_value()
    path = _write(tmp_path, f"api: {value}\\n")
    engine = Engine(load_config(path))
    try:
        assert engine.run_cycle().ok
    finally:
        engine.close()
    assert (tmp_path / "out" / "api").read_text() == value
    run = subprocess.run(
        [sys.executable, "-m", "syncd", "--config", str(path), "--once", "--output", "json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert subprocess.run(["cat", str(tmp_path / "out" / "api")], capture_output=True).stdout
'''

#: What each leaking test must end as, and a word its report must hold.
EXPECTED = {
    "test_a_debug_log_line": ("failure", "log record of syncd.engine at DEBUG"),
    "test_a_traceback_in_a_log_line": ("failure", "log record of apscheduler.executors"),
    "test_an_extra_field_of_a_log_line": ("failure", "log record of syncd at INFO"),
    "test_stdout": ("failure", "captured stdout"),
    "test_capsys_reads_it_first": ("failure", "captured stdout"),
    "test_stderr_of_a_syncd_process": ("failure", "the output of"),
    "test_a_daemon_sent_to_dev_null": ("failure", "the output of"),
    "test_a_command_line": ("failure", "the command line of true"),
    **{
        f"test_an_encoded_form[{name}]": ("failure", form)
        for name, form in [
            ("lowercase", "case changed"),
            ("uppercase", "case changed"),
            ("hex", "in hex"),
            ("HEX", "in hex"),
            ("url", "URL-encoded"),
            ("base64 at 0", "in base64"),
            ("base64 at 1", "in base64"),
            ("base64 at 2", "in base64"),
            ("urlsafe base64", "in base64"),
        ]
    },
    "test_a_syncd_error_never_raised": ("failure", "a TargetError"),
    "test_an_exception_pytest_raises_caught": ("failure", "the ValueError pytest.raises caught"),
    "test_metrics": ("failure", "/metrics"),
    "test_a_state_file": ("failure", "..syncd.json"),
    "test_a_fixture_tearing_down": ("error", "log record of syncd.daemon at INFO"),
    "test_the_tagged_yaml_value_defect_brought_back": ("failure", "a ProviderError"),
    "test_the_tagged_yaml_value_as_syncd_reads_it": ("passed", ""),
    "test_a_value_read_back_from_the_target": ("passed", ""),
}


def outcomes(report: Path) -> dict[str, tuple[str, str]]:
    """``{test name: (failure|error|skipped|passed, report text)}`` from JUnit XML."""
    result = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        kinds = [child for child in case if child.tag in ("failure", "error", "skipped")]
        if kinds:
            result[case.attrib["name"]] = (kinds[0].tag, kinds[0].text or "")
        else:
            result[case.attrib["name"]] = ("passed", "")
    return result


def test_every_way_out_fails_a_leaking_test_and_reading_back_passes(tmp_path):
    (tmp_path / "test_leaky.py").write_text(LEAKY_TESTS)
    report = tmp_path / "report.xml"
    run = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider"),
            *("-q", "-o", "junit_family=xunit1", f"--junitxml={report}", "test_leaky.py"),
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert report.exists(), run.stdout + run.stderr
    seen = outcomes(report)
    assert set(seen) == set(EXPECTED), run.stdout
    for name, (kind, where) in EXPECTED.items():
        got, text = seen[name]
        assert got == kind, f"{name}: {got}\n{text}"
        if kind != "passed":
            assert "leak canaries" in text and where in text, f"{name}:\n{text}"


# --------------------------------------------------------------------------- leaks they found


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_traceback_logged_mid_cycle_is_redacted_like_its_message(canary, fmt):
    """An SDK error that quotes a value fetched in this cycle, logged with its traceback (as
    APScheduler logs a failed job): the line is redacted as a whole, traceback and ``extra=``
    fields included, not only the message. The canaries found this one in the text format."""
    stream = io.StringIO()
    logger = logging.getLogger("apscheduler.executors.default")
    logger.addHandler(out := handler(fmt, stream))
    REDACTOR.register(canary.encode())
    try:
        try:
            raise RuntimeError(f"payload rejected: {canary}")
        except RuntimeError:
            logger.error("job raised an exception", exc_info=True, extra={"detail": canary})
    finally:
        REDACTOR.clear()
        logger.removeHandler(out)
    line = stream.getvalue()
    assert canary not in line and MASK in line
    assert "job raised an exception" in line


# --------------------------------------------------------------------------- the search itself

PRINTABLE = st.text(alphabet=string.ascii_letters + string.digits + string.punctuation + " ")
#: Text that holds no form of any value: no letter or digit, no %, + or = of an encoding.
NOISE = st.text(alphabet="!\"#&'()*,:;<>?@[\\]^`{|} ")
#: Canaries are printable ASCII (``new_value``, the ``canary`` fixture).
VALUES = st.text(alphabet=string.ascii_letters + string.digits + "-_+/.~=", min_size=16)
ENCODERS = {
    "as written": lambda t: t,
    "lowercase": str.lower,
    "uppercase": str.upper,
    "hex": lambda t: t.encode().hex(),
    "HEX": lambda t: t.encode().hex().upper(),
    "url": lambda t: urllib.parse.quote(t, safe=""),
    "url plus": urllib.parse.quote_plus,
    "base64": lambda t: base64.b64encode(t.encode()).decode(),
    "urlsafe base64": lambda t: base64.urlsafe_b64encode(t.encode()).decode(),
    "json": lambda t: __import__("json").dumps(t),
}


@settings(max_examples=200, derandomize=True, database=None)
@given(
    value=VALUES,
    before=PRINTABLE,
    after=PRINTABLE,
    encoder=st.sampled_from(sorted(ENCODERS)),
    noise=st.lists(NOISE, max_size=3),
)
def test_a_value_is_found_in_any_surroundings_in_every_form(value, before, after, encoder, noise):
    """The whole text is encoded, the value somewhere inside it: base64 at any alignment."""
    text = ENCODERS[encoder](before + value + after)
    chunks = [*(("noise", n) for n in noise), ("where it is", text)]
    leaks = find_leaks([value], chunks)
    assert [leak.source for leak in leaks] == ["where it is"]


def test_each_source_is_named_once_and_a_near_miss_is_not_a_leak():
    value = "CANARY-" + "0123456789abcdef" * 2
    chunks = [("a", f"x{value}y{value}"), ("b", value.upper()), ("c", value[:-1] + "!")]
    assert [(leak.source, leak.form) for leak in find_leaks([value], chunks)] == [
        ("a", "as written"),
        ("b", "with its case changed"),
    ]


@pytest.mark.parametrize("hidden", ["", "\n", "\x00"])
def test_nothing_is_reported_without_a_canary(hidden):
    assert find_leaks([], [("a", f"anything{hidden}")]) == []
