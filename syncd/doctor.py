"""``syncd doctor``: read-only checks of the sources and of how consumers use the secrets.

Every provider is asked, without reading a value, whether each reference exists and can be
read (``Provider.check``: reachable, authenticated, there). The target reports problems only
it can see (a ``*_FILE`` variable pointing at a secret that isn't mounted, a
``secretKeyRef`` to a missing Secret or key); this module adds what every target shares:
consumers on an old version, managed secrets nobody uses, and managed secrets that left the
config. Nothing here writes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from providers.base import Ref, Unverified
from syncd.config import Config, Secret
from syncd.engine import Engine
from syncd.errors import ProviderError, TargetError
from syncd.model import Finding, VersionInfo
from syncd.redact import REDACTOR
from syncd.work import describe


def diagnose(config: Config) -> list[Finding]:
    """Every problem found, target-specific first."""
    engine = Engine(config)
    try:
        target = engine.target
        versions = target.list_versions([s.name for s in config.secrets])
        expansion = engine.expand(config.secrets, versions)
        secrets = expansion.secrets
        names = [s.name for s in secrets]
        findings = list(target.diagnose())
        findings += [
            Finding(f"secret/{i.name}", i.error or "", "fix its source") for i in expansion.errors
        ]
        findings += _sources(engine, secrets)
        if expansion.complete:
            findings += _orphans(versions, set(names) | {i.name for i in expansion.errors})
        if target.has_consumers:
            findings += _consumers(engine, secrets, versions)
        return findings
    finally:
        engine.close()


def _sources(engine: Engine, secrets: list[Secret]) -> list[Finding]:
    """One finding per reference its provider can't answer for (one call per provider), a
    warning for one it can't judge without reading it."""
    wanted: dict[str, list[tuple[str, Ref]]] = defaultdict(list)
    for secret in secrets:
        # a data_from bundle's keys are listed in the cycle: here its source is checked
        refs = list(secret.refs.values()) or ([secret.source] if secret.source else [])
        for ref in refs:
            wanted[ref.provider].append((secret.name, ref))
    findings = []
    for name, entries in wanted.items():
        provider = engine.provider(name)
        refs = list(dict.fromkeys(ref for _, ref in entries))
        if isinstance(provider, ProviderError):
            results: Mapping[Ref, ProviderError | Unverified | None] = dict.fromkeys(refs, provider)
        else:
            try:
                results = provider.check(refs)
            except ProviderError as exc:
                results = dict.fromkeys(refs, exc)
            except Exception as exc:  # noqa: BLE001 - one broken provider, the others go on
                results = dict.fromkeys(refs, ProviderError(name, "all references", describe(exc)))
        for subject, ref in entries:
            answer = results.get(ref)
            if isinstance(answer, Unverified):
                findings.append(
                    Finding(
                        f"secret/{subject}",
                        REDACTOR.redact(str(answer)),
                        "nothing, if the reference is right: a cycle (syncd plan) reads it",
                        warning=True,
                    )
                )
            elif answer is not None:
                findings.append(
                    Finding(
                        f"secret/{subject}",
                        REDACTOR.redact(str(answer)),
                        "fix the reference, or the provider's address or credentials",
                    )
                )
    return findings


def _orphans(versions: dict[str, list[VersionInfo]], configured: set[str]) -> list[Finding]:
    return [
        Finding(
            subject=f"secret/{name}",
            problem="managed by syncd but no longer in the config",
            fix="add it back, or set 'prune: true' to delete it",
        )
        for name in sorted(set(versions) - configured)
    ]


def _consumers(
    engine: Engine, secrets: list[Secret], versions: dict[str, list[VersionInfo]]
) -> list[Finding]:
    specs = [s.spec for s in secrets]
    found = engine.target.find_consumers(specs, versions)
    findings = []
    for secret in secrets:
        result = found.get(secret.name, [])
        if isinstance(result, TargetError):
            findings.append(Finding(f"secret/{secret.name}", str(result), "fix 'consumers'"))
            continue
        mine = versions.get(secret.name, [])
        if not mine:
            findings.append(
                Finding(
                    f"secret/{secret.name}",
                    "has no version in the target yet",
                    "run syncd --once",
                )
            )
            continue
        findings.extend(
            Finding(
                consumer.label,
                f"is named in the consumers of {secret.name} but doesn't exist",
                "deploy it (syncd repoints it on the next cycle), or fix 'consumers'",
            )
            for consumer in result
            if consumer.missing
        )
        current = max(mine, key=lambda v: v.version).object_name
        users = [c for c in result if c.refs.get(secret.name) and not c.missing]
        for consumer in users:
            if consumer.unconverged:
                findings.append(
                    Finding(
                        consumer.label,
                        f"has not converged: {consumer.unconverged}",
                        "look at its rollout (kubectl rollout status / docker service ps)",
                    )
                )
            old = sorted(consumer.refs[secret.name] - {current})
            if old:
                findings.append(
                    Finding(
                        consumer.label,
                        f"references {', '.join(old)} of {secret.name}; the current version "
                        f"is {current}",
                        "run syncd --once to repoint it (stack files: pin with syncd names)",
                    )
                )
        if not users:
            findings.append(
                Finding(
                    f"secret/{secret.name}",
                    "no consumer uses it",
                    "reference it from a service/workload, or remove it from the config",
                )
            )
    return findings
