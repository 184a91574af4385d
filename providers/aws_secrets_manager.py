"""The ``aws-secrets-manager`` provider: secrets from AWS Secrets Manager, read only on change.

A cycle costs one ``ListSecrets`` page per 100 configured secrets when nothing changed:
the listing carries each secret's version ids and staging labels (``SecretVersionsToStages``)
without any value, so the version id behind the wanted stage is the change token. Only the
secrets whose token moved are read, 20 per ``BatchGetSecretValue`` call. The version id,
not ``LastChangedDate``, is the token because the date also moves on tag and description
edits, which would re-read values for nothing; every value change makes a new version id.

A version id alone does not identify a value, though: a secret deleted and created again
under the same name may reuse one (``ClientRequestToken`` sets it), so the token also holds
the random suffix of the secret's ARN, which every creation draws anew:
``<version id>@<ARN suffix>``. The listing and the value reads both carry the ARN, so both
give the same token. A ``version_id`` pin is matched the same way: the same id on a
re-created secret is another value.

``ListSecrets`` filters by name *prefix*, at most 10 values per call. The configured names
are therefore merged into at most 10 common prefixes (``app/db-1``, ``app/db-2`` ->
``app/db-``) so one paginated listing covers them; extra matches are ignored.

Not covered by the listing, and read every cycle instead: secrets in another account or
region (an ARN the listing can't show), and secrets ``ListSecrets`` can't list because the
role lacks ``secretsmanager:ListSecrets`` (then a warning is logged). A denied
``ListSecrets`` or ``BatchGetSecretValue`` is tried again after ``DENIED_RETRY``, not never:
a denial can be passing (a policy being edited, credentials refused for a while), and cheap
change detection must come back by itself; trying every cycle would fill CloudTrail with
denials for an identity that is meant to lack the permission.
Pins: a ``version_id`` is read once per secret creation; a ``version_stage`` other than
``AWSCURRENT`` is read with ``GetSecretValue`` (``BatchGetSecretValue`` only reads AWSCURRENT).
"""

from __future__ import annotations

import hashlib
import itertools
import re
import time
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, model_validator

from providers._aws import AwsCallError, AwsProviderConfig, AwsSession, log, missing_sdk
from providers.base import Provider, ProviderConfig, ProviderContext, Ref, Unverified, json_field
from syncd.errors import ProviderError
from syncd.model import Fetched

CURRENT = "AWSCURRENT"
#: ListSecrets: at most 10 filter values, 100 results a page. BatchGetSecretValue: 20 ids.
FILTER_VALUES = 10
LIST_PAGE = 100
BATCH_SIZE = 20
_ARN_SUFFIX = re.compile(r"-[A-Za-z0-9]{6}$")
#: What a version id looks like (a UUID, or a ClientRequestToken of 32-64 characters).
_VERSION_ID = re.compile(r"[\w.:+=@-]{1,64}")
#: After ListSecrets or BatchGetSecretValue was denied, do without it this long.
DENIED_RETRY = 3600.0


class AwsSecretsManagerConfig(AwsProviderConfig):
    """``{type: aws-secrets-manager, region: eu-west-1}``."""

    type: Literal["aws-secrets-manager"]


def _tag_pairs(value: object) -> object:
    """Tags arrive as a mapping; they are kept as sorted pairs so a reference stays hashable."""
    return tuple(sorted(value.items())) if isinstance(value, dict) else value


