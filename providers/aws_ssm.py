"""The ``aws-ssm`` provider: SSM Parameter Store parameters, one by name or all under a path.

Change detection reads metadata only: ``DescribeParameters`` filtered to the configured names
(50 a call) or to a path gives each parameter's ``Version`` and ``LastModifiedDate`` without a
value. Both go into the token because a deleted and re-created parameter starts again at
version 1. Values are read only for what changed: ``GetParameters``, 10 names a call, with
``WithDecryption`` so SecureString values arrive in clear (needs ``kms:Decrypt``).

A ``version`` pin has the same problem (version 1 of a re-created parameter is another
value), and ``DescribeParameters`` only shows the latest version's date. A pin's token is
therefore the pin plus the parameter's current token: any write to the parameter re-reads the
pinned version once, and the fingerprint decides whether anything changed.

A ``path`` reference renders every parameter under the path into one JSON object, so one
secret (a Kubernetes key, a file) gets the whole set: keys are the names relative to the path
with ``/`` turned into ``.`` (``/app/prod/db/password`` under ``/app/prod`` -> ``db.password``,
which is a valid Kubernetes Secret key), values are strings, keys sorted so the same
parameters always render the same bytes. Its token is a digest of the names, versions and
dates, never of values.

An ``Expiration`` parameter policy (Advanced tier) is the parameter's expiry: AWS deletes the
parameter then. ``DescribeParameters`` lists the policies with the metadata, so the expiry is
noted on every cycle without a read (``note_expiry``; a path: its soonest parameter's). A
reference by ARN isn't described, so its expiry isn't known.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from providers._aws import AwsCallError, AwsProviderConfig, AwsSession, missing_sdk
from providers.base import (
    Provider,
    ProviderConfig,
    ProviderContext,
    Ref,
    compact_json,
    json_field,
    utf8,
)
from syncd.errors import ProviderError
from syncd.model import Fetched

#: DescribeParameters: 50 filter values and 50 results a page. GetParameters: 10 names.
#: GetParametersByPath: 10 results a page.
DESCRIBE_VALUES = 50
DESCRIBE_PAGE = 50
GET_BATCH = 10
PATH_PAGE = 10


class AwsSsmConfig(AwsProviderConfig):
    """``{type: aws-ssm, region: eu-west-1}``."""

    type: Literal["aws-ssm"]


class AwsSsmRef(Ref):
    """``{provider: ssm, name: /app/prod/db-password}`` or ``{provider: ssm, path: /app/prod}``."""

    name: str | None = Field(
        None, min_length=1, max_length=2048, description="One parameter (name or ARN)."
    )
    path: str | None = Field(
        None,
        pattern=r"^/",
        max_length=2048,
        description="Every parameter under this path, as one JSON object.",
    )
    recursive: bool = Field(False, description="With 'path': include deeper levels too.")
    key: str | None = Field(
        None, min_length=1, description="With 'name': pick this field of a JSON value."
    )
    version: int | None = Field(None, ge=1, description="With 'name': read this version.")

    @model_validator(mode="after")
    def _name_or_path(self) -> AwsSsmRef:
        if (self.name is None) == (self.path is None):
            raise ValueError("give exactly one of 'name' (one parameter) or 'path' (a set)")
        if self.path is not None and (self.key is not None or self.version is not None):
            raise ValueError("'key' and 'version' go with 'name', not with 'path'")
        if self.name is not None and self.recursive:
            raise ValueError("'recursive' goes with 'path', not with 'name'")
        return self

    @property
    def selector(self) -> str:
        """What ``GetParameters`` is asked for: the name, or ``name:version`` when pinned."""
        assert self.name is not None
        return self.name if self.version is None else f"{self.name}:{self.version}"

    def describe(self) -> str:
        """``ssm:/app/db#password``, ``ssm:/app/*`` (one level) or ``ssm:/app/**``."""
        if self.path is not None:
            return f"{self.provider}:{self.path.rstrip('/')}/{'**' if self.recursive else '*'}"
        text = f"{self.provider}:{self.name}"
        if self.key is not None:
            text += f"#{self.key}"
        if self.version is not None:
            text += f"?version={self.version}"
        return text


