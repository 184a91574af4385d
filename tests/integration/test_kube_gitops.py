"""GitOps against the real API server: a sync that re-applies a workload's manifest, and the
three ways docs/kubernetes.md (GitOps) gives to live with it.

The sync is played by what Argo CD and Flux send: a server-side apply of the manifest by a
field manager of their own, forced (as Flux does); a helm upgrade's three-way merge is played
by a replace of the pod template. The Deployment and the Argo CD Application are the ones
in the docs, read from them, so the docs can't drift from what is tested.
"""

from __future__ import annotations

import copy
import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from syncd.targets.kubernetes.objects import restart_annotation
from syncd.targets.kubernetes.podspec import refs as secret_refs
from syncd.targets.kubernetes.repointed import annotation_key
from tests.conftest import ROOT, new_value, wait_until
from tests.integration.kube_util import (  # noqa: F401 - ns, project: fixtures
    Project,
    ns_fixture,
    project_fixture,
    ref,
    rolled_out,
    secret_names,
    template_secret_refs,
)

pytestmark = pytest.mark.timeout(300)

MANAGER = "gitops"
OURS = annotation_key("default")
#: another installation's record on the same workload: never read, never changed
THEIRS = annotation_key("payments")


def docs_blocks() -> list[Any]:
    """The YAML blocks of docs/kubernetes.md's GitOps section, parsed."""
    text = (ROOT / "docs" / "kubernetes.md").read_text()
    section = text.split("\n## GitOps\n", 1)[1].split("\n## ", 1)[0]
    return [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", section, re.S)]


def docs_kind(kind: str) -> dict[str, Any]:
    found = [b for b in docs_blocks() if isinstance(b, dict) and b.get("kind") == kind]
    assert len(found) == 1, f"the GitOps section shows one {kind}"
    return copy.deepcopy(found[0])


def sync(api: Any, ns: str, manifest: dict[str, Any]) -> None:
    """What Flux (and Argo CD with ServerSideApply) sends: the manifest, server-side
    applied by its own field manager, forced over the fields syncd wrote."""
    api.AppsV1Api().patch_namespaced_deployment(
        manifest["metadata"]["name"],
        ns,
        manifest,
        field_manager=MANAGER,
        force=True,
        _content_type="application/apply-patch+yaml",
    )


def replace_template(api: Any, ns: str, manifest: dict[str, Any]) -> None:
    """What a three-way merge (helm upgrade, kubectl apply) does to a pod template the
    manifest sets: the live object with the manifest's template."""
    apps = api.AppsV1Api()
    live = live_deployment(api, ns, manifest["metadata"]["name"])
    live["spec"]["template"] = manifest["spec"]["template"]
    apps.replace_namespaced_deployment(manifest["metadata"]["name"], ns, live)


REVERTS: dict[str, Callable[[Any, str, dict[str, Any]], None]] = {
    "server-side apply": sync,
    "template replace": replace_template,
}


def live_deployment(api: Any, ns: str, name: str = "web") -> dict[str, Any]:
    answer = api.AppsV1Api().read_namespaced_deployment(name, ns, _preload_content=False)
    return dict(json.loads(answer.data))


def refs(api: Any, ns: str) -> set[str]:
    return template_secret_refs(api.AppsV1Api().read_namespaced_deployment("web", ns).spec.template)


def generation(api: Any, ns: str) -> int:
    return int(live_deployment(api, ns)["metadata"]["generation"])


def annotations(api: Any, ns: str) -> dict[str, str]:
    return dict(live_deployment(api, ns)["metadata"].get("annotations") or {})


def settle(api: Any, ns: str) -> None:
    wait_until("web rolled out", lambda: rolled_out(api, ns, "web"), timeout=90)


def reverted_events(api: Any, ns: str) -> list[Any]:
    listed = api.CoreV1Api().list_namespaced_event(
        ns, field_selector="involvedObject.kind=Deployment,involvedObject.name=web"
    )
    return [e for e in listed.items if e.reason == "Reverted" and e.source.component == "syncd"]


def no_replica_set_references(api: Any, ns: str, name: str) -> bool:
    return not any(
        name in template_secret_refs(rs.spec.template)
        for rs in api.AppsV1Api().list_namespaced_replica_set(ns).items
    )


def web_manifest(secret: str) -> dict[str, Any]:
    """The docs' Deployment, naming ``secret``; no ReplicaSet history, so only the template
    and syncd's record can keep an old version from being collected."""
    manifest = docs_kind("Deployment")
    text = json.dumps(manifest).replace('"app-v1"', json.dumps(secret))
    manifest = json.loads(text)
    manifest["spec"]["revisionHistoryLimit"] = 0
    return manifest


@pytest.mark.parametrize("revert", sorted(REVERTS))
def test_a_reverted_deployment_is_repointed_once_then_left_on_its_version(
    api: Any, ns: str, project: Project, caplog: pytest.LogCaptureFixture, revert: str
) -> None:
    put_back = REVERTS[revert]
    project.values(app=new_value())
    path = project.config([{"name": "app", "from": ref("app"), "keep": 1}])
    assert project.cycle(path).ok
    original = web_manifest("app-v1")
    foreign = json.dumps({"instance": "payments", "secrets": {"app": {"to": f"{ns}/app-v9"}}})
    original["metadata"]["annotations"] = {THEIRS: foreign, "team.example/owner": "shop"}
    sync(api, ns, original)
    settle(api, ns)

    project.values(app=new_value())
    result = project.cycle(path)
    assert result.ok and result.items[0].version == 2, result.items
    assert refs(api, ns) == {"app-v2"}
    assert json.loads(annotations(api, ns)[OURS]) == {
        "instance": "default",
        "secrets": {"app": {"to": f"{ns}/app-v2"}},
    }
    settle(api, ns)

    # the sync puts app-v1 back; syncd's record stays (the manifest doesn't own it)
    put_back(api, ns, original)
    assert refs(api, ns) == {"app-v1"}
    assert OURS in annotations(api, ns)
    settle(api, ns)
    # from now on app-v1 is beyond keep: only references and the record may keep it
    path = project.config([{"name": "app", "from": ref("app"), "keep": 0}])
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        result = project.cycle(path)
    assert result.ok, result.items
    assert refs(api, ns) == {"app-v2"}  # the first revert is repointed once more
    assert (
        f"Deployment/{ns}/web was put back on {ns}/app-v1 after syncd repointed it to "
        f"{ns}/app-v2" in caplog.text
    )
    events = reverted_events(api, ns)
    assert [(e.type, e.count) for e in events] == [("Warning", 1)], events
    assert f"Deployment/{ns}/web" in events[0].message
    assert "syncd names" in events[0].message and "docs/kubernetes.md#gitops" in events[0].message
    assert json.loads(annotations(api, ns)[OURS])["secrets"]["app"] == {
        "to": f"{ns}/app-v2",
        "reverted": [f"{ns}/app-v1"],
    }
    settle(api, ns)

    # nothing references app-v1 now; the record keeps it, for the next sync names it
    wait_until("v1's ReplicaSet gone", lambda: no_replica_set_references(api, ns, "app-v1"))
    assert project.cycle(path).ok
    assert "app-v1" in secret_names(api, ns)

    # the same revert again: left as it is, reported, and app-v1 is not collected
    put_back(api, ns, original)
    settle(api, ns)
    before = generation(api, ns)
    for _ in range(2):
        caplog.clear()
        result = project.cycle(path)
        assert result.ok, result.items
        assert refs(api, ns) == {"app-v1"} and generation(api, ns) == before
        assert result.items[0].consumers == []
        assert any(
            f"Deployment/{ns}/web was put back on {ns}/app-v1 again after syncd repointed it "
            f"to {ns}/app-v2: left as it is" in note
            for note in result.items[0].notes
        ), result.items[0].notes
        assert "app-v1" in secret_names(api, ns)
    assert [e.count for e in reverted_events(api, ns)] == [1]
    status = project.syncd("status", "--config", str(path), "-o", "json")
    assert status.returncode == 0, status.stderr
    app = json.loads(status.stdout)["secrets"][0]
    assert [(c["versions"], c["reverted"]) for c in app["consumers"]] == [([1], True)]
    assert any("put it back again" in w for w in app["waiting"]), app["waiting"]

    # a new upstream value gets a normal attempt
    project.values(app=new_value())
    result = project.cycle(path)
    assert result.ok and result.items[0].version == 3, result.items
    assert refs(api, ns) == {"app-v3"}
    assert json.loads(annotations(api, ns)[OURS])["secrets"]["app"] == {"to": f"{ns}/app-v3"}
    # another installation's record and the team's annotation came through untouched
    assert annotations(api, ns)[THEIRS] == foreign
    assert annotations(api, ns)["team.example/owner"] == "shop"


def names_of(project: Project, path: Path) -> dict[str, str]:
    run = project.syncd("names", "--config", str(path))
    assert run.returncode == 0, run.stderr
    return dict(line.split("=", 1) for line in run.stdout.split())


def test_pinning_with_syncd_names_makes_a_sync_change_nothing(
    api: Any, ns: str, project: Project
) -> None:
    """The pipeline renders the manifest with ``syncd names`` and syncs it: after a rotation
    it names the version syncd moved the workload to, so the sync changes nothing."""
    project.values(app=new_value())
    path = project.config([{"name": "app", "from": ref("app")}])
    assert project.cycle(path).ok
    assert names_of(project, path) == {"APP_SECRET": "app-v1"}
    sync(api, ns, web_manifest(names_of(project, path)["APP_SECRET"]))
    settle(api, ns)

    project.values(app=new_value())
    assert project.cycle(path).ok
    settle(api, ns)
    before = generation(api, ns)
    pinned = names_of(project, path)["APP_SECRET"]
    assert pinned == "app-v2"
    sync(api, ns, web_manifest(pinned))
    assert generation(api, ns) == before and refs(api, ns) == {"app-v2"}
    result = project.cycle(path)
    assert result.ok and result.items[0].consumers == [], result.items
    assert reverted_events(api, ns) == []


def pointer(doc: Any, path: str) -> Any:
    """RFC 6901: the value ``path`` points at (a KeyError or IndexError if none)."""
    for raw in path.lstrip("/").split("/"):
        token = raw.replace("~1", "/").replace("~0", "~")
        doc = doc[int(token)] if isinstance(doc, list) else doc[token]
    return doc


def set_pointer(doc: Any, path: str, value: Any) -> None:
    *parents, last = path.lstrip("/").split("/")
    pointer(doc, "/" + "/".join(parents))[last] = value


def test_argo_ignore_differences_names_the_references_and_its_sync_changes_nothing(
    api: Any, ns: str, project: Project
) -> None:
    """Argo CD isn't in the test cluster. What can be checked: the docs' jsonPointers name
    exactly the Deployment's Secret references, and the manifest with the live values at
    them (what a sync with RespectIgnoreDifferences sends) changes nothing."""
    application = docs_kind("Application")
    assert "RespectIgnoreDifferences=true" in application["spec"]["syncPolicy"]["syncOptions"]
    (ignored,) = application["spec"]["ignoreDifferences"]
    assert (ignored["group"], ignored["kind"], ignored["name"]) == ("apps", "Deployment", "web")
    pointers = ignored["jsonPointers"]
    project.values(app=new_value())
    path = project.config([{"name": "app", "from": ref("app")}])
    assert project.cycle(path).ok
    original = web_manifest("app-v1")
    sync(api, ns, original)
    settle(api, ns)
    project.values(app=new_value())
    assert project.cycle(path).ok
    settle(api, ns)

    live = live_deployment(api, ns)
    assert [pointer(original, p) for p in pointers] == ["app-v1"] * len(pointers)
    assert [pointer(live, p) for p in pointers] == ["app-v2"] * len(pointers)
    # every reference syncd would rewrite is covered: with those fields blanked, none is left
    blanked = copy.deepcopy(live)
    for p in pointers:
        set_pointer(blanked, p, "")
    assert secret_refs(blanked) == {""}

    sent = copy.deepcopy(original)
    for p in pointers:
        set_pointer(sent, p, pointer(live, p))
    before = generation(api, ns)
    sync(api, ns, sent)
    assert generation(api, ns) == before and refs(api, ns) == {"app-v2"}
    result = project.cycle(path)
    assert result.ok and result.items[0].consumers == [], result.items
    # the sync that doesn't respect them is a revert (the first test's case)
    sync(api, ns, original)
    assert refs(api, ns) == {"app-v1"}


def test_in_place_never_repoints_and_a_sync_changes_nothing(
    api: Any, ns: str, project: Project
) -> None:
    """The manifest names the stable Secret; a rotation restarts the pods through a
    template annotation the manifest doesn't set, so a sync leaves it."""
    project.values(app=new_value())
    path = project.config([{"name": "app", "strategy": "in-place", "from": ref("app")}])
    assert project.cycle(path).ok
    manifest = web_manifest("app")
    sync(api, ns, manifest)
    settle(api, ns)
    assert project.cycle(path).ok  # the first sight of the consumer restarts it once
    settle(api, ns)

    project.values(app=new_value())
    result = project.cycle(path)
    assert result.ok and result.items[0].version == 2, result.items
    settle(api, ns)
    restart = restart_annotation("app")
    assert live_deployment(api, ns)["spec"]["template"]["metadata"]["annotations"][restart] == "2"
    before = generation(api, ns)
    sync(api, ns, manifest)
    live = live_deployment(api, ns)
    assert generation(api, ns) == before
    assert live["spec"]["template"]["metadata"]["annotations"][restart] == "2"
    assert refs(api, ns) == {"app"}
    result = project.cycle(path)
    assert result.ok and result.items[0].consumers == [], result.items
    assert reverted_events(api, ns) == []
