"""What a version is made of: the rendered bundle, and the value-free source reference.

Both are pure functions of the config and the fetched values, so the engine, ``import`` and
the tests compute them the same way.

The *source reference* is stored on every version (a label, an annotation, the files state):
each reference's description and upstream version id, plus every setting that shapes what the
target stores (``key_style``, ``rename``, ``format``, a digest of the template, the
target's own settings such as a file mode).
A cycle compares it with the current version's to decide whether to fetch at all; because the
settings are in it, editing one of them makes the next cycle fetch, render and compare, so
the edit takes effect without waiting for the upstream value to change.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import yaml

from syncd.config import Secret
from syncd.envfile import render_env
from syncd.template import render_template

#: Entries of the source reference that are not references (they can't clash with a key:
#: no target accepts a key starting with ``~``).
FOR_EACH = "~for_each"
SETTINGS = "~settings"


def render(secret: Secret, values: dict[str, bytes], *, limit: int) -> dict[str, bytes]:
    """The bundle a target stores: ``{key: bytes}``, or one value rendered by ``format`` or
    a template (which stops past ``limit`` bytes, the target's largest value).

    Bundle keys are renamed by ``key_style`` and then ``rename``; two keys landing on one
    name is an error. A template sees the ``data`` keys as written.
    """
    if secret.template is not None:
        return {secret.name: render_template(secret.template, secret.name, values, limit=limit)}
    if secret.spec.is_bundle:
        styled: dict[str, bytes] = {}
        origin: dict[str, str] = {}
        for key in sorted(values):
            name = secret.spec.output_key(key)
            if name in styled:
                how = f"key_style {secret.spec.key_style}"
                if secret.spec.rename:
                    how += " and rename"
                raise ValueError(
                    f"keys {origin[name]!r} and {key!r} both become {name!r} with {how}"
                )
            styled[name], origin[name] = values[key], key
        values = styled
    fmt = secret.spec.format
    if fmt is None:
        return dict(values)
    texts: dict[str, str] = {}
    for key, value in values.items():
        try:
            texts[key] = value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"key {key!r} is binary; format {fmt} needs text") from exc
    if fmt == "json":
        body = json.dumps(texts, indent=2, sort_keys=True) + "\n"
    elif fmt == "yaml":
        body = yaml.safe_dump(texts, default_flow_style=False, sort_keys=True)
    else:
        body = render_env(texts)
    return {secret.name: body.encode("utf-8")}


def render_settings(secret: Secret, target_settings: Mapping[str, str]) -> dict[str, str]:
    """Every non-default setting that shapes the stored bytes or how the target stores them."""
    settings = dict(target_settings)
    if secret.spec.key_style != "as-is":
        settings["key_style"] = secret.spec.key_style
    if secret.spec.rename:
        settings["rename"] = json.dumps(secret.spec.rename, sort_keys=True, separators=(",", ":"))
    if secret.template is not None:
        settings["template"] = secret.template.digest
    return settings


def source_reference(
    secret: Secret,
    tokens: Mapping[str, str | None],
    *,
    settings: Mapping[str, str],
    template: str | None,
) -> str | None:
    """The value-free source reference stored on a version; ``None`` while a token is unknown.

    ``template`` is the ``for_each`` secret that generated this one, so a later cycle can tell
    which existing secrets a listing is expected to produce again.
    """
    parts: dict[str, str] = {}
    for key, ref in secret.refs.items():
        token = tokens.get(key)
        if token is None:
            return None
        decode = f"|{ref.decode}" if ref.decode else ""
        parts[key] = f"{ref.describe()}{decode}@{token}"
    if secret.spec.format:
        parts["~format"] = secret.spec.format
    if template is not None:
        parts[FOR_EACH] = template
    if settings:
        parts[SETTINGS] = json.dumps(dict(settings), sort_keys=True, separators=(",", ":"))
    return json.dumps(parts, sort_keys=True, separators=(",", ":"))


def source_parts(source: str) -> dict[str, str]:
    """A stored source reference read back (empty when it isn't one syncd wrote)."""
    try:
        parts = json.loads(source) if source else {}
    except ValueError:
        return {}
    if not isinstance(parts, dict):
        return {}
    return {str(k): str(v) for k, v in parts.items()}


def source_keys(source: str) -> set[str]:
    """The bundle keys (before ``key_style``) a stored source reference names."""
    return {k for k in source_parts(source) if not k.startswith("~")}
