"""Find provider and target classes by their ``type:`` name.

Built-in plugins are listed here so a lookup never scans installed packages; third-party
plugins register in the ``syncd.providers`` / ``syncd.targets`` entry-point groups. Modules
are imported only when a config names their type, which keeps ``syncd --help`` fast and lets
the plain install work without any cloud SDK.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from providers.base import Provider
    from syncd.targets.base import Target

BUILTIN_PROVIDERS: dict[str, str] = {
    "file": "providers.file:FileProvider",
    "vault": "providers.vault:VaultProvider",
    "aws-secrets-manager": "providers.aws_secrets_manager:AwsSecretsManagerProvider",
    "aws-ssm": "providers.aws_ssm:AwsSsmProvider",
    "azure-key-vault": "providers.azure_key_vault:AzureKeyVaultProvider",
}

BUILTIN_TARGETS: dict[str, str] = {
    "files": "syncd.targets.files:FilesTarget",
    "swarm": "syncd.targets.swarm:SwarmTarget",
    "kubernetes": "syncd.targets.kubernetes:KubernetesTarget",
}

PROVIDER_GROUP = "syncd.providers"
TARGET_GROUP = "syncd.targets"


class PluginError(LookupError):
    """A ``type:`` names no known plugin, or the plugin registered under it is broken."""


@dataclass(frozen=True)
class _Plugin:
    """Where a ``type:`` name leads: ``module:attribute``, and who registered it."""

    spec: str
    #: "built in", or the distribution (or distributions) whose entry point names it
    origin: str
    #: set when two installed distributions register the same name: neither is chosen
    clash: str | None = None


def _plugins(builtin: dict[str, str], group: str) -> dict[str, _Plugin]:
    """Every name: the built-ins, then each installed entry point of ``group``. A built-in
    name can't be taken over by a package (the entry point is ignored); two packages
    registering one name is a clash reported when that name is used (importlib.metadata
    is imported only here: a built-in's lookup doesn't pay for it)."""
    from importlib.metadata import entry_points

    found = {name: _Plugin(spec, "built in") for name, spec in builtin.items()}
    for ep in entry_points(group=group):
        origin = f"package {ep.dist.name!r}" if ep.dist is not None else "an entry point"
        known = found.get(ep.name)
        if known is None:
            found[ep.name] = _Plugin(ep.value, origin)
        elif known.origin != "built in" and known.spec != ep.value:
            found[ep.name] = replace(known, clash=f"{known.origin} and {origin}")
    return found


def _find(type_name: str, builtin: dict[str, str], group: str) -> _Plugin | None:
    """A built-in type without a scan of the installed packages, else the scan's answer."""
    if type_name in builtin:
        return _Plugin(builtin[type_name], "built in")
    return _plugins(builtin, group).get(type_name)


def _load(kind: str, type_name: str, builtin: dict[str, str], group: str, base: type) -> Any:
    """The class behind ``type_name``, checked to be a ``base`` registered under its own
    name; every way a third-party plugin can be broken is a ``PluginError`` naming it."""
    plugin = _find(type_name, builtin, group)
    if plugin is None:
        known = ", ".join(sorted(_plugins(builtin, group)))
        raise PluginError(f"unknown {kind} type {type_name!r} (known: {known})")
    where = f"{kind} type {type_name!r} ({plugin.spec}, {plugin.origin})"
    if plugin.clash is not None:
        raise PluginError(f"{kind} type {type_name!r} is registered by {plugin.clash}")
    module_name, _, attr = plugin.spec.partition(":")
    try:
        found: Any = importlib.import_module(module_name.strip())
    except ImportError as exc:
        raise PluginError(f"{where} can't be loaded: {exc}") from exc
    except Exception as exc:  # a plugin's import runs its code: any failure is the plugin's
        raise PluginError(f"{where} fails to import: {type(exc).__name__}: {exc}") from exc
    for part in attr.strip().split(".") if attr.strip() else []:
        found = getattr(found, part, None)
    if not (isinstance(found, type) and issubclass(found, base)):
        raise PluginError(f"{where} is not a {base.__module__}.{base.__name__} subclass")
    if getattr(found, "type_name", None) != type_name:
        raise PluginError(
            f"{where} is registered as {type_name!r} but its type_name is "
            f"{getattr(found, 'type_name', None)!r}"
        )
    return found


def provider_class(type_name: str) -> type[Provider[Any, Any]]:
    """The provider class for ``type: <type_name>``."""
    from providers.base import Provider

    cls: type[Provider[Any, Any]] = _load(
        "provider", type_name, BUILTIN_PROVIDERS, PROVIDER_GROUP, Provider
    )
    return cls


def target_class(type_name: str) -> type[Target[Any]]:
    """The target class for ``type: <type_name>``."""
    from syncd.targets.base import Target

    cls: type[Target[Any]] = _load("target", type_name, BUILTIN_TARGETS, TARGET_GROUP, Target)
    return cls


def available_provider_types() -> dict[str, type[Provider[Any, Any]]]:
    """Every provider that can be imported here (used to build the JSON Schema)."""
    return _available(_plugins(BUILTIN_PROVIDERS, PROVIDER_GROUP), provider_class)


def available_target_types() -> dict[str, type[Target[Any]]]:
    """Every target that can be imported here (used to build the JSON Schema)."""
    return _available(_plugins(BUILTIN_TARGETS, TARGET_GROUP), target_class)


def _available(names: dict[str, _Plugin], load: Any) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name in sorted(names):
        try:
            result[name] = load(name)
        except PluginError:
            continue
    return result


def missing_modules(plugin: str, modules: Sequence[str], extra: str) -> str | None:
    """Why ``plugin`` can't run here: the modules it needs that aren't installed, and the
    extra that installs them. Checked without importing them, so ``syncd check`` stays cheap;
    every plugin's ``unavailable()`` answers with this."""
    missing = [module for module in modules if not _installed(module)]
    if not missing:
        return None
    return f"{plugin} needs {' and '.join(missing)}: pip install 'syncd[{extra}]'"


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a broken __spec__
        return False
