"""The ``vault`` provider: HashiCorp Vault and OpenBao KV (v2 and v1) through hvac.

Why it looks the way it does:

- **Change detection without reading values.** For KV v2 one metadata record per secret (from
  a detailed-metadata folder LIST on OpenBao, or one metadata read) gives a token that
  identifies the value: the version number and that version's ``created_time``
  (``metadata.py`` says why the number alone is not enough). The engine fetches a value only
  when the token moved. KV v1 has no versions, so ``versions`` answers ``None`` and the engine
  reads and fingerprints every cycle.
- **Expiry from metadata.** A KV v2 version that ``delete_version_after`` will delete carries
  that time as its ``deletion_time``, in the metadata record and in the data read: it is the
  version's expiry (``note_expiry``). ``custom_metadata`` is free-form and is not read.
- **One login per process** (``tokens.py``): a cycle never logs in.
- **Per-reference errors.** Every failure ends up as one ``ProviderError`` per reference,
  naming the provider and the KV path (never a value, never a token). Retries and the hold on
  a dead server are in ``calls.py``: a hung Vault costs a cycle about two timeouts.
- **Bounded concurrency.** Vault has no batch read, so reads of distinct paths run on a small
  thread pool; several references to one path (different ``key``s, pins) share one call.
- **One JSON rule** (``providers.base``): a picked string field gives its text, any other
  field its compact JSON with sorted keys, the whole map compact sorted JSON.

Submodules: ``settings`` (config and reference), ``calls`` (one HTTP call), ``tokens``
(login and renewal), ``metadata`` (version tokens). hvac is imported only when a provider is
built, so ``syncd check`` works without it and says which extra to install.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Hashable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from providers.base import Provider, ProviderConfig, ProviderContext, Ref, compact_json, field_bytes
from providers.base import utf8 as _utf8
from providers.vault.calls import Caller, Failure
from providers.vault.metadata import (
    Folder,
    KvPath,
    deleted,
    expiry_of,
    field,
    timestamp,
    token_of,
    version_token,
)
from providers.vault.settings import (
    AppRoleAuth,
    JwtAuth,
    KubernetesAuth,
    TokenAuth,
    VaultProviderConfig,
    VaultRef,
)
from providers.vault.tokens import Tokens
from syncd.errors import ProviderError, SyncdError
from syncd.model import Fetched
from syncd.registry import missing_modules

__all__ = [
    "AppRoleAuth",
    "JwtAuth",
    "KubernetesAuth",
    "TokenAuth",
    "VaultProvider",
    "VaultProviderConfig",
    "VaultRef",
]

log = logging.getLogger("syncd.providers.vault")

#: Entries per page of a detailed-metadata LIST.
LIST_PAGE = 500
#: A folder is listed (instead of reading metadata per secret) from this many secrets on.
LIST_MIN = 2
#: What the provider imports when it is built, and the extra that installs it.
NEEDS = ("hvac", "requests")
INSTALL_HINT = "pip install 'syncd[vault]'"

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class _Read:
    """One KV data read: several references to the same path and version share it."""

    at: KvPath
    version: int | None


@dataclass(frozen=True)
class _Secret:
    """What one KV read returned: the map, the token of the version it came from, and when
    ``delete_version_after`` deletes that version (Unix seconds)."""

    data: dict[str, Any]
    token: str | None
    expires: float | None = None


class VaultProvider(Provider[VaultProviderConfig, VaultRef]):
    """Reads KV v2/v1 secrets from Vault or OpenBao with one long-lived, renewed token."""

    type_name: ClassVar[str] = "vault"
    config_model: ClassVar[type[ProviderConfig]] = VaultProviderConfig
    ref_model: ClassVar[type[Ref]] = VaultRef

    @classmethod
    def unavailable(cls) -> str | None:
        """hvac (and requests) not installed: name the extra, without importing them."""
        return missing_modules("the vault provider", NEEDS, "vault")

    def __init__(self, config: VaultProviderConfig, *, context: ProviderContext) -> None:
        super().__init__(config, context=context)
        try:
            import hvac
            import requests
        except ImportError as exc:
            raise SyncdError(f"the vault provider needs hvac: {INSTALL_HINT}") from exc
        self.addr = (config.addr or os.environ.get("VAULT_ADDR") or "").rstrip("/")
        if not self.addr:
            raise SyncdError("no Vault address: set 'addr' or the VAULT_ADDR environment variable")
        ca = config.ca_cert or os.environ.get("VAULT_CACERT")
        verify: bool | str = True
        if ca:
            ca_path = context.base_dir / os.path.expanduser(ca)
            if not ca_path.is_file():
                raise SyncdError(f"ca_cert {ca_path} does not exist")
            verify = str(ca_path)
        namespace = config.namespace or os.environ.get("VAULT_NAMESPACE") or None
        session = requests.Session()
        session.verify = verify  # hvac takes a given session's verify over its own argument
        self._client = hvac.Client(
            url=self.addr,
            verify=verify,
            namespace=namespace,
            timeout=config.timeout,
            session=session,
        )
        self._caller = Caller(
            addr=self.addr,
            auth_method=config.auth.method,
            timeout=config.timeout,
            retries=config.retries,
            backoff=config.backoff,
            count=lambda operation, status: self.count(operation, status=status),
            hvac=hvac,
            requests=requests,
        )
        session.hooks["response"].append(self._caller.note_answer)
        self._tokens = Tokens(
            name=self.name,
            config=config,
            client=self._client,
            caller=self._caller,
            base_dir=context.base_dir,
        )
        self._pool: ThreadPoolExecutor | None = None
        self._no_metadata: set[KvPath] = set()  # secrets whose metadata the policy hides
        self._no_list: set[str] = set()  # mounts without detailed-metadata LIST for us

    # ------------------------------------------------------------------ interface

    def versions(self, refs: Sequence[VaultRef]) -> Mapping[VaultRef, str | ProviderError | None]:
        """KV v2: a token from each secret's metadata record (listed or read); v1: ``None``."""
        if self.config.kv_version == 1:
            return dict.fromkeys(refs, None)
        by_path: dict[KvPath, list[VaultRef]] = {}
        for ref in refs:
            by_path.setdefault(self._where(ref), []).append(ref)
        listed = self._list_metadata(list(by_path))
        records = self._batch(
            [p for p in by_path if listed.get(p) is None],
            self._read_metadata,
            denied=self._no_metadata_access,
        )
        self._learn_list_support(listed, records)
        records.update({p: r for p, r in listed.items() if r is not None})
        result: dict[VaultRef, str | ProviderError | None] = {}
        for at, record in records.items():
            where = at.api_path(2)
            for ref in by_path[at]:
                if isinstance(record, Failure):
                    result[ref] = self._error(ref, record)
                    continue
                token = token_of(record, ref.version, where) if record is not None else None
                result[ref] = self._error(ref, token) if isinstance(token, Failure) else token
                self.note_expiry(ref, expiry_of(record, ref.version))
        return result

    def fetch(self, refs: Sequence[VaultRef]) -> Mapping[VaultRef, Fetched | ProviderError]:
        """Read each distinct path (and pinned version) once, concurrently; pick fields."""
        result: dict[VaultRef, Fetched | ProviderError] = {}
        reads: dict[_Read, list[VaultRef]] = {}
        for ref in refs:
            if ref.version is not None and self.config.kv_version == 1:
                result[ref] = self.error(ref, "a version pin needs a KV v2 mount (kv_version: 2)")
                continue
            reads.setdefault(_Read(self._where(ref), ref.version), []).append(ref)
        answers = self._batch(list(reads), self._read_secret)
        for read, answer in answers.items():
            for ref in reads[read]:
                if isinstance(answer, Failure):
                    result[ref] = self._error(ref, answer)
                else:
                    result[ref] = self._pick(ref, read, answer)
        return result

    def close(self) -> None:
        """Stop the renewal timer and the pool; revoke a token this process logged in for."""
        self._tokens.close()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    # ------------------------------------------------------------------ batching

    def _where(self, ref: VaultRef) -> KvPath:
        return KvPath(ref.mount or self.config.mount.strip("/"), ref.path)

    def _batch(
        self,
        reads: list[K],
        one: Callable[[K], T],
        *,
        denied: Callable[[K], T] | None = None,
    ) -> dict[K, T | Failure]:
        """Run ``one`` for every read on the pool, after making sure a token is in hand.

        A 403 can mean a dead token (revoked, expired while the process slept) rather than a
        missing grant; one ``lookup-self`` per batch tells which, and only a dead token gets a
        new login and a retry, so a path the policy denies costs no login. What the policy
        really denies goes to ``denied`` when given.
        """
        if not reads:
            return {}
        try:
            self._tokens.ensure()
        except Failure as exc:
            return dict.fromkeys(reads, exc)
        answers = self._run(reads, one)
        refused = [r for r, a in answers.items() if isinstance(a, Failure) and a.status == 403]
        if refused:
            verdict = self._tokens.after_denial()
            if isinstance(verdict, Failure):
                answers.update(dict.fromkeys(refused, verdict))
                return answers
            if verdict:
                answers.update(self._run(refused, one))
                refused = [r for r in refused if _is_denial(answers[r])]
        if denied is not None:
            for read in refused:
                answers[read] = denied(read)
        return answers

    def _run(self, reads: list[K], one: Callable[[K], T]) -> dict[K, T | Failure]:
        def guarded(read: K) -> T | Failure:
            try:
                return one(read)
            except Failure as exc:
                return exc

        if len(reads) == 1:
            return {reads[0]: guarded(reads[0])}
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                max_workers=self.config.concurrency, thread_name_prefix=f"vault-{self.name}"
            )
        return dict(zip(reads, self._pool.map(guarded, reads), strict=True))

    # ------------------------------------------------------------------ metadata

    def _list_metadata(self, paths: list[KvPath]) -> dict[KvPath, object | Failure | None]:
        """Metadata records from one detailed-metadata LIST per folder holding several secrets.

        OpenBao lists every secret of a folder with its metadata in one call, so a no-change
        cycle over a thousand secrets in a few folders costs a few calls instead of a thousand.
        A secret the listing can't answer maps to ``None`` (read its metadata on its own).
        """
        if not self.config.list_metadata:
            return {}
        by_folder: dict[tuple[str, str], dict[str, KvPath]] = {}
        for at in paths:
            folder, _, name = at.path.rpartition("/")
            by_folder.setdefault((at.mount, folder), {})[name] = at
        folders = [
            Folder(mount, folder, frozenset(names))
            for (mount, folder), names in by_folder.items()
            if len(names) >= LIST_MIN and mount not in self._no_list
        ]
        result: dict[KvPath, object | Failure | None] = {}
        listed = self._batch(folders, self._list_folder, denied=self._no_list_access)
        for group, answer in listed.items():
            for name, at in by_folder[(group.mount, group.folder)].items():
                result[at] = answer if isinstance(answer, Failure) else answer.get(name)
        return result

    def _list_folder(self, folder: Folder) -> dict[str, object]:
        found: dict[str, object] = {}
        last_wanted = max(folder.names)
        after = ""
        while True:
            params: dict[str, str | int] = {"limit": LIST_PAGE}
            if after:
                params["after"] = after
            try:
                response = self._caller.call(
                    "list_metadata",
                    lambda p=params: self._client.adapter.list(  # type: ignore[misc]
                        f"/v1/{folder.api_path()}", params=p
                    ),
                    where=folder.api_path(),
                )
            except Failure as exc:
                if exc.status in (400, 405, 501):  # the server has no such listing
                    self._no_list.add(folder.mount)
                if exc.status in (400, 404, 405, 501):
                    return found  # no such folder, or no such endpoint: read one by one
                raise
            data = field(response, "data")
            listed = data.get("keys")
            keys = [k for k in listed if isinstance(k, str)] if isinstance(listed, list) else []
            infos = field(data, "key_info")
            for name in folder.names & set(infos):
                found[name] = infos[name]
            if len(keys) < LIST_PAGE or keys[-1] >= last_wanted or folder.names <= set(found):
                return found
            after = keys[-1]

    def _no_list_access(self, folder: Folder) -> dict[str, object]:
        """The policy grants no LIST on detailed-metadata: read metadata per secret."""
        log.info(
            "%s: no list access to %s; reading metadata per secret instead",
            self.name,
            folder.api_path(),
        )
        self._no_list.add(folder.mount)
        return {}

    def _learn_list_support(
        self, listed: dict[KvPath, object | Failure | None], records: dict[KvPath, Any]
    ) -> None:
        """A listing that found nothing where single reads found secrets: no such endpoint.

        HashiCorp Vault has no detailed-metadata LIST and answers 404, like a missing folder;
        stop listing that mount once a secret the listing missed turns out to exist.
        """
        for at, listed_answer in listed.items():
            if listed_answer is None and isinstance(records.get(at), dict):
                if at.mount not in self._no_list:
                    log.info("%s: %s/ has no detailed-metadata list", self.name, at.mount)
                self._no_list.add(at.mount)

    def _no_metadata_access(self, at: KvPath) -> None:
        """A policy that grants data/ but not metadata/: fall back to read-and-compare."""
        log.warning(
            "%s: no read access to %s; reading its value every cycle instead",
            self.name,
            at.api_path(2, "metadata"),
        )
        self._no_metadata.add(at)

    def _read_metadata(self, at: KvPath) -> object:
        """The secret's metadata record (``None`` where the policy hides metadata)."""
        if at in self._no_metadata:
            return None
        response = self._caller.call(
            "read_metadata",
            lambda: self._client.secrets.kv.v2.read_secret_metadata(
                path=at.path, mount_point=at.mount
            ),
            where=at.api_path(2, "metadata"),
        )
        return field(response, "data") or None

    # ------------------------------------------------------------------ data

    def _read_secret(self, read: _Read) -> _Secret:
        at = read.at
        where = at.api_path(self.config.kv_version)
        if self.config.kv_version == 1:
            response = self._caller.call(
                "read",
                lambda: self._client.secrets.kv.v1.read_secret(path=at.path, mount_point=at.mount),
                where=where,
            )
            data = response.get("data") if isinstance(response, dict) else None
            if not isinstance(data, dict):
                raise Failure(f"{where}: the answer holds no key/value map (is it a KV mount?)")
            return _Secret(data, None)
        response = self._caller.call(
            "read",
            lambda: self._client.secrets.kv.v2.read_secret_version(
                path=at.path,
                version=read.version,
                mount_point=at.mount,
                raise_on_deleted_version=False,
            ),
            where=where,
        )
        body = field(response, "data")
        metadata = field(body, "metadata")
        which = f"version {read.version}" if read.version else "the current version"
        if metadata.get("destroyed"):
            raise Failure(f"{where}: {which} is destroyed")
        if deleted(metadata.get("deletion_time")):
            raise Failure(f"{where}: {which} is deleted")
        values = body.get("data")
        if not isinstance(values, dict):
            raise Failure(f"{where}: the answer holds no key/value map (is it a KV v2 mount?)")
        return _Secret(
            values,
            version_token(metadata.get("version"), metadata.get("created_time")),
            timestamp(metadata.get("deletion_time")),
        )

    def _pick(self, ref: VaultRef, read: _Read, secret: _Secret) -> Fetched | ProviderError:
        where = read.at.api_path(self.config.kv_version)
        try:
            if ref.key is None:
                data = _utf8(compact_json(secret.data))
            elif ref.key not in secret.data:
                return self.error(ref, f"{where}: field {ref.key!r} not found")
            elif secret.data[ref.key] is None:
                return self.error(ref, f"{where}: field {ref.key!r} is null")
            else:
                data = field_bytes(secret.data[ref.key])
        except (ValueError, RecursionError) as exc:
            reason = str(exc) if isinstance(exc, ValueError) else "the map is nested too deeply"
            return self.error(ref, f"{where}: {reason}")
        try:
            fetched = Fetched(ref.decoded(data), secret.token)
        except ProviderError as exc:
            return exc
        self.note_expiry(ref, secret.expires)
        return fetched

    def _error(self, ref: VaultRef, failure: Failure) -> ProviderError:
        return self.error(ref, failure.message, transient=failure.transient)


def _is_denial(answer: object) -> bool:
    return isinstance(answer, Failure) and answer.status == 403