class AwsSsmProvider(Provider[AwsSsmConfig, AwsSsmRef]):
    """Reads SSM Parameter Store with metadata-only change detection and batched reads."""

    type_name: ClassVar[str] = "aws-ssm"
    config_model: ClassVar[type[ProviderConfig]] = AwsSsmConfig
    ref_model: ClassVar[type[Ref]] = AwsSsmRef

    @classmethod
    def unavailable(cls) -> str | None:
        """boto3 not installed: name the extra (checked at config load, without importing)."""
        return missing_sdk("aws-ssm")

    def __init__(self, config: AwsSsmConfig, *, context: ProviderContext) -> None:
        super().__init__(config, context=context)
        self.aws = AwsSession(config, count=lambda op, status: self.count(op, status=status))
        self.client = self.aws.client("ssm")

    def close(self) -> None:
        """Close the HTTP connections."""
        self.aws.close()

    # ------------------------------------------------------------------ change detection

    def versions(self, refs: Sequence[AwsSsmRef]) -> Mapping[AwsSsmRef, str | ProviderError | None]:
        """Tokens from ``DescribeParameters``: names 50 a call, each path its own listing."""
        result: dict[AwsSsmRef, str | ProviderError | None] = {}
        named: list[AwsSsmRef] = []
        for ref in refs:
            if ref.path is not None:
                result[ref] = self._path_version(ref)
            elif str(ref.name).startswith("arn:"):
                result[ref] = None  # DescribeParameters can't filter by ARN: read it
            else:
                named.append(ref)
        names = list(dict.fromkeys(str(ref.name) for ref in named))
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(names), DESCRIBE_VALUES):
            chunk = names[start : start + DESCRIBE_VALUES]
            unseen = set(chunk)
            try:
                for meta in self._describe({"Key": "Name", "Option": "Equals", "Values": chunk}):
                    found[meta["Name"]] = meta
                    unseen.discard(meta["Name"])
                    if not unseen:
                        # every name is described: a further page could only be empty, and
                        # AWS (and moto) hand out a NextToken after a full last page
                        break
            except AwsCallError as exc:
                for ref in named:
                    if ref.name in chunk:
                        result[ref] = self.error(ref, str(exc), transient=exc.transient)
        for ref in named:
            if ref not in result:
                listed = found.get(str(ref.name))
                # not listed: the read decides (and reports "not found" precisely)
                result[ref] = _token(listed, pin=ref.version) if listed is not None else None
                self.note_expiry(ref, _expiration([listed] if listed is not None else []))
        return result

    def _describe(self, parameter_filter: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Parameters matching the filter, one page (one call) fetched as the caller reads."""
        return self.aws.pages(
            self.client,
            "DescribeParameters",
            result_key="Parameters",
            ParameterFilters=[parameter_filter],
            MaxResults=DESCRIBE_PAGE,
        )

    def _path_version(self, ref: AwsSsmRef) -> str | ProviderError | None:
        assert ref.path is not None
        option = "Recursive" if ref.recursive else "OneLevel"
        try:
            metas = list(self._describe({"Key": "Path", "Option": option, "Values": [ref.path]}))
        except AwsCallError as exc:
            return self.error(ref, str(exc), transient=exc.transient)
        self.note_expiry(ref, _expiration(metas))
        return _path_token(metas) if metas else None

    # ------------------------------------------------------------------ reading

    def fetch(self, refs: Sequence[AwsSsmRef]) -> Mapping[AwsSsmRef, Fetched | ProviderError]:
        """Named parameters 10 per ``GetParameters`` call; each path by ``GetParametersByPath``."""
        result: dict[AwsSsmRef, Fetched | ProviderError] = {}
        named = [ref for ref in refs if ref.name is not None]
        wanted = {ref.selector: (str(ref.name), ref.version) for ref in named}
        params, failed = self._get_named(wanted)
        for ref in named:
            if ref.selector in failed:
                exc = failed[ref.selector]
                result[ref] = self.error(ref, str(exc), transient=exc.transient)
            elif ref.selector in params:
                result[ref] = self._named_value(ref, params[ref.selector])
            else:
                which = f"version {ref.version} of the " if ref.version is not None else ""
                result[ref] = self.error(ref, f"{which}parameter not found")
        for ref in refs:
            if ref.path is not None:
                result[ref] = self._path_value(ref)
        return result

    def _get_named(
        self, wanted: dict[str, tuple[str, int | None]]
    ) -> tuple[dict[str, dict[str, Any]], dict[str, AwsCallError]]:
        """``GetParameters`` in batches; results keyed by the selector asked for."""
        selectors = list(wanted)
        params: dict[str, dict[str, Any]] = {}
        failed: dict[str, AwsCallError] = {}
        for start in range(0, len(selectors), GET_BATCH):
            chunk = selectors[start : start + GET_BATCH]
            try:
                page = self.aws.call(self.client, "GetParameters", Names=chunk, WithDecryption=True)
            except AwsCallError as exc:
                failed.update(dict.fromkeys(chunk, exc))
                continue
            returned = page.get("Parameters") or []
            for selector in chunk:
                match = _match(*wanted[selector], returned)
                if match is not None:
                    params[selector] = match
        return params, failed

    def _named_value(self, ref: AwsSsmRef, param: dict[str, Any]) -> Fetched | ProviderError:
        # a pinned read returns that version's date, not the current one's: the listing's
        # token (``versions``) is the one to keep
        token = _token(param) if ref.version is None else None
        text = str(param.get("Value") or "")
        try:
            data = json_field(text, ref.key) if ref.key is not None else utf8(text)
            return Fetched(ref.decoded(data), token)
        except ValueError as exc:
            return self.error(ref, str(exc))
        except ProviderError as exc:
            return exc

    def _path_value(self, ref: AwsSsmRef) -> Fetched | ProviderError:
        assert ref.path is not None
        try:
            params = list(
                self.aws.pages(
                    self.client,
                    "GetParametersByPath",
                    result_key="Parameters",
                    Path=ref.path,
                    Recursive=ref.recursive,
                    WithDecryption=True,
                    MaxResults=PATH_PAGE,
                )
            )
        except AwsCallError as exc:
            return self.error(ref, str(exc), transient=exc.transient)
        if not params:
            return self.error(ref, "no parameters under this path")
        base = ref.path.rstrip("/") + "/"
        bundle: dict[str, str] = {}
        for param in params:
            name = str(param["Name"])
            relative = name[len(base) :] if name.startswith(base) else name.lstrip("/")
            key = relative.strip("/").replace("/", ".")
            if key in bundle:
                return self.error(
                    ref, f"two parameters map to the same key {key!r} (a name with '.' and '/')"
                )
            bundle[key] = str(param.get("Value") or "")
        try:
            return Fetched(ref.decoded(utf8(compact_json(bundle))), _path_token(params))
        except ValueError as exc:
            return self.error(ref, str(exc))
        except ProviderError as exc:
            return exc


def _stamp(meta: dict[str, Any]) -> int:
    """``LastModifiedDate`` in milliseconds (both APIs report the same instant)."""
    when = meta.get("LastModifiedDate")
    return round(when.timestamp() * 1000) if isinstance(when, datetime) else 0


def _token(meta: dict[str, Any], *, pin: int | None = None) -> str:
    """``<version>.<LastModifiedDate ms>``; a pin: ``v<pin>@`` and the current one's."""
    version = meta.get("Version")
    current = f"{version if isinstance(version, int) else 0}.{_stamp(meta)}"
    return current if pin is None else f"v{pin}@{current}"


def _expiration(metas: Iterable[dict[str, Any]]) -> float | None:
    """The soonest ``Expiration`` policy time of these parameters (Unix seconds), or ``None``.

    ``PolicyText`` is a JSON document (``{"Type": "Expiration", "Attributes": {"Timestamp":
    "2030-01-01T00:00:00.000Z"}}``); one that isn't, or has no readable time, is skipped.
    """
    times: list[float] = []
    for meta in metas:
        policies = meta.get("Policies")
        for policy in policies if isinstance(policies, list) else []:
            if not isinstance(policy, dict) or policy.get("PolicyType") != "Expiration":
                continue
            try:
                document = json.loads(policy.get("PolicyText") or "")
                stamp = document["Attributes"]["Timestamp"]
                when = datetime.fromisoformat(stamp)
            except (ValueError, TypeError, KeyError, RecursionError):
                continue
            times.append((when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp())
    return min(times) if times else None


def _path_token(metas: list[dict[str, Any]]) -> str:
    lines = sorted(f"{m['Name']}\t{m.get('Version')}\t{_stamp(m)}" for m in metas)
    digest = hashlib.sha256("\n".join(lines).encode("utf-8", "replace")).hexdigest()[:20]
    return f"{len(lines)}.{digest}"


def _match(name: str, version: int | None, returned: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The returned parameter for ``name`` (at ``version``); results don't echo the selector."""
    candidates = [p for p in returned if name in (p.get("Name"), p.get("ARN"))]
    if version is not None:
        candidates = [p for p in candidates if p.get("Version") == version]
    if not candidates:
        return None
    return max(candidates, key=lambda p: int(p.get("Version") or 0))