class AwsFind(BaseModel):
    """``find: {prefix: pmoves/, tags: {team: ai}}``: every secret matching both."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prefix: str | None = Field(None, min_length=1, description="Secret names starting with this.")
    tags: Annotated[
        tuple[tuple[str, str], ...],
        BeforeValidator(_tag_pairs),
        WithJsonSchema({"type": "object", "additionalProperties": {"type": "string"}}),
    ] = Field((), description="Tags every matching secret carries (key: value).")

    @model_validator(mode="after")
    def _something(self) -> AwsFind:
        if self.prefix is None and not self.tags:
            raise ValueError("find needs a 'prefix', 'tags' or both")
        return self


class AwsSecretRef(Ref):
    """``{provider: aws, name: prod/db, key: password}``."""

    name: str = Field("", max_length=2048, description="Secret name or ARN (full or partial).")
    find: AwsFind | None = Field(
        None,
        description="With data_from: a bundle of every secret matching a name prefix and/or "
        "tags (keys: the names without the prefix).",
    )
    key: str | None = Field(
        None, min_length=1, description="Pick this top-level field of a JSON secret."
    )
    version_stage: str | None = Field(
        None, min_length=1, max_length=256, description="Read the version with this label."
    )
    version_id: str | None = Field(
        None, min_length=32, max_length=64, description="Read exactly this version."
    )

    @model_validator(mode="after")
    def _one_pin(self) -> AwsSecretRef:
        if self.version_stage is not None and self.version_id is not None:
            raise ValueError("give at most one of 'version_stage' and 'version_id'")
        if bool(self.name) == (self.find is not None):
            raise ValueError("give exactly one of 'name' and 'find'")
        return self

    @property
    def stage(self) -> str:
        """The staging label this reference follows (AWSCURRENT unless pinned)."""
        return self.version_stage or CURRENT

    @property
    def batchable(self) -> bool:
        """Whether ``BatchGetSecretValue`` can read it (it reads only AWSCURRENT)."""
        return self.version_id is None and self.stage == CURRENT

    def describe(self) -> str:
        """``aws:prod/db#password?stage=AWSPREVIOUS`` (``aws:find(prefix=pmoves/)``)."""
        if self.find is not None:
            tags = ",".join(f"{k}={v}" for k, v in self.find.tags)
            return f"{self.provider}:find(prefix={self.find.prefix or ''};tags={tags})"
        text = f"{self.provider}:{self.name}"
        if self.key is not None:
            text += f"#{self.key}"
        if self.version_id is not None:
            text += f"?version_id={self.version_id}"
        elif self.version_stage is not None:
            text += f"?stage={self.version_stage}"
        return text


