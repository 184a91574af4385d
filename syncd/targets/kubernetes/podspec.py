"""Secret references inside any object that holds pods, found by shape rather than by path.

A Deployment keeps its pod spec at ``spec.template.spec``, a CronJob at
``spec.jobTemplate.spec.template.spec``, a ControllerRevision inside a stored patch, an Argo
Rollout or any other custom workload wherever its authors put it. Rather than one path per
kind, every object is walked for dicts shaped like a pod spec (a ``containers`` list of
dicts), and inside each pod spec every field that names a Secret is found the same way:
``secretName``, any ``...secretRef``/``secretKeyRef``-style reference, projected ``secret``
sources and ``imagePullSecrets``. So the scan that protects versions from garbage collection
and the rewrite that repoints a consumer can't disagree about where references live.

Objects come from the cluster, written by anyone: the walk is iterative and bounded.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Mapping
from typing import Any

from syncd.model import Finding

#: Deeper than any real object; a deeper one is not walked further.
MAX_DEPTH = 64
_REF_KEY = re.compile(r"(?i)secret(key)?ref$")
#: Top-level fields that never hold a pod spec (status is written by controllers).
_SKIP = {"metadata", "status"}


def _is_pod_spec(value: Any) -> bool:
    containers = value.get("containers") if isinstance(value, dict) else None
    return (
        isinstance(containers, list)
        and bool(containers)
        and all(isinstance(c, dict) for c in containers)
    )


def pod_templates(obj: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every dict whose ``spec`` is a pod spec (a pod template, or a Pod itself)."""
    if _is_pod_spec(obj.get("spec")):
        yield obj
        return
    stack: list[tuple[Any, int]] = [(v, 1) for k, v in obj.items() if k not in _SKIP]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            continue
        if isinstance(value, dict):
            if _is_pod_spec(value.get("spec")):
                yield value
                continue
            stack.extend((v, depth + 1) for k, v in value.items() if k != "metadata")
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)


def _slots(pod_spec: dict[str, Any]) -> Iterator[tuple[dict[str, Any], str]]:
    """Every ``(holder, key)`` in a pod spec whose string value names a Secret."""
    stack: list[tuple[Any, int]] = [(pod_spec, 0)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            continue
        if isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
            continue
        if not isinstance(value, dict):
            continue
        for key, child in value.items():
            if key == "secretName" and isinstance(child, str):
                yield value, key
            elif key == "imagePullSecrets" and isinstance(child, list):
                yield from (
                    (pull, "name")
                    for pull in child
                    if isinstance(pull, dict) and isinstance(pull.get("name"), str)
                )
            elif (
                (_REF_KEY.search(key) or key == "secret")
                and isinstance(child, dict)
                and isinstance(child.get("name"), str)
            ):
                yield child, "name"
            else:
                stack.append((child, depth + 1))


def pod_spec_of(template: Mapping[str, Any]) -> dict[str, Any]:
    """The pod spec of a template found by ``pod_templates``."""
    spec = template.get("spec")
    return spec if isinstance(spec, dict) else {}


def refs(obj: dict[str, Any]) -> set[str]:
    """Names of every Secret any pod spec in ``obj`` references."""
    return {
        holder[key]
        for template in pod_templates(obj)
        for holder, key in _slots(pod_spec_of(template))
    }


def rewrite(obj: dict[str, Any], rename: Mapping[str, str]) -> bool:
    """Point every reference in ``rename`` at its new name; True when something changed."""
    changed = False
    for template in pod_templates(obj):
        for holder, key in _slots(pod_spec_of(template)):
            if holder[key] in rename:
                holder[key] = rename[holder[key]]
                changed = True
    return changed


def missing_refs(label: str, obj: dict[str, Any], keys: dict[str, set[str]]) -> list[Finding]:
    """``secretKeyRef``, ``envFrom`` and volumes naming a Secret or key that doesn't exist."""
    findings = []
    for template in pod_templates(obj):
        pod = pod_spec_of(template)
        for group in ("containers", "initContainers"):
            for container in pod.get(group) or []:
                findings.extend(_container_findings(label, container, keys))
        for volume in pod.get("volumes") or []:
            secret = volume.get("secret") if isinstance(volume, dict) else None
            if (
                isinstance(secret, dict)
                and not secret.get("optional")
                and secret.get("secretName") not in keys
            ):
                where = f"volume {volume.get('name')}"
                findings.append(_missing(label, where, str(secret.get("secretName", "")), keys))
    return findings


def _container_findings(label: str, container: Any, keys: dict[str, set[str]]) -> list[Finding]:
    if not isinstance(container, dict):
        return []
    findings = []
    for env in container.get("env") or []:
        ref = ((env.get("valueFrom") or {}) if isinstance(env, dict) else {}).get("secretKeyRef")
        if not isinstance(ref, dict) or ref.get("optional"):
            continue
        name, key = str(ref.get("name", "")), str(ref.get("key", ""))
        where = f"env {env.get('name')} (container {container.get('name')})"
        if name not in keys:
            findings.append(_missing(label, where, name, keys))
        elif key not in keys[name]:
            present = ", ".join(sorted(keys[name])) or "none"
            findings.append(
                Finding(
                    label,
                    f"{where}: Secret {name!r} has no key {key!r} (keys: {present})",
                    f"use one of its keys, or add {key!r} to the Secret's source",
                )
            )
    for source in container.get("envFrom") or []:
        ref = source.get("secretRef") if isinstance(source, dict) else None
        if isinstance(ref, dict) and not ref.get("optional") and ref.get("name") not in keys:
            findings.append(_missing(label, "envFrom", str(ref.get("name", "")), keys))
    return findings


def _missing(label: str, where: str, name: str, keys: dict[str, set[str]]) -> Finding:
    close = difflib.get_close_matches(name, sorted(keys), n=1)
    fix = f"did you mean {close[0]!r}?" if close else "create it, or let syncd manage it"
    return Finding(label, f"{where}: Secret {name!r} does not exist", fix)
