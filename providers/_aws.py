"""What the two AWS providers share: settings, the boto3 session, call counting and errors.

Both providers talk to AWS the same way: credentials from the default chain (environment,
profile, web identity, instance role), optionally swapped for an assumed role (STS at its own
endpoint, never the provider's ``endpoint_url``: that one is a Secrets Manager or SSM VPC
endpoint); botocore's own retry modes (``standard`` or ``adaptive``) for throttling and 5xx,
with backoff and jitter; and one place that turns botocore exceptions into short messages that
say what to do. Keeping this here means a fix to retries or credentials lands in both providers.

Throttling honours the server: botocore's retry modes wait at least what an
``x-amz-retry-after`` header asks (capped at their own backoff plus 5 s); a plain HTTP
``Retry-After`` (what a gateway or proxy in front of the endpoint sends) is read into that
header first, so it is honoured the same way. A wait longer than
``providers.base.RETRY_AFTER_MAX`` ends the call at once (transient), as in every provider.

An answer botocore would accept but can't be right fails the call instead of passing for an
empty one: botocore reads a body shorter than its ``Content-Length`` without complaint, and
parses a body that isn't JSON as "no fields", which would say "not found" about a secret that
exists. A cut answer is transient (the connection dropped); one that isn't JSON is not (the
endpoint, or something in between, is wrong).

Credentials the service refuses (a key deleted or rotated, a session token expired) are read
again from the credential chain, at most every ``RENEW_INTERVAL``: a key rotated in a mounted
credentials file is picked up by the next call, without a restart. (Refreshing sources, such
as an assumed role or web identity, renew themselves.)

A dead endpoint must not hold a cycle for minutes: botocore would retry a timed-out request
``max_attempts`` times, each costing a whole ``read_timeout``. A timeout or a refused or dropped
connection is therefore retried once (a ``needs-retry`` handler ahead of botocore's says no to
the second retry), and once a call has given up that way, the provider's other calls fail at
once for ``HOLD`` seconds instead of waiting on the same endpoint again. With the defaults a
cycle against an endpoint that accepts and never answers costs about ``2 x read_timeout``.

Calls are counted from botocore's ``response-received`` event, which fires once per HTTP
attempt: every page and every retry shows up in the counts, which is what throttling and the
AWS bill see too. boto3 is imported lazily so the plain install works without it.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from providers.base import RETRY_AFTER_MAX, ProviderConfig
from syncd.duration import Duration
from syncd.errors import SyncdError
from syncd.registry import missing_modules
from syncd.retry_after import retry_after

log = logging.getLogger("syncd.providers.aws")

INSTALL_HINT = "pip install 'syncd[aws]'"
#: A timed-out call, or one whose connection was refused or dropped, is retried this often.
TRANSPORT_RETRIES = 1
#: After a call gave up on a dead endpoint, the provider's other calls fail at once this long.
HOLD = 10.0
_FAILURES = "syncd_transport_failures"  # per-call counter in botocore's request context

#: Error codes that mean "slow down"; botocore retries them and so do we report them transient.
THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "SlowDown",
        "LimitExceededException",
    }
)
#: Error codes that mean the credentials are wrong, expired or not allowed.
AUTH_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "ExpiredTokenException",
        "IncompleteSignature",
        "MissingAuthenticationToken",
    }
)
#: Error codes that refuse the credentials themselves (not a missing permission): the chain is
#: read again before the next call.
REFUSED_CODES = AUTH_CODES - {"AccessDenied", "AccessDeniedException"}
#: Read the credential chain again at most this often after a refusal.
RENEW_INTERVAL = 30.0
_XML_FIELD = re.compile(r"<(Code|Message)>([^<]*)</\1>")
_MAX_MESSAGE = 300


class AssumeRole(BaseModel):
    """``assume_role:``: switch from the default-chain credentials to this role."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role_arn: str = Field(pattern=r"^arn:aws[a-z-]*:iam::\d{12}:role/.+$", description="Role ARN.")
    session_name: str = Field(
        "syncd", pattern=r"^[\w+=,.@-]{2,64}$", description="RoleSessionName (shows in CloudTrail)."
    )
    external_id: str | None = Field(
        None, min_length=2, max_length=1224, description="ExternalId the role's trust policy wants."
    )
    duration_seconds: Duration = Field(
        3600,
        ge=900,
        le=43200,
        description="Session length (15m to 12h; seconds or a duration such as 1h); refreshed "
        "before it runs out.",
    )
    sts_endpoint_url: str | None = Field(
        None,
        description="STS endpoint (e.g. an STS VPC endpoint); by default botocore's: "
        "AWS_ENDPOINT_URL_STS, else the region's STS endpoint. Never the provider's endpoint_url.",
    )

    @field_validator("sts_endpoint_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """``sts_endpoint_url: ${STS_URL:-}`` means "not set" when the variable is empty."""
        return None if value == "" else value


class AwsProviderConfig(ProviderConfig):
    """Settings both AWS providers take."""

    region: str | None = Field(
        None, description="AWS region; by default from AWS_REGION / AWS_DEFAULT_REGION / profile."
    )
    endpoint_url: str | None = Field(
        None, description="Custom endpoint (VPC endpoint, emulator such as moto)."
    )
    profile: str | None = Field(None, description="Named profile from ~/.aws/config.")
    assume_role: AssumeRole | None = Field(None, description="Assume this role first.")
    retry_mode: Literal["standard", "adaptive"] = Field(
        "standard",
        description="botocore retry mode; adaptive also rate-limits the client when throttled.",
    )
    max_attempts: int = Field(
        5,
        ge=1,
        le=20,
        description="Attempts per call on throttling and 5xx, the first one included; a "
        "timeout or a refused or dropped connection is retried once.",
    )
    connect_timeout: Duration = Field(
        3.0, gt=0, description="Time to open a connection (TLS handshake included)."
    )
    read_timeout: Duration = Field(5.0, gt=0, description="Time to wait for a response.")

    @field_validator("region", "endpoint_url", "profile", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """``endpoint_url: ${AWS_ENDPOINT_URL:-}`` means "not set" when the variable is empty."""
        return None if value == "" else value


class BadAnswer(Exception):
    """An answer botocore would have accepted that can't be right (cut short, not JSON)."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


class AwsCallError(Exception):
    """A call failed after botocore's retries; the message is safe to show (no values)."""

    def __init__(self, operation: str, message: str, *, transient: bool, code: str = "") -> None:
        self.operation = operation
        self.code = code
        self.transient = transient
        super().__init__(f"{operation}: {message}")

    @property
    def access_denied(self) -> bool:
        """Whether AWS refused the call itself (permissions), not one secret in it."""
        return self.code in ("AccessDenied", "AccessDeniedException")


def missing_sdk(provider: str) -> str | None:
    """Why an AWS provider can't run here (boto3 not installed), without importing it."""
    return missing_modules(f"the {provider} provider", ("boto3",), "aws")


def import_boto3() -> Any:
    """``boto3``, or a clear error naming the extra to install."""
    try:
        import boto3
    except ImportError as exc:
        raise SyncdError(f"the AWS providers need boto3: {INSTALL_HINT}") from exc
    return boto3


class AwsSession:
    """One boto3 session per provider: credentials resolved once, clients reused across cycles.

    ``count(operation, status)`` is called once per HTTP attempt of every client made here,
    including STS ``AssumeRole`` refreshes.
    """

    def __init__(self, config: AwsProviderConfig, *, count: Callable[[str, str], None]) -> None:
        boto3 = import_boto3()
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError

        self.config = config
        self._count = count
        self._clients: list[Any] = []
        self._lock = threading.Lock()
        self._dead: tuple[float, str] | None = None  # (monotonic time, why) of the last give-up
        self._renewed_at: float | None = None  # monotonic time the chain was last read again
        self._botocore = Config(
            retries={"mode": config.retry_mode, "total_max_attempts": config.max_attempts},
            connect_timeout=config.connect_timeout,
            read_timeout=config.read_timeout,
            user_agent_extra="syncd",
        )
        try:
            session = boto3.Session(profile_name=config.profile, region_name=config.region)
        except BotoCoreError as exc:  # ProfileNotFound and friends
            raise SyncdError(f"can't set up the AWS session: {exc}") from exc
        if session.region_name is None:
            raise SyncdError(
                "no AWS region: set 'region' on the provider, or AWS_REGION / AWS_DEFAULT_REGION"
            )
        if config.assume_role is not None:
            session = self._assumed(boto3, session, config.assume_role)
        self.session = session
        self.region: str = session.region_name

    def _assumed(self, boto3: Any, base: Any, role: AssumeRole) -> Any:
        """A session whose credentials come from ``AssumeRole``, refreshed before expiry."""
        import botocore.session
        from botocore.credentials import DeferredRefreshableCredentials

        sts = self._client("sts", session=base, endpoint_url=role.sts_endpoint_url)

        def refresh() -> dict[str, str]:
            params: dict[str, Any] = {
                "RoleArn": role.role_arn,
                "RoleSessionName": role.session_name,
                "DurationSeconds": int(role.duration_seconds),
            }
            if role.external_id is not None:
                params["ExternalId"] = role.external_id
            # botocore turns a failure here into its own CredentialRetrievalError
            creds = sts.assume_role(**params)["Credentials"]
            return {
                "access_key": creds["AccessKeyId"],
                "secret_key": creds["SecretAccessKey"],
                "token": creds["SessionToken"],
                "expiry_time": creds["Expiration"].isoformat(),
            }

        core = botocore.session.Session()
        # boto3 has no public setter for ready-made credentials; this is the documented
        # way botocore's own assume-role provider hands them to a session
        core._credentials = DeferredRefreshableCredentials(
            refresh_using=refresh, method="assume-role"
        )
        return boto3.Session(botocore_session=core, region_name=base.region_name)

    def client(self, service: str) -> Any:
        """A counted client for the provider's ``service``, at the configured ``endpoint_url``."""
        return self._client(service, session=self.session, endpoint_url=self.config.endpoint_url)

    def _client(self, service: str, *, session: Any, endpoint_url: str | None) -> Any:
        """A counted client; ``endpoint_url=None`` is botocore's own endpoint resolution."""
        client = session.client(service, endpoint_url=endpoint_url, config=self._botocore)
        events = client.meta.events
        events.register("response-received", self._on_response)
        service_id = client.meta.service_model.service_id.hyphenize()
        events.register_first(f"needs-retry.{service_id}", _retry_transport_once)
        events.register_first(f"needs-retry.{service_id}", _honour_retry_after)
        model = client.meta.service_model
        if getattr(model, "resolved_protocol", model.protocol) == "json":
            events.register(f"before-parse.{service_id}", self._check_answer)
        self._clients.append(client)
        return client

    def _on_response(self, event_name: str, exception: Any = None, **kwargs: Any) -> None:
        """Count one HTTP attempt: ``response-received.<service>.<Operation>``."""
        operation = event_name.rsplit(".", 1)[-1]
        response = kwargs.get("response_dict") or {}
        status = int(response.get("status_code") or 0)
        if exception is not None:
            outcome = "error"
        elif status == 429 or _code(kwargs.get("parsed_response")) in THROTTLING_CODES:
            outcome = "throttled"
        elif status >= 400:
            outcome = "error"
        else:
            outcome = "ok"
        self._count(operation, outcome)

    def _check_answer(self, operation_model: Any, response_dict: Any, **_: Any) -> None:
        """``before-parse`` handler (JSON services): a successful answer is a whole JSON object.

        botocore neither checks a body against its ``Content-Length`` nor refuses one that
        isn't JSON (it parses as an answer with no fields). The attempt is counted here, since
        ``response-received`` never fires for an answer that fails parsing.
        """
        status = int(response_dict.get("status_code") or 0)
        body = response_dict.get("body")
        if status >= 300 or not isinstance(body, bytes):
            return
        headers = response_dict.get("headers") or {}
        if str(headers.get("content-encoding") or "identity").lower() != "identity":
            return  # a compressed body is botocore's to read (nothing asks for one)
        declared = str(headers.get("content-length") or "")
        problem: BadAnswer | None = None
        if declared.isdigit() and int(declared) != len(body):
            problem = BadAnswer(
                f"the answer was cut short ({len(body)} of {declared} bytes): the connection "
                "dropped in the middle of it",
                transient=True,
            )
        elif not _is_json_object(body):
            kind = str(headers.get("content-type") or "no Content-Type").split(";")[0]
            problem = BadAnswer(
                f"the endpoint answered HTTP {status} with a body that is not JSON "
                f"({kind[:60]}, {len(body)} bytes): is endpoint_url an AWS endpoint, or is a "
                "proxy in between answering?",
                transient=False,
            )
        if problem is not None:
            self._count(operation_model.name, "error")
            raise problem

    def call(self, client: Any, operation: str, **params: Any) -> dict[str, Any]:
        """``client.<operation>(**params)``, botocore errors turned into ``AwsCallError``."""
        from botocore.exceptions import BotoCoreError, ClientError
        from botocore.parsers import ResponseParserError

        method = getattr(client, _snake(operation))
        self._check_hold(operation)
        try:
            response: dict[str, Any] = method(**params)
        except ClientError as exc:
            error = _client_error(operation, exc)
            if error.code in REFUSED_CODES:
                self._renew_credentials(error.code)
            raise error from exc
        except BadAnswer as exc:
            raise AwsCallError(operation, str(exc), transient=exc.transient) from exc
        except (ResponseParserError, ValueError) as exc:
            # botocore's own text can quote the body; only the kind of failure is shown
            raise AwsCallError(
                operation, f"the answer could not be parsed ({type(exc).__name__})", transient=False
            ) from exc
        except BotoCoreError as exc:
            attempts = min(self.config.max_attempts, 1 + TRANSPORT_RETRIES)
            error = _core_error(operation, exc, attempts=attempts)
            if _is_transport(exc):
                with self._lock:
                    self._dead = (time.monotonic(), str(error))
            raise error from exc
        with self._lock:
            self._dead = None
        return response

    def _renew_credentials(self, code: str) -> None:
        """AWS refused the credentials in use (``code``): read the credential chain again.

        Static credentials (environment, credentials or config file) are what botocore never
        reads twice; the new ones are written into the credentials object every client of
        this session signs with, so the next call uses them. Refreshing credentials (an
        assumed role, web identity, instance or container roles) renew themselves.
        """
        import boto3
        from botocore.credentials import Credentials
        from botocore.exceptions import BotoCoreError

        now = time.monotonic()
        with self._lock:
            if self._renewed_at is not None and now - self._renewed_at < RENEW_INTERVAL:
                return
            self._renewed_at = now
        current = self.session.get_credentials()
        if type(current) is not Credentials or self.config.assume_role is not None:
            return
        try:
            fresh = boto3.Session(
                profile_name=self.config.profile, region_name=self.region
            ).get_credentials()
        except BotoCoreError as exc:
            log.warning(
                "AWS refused the credentials (%s); reading them again failed: %s", code, exc
            )
            return
        if type(fresh) is not Credentials:
            log.warning(
                "AWS refused the credentials (%s), and the credential chain has no others", code
            )
            return
        pair = (fresh.access_key, fresh.secret_key, fresh.token)
        if pair == (current.access_key, current.secret_key, current.token):
            log.warning(
                "AWS refused the credentials (%s); the credential chain still gives the same "
                "ones (%s)",
                code,
                fresh.method,
            )
            return
        current.access_key, current.secret_key, current.token = pair
        log.warning(
            "AWS refused the credentials (%s); using the new ones found in the chain (%s)",
            code,
            fresh.method,
        )

    def _check_hold(self, operation: str) -> None:
        """Fail at once while an earlier call's give-up on a dead endpoint is recent."""
        with self._lock:
            dead = self._dead
        if dead is not None and time.monotonic() - dead[0] < HOLD:
            raise AwsCallError(
                operation,
                f"not sent, because {dead[1]} (no call for {HOLD:g} s after that)",
                transient=True,
            )

    def pages(
        self, client: Any, operation: str, *, result_key: str, **params: Any
    ) -> Iterator[dict[str, Any]]:
        """Every item of ``result_key`` over all pages (each page is one counted call)."""
        token: str | None = None
        while True:
            page = self.call(client, operation, **params, **({"NextToken": token} if token else {}))
            yield from page.get(result_key) or []
            token = page.get("NextToken")
            if not token:
                return

    def close(self) -> None:
        """Close every client's connection pool."""
        for client in self._clients:
            client.close()
        self._clients.clear()


def _is_transport(exc: BaseException) -> bool:
    """A timeout or a refused, dropped or failed connection: the endpoint, not the request."""
    from botocore import exceptions as bex

    if isinstance(exc, bex.SSLError):  # a certificate problem doesn't pass by itself
        return False
    return isinstance(exc, bex.ConnectionError | bex.HTTPClientError)


def _retry_transport_once(
    attempts: int, caught_exception: Any = None, request_dict: Any = None, **_: Any
) -> bool | None:
    """``needs-retry`` handler run before botocore's: a transport failure is retried once.

    botocore takes the first answer that isn't ``None``, and ``False`` is its own "don't
    retry"; ``None`` leaves the decision (throttling, 5xx, a first timeout) to the retry mode.
    A TLS failure is never retried: a certificate doesn't fix itself between two attempts.
    """
    from botocore.exceptions import SSLError

    if isinstance(caught_exception, SSLError):
        return False
    if caught_exception is None or not _is_transport(caught_exception):
        return None
    context = request_dict.get("context") if isinstance(request_dict, dict) else None
    if isinstance(context, dict):
        failures = int(context.get(_FAILURES, 0)) + 1
        context[_FAILURES] = failures
    else:
        failures = attempts
    return False if failures > TRANSPORT_RETRIES else None


def _honour_retry_after(response: Any = None, **_: Any) -> bool | None:
    """``needs-retry`` handler run before botocore's: a plain ``Retry-After`` header becomes
    the ``x-amz-retry-after`` (milliseconds) botocore's retry modes honour; a wait over
    ``RETRY_AFTER_MAX`` is botocore's "don't retry" (``False``), so the call ends now."""
    answer = response[0] if isinstance(response, tuple) and response else None
    headers = getattr(answer, "headers", None)
    if headers is None:
        return None
    wait = _asked_wait(headers)
    if wait is None:
        return None
    if wait > RETRY_AFTER_MAX:
        return False
    headers["x-amz-retry-after"] = str(int(wait * 1000))
    return None


def _asked_wait(headers: Any) -> float | None:
    """Seconds an answer asks to wait: ``x-amz-retry-after`` (ms), else ``Retry-After``."""
    native = str(headers.get("x-amz-retry-after") or "")
    if native.isdigit():
        return int(native[:12]) / 1000
    return retry_after(headers.get("retry-after"))


def _is_json_object(body: bytes) -> bool:
    try:
        return isinstance(json.loads(body), dict)
    except (ValueError, RecursionError):  # not UTF-8, not JSON, nested too deeply
        return False


def _snake(operation: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", operation).lower()


def _code(parsed: Any) -> str:
    if isinstance(parsed, dict):
        error = parsed.get("Error")
        if isinstance(error, dict):
            return str(error.get("Code") or "")
    return ""


def _client_error(operation: str, exc: Any) -> AwsCallError:
    """An AWS error response as one actionable line."""
    response = exc.response or {}
    error = response.get("Error") or {}
    meta = response.get("ResponseMetadata") or {}
    code = str(error.get("Code") or "")
    message = str(error.get("Message") or "")
    status = int(meta.get("HTTPStatusCode") or 0)
    if message.lstrip().startswith("<"):
        # some endpoints (and emulators) answer a JSON API with an XML error document
        fields = dict(_XML_FIELD.findall(message))
        code = fields.get("Code", code)
        message = fields.get("Message", "")
    if len(message) > _MAX_MESSAGE:
        message = message[:_MAX_MESSAGE] + "..."
    transient = status >= 500 or status == 429 or code in THROTTLING_CODES
    text = f"{code or 'error'} (HTTP {status})" if status else code or "error"
    if message:
        text += f": {message}"
    if code in AUTH_CODES or status == 403:
        text += " - check the AWS credentials (wrong or expired) and the IAM permissions"
    attempts = int(meta.get("RetryAttempts") or 0) + 1
    if transient:
        text += f" (gave up after {attempts} attempt{'s' if attempts > 1 else ''})"
        wait = _asked_wait(meta.get("HTTPHeaders") or {})
        if wait is not None and wait > RETRY_AFTER_MAX:
            text += f" (Retry-After asked for {wait:.0f} s, over {RETRY_AFTER_MAX:g} s)"
    return AwsCallError(operation, text, transient=transient, code=code)


def _core_error(operation: str, exc: Any, *, attempts: int) -> AwsCallError:
    """A client-side failure (network, credentials) as one actionable line."""
    from botocore import exceptions as bex

    tries = f"after {attempts} attempt{'s' if attempts > 1 else ''}"
    if isinstance(exc, bex.NoCredentialsError | bex.PartialCredentialsError):
        return AwsCallError(
            operation,
            "no usable AWS credentials (looked in the environment, profile, web identity "
            "and instance role)",
            transient=False,
        )
    if isinstance(exc, bex.CredentialRetrievalError):
        return AwsCallError(operation, f"can't get AWS credentials: {exc}", transient=True)
    if isinstance(exc, bex.SSLError):
        return AwsCallError(
            operation,
            f"TLS with the endpoint failed: {exc} (set AWS_CA_BUNDLE to the CA that signed it)",
            transient=False,
        )
    if isinstance(exc, bex.ReadTimeoutError | bex.ConnectTimeoutError):
        return AwsCallError(operation, f"endpoint timed out ({tries}): {exc}", transient=True)
    if _is_transport(exc):
        return AwsCallError(operation, f"endpoint unreachable ({tries}): {exc}", transient=True)
    return AwsCallError(operation, f"{type(exc).__name__}: {exc}", transient=False)