class AwsSecretsManagerProvider(Provider[AwsSecretsManagerConfig, AwsSecretRef]):
    """Reads AWS Secrets Manager with batched change detection and batched reads."""

    type_name: ClassVar[str] = "aws-secrets-manager"
    config_model: ClassVar[type[ProviderConfig]] = AwsSecretsManagerConfig
    ref_model: ClassVar[type[Ref]] = AwsSecretRef

    @classmethod
    def unavailable(cls) -> str | None:
        """boto3 not installed: name the extra (checked at config load, without importing)."""
        return missing_sdk("aws-secrets-manager")

    def __init__(self, config: AwsSecretsManagerConfig, *, context: ProviderContext) -> None:
        super().__init__(config, context=context)
        self.aws = AwsSession(config, count=lambda op, status: self.count(op, status=status))
        self.client = self.aws.client("secretsmanager")
        self._list_denied_until = 0.0  # monotonic time until which ListSecrets isn't tried
        self._batch_denied_until = 0.0  # the same for BatchGetSecretValue

    def close(self) -> None:
        """Close the HTTP connections."""
        self.aws.close()

    # ------------------------------------------------------------------ change detection

    def versions(
        self, refs: Sequence[AwsSecretRef]
    ) -> Mapping[AwsSecretRef, str | ProviderError | None]:
        """``<version id>@<ARN suffix>`` behind each reference's stage or pin, from one listing."""
        result: dict[AwsSecretRef, str | ProviderError | None] = {}
        listed = self._single(refs, result)
        if not listed:
            return result
        index = self._listing(listed)
        if isinstance(index, AwsCallError):
            for ref in listed:
                result[ref] = self.error(ref, str(index), transient=index.transient)
            return result
        for ref in listed:
            entry = index.get(ref.name) if index is not None else None
            if entry is None:
                result[ref] = None  # not listed: the read decides (and says "not found")
                continue
            version = ref.version_id or _stage_version(entry, ref.stage)
            result[ref] = _token(version, entry.get("ARN")) if version else None
        return result

    def _single(
        self, refs: Sequence[AwsSecretRef], errors: MutableMapping[AwsSecretRef, Any]
    ) -> list[AwsSecretRef]:
        """The references that name one secret; each ``find`` (many secrets, only for
        ``data_from``) gets its error in ``errors``."""
        single = []
        for ref in refs:
            if ref.find is not None:
                errors[ref] = self.error(ref, "'find' names many secrets: use it with data_from")
            else:
                single.append(ref)
        return single

    def check(
        self, refs: Sequence[AwsSecretRef]
    ) -> Mapping[AwsSecretRef, ProviderError | Unverified | None]:
        """For ``syncd doctor``, from the same listing: a listed secret passes (a stage no
        version carries is a problem); one the listing doesn't show can't be judged without
        reading it (another account's secret shared by ARN, a missing one, ``ListSecrets``
        denied) and is ``Unverified``: the next cycle's read decides."""
        result: dict[AwsSecretRef, ProviderError | Unverified | None] = {}
        listed = self._single(refs, result)
        index = self._listing(listed) if listed else {}
        for ref in listed:
            if isinstance(index, AwsCallError):
                result[ref] = self.error(ref, str(index), transient=index.transient)
            elif index is None:
                result[ref] = self.unverified(
                    ref, "ListSecrets is not allowed for this identity, so it can't be looked up"
                )
            elif (entry := index.get(ref.name)) is None:
                result[ref] = self.unverified(ref, _unlisted(ref.name))
            elif ref.version_id is not None and ref.version_id not in (
                entry.get("SecretVersionsToStages") or {}
            ):
                result[ref] = self.unverified(
                    ref, "the listing shows no staging label on that version_id"
                )
            elif ref.version_id is None and _stage_version(entry, ref.stage) is None:
                result[ref] = self.error(ref, f"no version carries the staging label {ref.stage!r}")
            else:
                result[ref] = None
        return result

    def _listing(
        self, refs: Sequence[AwsSecretRef]
    ) -> dict[str, dict[str, Any]] | AwsCallError | None:
        """The ``ListSecrets`` index covering ``refs``; ``None`` while listing is denied
        (logged once per ``DENIED_RETRY``), the error when the listing failed otherwise."""
        if time.monotonic() < self._list_denied_until:
            return None
        try:
            return self._list(ref.name for ref in refs)
        except AwsCallError as exc:
            if not exc.access_denied:
                return exc
        self._list_denied_until = time.monotonic() + DENIED_RETRY
        self._warn(
            "ListSecrets is not allowed for this identity; every secret is read every "
            f"cycle for the next {DENIED_RETRY:g} s (grant secretsmanager:ListSecrets for "
            "cheap change detection)"
        )
        return None

    def list_keys(self, ref: AwsSecretRef) -> Mapping[str, Ref] | ProviderError:
        """Every secret ``ref.find`` matches, by name without the prefix (for data_from).

        One paginated ``ListSecrets`` filtered by name prefix and tag keys; tag values are
        then matched exactly (the API's tag filters match keys and values separately).
        """
        if ref.find is None:
            return self.error(ref, "data_from needs 'find' (a name prefix and/or tags)")
        find = ref.find
        filters = []
        if find.prefix:
            filters.append({"Key": "name", "Values": [find.prefix]})
        if find.tags:
            filters.append({"Key": "tag-key", "Values": [k for k, _ in find.tags]})
        wanted = dict(find.tags)
        found: dict[str, Ref] = {}
        try:
            for entry in self.aws.pages(
                self.client,
                "ListSecrets",
                result_key="SecretList",
                Filters=filters,
                MaxResults=LIST_PAGE,
            ):
                tags = {t.get("Key"): t.get("Value") for t in entry.get("Tags") or []}
                name = str(entry["Name"])
                if all(tags.get(k) == v for k, v in wanted.items()):
                    key = name.removeprefix(find.prefix or "") or name
                    found[key] = ref.model_copy(update={"name": name, "find": None})
        except AwsCallError as exc:
            return self.error(ref, str(exc), transient=exc.transient)
        return found

    def _warn(self, message: str) -> None:
        """Log a provider-level warning (never about a value)."""
        log.warning("provider %r: %s", self.name, message)

    def _list(self, names: Iterable[str]) -> dict[str, dict[str, Any]]:
        """``ListSecrets`` entries covering ``names``, keyed by name, ARN and partial ARN."""
        index: dict[str, dict[str, Any]] = {}
        for values in filter_groups(_filter_name(n) for n in names):
            for entry in self.aws.pages(
                self.client,
                "ListSecrets",
                result_key="SecretList",
                Filters=[{"Key": "name", "Values": values}],
                MaxResults=LIST_PAGE,
            ):
                index[entry["Name"]] = entry
                arn = str(entry.get("ARN") or "")
                if arn:
                    index[arn] = entry
                    index[arn[:-7]] = entry  # partial ARN (without the random suffix)
        return index

    # ------------------------------------------------------------------ reading

    def fetch(self, refs: Sequence[AwsSecretRef]) -> Mapping[AwsSecretRef, Fetched | ProviderError]:
        """Values of ``refs``: AWSCURRENT ones 20 per batch call, pinned ones one by one."""
        result: dict[AwsSecretRef, Fetched | ProviderError] = {}
        batch = [ref for ref in refs if ref.batchable]
        raw: dict[str, dict[str, Any] | AwsCallError] = {}
        if batch:
            raw.update(self._batch_read(list(dict.fromkeys(ref.name for ref in batch))))
        for ref in refs:
            answer = raw.get(ref.name) if ref.batchable else self._read_one(ref)
            if answer is None:
                result[ref] = self.error(ref, "Secrets Manager returned no value for it")
            elif isinstance(answer, AwsCallError):
                result[ref] = self.error(ref, str(answer), transient=answer.transient)
            else:
                result[ref] = self._value(ref, answer)
        return result

    def _batch_read(self, ids: list[str]) -> dict[str, dict[str, Any] | AwsCallError]:
        out: dict[str, dict[str, Any] | AwsCallError] = {}
        for start in range(0, len(ids), BATCH_SIZE):
            chunk = ids[start : start + BATCH_SIZE]
            if time.monotonic() < self._batch_denied_until:
                out.update({i: self._get(i, {}) for i in chunk})
                continue
            try:
                out.update(self._batch_chunk(chunk))
            except AwsCallError as exc:
                if not exc.access_denied:
                    out.update(dict.fromkeys(chunk, exc))
                    continue
                self._batch_denied_until = time.monotonic() + DENIED_RETRY
                self._warn(
                    "BatchGetSecretValue is not allowed for this identity; reading one secret "
                    f"per call for the next {DENIED_RETRY:g} s (grant "
                    "secretsmanager:BatchGetSecretValue for batched reads)"
                )
                out.update({i: self._get(i, {}) for i in chunk})
        return out

    def _batch_chunk(self, chunk: list[str]) -> dict[str, dict[str, Any] | AwsCallError]:
        found: dict[str, dict[str, Any]] = {}
        out: dict[str, dict[str, Any] | AwsCallError] = {}
        token: str | None = None
        while True:
            page = self.aws.call(
                self.client,
                "BatchGetSecretValue",
                SecretIdList=chunk,
                **({"NextToken": token} if token else {}),
            )
            for value in page.get("SecretValues") or []:
                found[value["Name"]] = value
                arn = str(value.get("ARN") or "")
                if arn:
                    found[arn] = value
                    found[arn[:-7]] = value
            for err in page.get("Errors") or []:
                code = str(err.get("ErrorCode") or "error")
                out[str(err.get("SecretId"))] = AwsCallError(
                    "BatchGetSecretValue",
                    _secret_error(code, str(err.get("Message") or "")),
                    transient=code in ("ThrottlingException", "InternalServiceError"),
                    code=code,
                )
            token = page.get("NextToken")
            if not token:
                break
        for secret_id in chunk:
            if secret_id in found:
                out[secret_id] = found[secret_id]
        return out

    def _read_one(self, ref: AwsSecretRef) -> dict[str, Any] | AwsCallError:
        pin = (
            {"VersionId": ref.version_id}
            if ref.version_id is not None
            else {"VersionStage": ref.stage}
        )
        return self._get(ref.name, pin)

    def _get(self, secret_id: str, pin: dict[str, str]) -> dict[str, Any] | AwsCallError:
        try:
            return self.aws.call(self.client, "GetSecretValue", SecretId=secret_id, **pin)
        except AwsCallError as exc:
            if exc.code == "ResourceNotFoundException":
                where = " ".join(f"{k}={v}" for k, v in pin.items())
                return AwsCallError(
                    exc.operation,
                    f"secret not found{' (' + where + ')' if where else ''}",
                    transient=False,
                    code=exc.code,
                )
            return exc

    def _value(self, ref: AwsSecretRef, answer: dict[str, Any]) -> Fetched | ProviderError:
        version = answer.get("VersionId")
        token = _token(version, answer.get("ARN")) if isinstance(version, str) else None
        string = answer.get("SecretString")
        binary = answer.get("SecretBinary")
        try:
            if ref.key is not None:
                if string is None:
                    return self.error(
                        ref, f"key {ref.key!r} asked, but the secret is binary (SecretBinary)"
                    )
                data = json_field(string, ref.key)
            elif string is not None:
                data = string.encode("utf-8")
            elif isinstance(binary, bytes | bytearray):
                data = bytes(binary)
            else:
                return self.error(ref, "the secret has neither SecretString nor SecretBinary")
            return Fetched(ref.decoded(data), token)
        except ValueError as exc:
            return self.error(ref, str(exc))
        except ProviderError as exc:
            return exc


