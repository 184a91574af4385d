"""An in-memory target with consumers, for testing the engine's invariants in isolation.

It models what the engine must respect in Swarm and Kubernetes (consumers that reference
versions, a rollback spec, convergence that can fail, "in use" deletes) and checks invariant 1
after every write: a consumer never references a version that does not exist.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal

from pydantic import Field

from syncd.config import SecretSpec
from syncd.errors import ConvergenceError, TargetError
from syncd.model import Consumer, NewVersion, Rollout, VersionInfo
from syncd.targets.base import Target, TargetConfig, TargetContext


class MemoryTargetConfig(TargetConfig):
    type: Literal["memory"]
    world: str = "default"
    #: what ``stored_settings`` answers for every secret (a stand-in for a file mode)
    settings: dict[str, str] = Field(default_factory=dict)
    #: ``prepare`` fails (a stand-in for a kubeconfig typo)
    broken: bool = False


@dataclass
class Service:
    name: str
    refs: set[str] = field(default_factory=set)
    previous: set[str] = field(default_factory=set)
    converge: bool = True
    #: object names this service never converges on (its new tasks fail health checks)
    bad: set[str] = field(default_factory=set)
    #: when it fails to converge, the orchestrator rolls it back by itself (Swarm's
    #: FailureAction: rollback); otherwise it stays on the failed spec (pause, K8s)
    native_rollback: bool = True
    #: an operator paused its rollout (a paused Deployment): it can't converge, not the
    #: version's fault
    paused: bool = False
    keeps_previous: bool = True
    #: the orchestrator says this service's rollout is stuck
    unconverged: str | None = None


@dataclass
class World:
    """State shared by every MemoryTarget built for the same ``world`` name."""

    key: bytes | None = None
    objects: dict[str, tuple[VersionInfo, dict[str, bytes]]] = field(default_factory=dict)
    services: dict[str, Service] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    crash_on: str | None = None
    in_use: set[str] = field(default_factory=set)
    #: object name -> the installation that wrote it
    owners: dict[str, str] = field(default_factory=dict)
    #: ``write_history`` fails (a stand-in for a refused metadata write)
    history_fails: bool = False

    def check(self) -> None:
        for svc in self.services.values():
            for ref in svc.refs | svc.previous:
                if ref.startswith("managed:") or ref in self.objects:
                    continue
                raise AssertionError(f"invariant 1 broken: {svc.name} references missing {ref}")


WORLDS: dict[str, World] = {}


class Crash(BaseException):
    """Simulates the process dying mid-cycle (not an Exception: nothing may catch it)."""


class MemoryTarget(Target[MemoryTargetConfig]):
    type_name: ClassVar[str] = "memory"
    config_model: ClassVar[type[TargetConfig]] = MemoryTargetConfig

    def __init__(self, config: MemoryTargetConfig, *, context: TargetContext) -> None:
        super().__init__(config, context=context)
        self.world = WORLDS.setdefault(config.world, World())

    def _step(self, name: str) -> None:
        self.world.log.append(name)
        if self.world.crash_on == name:
            self.world.crash_on = None
            raise Crash(name)

    @classmethod
    def validate_spec(cls, spec: SecretSpec[Any], config: TargetConfig) -> list[str]:
        names = [spec.name, *(spec.data or {})]
        return [
            f"name {name!r} is not allowed"
            for name in names
            if name == "bad name" or "/" in name or name.startswith(".") or not name
        ]

    def prepare(self) -> None:
        if self.config.broken:
            raise TargetError("memory target is broken (prepare)")

    def stored_settings(self, spec: SecretSpec[Any]) -> dict[str, str]:
        return dict(self.config.settings)

    def update_source(self, version: VersionInfo, source: str) -> bool:
        self.count_write("update_source")
        info, data = self.world.objects[version.object_name]
        self.world.objects[version.object_name] = (replace(info, source=source), data)
        return True

    def load_key(self) -> bytes | None:
        return self.world.key

    def store_key(self, key: bytes) -> None:
        self.count_write("store_key")
        self.world.key = key

    def list_versions(self, names: Sequence[str]) -> dict[str, list[VersionInfo]]:
        result: dict[str, list[VersionInfo]] = {}
        for name, (info, _) in self.world.objects.items():
            if self.world.owners.get(name, "default") == self.context.instance:
                result.setdefault(info.secret, []).append(info)
        return result

    def create_versions(self, items: Sequence[NewVersion]) -> dict[str, VersionInfo | TargetError]:
        out: dict[str, VersionInfo | TargetError] = {}
        for item in items:
            self._step(f"create {item.secret}-v{item.version}")
            info = item.stored_as(f"{item.secret}-v{item.version}")
            self.count_write("create")
            owner = self.world.owners.get(info.object_name, self.context.instance)
            if info.object_name in self.world.objects and owner != self.context.instance:
                out[item.secret] = TargetError(f"{info.object_name} belongs to instance {owner}")
                continue
            self.world.objects[info.object_name] = (info, dict(item.data))
            self.world.owners[info.object_name] = self.context.instance
            out[item.secret] = info
        self.world.check()
        return out

    def find_consumers(
        self, specs: Sequence[SecretSpec[Any]], versions: Mapping[str, list[VersionInfo]]
    ) -> dict[str, list[Consumer] | TargetError]:
        out: dict[str, list[Consumer] | TargetError] = {}
        for spec in specs:
            objs = {v.object_name for v in versions.get(spec.name, [])}
            found = []
            for svc in self.world.services.values():
                mine = frozenset(r for r in svc.refs if r in objs)
                if mine:
                    failing = "new tasks failing" if svc.refs & svc.bad else None
                    found.append(
                        Consumer(
                            "service",
                            svc.name,
                            refs={spec.name: mine},
                            unconverged=svc.unconverged or failing,
                        )
                    )
            if isinstance(spec.consumers, list):
                found = [c for c in found if c.name in spec.consumers] + [
                    Consumer("service", name, missing=True)
                    for name in spec.consumers
                    if name not in self.world.services
                ]
            out[spec.name] = found
        return out

    def repoint(
        self, consumer: Consumer, swaps: Mapping[str, VersionInfo], *, rollback: bool = False
    ) -> None:
        self._step(f"{'roll back' if rollback else 'repoint'} {consumer.name}")
        svc = self.world.services[consumer.name]
        for new in swaps.values():
            if new.object_name not in self.world.objects:
                raise AssertionError(f"repoint to missing {new.object_name}")
        if not svc.refs & set(swaps):
            return  # already moved (a native rollback, a repeated step)
        svc.previous = set(svc.refs) if svc.keeps_previous else set()
        svc.refs = {swaps[r].object_name if r in swaps else r for r in svc.refs}
        self.count_write("rollback" if rollback else "repoint")
        self.world.check()

    def wait_converged(
        self, consumers: Sequence[Consumer], *, timeout: float, rollback: bool = False
    ) -> dict[str, ConvergenceError | None]:
        self._step(f"wait {'rollback ' if rollback else ''}{','.join(c.name for c in consumers)}")
        out: dict[str, ConvergenceError | None] = {}
        for c in consumers:
            svc = self.world.services[c.name]
            if svc.paused:
                out[c.label] = ConvergenceError("paused by an operator", blame=False)
            elif svc.converge and not svc.refs & svc.bad:
                out[c.label] = None
            elif svc.native_rollback and not rollback and svc.previous:
                svc.refs, svc.previous = svc.previous, svc.refs  # rolled back
                out[c.label] = ConvergenceError("update rolled back")
            else:
                out[c.label] = ConvergenceError("new tasks never became healthy")
        return out

    def mark(self, version: VersionInfo, rollout: Rollout | None) -> VersionInfo:
        self._step(f"mark {version.object_name} {rollout.state if rollout else 'ok'}")
        info, data = self.world.objects[version.object_name]
        marked = replace(info, rollout=rollout)
        self.count_write("mark")
        self.world.objects[version.object_name] = (marked, data)
        return marked

    def write_history(self, version: VersionInfo, ledger: str) -> bool:
        if self.world.history_fails:
            raise TargetError(f"{version.object_name}: history write refused")
        self.count_write("history")
        info, data = self.world.objects[version.object_name]
        self.world.objects[version.object_name] = (replace(info, history=ledger), data)
        return True

    def protected(self) -> set[str]:
        return {r for svc in self.world.services.values() for r in svc.previous}

    def delete_version(self, version: VersionInfo) -> bool:
        self._step(f"delete {version.object_name}")
        if version.object_name in self.world.in_use:
            return False
        for svc in self.world.services.values():
            if version.object_name in svc.refs | svc.previous:
                raise AssertionError(f"deleted {version.object_name} while referenced")
        self.count_write("delete")
        del self.world.objects[version.object_name]
        self.world.owners.pop(version.object_name, None)
        return True
