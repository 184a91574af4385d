"""The Helm chart's values schema carries the syncd config schema (``scripts/chart-schema``), so
a config typo fails at ``helm install``; these tests keep the two from drifting apart."""

from __future__ import annotations

import json
from importlib.machinery import SourceFileLoader
from importlib.util import module_from_spec, spec_from_loader
from types import ModuleType
from typing import Any

import jsonschema
import pytest
import yaml

from syncd import registry
from syncd.config import json_schema
from tests.conftest import ROOT

VALUES_SCHEMA = ROOT / "helm" / "syncd" / "values.schema.json"


def _generator() -> ModuleType:
    """scripts/chart-schema as a module (a script without a .py suffix)."""
    path = ROOT / "scripts" / "chart-schema"
    loader = SourceFileLoader("chart_schema", str(path))
    spec = spec_from_loader("chart_schema", loader)
    assert spec is not None
    module = module_from_spec(spec)
    loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def values_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(VALUES_SCHEMA.read_text())
    return schema


def test_values_schema_embeds_what_syncd_schema_prints(values_schema, monkeypatch):
    """What ``syncd schema`` prints today, put through the generator, is what the chart has:
    a changed config model fails here until ``scripts/chart-schema`` is rerun."""
    monkeypatch.delitem(registry.BUILTIN_TARGETS, "memory")  # the test-only target
    current = json.loads(json.dumps(json_schema(), sort_keys=True))
    config, definitions = _generator().chart_parts(current)
    assert values_schema["properties"]["config"] == config
    assert values_schema["definitions"] == definitions


def test_generator_is_up_to_date_with_the_committed_schema(values_schema):
    """``scripts/chart-schema --check`` passes: the file is exactly what it writes from
    config/schema.json (the same check, independent of the installed pydantic)."""
    generator = _generator()
    committed = json.loads((ROOT / "config" / "schema.json").read_text())
    assert VALUES_SCHEMA.read_text() == generator.render(values_schema, committed)


def test_generator_notices_a_changed_config_schema(values_schema):
    """A new config field makes the chart's copy stale (the check can fail)."""
    generator = _generator()
    changed = json.loads((ROOT / "config" / "schema.json").read_text())
    changed["properties"]["colour"] = {"type": "string"}
    assert VALUES_SCHEMA.read_text() != generator.render(values_schema, changed)


def test_embedded_schema_is_plain_draft_07(values_schema):
    """Every reference resolves inside the document through draft-07's ``definitions``, and
    no ``$ref`` has siblings draft-07 would ignore."""
    text = json.dumps(values_schema)
    assert "$defs" not in text
    assert "discriminator" not in text

    def refs(node: Any) -> list[dict[str, Any]]:
        if isinstance(node, list):
            return [r for item in node for r in refs(item)]
        if not isinstance(node, dict):
            return []
        own = [node] if "$ref" in node else []
        return own + [r for value in node.values() for r in refs(value)]

    found = refs(values_schema)
    assert found
    for node in found:
        name = node["$ref"].removeprefix("#/definitions/")
        assert name in values_schema["definitions"], node["$ref"]
        assert set(node) <= {"$ref", "title", "description", "default", "examples"}, node
    jsonschema.Draft7Validator.check_schema(values_schema)


def _values(config: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((ROOT / "helm" / "syncd" / "values.yaml").read_text())
    values["config"] = config
    return values


@pytest.mark.parametrize(
    ("config", "where"),
    [
        ({"providers": {}, "secrets": [], "colour": "red"}, "colour"),
        ({"providers": {"v": {"type": "vault", "adr": "https://v"}}, "secrets": []}, "adr"),
        ({"providers": {}, "secrets": [{"name": "a", "frm": {}}]}, "frm"),
        ({"providers": {}, "secrets": [], "target": {"type": "swarm"}}, "kubernetes"),
        ({"providers": {}, "secrets": [], "target": {"namspace": "x"}}, "namspace"),
        ({"providers": {}, "secrets": [], "instance": "Team_A"}, "Team_A"),
    ],
)
def test_a_config_typo_breaks_the_values_schema(values_schema, config, where):
    """The chart's own values with a broken ``config``: refused, naming what is wrong (helm
    validates with the same schema; tests/integration/test_chart_values.py runs helm)."""
    errors = list(jsonschema.Draft7Validator(values_schema).iter_errors(_values(config)))
    assert errors
    assert any(where in json.dumps(e.instance) or where in e.message for e in errors), errors


def test_the_shipped_values_and_example_pass(values_schema):
    validator = jsonschema.Draft7Validator(values_schema)
    shipped = yaml.safe_load((ROOT / "helm" / "syncd" / "values.yaml").read_text())
    validator.validate(shipped)
    for example in sorted((ROOT / "helm" / "syncd" / "ci").glob("*-values.yaml")):
        values = shipped | yaml.safe_load(example.read_text())
        validator.validate(values)