def _secret_error(code: str, message: str) -> str:
    if code == "ResourceNotFoundException":
        return "secret not found"
    if code in ("AccessDeniedException", "AccessDenied"):
        return f"access denied ({message[:200]}) - check the IAM permissions"
    return f"{code}: {message[:200]}" if message else code


def _filter_name(secret_id: str) -> str:
    """The name prefix ``ListSecrets`` can filter on for a name or an ARN."""
    if secret_id.startswith("arn:") and ":secret:" in secret_id:
        return _ARN_SUFFIX.sub("", secret_id.split(":secret:", 1)[1])
    return secret_id


def _token(version_id: str, arn: object) -> str:
    """``<version id>@<ARN suffix>``: which value, of which creation of the secret.

    Both parts are server input that ends up in the target's labels, so an id or an ARN that
    doesn't look like one is replaced by a short digest of it (still one token per value).
    """
    if not _VERSION_ID.fullmatch(version_id):
        version_id = "h" + _digest(version_id, 24)
    if not isinstance(arn, str) or not arn:
        return version_id
    suffix = _ARN_SUFFIX.search(arn)
    return f"{version_id}@{suffix[0][1:] if suffix else _digest(arn, 12)}"


def _digest(text: str, size: int) -> str:
    return hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:size]


def _unlisted(name: str) -> str:
    """Why a reference the listing doesn't show may still be readable."""
    if name.startswith("arn:"):
        return (
            "not in this account's listing (a secret of another account or region, shared "
            "by ARN, never is)"
        )
    return "not in the listing (a missing secret, or one created moments ago: the listing lags)"


