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
    """A ``type:`` names no known plugin, or its module can't be imported."""


def _plugins(builtin: dict[str, str], group: str) -> dict[str, str]:
    """Built-in and entry-point plugins (importlib.metadata only here: a built-in's lookup
    doesn't pay for it)."""
    from importlib.metadata import entry_points

    found = dict(builtin)
    for ep in entry_points(group=group):
        found.setdefault(ep.name, ep.value)
    return found


def _load(kind: str, type_name: str, builtin: dict[str, str], group: str) -> Any:
    spec = builtin.get(type_name) or _plugins(builtin, group).get(type_name)
    if spec is None:
        known = ", ".join(sorted(_plugins(builtin, group)))
        raise PluginError(f"unknown {kind} type {type_name!r} (known: {known})")
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PluginError(f"{kind} type {type_name!r} can't be loaded: {exc}") from exc
    return getattr(module, attr)


def provider_class(type_name: str) -> type[Provider[Any, Any]]:
    """The provider class for ``type: <type_name>``."""
    cls: type[Provider[Any, Any]] = _load("provider", type_name, BUILTIN_PROVIDERS, PROVIDER_GROUP)
    return cls


def target_class(type_name: str) -> type[Target[Any]]:
    """The target class for ``type: <type_name>``."""
    cls: type[Target[Any]] = _load("target", type_name, BUILTIN_TARGETS, TARGET_GROUP)
    return cls


def available_provider_types() -> dict[str, type[Provider[Any, Any]]]:
    """Every provider that can be imported here (used to build the JSON Schema)."""
    return _available(_plugins(BUILTIN_PROVIDERS, PROVIDER_GROUP), provider_class)


def available_target_types() -> dict[str, type[Target[Any]]]:
    """Every target that can be imported here (used to build the JSON Schema)."""
    return _available(_plugins(BUILTIN_TARGETS, TARGET_GROUP), target_class)


def _available(names: dict[str, str], load: Any) -> dict[str, Any]:
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
