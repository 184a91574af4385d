"""The reconcile engine: plan, then apply, speaking only the provider and target interfaces.

One cycle, as data flows::

    target: which versions exist (one listing) -> expand for_each/data_from listings
    -> providers: what changed? (versions, batched) -> fetch only what changed (batched)
    -> render bundle -> keyed fingerprint -> compare with the current version's labels
    -> no change: nothing written
    -> change: create version N+1 -> repoint consumers -> wait converged -> collect old versions

Every step is per secret: an error is recorded on that secret's ``PlanItem`` and the others go
on. Every step is idempotent, and each cycle also repairs what an interrupted one left: a
consumer still on an old version is repointed, and versions beyond ``keep`` are collected.

Names and keys a source supplies (``for_each`` keys, ``data_from`` keys) are input like the
config: each passes the target's config-time rules again at run time, and a bad one fails
only its own secret. A listing that comes back empty, or far smaller than what exists, is an
error for that source, never a reason to prune.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from providers.base import Provider, ProviderContext, Ref
from syncd.calls import CallCounter
from syncd.config import Config, Secret, SecretSpec
from syncd.errors import ProviderError, SyncdError, TargetError
from syncd.expiry import Book, decode_stored, earliest, encode_stored
from syncd.fingerprint import bundle_fingerprint, key_fingerprints, new_key
from syncd.model import NewVersion, PlanItem, VersionInfo
from syncd.progress import CHECKING, CREATING, FETCHING, ProgressHook
from syncd.redact import REDACTOR, Redactor
from syncd.render import (
    FOR_EACH,
    render,
    render_settings,
    source_keys,
    source_parts,
    source_reference,
)
from syncd.rollout_plan import RolloutPlanner
from syncd.swap import Swap
from syncd.targets.base import TARGET_COUNTER, TARGET_READS, Target, TargetContext
from syncd.work import Work, describe, failed_item, is_transient

#: What the plan says of a ``refresh: never`` secret that has its version.
NEVER_NOTE = "refresh: never: synced once, left alone"
#: ...and of one whose first version this cycle makes.
ONCE_NOTE = "refresh: never: synced now, then left alone"
log = logging.getLogger("syncd.engine")


@dataclass
class CycleResult:
    """What one cycle decided and did."""

    items: list[PlanItem]
    calls: dict[str, dict[str, int]]
    target_writes: int
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        """No secret failed."""
        return all(item.error is None for item in self.items)

    @property
    def changed(self) -> bool:
        """Something was (or, in a dry run, would be) written."""
        return any(item.changes for item in self.items)

    def to_json(self) -> dict[str, Any]:
        """The ``--output json`` document (never a value or fingerprint)."""
        return {
            "secrets": [
                {
                    "name": i.name,
                    "action": i.action,
                    "version": i.version,
                    "changed_keys": i.changed_keys,
                    "consumers": i.consumers,
                    "deleted": i.deleted,
                    "error": i.error_document(),
                    "notes": i.notes,
                    "outcome": i.outcome,
                    "until": i.until,
                    "failed_version": i.failed_version,
                }
                for i in self.items
            ],
            "provider_calls": {
                k: v for k, v in self.calls.items() if k not in (TARGET_COUNTER, TARGET_READS)
            },
            "target_calls": {
                "read": self.calls.get(TARGET_READS, {}),
                "write": self.calls.get(TARGET_COUNTER, {}),
            },
            "target_writes": self.target_writes,
            "dry_run": self.dry_run,
        }


@dataclass
class Expansion:
    """``for_each`` templates replaced by one secret per source key."""

    secrets: list[Secret]
    errors: list[PlanItem]
    #: every template listed cleanly: pruning needs the full picture
    complete: bool
    #: generated secret name -> the template it came from
    templates: dict[str, str] = field(default_factory=dict)


def _limited(expansion: Expansion, only: set[str], declared: set[str]) -> Expansion:
    """``expansion`` without the generated secrets a pass limited to ``only`` didn't ask for
    (a template asked for by its own name keeps all of its secrets); a template's own
    failure (its listing) stays, since it may hide the name asked for."""

    def wanted(name: str) -> bool:
        return name in only or expansion.templates.get(name, "") in only

    return replace(
        expansion,
        secrets=[s for s in expansion.secrets if wanted(s.name)],
        errors=[e for e in expansion.errors if wanted(e.name) or e.name in declared],
    )


class Engine:
    """Owns the provider and target instances for one loaded config."""

    def __init__(
        self,
        config: Config,
        *,
        calls: CallCounter | None = None,
        redactor: Redactor = REDACTOR,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.calls = calls or CallCounter()
        self.redactor = redactor
        self.clock = clock
        self._providers: dict[str, Provider[Any, Any] | ProviderError] = {}
        target_cls, target_config = config.target
        # generated (for_each) secrets join this mapping each cycle, so the target can place
        # them like the template (namespace, type, strategy)
        self._specs: dict[str, SecretSpec[Any]] = {s.name: s.spec for s in config.secrets}
        context = TargetContext(
            base_dir=config.base_dir,
            calls=self.calls,
            secrets=self._specs,
            instance=config.instance,
        )
        self.target: Target[Any] = target_cls(target_config, context=context)
        self._key: bytes | None = None
        # secret -> (source, fingerprint) seen last cycle, so an unchanged value whose
        # version id moved is not fetched again where the target can't store the new id
        self._seen: dict[str, tuple[str, str]] = {}
        #: certificate expiries of the values read, so cycles that read nothing still know
        #: them (a reload hands them to the next engine)
        self.certificates = Book()
        self.swap = Swap(
            self.target, schedule=(config.daemon.backoff_min, config.daemon.backoff_max)
        )
        #: how a settling cut-over waits (tests replace it)
        self.sleep: Callable[[float], None] = time.sleep
        #: told how far a cycle is (``syncd.progress``); the CLI's bar on a terminal
        self.progress: ProgressHook | None = None
        self.rollouts = RolloutPlanner(now=lambda: datetime.now(UTC), converged=self.swap.converged)

    @property
    def now(self) -> Callable[[], datetime]:
        """Wall time, for rotation windows and the retry times stored in the target."""
        return self.rollouts.now

    @now.setter
    def now(self, clock: Callable[[], datetime]) -> None:
        self.rollouts.now = clock

    # ------------------------------------------------------------------ lifecycle

    def build(self) -> None:
        """Create every provider and prepare the target now, raising what can't work.

        A daemon reload calls this before it replaces the running engine, so a config that
        validates but can't run (a kubeconfig typo, a missing SDK) never replaces one that
        does. Writes nothing.
        """
        problems = [
            str(provider)
            for provider in (self.provider(name) for name in self.config.providers)
            if isinstance(provider, ProviderError)
        ]
        try:
            self.target.prepare()
        except SyncdError as exc:
            problems.append(f"target: {exc}")
        except Exception as exc:  # noqa: BLE001 - reported, the running config stays
            problems.append(f"target: {describe(exc)}")
        if problems:
            raise SyncdError("; ".join(problems))

    def close(self) -> None:
        """Close every provider and the target."""
        for provider in self._providers.values():
            if isinstance(provider, Provider):
                provider.close()
        self.target.close()

    def provider(self, name: str) -> Provider[Any, Any] | ProviderError:
        """The provider instance for a name, created on first use (errors are remembered)."""
        if name not in self._providers:
            cls, cfg = self.config.providers[name]
            context = ProviderContext(name=name, base_dir=self.config.base_dir, calls=self.calls)
            try:
                self._providers[name] = cls(cfg, context=context)
            except SyncdError as exc:
                self._providers[name] = ProviderError(name, cls.type_name, str(exc))
            except Exception as exc:  # noqa: BLE001 - one broken provider must not stop the rest
                self._providers[name] = ProviderError(
                    name, cls.type_name, f"can't start: {type(exc).__name__}: {exc}"
                )
        return self._providers[name]

    # ------------------------------------------------------------------ the cycle

    def run_cycle(
        self,
        *,
        dry_run: bool = False,
        names: Iterable[str] | None = None,
        prune: bool | None = None,
        ignore_window: bool = False,
    ) -> CycleResult:
        """Plan and (unless ``dry_run``) apply one reconcile pass.

        ``prune`` (default: when no ``names`` limit the pass) also deletes managed secrets
        that left the config, when the config says ``prune: true``; it lists every
        ``for_each`` source of the config for that, not only the ones of ``names``.
        ``names`` grows to whole groups: a group's secrets are always swapped together.
        ``ignore_window`` repoints consumers outside their rotation window.
        """
        wanted = self._with_groups(set(names)) if names is not None else None
        secrets = self._chosen(wanted)
        self.rollouts.ignore_window = ignore_window
        prune = (wanted is None if prune is None else prune) and self.config.prune
        before = self.calls.total(TARGET_COUNTER)
        try:
            if dry_run:
                items = self._cycle(secrets, dry_run=True, prune=prune, only=wanted)
            else:
                items = self._locked_cycle(secrets, prune=prune, only=wanted)
        finally:
            self.redactor.clear()
        return CycleResult(
            items=items,
            calls=self.calls.snapshot(),
            target_writes=self.calls.total(TARGET_COUNTER) - before,
            dry_run=dry_run,
        )

    def _chosen(self, wanted: set[str] | None) -> list[Secret]:
        """The config's secrets a pass limited to ``wanted`` needs: those named, and every
        ``for_each`` when a name isn't the config's (it may be one a listing makes)."""
        if wanted is None:
            return list(self.config.secrets)
        declared = {s.name for s in self.config.secrets}
        generated = bool(wanted - declared)
        return [
            s
            for s in self.config.secrets
            if s.name in wanted or (generated and s.spec.for_each is not None)
        ]

    def _with_groups(self, names: set[str]) -> set[str]:
        """``names`` and every secret that shares a group with one of them."""
        groups = {s.group for s in self.config.secrets if s.name in names and s.group}
        return names | {s.name for s in self.config.secrets if s.group in groups}

    def _locked_cycle(
        self, secrets: Sequence[Secret], *, prune: bool, only: set[str] | None
    ) -> list[PlanItem]:
        """A writing cycle: hold the target, repair leftovers, then plan and apply."""
        try:
            with self.target.exclusive():
                self.target.repair()
                return self._cycle(secrets, dry_run=False, prune=prune, only=only)
        except TargetError as exc:  # the lock or the repair: nothing was written
            message = f"target unavailable: {exc}"
            return [failed_item(s.name, message, "target", exc.transient) for s in secrets]

    def import_existing(
        self, *, names: Iterable[str] | None = None, trust: bool = False
    ) -> list[PlanItem]:
        """Adopt hand-made target objects named like each secret as its version 1.

        The source is read and fingerprinted as in a cycle, then the target labels the
        existing object instead of creating one, so consumers keep running untouched. A
        secret that already has versions, or has no such object, is left alone
        (``unchanged``); an object whose data differs from the source is an error.
        """
        wanted = set(names) if names is not None else None
        chosen = [s for s in self.config.secrets if wanted is None or s.name in wanted]
        try:
            with self.target.exclusive():
                self.target.repair()
                return self._import(chosen, trust=trust)
        except TargetError as exc:  # the lock or the repair: nothing was written
            message = f"target unavailable: {exc}"
            return [failed_item(s.name, message, "target", exc.transient) for s in chosen]
        finally:
            self.redactor.clear()

    def _import(self, chosen: Sequence[Secret], *, trust: bool) -> list[PlanItem]:
        """Import under the lock: adopt each secret that has no version yet."""
        existing = self._existing(chosen)
        if isinstance(existing, list):
            return existing
        expansion = self.expand(chosen, existing)
        works = [
            self._work(s, [], expansion) for s in expansion.secrets if not existing.get(s.name)
        ]
        done = [
            PlanItem(s.name, "unchanged", version=max(v.version for v in existing[s.name]))
            for s in expansion.secrets
            if existing.get(s.name)
        ]
        key = self._hmac_key(dry_run=False)
        if isinstance(key, str):
            for work in works:
                work.fail(key, "target")
            return expansion.errors + done + [w.item for w in works]
        self._plan_values(works, key)
        self._store_key(key, works)
        for work in works:
            if work.new is None or work.item.error is not None:
                continue
            try:
                adopted = self.target.import_existing(work.new, trust=trust)
            except Exception as exc:  # noqa: BLE001 - this secret fails, others go on
                work.fail(f"can't import: {describe(exc)}", "target")
                continue
            if adopted is None:
                work.item.action, work.item.version, work.item.changed_keys = (
                    "unchanged",
                    None,
                    [],
                )
            else:
                work.item.action, work.item.version = "import", adopted.version
        return expansion.errors + done + [w.item for w in works]

    def _existing(self, secrets: Sequence[Secret]) -> dict[str, list[VersionInfo]] | list[PlanItem]:
        """This installation's versions, or (target unreachable) an error item per secret."""
        try:
            found = self.target.list_versions([s.name for s in secrets])
        except Exception as exc:  # noqa: BLE001 - reported per secret, nothing written
            message = f"target unavailable: {describe(exc)}"
            return [failed_item(s.name, message, "target", is_transient(exc)) for s in secrets]
        return {name: sorted(versions, key=_ver) for name, versions in found.items()}

    def _work(self, secret: Secret, versions: list[VersionInfo], expansion: Expansion) -> Work:
        work = Work(
            secret,
            PlanItem(secret.name, "unchanged"),
            list(versions),
            template=expansion.templates.get(secret.name),
        )
        latest = work.versions[-1] if work.versions else None
        if latest is not None and latest.failed:
            # consumers run (or go back to) the newest version before the failed one
            work.failed = latest
            healthy = [v for v in work.versions if not v.failed]
            work.current = healthy[-1] if healthy else None
            work.item.failed_version = latest.version
        else:
            work.current = latest
        work.item.version = work.current.version if work.current else None
        return work

    def _plan_values(self, works: Sequence[Work], key: bytes) -> None:
        """Sources to fingerprints: list keys, ask versions, fetch what moved, render."""
        self._expand_sources(works)
        works = [w for w in works if not _left_alone(w)]
        self._collect_tokens(works)
        self._fetch_changed(works)
        self._expiries(works)
        self._render(works, key)
        for work in works:
            if work.secret.once and work.new is not None:
                work.item.notes.append(ONCE_NOTE)

    # ------------------------------------------------------------------ expansion

    def expand(
        self,
        secrets: Sequence[Secret],
        existing: Mapping[str, list[VersionInfo]] | None = None,
    ) -> Expansion:
        """``for_each`` templates replaced by one secret per source key.

        Each generated secret passes the target's rules for names (and the set's rules for
        collisions); one that doesn't fails alone, naming the source and key. With
        ``existing``, a listing that lost more than ``max_shrink`` of the secrets it made
        before (or came back empty) fails its template: nothing of it is synced or pruned.
        """
        result: list[Secret] = []
        errors: list[PlanItem] = []
        templates: dict[str, str] = {}
        static = {s.name for s in secrets if s.spec.for_each is None}
        seen: set[str] = set()
        complete = True
        for secret in secrets:
            if secret.spec.for_each is None or secret.source is None:
                result.append(secret)
                continue
            listed = self._list_keys(secret.source)
            if isinstance(listed, ProviderError):
                errors.append(failed_item(secret.name, str(listed), "provider", cause=listed))
                complete = False
                continue
            generated = {secret.spec.named(key): (key, ref) for key, ref in sorted(listed.items())}
            shrunk = self._shrink_problem(secret, set(generated), existing)
            if shrunk is not None:
                errors.append(failed_item(secret.name, shrunk, "input"))
                complete = False
                continue
            made: list[Secret] = []
            for name, (key, ref) in generated.items():
                where = f"{secret.name}: key {key!r} from {secret.source.describe()}"
                if name in static or name in seen:
                    errors.append(
                        failed_item(name, f"{where} makes {name!r}, which already exists", "input")
                    )
                    complete = False
                    continue
                seen.add(name)
                spec = secret.spec.model_copy(update={"name": name, "for_each": None, "from_": ref})
                problems = type(self.target).validate_spec(spec, self.target.config)
                if problems:
                    errors.append(failed_item(name, f"{where}: {'; '.join(problems)}", "input"))
                    continue
                made.append(replace(secret, spec=spec, refs={name: ref}, source=None))
                templates[name] = secret.name
            result.extend(made)
        result = self._without_collisions(result, templates, errors)
        for secret in result:
            if secret.name in templates:
                self._specs[secret.name] = secret.spec
        return Expansion(result, errors, complete, templates)

    def _without_collisions(
        self, secrets: list[Secret], templates: Mapping[str, str], errors: list[PlanItem]
    ) -> list[Secret]:
        """Generated secrets that would land on an object another secret holds fail (the
        config's own secrets were checked among themselves at load, and win)."""
        fixed = [s for s in secrets if s.name not in templates]
        made = [s for s in secrets if s.name in templates]
        if not made:
            return secrets
        ordered = fixed + made
        problems = type(self.target).validate_set([s.spec for s in ordered], self.target.config)
        doomed: dict[str, str] = {}
        for index, problem in problems:
            if index >= len(fixed):
                doomed.setdefault(ordered[index].name, problem)
        errors.extend(failed_item(name, problem, "input") for name, problem in doomed.items())
        return [s for s in secrets if s.name not in doomed]

    def _shrink_problem(
        self,
        secret: Secret,
        names: set[str],
        existing: Mapping[str, list[VersionInfo]] | None,
    ) -> str | None:
        """Why a ``for_each`` listing can't be trusted: empty, or lost too much at once."""
        assert secret.source is not None
        where = f"{secret.source.describe()} (for_each of {secret.name!r})"
        if not names and secret.max_shrink < 1:
            return (
                f"{where} lists no keys; nothing is pruned. If the source really is empty, "
                "set max_shrink: 1 on the secret"
            )
        if existing is None:
            return None
        before = {
            name
            for name, versions in existing.items()
            if versions and source_parts(versions[-1].source).get(FOR_EACH) == secret.name
        }
        return _lost_too_much(where, before, names, secret.max_shrink)

    def _list_keys(self, source: Ref) -> Mapping[str, Ref] | ProviderError:
        provider = self.provider(source.provider)
        if isinstance(provider, ProviderError):
            return provider
        try:
            return provider.list_keys(source)
        except Exception as exc:  # noqa: BLE001 - this source fails, others go on
            return ProviderError(source.provider, source.describe(), describe(exc))

    def _expand_sources(self, works: Sequence[Work]) -> None:
        """Fill ``data_from`` bundles with every key their source holds right now.

        The keys pass the target's rules as if written under ``data:``; a listing that lost
        more than ``max_shrink`` of the current version's keys fails the secret.
        """
        for work in works:
            source = work.secret.source
            if source is None:
                continue
            listed = self._list_keys(source)
            where = f"{source.describe()} (data_from of {work.secret.name!r})"
            if isinstance(listed, ProviderError):
                work.fail(str(listed), "provider", cause=listed)
                continue
            if not listed:
                work.fail(f"{where}: the source holds no keys", "input")
                continue
            before = source_keys(work.latest.source) if work.latest else set()
            shrunk = _lost_too_much(where, before, set(listed), work.secret.max_shrink)
            if shrunk is not None:
                work.fail(shrunk, "input")
                continue
            spec = work.secret.spec.model_copy(update={"data": dict(listed), "data_from": None})
            problems = type(self.target).validate_spec(spec, self.target.config)
            if problems:
                work.fail(f"{where}: {'; '.join(problems)}", "input")
                continue
            work.secret = replace(work.secret, refs=dict(listed))

    # ------------------------------------------------------------------ one cycle

    def _cycle(
        self,
        secrets: Sequence[Secret],
        *,
        dry_run: bool,
        prune: bool,
        only: set[str] | None = None,
    ) -> list[PlanItem]:
        existing = self._existing(secrets)
        if isinstance(existing, list):
            return existing
        expansion = self.expand(secrets, existing)
        if only is not None:
            expansion = _limited(expansion, only, {s.name for s in self.config.secrets})
        works = [self._work(s, existing.get(s.name, []), expansion) for s in expansion.secrets]
        key = self._hmac_key(dry_run=dry_run)
        if isinstance(key, str):
            for work in works:
                work.fail(key, "target")
            return expansion.errors + [w.item for w in works]

        self._plan_values(works, key)
        works = self._settle(works, key, existing, expansion, dry_run=dry_run)
        self._plan_consumers(works)
        orphans = self._orphans(existing, secrets, expansion) if prune else {}
        items = (
            expansion.errors
            + [w.item for w in works]
            + [
                PlanItem(name, "delete", version=v[-1].version)
                for name, v in sorted(orphans.items())
            ]
        )
        if dry_run:
            return items
        self._store_key(key, works)
        self.target.created = self._counter(
            CREATING, sum(1 for w in works if w.new is not None and w.item.error is None)
        )
        try:
            self.swap.apply(works, orphans=orphans, items=items)
        finally:
            self.target.created = None
        return items

    def _counter(self, stage: str, total: int) -> Callable[[int], None] | None:
        """A callback adding to ``stage``'s count for ``self.progress`` (None: nobody asks)."""
        progress = self.progress
        if progress is None or total == 0:
            return None
        done = 0

        def add(n: int) -> None:
            nonlocal done
            done = min(done + n, total)
            progress(stage, done, total)

        progress(stage, 0, total)
        return add

    # ------------------------------------------------------------------ settle

    def _settle(
        self,
        works: list[Work],
        key: bytes,
        existing: Mapping[str, list[VersionInfo]],
        expansion: Expansion,
        *,
        dry_run: bool,
    ) -> list[Work]:
        """Secrets with ``settle`` (every group has it) that changed wait that long once,
        then are planned again, so edits made upstream a few seconds apart (a user, then its
        password) land in the same versions and the same consumer updates."""
        by_set: dict[str, list[Work]] = defaultdict(list)
        for work in works:
            if work.secret.settle > 0:
                by_set[work.secret.cutover].append(work)
        changed = {
            name: members
            for name, members in by_set.items()
            if any(w.new is not None and w.item.error is None for w in members)
        }
        if not changed:
            return works
        wait = max(w.secret.settle for members in changed.values() for w in members)
        settled = {w.secret.name for members in changed.values() for w in members}
        if dry_run:
            for work in works:
                if work.secret.name in settled and work.new is not None:
                    work.item.outcome = "settled"
                    work.item.notes.append(
                        f"a real run waits {wait:g}s for related edits ({work.secret.cutover}) "
                        "before swapping"
                    )
            return works
        log.info(
            "%s changed; waiting %gs for related edits to settle", ", ".join(sorted(changed)), wait
        )
        self.sleep(wait)
        originals = {s.name: s for s in expansion.secrets}
        fresh = [
            self._work(originals[w.secret.name], existing.get(w.secret.name, []), expansion)
            for w in works
            if w.secret.name in settled
        ]
        self._plan_values(fresh, key)
        by_name = {w.secret.name: w for w in fresh}
        for work in fresh:
            if work.item.error is None and work.new is not None:
                work.item.outcome = "settled"
                work.item.notes.append(
                    f"settled {wait:g}s with {work.secret.cutover} before swapping"
                )
        return [by_name.get(w.secret.name, w) for w in works]

    # ------------------------------------------------------------------ steps

    def _hmac_key(self, *, dry_run: bool) -> bytes | str:
        """The installation's key (a new one on a first run), or why it can't be had."""
        if self._key is not None:
            return self._key
        try:
            stored = self.target.load_key()
        except Exception as exc:  # noqa: BLE001 - reported on every secret by the caller
            return f"fingerprint key unavailable from the target: {describe(exc)}"
        if stored is not None:
            self._key = stored
            return stored
        if dry_run:
            log.info("no fingerprint key in the target yet; a real run will create one")
        return new_key()

    def _store_key(self, key: bytes, works: Sequence[Work]) -> None:
        """Persist a first-run key, only once something is about to be written with it."""
        if self._key is not None or not any(w.new for w in works):
            return
        if any(w.versions for w in works):
            log.warning(
                "the fingerprint key is missing from the target but versions exist; "
                "every secret will get a new version once"
            )
        try:
            self.target.store_key(key)
            self._key = key
        except Exception as exc:  # noqa: BLE001
            for work in works:
                if work.new is not None:
                    work.fail(f"can't store the fingerprint key: {describe(exc)}", "target")
                    work.new = None

    def _by_provider(self, works: Iterable[Work]) -> dict[str, list[tuple[Work, str, Ref]]]:
        grouped: dict[str, list[tuple[Work, str, Ref]]] = defaultdict(list)
        for work in works:
            for key, ref in work.secret.refs.items():
                grouped[ref.provider].append((work, key, ref))
        return grouped

    def _call_provider(
        self, name: str, entries: list[tuple[Work, str, Ref]], method: str
    ) -> dict[Ref, Any]:
        """Call ``versions`` or ``fetch`` once per provider; any failure lands on its refs."""
        provider = self.provider(name)
        refs = list(dict.fromkeys(ref for _, _, ref in entries))
        log.debug("provider %s: %s for %d references", name, method, len(refs))
        if isinstance(provider, ProviderError):
            return dict.fromkeys(refs, provider)
        try:
            return dict(getattr(provider, method)(refs))
        except ProviderError as exc:
            return dict.fromkeys(refs, exc)
        except Exception as exc:  # noqa: BLE001 - isolate the provider, keep the others
            error = ProviderError(name, "all references", describe(exc))
            return dict.fromkeys(refs, error)

    def _collect_tokens(self, works: Sequence[Work]) -> None:
        grouped = self._by_provider(w for w in works if w.item.error is None)
        count = self._counter(CHECKING, sum(len(entries) for entries in grouped.values()))
        for name, entries in grouped.items():
            results = self._call_provider(name, entries, "versions")
            if count is not None:
                count(len(entries))
            for work, key, ref in entries:
                result = results.get(ref)
                if isinstance(result, ProviderError):
                    work.fail(str(result), "provider", cause=result)
                else:
                    work.tokens[key] = result

    def _settings(self, work: Work) -> dict[str, str]:
        return render_settings(work.secret, self.target.stored_settings(work.secret.spec))

    def _source(self, work: Work, tokens: Mapping[str, str | None]) -> str | None:
        return source_reference(
            work.secret, tokens, settings=self._settings(work), template=work.template
        )

    def _needs_fetch(self, work: Work) -> bool:
        if work.item.error is not None:
            return False
        source = self._source(work, work.tokens)
        latest = work.latest
        if source is None or latest is None:
            return True
        if source == latest.source:
            return False
        return self._seen.get(work.secret.name) != (source, latest.fingerprint)

    def _fetch_changed(self, works: Sequence[Work]) -> None:
        todo = [w for w in works if self._needs_fetch(w)]
        grouped = self._by_provider(todo)
        count = self._counter(FETCHING, sum(len(entries) for entries in grouped.values()))
        for name, entries in grouped.items():
            results = self._call_provider(name, entries, "fetch")
            if count is not None:
                count(len(entries))
            for work, key, ref in entries:
                result = results.get(ref)
                if result is None:
                    result = ProviderError(name, ref.describe(), "provider returned no value")
                if isinstance(result, ProviderError):
                    work.fail(str(result), "provider", cause=result)
                    continue
                self.redactor.register(result.value)
                work.values[key] = result

    def _expiries(self, works: Sequence[Work]) -> None:
        """Each key's expiry: the earliest of its source's metadata and the certificates in
        its value, read this cycle or, at the same version token, in an earlier one."""
        for name, entries in self._by_provider(w for w in works if w.item.error is None).items():
            noted = self._noted_expiry(name, list(dict.fromkeys(ref for _, _, ref in entries)))
            for work, key, ref in entries:
                fetched = work.values.get(key)
                token = work.tokens.get(key)
                if fetched is None:
                    certificate = self.certificates.known(work.secret.name, key, (ref, token))
                    if certificate is None and work.latest is not None:
                        # unread because the newest version holds this value: what was found
                        # in it when it was made (a restarted syncd has read nothing yet)
                        certificate = decode_stored(work.latest.certificates).get(key)
                else:
                    token = fetched.token if fetched.token is not None else token
                    certificate = self.certificates.read(
                        work.secret.name, key, (ref, token), fetched.value
                    )
                if certificate is not None:
                    work.certificates[key] = certificate
                when = earliest(noted.get(ref), certificate)
                if when is not None:
                    work.item.expires[key] = when
        for work in works:
            if work.item.error is None:  # a failed listing says nothing about the keys
                self.certificates.retain(work.secret.name, set(work.secret.refs))

    def _noted_expiry(self, name: str, refs: list[Ref]) -> dict[Ref, float]:
        """What provider ``name`` noted about these references' expiry: finite times only,
        and nothing from a provider whose answer isn't usable (a plugin's bug costs the
        expiry, never the cycle)."""
        provider = self.provider(name)
        if isinstance(provider, ProviderError):
            return {}
        try:
            noted = dict(provider.expiry(refs))
        except Exception as exc:  # noqa: BLE001 - the values still sync
            log.warning("provider %s: can't tell expiry times: %s", name, describe(exc))
            return {}
        return {
            ref: float(when)
            for ref, when in noted.items()
            if isinstance(when, int | float) and not isinstance(when, bool) and math.isfinite(when)
        }

    def _render(self, works: Sequence[Work], key: bytes) -> None:
        for work in works:
            if work.item.error is not None or not work.values:
                continue
            secret = work.secret
            tokens = {
                k: (f.token if f.token is not None else work.tokens.get(k))
                for k, f in work.values.items()
            }
            source = self._source(work, tokens) or ""
            try:
                data = render(
                    secret,
                    {k: f.value for k, f in work.values.items()},
                    limit=self.target.max_value_bytes(),
                )
            except ValueError as exc:
                work.fail(str(exc), "input")
                continue
            settings = self._settings(work)
            fingerprint = bundle_fingerprint(key, data, settings)
            keys = key_fingerprints(key, data)
            current = work.latest
            if current is not None and current.fingerprint == fingerprint:
                self._seen[secret.name] = (source, fingerprint)
                if source and source != current.source and work.failed is None:
                    work.resourced = source
                continue
            work.item.action = "update" if current else "create"
            work.item.version = (current.version if current else 0) + 1
            work.item.changed_keys = sorted(
                k
                for k in set(keys) | set(current.keys if current else {})
                if current is None or keys.get(k) != current.keys.get(k)
            )
            if current is not None and not work.item.changed_keys:
                work.item.notes.append(f"stored with new settings: {', '.join(sorted(settings))}")
            work.new = NewVersion(
                secret=secret.name,
                version=work.item.version,
                data=data,
                fingerprint=fingerprint,
                keys=keys,
                source=source,
                created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                certificates=encode_stored(work.certificates),
            )

    def _plan_consumers(self, works: Sequence[Work]) -> None:
        if not self.target.has_consumers:
            return
        live = [w for w in works if w.item.error is None]
        # the targets judge a rollout against the secret's own timeout, defaults applied
        specs = [w.secret.spec.model_copy(update={"timeout": w.secret.timeout}) for w in live]
        try:
            found = self.target.find_consumers(specs, {w.secret.name: w.versions for w in live})
        except Exception as exc:  # noqa: BLE001 - consumers unknown: no secret may swap
            for work in live:
                work.fail(
                    f"can't list consumers: {describe(exc)}", "target", transient=is_transient(exc)
                )
            return
        for work in live:
            result = found.get(work.secret.name, [])
            if isinstance(result, TargetError):
                work.fail(str(result), "target", transient=result.transient)
                continue
            work.item.notes.extend(
                f"{c.label} is named in 'consumers' but doesn't exist yet; it is repointed "
                "once it does"
                for c in result
                if c.missing
            )
            work.consumers = [c for c in result if not c.missing]
            self.rollouts.plan(work)
        self.rollouts.plan_groups(works)

    # ------------------------------------------------------------------ prune

    def _orphans(
        self,
        existing: Mapping[str, list[VersionInfo]],
        secrets: Sequence[Secret],
        expansion: Expansion,
    ) -> dict[str, list[VersionInfo]]:
        """This installation's secrets that the config no longer names (``prune: true``).

        Needs the whole config: the ``for_each`` templates outside this pass are listed too,
        and any listing that failed (or shrank too much) means nothing is pruned at all.
        """
        if not expansion.complete:
            return {}
        names = {s.name for s in expansion.secrets} | {e.name for e in expansion.errors}
        chosen = {s.name for s in secrets}
        others = [s for s in self.config.secrets if s.name not in chosen]
        rest = self.expand(others, existing)
        if not rest.complete:
            return {}
        names |= {s.name for s in rest.secrets} | {e.name for e in rest.errors}
        return {n: v for n, v in existing.items() if n not in names and v}


def _lost_too_much(where: str, before: set[str], now: set[str], limit: float) -> str | None:
    """Why a listing that went from ``before`` to ``now`` can't be trusted, or ``None``."""
    if not before:
        return None
    lost = len(before - now)
    if lost / len(before) <= limit:
        return None
    return (
        f"{where} lost {lost} of {len(before)} keys at once (more than max_shrink "
        f"{limit:g}); nothing is synced or pruned from it this cycle. If the keys really "
        "went away, raise max_shrink on the secret (1 allows any shrink)"
    )


def _left_alone(work: Work) -> bool:
    """``refresh: never`` with a version stored: no provider is asked about it again (the
    plan says so). Until one is stored (the first try failed) it is synced as usual."""
    if not work.secret.once or work.latest is None:
        return False
    work.item.notes.append(NEVER_NOTE)
    return True


def _ver(version: VersionInfo) -> int:
    return version.version