def _stage_version(entry: dict[str, Any], stage: str) -> str | None:
    """The version id that carries ``stage``, or ``None`` when no version does."""
    for version_id, stages in (entry.get("SecretVersionsToStages") or {}).items():
        if stage in (stages or []):
            return str(version_id)
    return None


def filter_groups(names: Iterable[str], *, limit: int = FILTER_VALUES) -> list[list[str]]:
    """Prefix filter values that cover ``names``: as few ``ListSecrets`` calls as possible.

    The sorted names are cut into at most ``limit`` runs at the places where neighbours share
    the shortest prefix (and always where they share none); each run is listed by its common
    prefix. A merge lists some secrets that aren't configured (ignored) but saves whole calls:
    30 names ``app-000``..``app-029`` become ``app-00``, ``app-01``, ``app-02``: one call, one
    page. Only names with no common first character need more than one call.
    """
    unique = sorted(set(names))
    if not unique:
        return []
    shared = [len(_lcp(a, b)) for a, b in itertools.pairwise(unique)]
    by_weakness = sorted(range(len(shared)), key=lambda i: shared[i])
    cuts = {i for i in by_weakness[: limit - 1]} | {i for i, n in enumerate(shared) if n == 0}
    prefixes: list[str] = []
    start = 0
    for i in range(len(unique)):
        if i in cuts or i == len(unique) - 1:
            prefixes.append(_lcp(unique[start], unique[i]))
            start = i + 1
    # a prefix covered by a shorter one in the list is redundant
    kept = [p for p in prefixes if not any(q != p and p.startswith(q) for q in prefixes)]
    kept = list(dict.fromkeys(kept))
    return [kept[i : i + limit] for i in range(0, len(kept), limit)]


def _lcp(a: str, b: str) -> str:
    size = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        size += 1
    return a[:size]
