"""Names are input: every name a config or a source supplies passes Swarm's whole rule set
before it reaches Docker, and no lookup lets a name match an unrelated object.

Checked against the real Swarm: what exists afterwards, which writes were attempted (the
target's write counter counts every call before it is made), and what the error says.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from syncd.config import load_config
from syncd.engine import Engine
from syncd.errors import ConfigError, TargetError
from syncd.model import NewVersion
from syncd.targets.swarm import SwarmTarget, object_name
from tests.conftest import new_value
from tests.integration.swarm_util import (  # noqa: F401 - swarm, project: fixtures
    Project,
    Swarm,
    item,
    labels_of,
    project_fixture,
    single,
    swarm_fixture,
    writes,
)

pytestmark = pytest.mark.backend("swarm")


def bad_names(project: Project, naming: str = "{name}-v{version}") -> dict[str, str]:
    """Names Swarm can't hold under ``naming``, by the rule they break; each in a form that a
    check of the short, unshortened or regex-``match``ed name would miss."""
    names = {
        "slash": project.name("team/api_key"),
        "space": project.name("api key"),
        "non-ascii": project.name("clé"),
        "trailing newline": project.name("api_key") + "\n",
        "slash past the shortening cut": project.name("x" * 70) + "/x",
        "reserved: the key config": project.key_config,
    }
    if naming.startswith("{name}"):
        names["leading dash"] = "-" + project.name("api_key")
    else:
        names["trailing dot"] = project.name("api_key.")
    return names


@pytest.mark.parametrize("naming", ["{name}-v{version}", "v{version}-{name}"])
def test_for_each_names_swarm_cannot_hold_fail_alone_before_docker(
    swarm: Swarm, project: Project, naming: str
) -> None:
    """Each bad key fails its own secret with a sentence; no create is even attempted."""
    good = project.name("good")
    upper, lower = project.name("TOKEN"), project.name("token")
    bad = bad_names(project, naming)
    keys = [good, upper, lower, *bad.values()]
    project.set_values({key: new_value() for key in keys})
    config = project.config(
        [{"name": "{key}", "for_each": {"provider": "local"}}], target={"naming": naming}
    )

    result = project.cycle(config)

    assert (item(result, good).action, item(result, good).error) == ("create", None)
    for rule, name in bad.items():
        failed = item(result, name)
        assert failed.action == "error" and failed.error_kind == "input", (rule, failed)
        assert "Swarm secret name" in failed.error or "reserved" in failed.error, (rule, failed)
    # Swarm names ignore case: TOKEN and token can't both exist; one fails, named with both
    case = sorted((item(result, upper), item(result, lower)), key=lambda i: i.action)
    assert [i.action for i in case] == ["create", "error"], case
    assert "ignore case" in (case[1].error or "")
    assert writes(result) == {"create-config": 1, "create-secret": 2}
    created = {
        labels_of(swarm, name)["syncd.name"]
        for name in swarm.secret_names(project.prefix) | swarm.secret_names("v1-" + project.prefix)
    }
    assert created == {good, case[0].name}


def test_create_version_refuses_a_bad_name_before_docker(swarm: Swarm, project: Project) -> None:
    """Defence in depth: the target's own create refuses what validate_spec refuses."""
    project.set_values({"a": new_value()})
    config = project.config([single(project.name("ok"), key="a")])
    engine = Engine(load_config(config))
    target = engine.target
    assert isinstance(target, SwarmTarget)
    try:
        target.list_versions([])
        for rule, name in {**bad_names(project), "empty": ""}.items():
            item_ = NewVersion(
                secret=name,
                version=1,
                data={name: new_value().encode()},
                fingerprint="0" * 64,
                keys={},
                source="",
                created_at="2026-01-01T00:00:00Z",
            )
            with pytest.raises(TargetError) as caught:
                target.create_version(item_)
            assert "nothing was written" in str(caught.value), rule
        assert engine.calls.total("target") == 0
    finally:
        engine.close()
    assert not swarm.secret_names(project.prefix)


def test_names_that_would_share_an_object_are_refused_by_check(tmp_path: Path) -> None:
    """Two logical names whose versions would be one Swarm secret: ignoring case, after
    shortening, or through a naming template without a separator."""
    long = "a" * 90
    shortened = object_name("{name}-v{version}", long, 1).removesuffix("-v1")
    (tmp_path / "keys.yaml").write_text("a: x\n")

    def check(
        secrets: list[dict[str, object]],
        naming: str = "{name}-v{version}",
        **target: str,
    ) -> str:
        doc = {
            "providers": {"local": {"type": "file", "path": "keys.yaml"}},
            "target": {"type": "swarm", "naming": naming, **target},
            "secrets": secrets,
        }
        path = tmp_path / "syncd.yaml"
        path.write_text(json.dumps(doc))
        with pytest.raises(ConfigError) as caught:
            load_config(path)
        return str(caught.value)

    case = check([single("Api_Key", key="a"), single("api_key", key="a")])
    assert "secrets[1]" in case and "'Api_Key' and 'api_key'" in case and "ignore case" in case
    cut = check([single(long, key="a"), single(shortened, key="a")])
    assert "secrets[1]" in cut and f"{shortened}-v1" in cut
    for naming in ("{name}{version}", "{version}{name}", "{name}-1{version}", "{version}2{name}"):
        assert "needs a separator" in check([single("a", key="a")], naming), naming
    for naming in ("{name}/v{version}", "{name!r}-v{version}", "{name:>9}-v{version}"):
        assert "naming" in check([single("a", key="a")], naming), naming
    mounted_key = check([single("Syncd_Key", key="a")], key_file="/run/secrets/syncd_key")
    assert "'Syncd_Key' is reserved" in mounted_key and "target.key_file" in mounted_key
    consumers = check([single("a", key="a", consumers=["web.1", "web", "WEB", "w" * 64])])
    assert "'web.1' is not a valid Swarm service name" in consumers
    assert "'WEB' is listed twice" in consumers and "'wwww" in consumers


def test_lookups_never_match_an_id_prefix(swarm: Swarm, project: Project) -> None:
    """Docker resolves /secrets/X by ID prefix when no secret is named X: a logical name that
    happens to be the start of an unrelated secret's ID must not adopt that secret."""
    unrelated = swarm.api.create_secret(project.name("unrelated"), new_value().encode())
    prefix = unrelated["ID"][:12]
    project.set_values({prefix: new_value()})
    config = project.config([single(prefix)])

    run = project.syncd("import", "--config", str(config), "--trust-values")

    assert run.returncode == 0, run.stderr
    assert run.stdout == f"= {prefix}: nothing named like it in the target\n"
    assert swarm.api.inspect_secret(unrelated["ID"])["Spec"].get("Labels") in (None, {})
