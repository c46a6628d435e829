"""JSON-protocol AWS clients without botocore: sign, send with keep-alive, retry, classify errors."""

from __future__ import annotations

import base64
import http.client
import json
import random
import ssl
import threading
import time
import urllib.parse
import zlib
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Tuple, Union

import attrs

from cachelayer._version import __version__
from cachelayer.aws import (
    THROTTLING_CODES,
    ClientCache,
    NotFoundPredicate,
    classify_code,
    default_region,
)
from cachelayer.awsjson.credentials import CredentialSource, default_credentials
from cachelayer.awsjson.endpoints import endpoint_url
from cachelayer.awsjson.http import ConnectionPool, ConnectTimeout, HttpResponse
from cachelayer.awsjson.sigv4 import sign
from cachelayer.errors import (
    CachelayerError,
    TransientError,
    UpstreamError,
    UpstreamTimeoutError,
)

__all__ = [
    "DYNAMODB",
    "SECRETS_MANAGER",
    "SSM",
    "JsonClient",
    "JsonClientFactory",
    "JsonService",
    "RetryPolicy",
    "ServiceError",
    "parse_error",
]

USER_AGENT = f"cachelayer/{__version__} (lean JSON transport)"
# botocore's standard mode: these codes are retried besides the throttling ones.
RETRYABLE_CODES = frozenset(
    {"RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete"}
)
RETRYABLE_STATUS = frozenset({500, 502, 503, 504})
_MAX_MESSAGE = 300


@attrs.frozen
class JsonService:
    """What the transport needs to know about one JSON-protocol service (its botocore metadata).

    ``name`` is botocore's service name (``ssm``), ``service_id`` its serviceId (``SSM``,
    ``Secrets Manager``: it names ``AWS_ENDPOINT_URL_<SERVICE_ID>``), ``target_prefix`` and
    ``json_version`` make the ``X-Amz-Target`` and ``Content-Type`` headers.
    """

    name: str
    service_id: str
    target_prefix: str
    json_version: str = "1.1"
    endpoint_prefix: Optional[str] = None
    signing_name: Optional[str] = None
    check_crc32: bool = False

    @property
    def prefix(self) -> str:
        """The endpoint host prefix (``ssm`` in ``ssm.us-west-2.amazonaws.com``)."""
        return self.endpoint_prefix or self.name

    @property
    def signing(self) -> str:
        """The SigV4 service name."""
        return self.signing_name or self.name


SSM = JsonService("ssm", "SSM", "AmazonSSM", "1.1")
SECRETS_MANAGER = JsonService("secretsmanager", "Secrets Manager", "secretsmanager", "1.1")
DYNAMODB = JsonService("dynamodb", "DynamoDB", "DynamoDB_20120810", "1.0", check_crc32=True)
BUILT_IN: Mapping[str, JsonService] = {s.name: s for s in (SSM, SECRETS_MANAGER, DYNAMODB)}


class ServiceError(Exception):
    """An error answer from an AWS service: its code (as botocore names it), message, status.

    The transport raises the classified cachelayer error ``from`` this one, so a caller that
    needs the code reads ``exc.__cause__.code``.
    """

    def __init__(self, code: str, message: str, status: int, request_id: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message
        self.status = status
        self.request_id = request_id


def parse_error(status: int, headers: Mapping[str, str], body: bytes) -> Tuple[str, str]:
    """``(code, message)`` of an error response, exactly as botocore's JSON parser reads them."""
    stripped = body.strip()
    if status >= 500 and (not stripped or stripped.startswith(b"<html>")):
        return str(status), http.client.responses.get(status, "")
    parsed: Any
    if not body:
        parsed = {}
    else:
        text = body.decode("utf-8", "replace")
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = {"message": text}
    if not isinstance(parsed, dict):
        parsed = {}
    message = parsed.get("message", parsed.get("Message", ""))
    code = parsed.get("__type", str(status))
    if code is not None:
        code = str(code)
        if ":" in code:
            code = code.split(":", 1)[0]
        if "#" in code:
            code = code.rsplit("#", 1)[1]
        query_error = {k.lower(): v for k, v in headers.items()}.get("x-amzn-query-error")
        if query_error:
            parts = query_error.split(";")
            if len(parts) == 2 and parts[0]:
                code = parts[0]
    return str(code or ""), str(message or "")


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")  # JSON protocol blobs
    raise TypeError(f"cannot send {type(value).__name__} in an AWS JSON request")


@attrs.define
class RetryQuota:
    """botocore's standard-mode retry quota: retries spend tokens, successes refund them, so
    an outage does not multiply the load on the service."""

    capacity: int = 500
    _available: int = attrs.field(init=False)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)

    def __attrs_post_init__(self) -> None:
        self._available = self.capacity

    def acquire(self, timeout: bool) -> int:
        """Spend the cost of one retry (10 after a timeout, else 5); 0 if the quota is empty."""
        cost = 10 if timeout else 5
        with self._lock:
            if cost > self._available:
                return 0
            self._available -= cost
            return cost

    def release(self, amount: int) -> None:
        """Refund ``amount`` (the retry's cost, or 1 for a first-attempt success)."""
        with self._lock:
            self._available = min(self.capacity, self._available + amount)


@attrs.frozen
class RetryPolicy:
    """Standard-mode retries: ``max_attempts`` in all; before attempt n+1 a full-jitter pause of
    ``random() * min(max_backoff, base * 2 ** (n - 1))`` seconds (botocore's)."""

    max_attempts: int = attrs.field(default=2, validator=attrs.validators.ge(1))
    base: float = 1.0
    max_backoff: float = 20.0

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """The pause after failed attempt number ``attempt`` (1-based)."""
        return rand() * min(self.max_backoff, self.base * 2 ** (attempt - 1))


OnCall = Callable[[str, str], None]


@attrs.define
class JsonClient:
    """One service in one region: ``call("GetParameter", {"Name": "x"})`` returns the parsed
    JSON answer. Thread-safe. Blobs (``bytes``) are sent base64-encoded and returned as the
    base64 text the service sends; timestamps come back as epoch seconds.

    Errors are raised as cachelayer errors (NotFoundError for ``not_found`` codes,
    TransientError for throttling, 5xx and network failures, UpstreamTimeoutError for
    timeouts, UpstreamError otherwise), chained ``from`` a ``ServiceError`` or the OSError.
    """

    service: JsonService
    region: str
    url: str
    credentials: CredentialSource
    pool: ConnectionPool
    retry: RetryPolicy = attrs.Factory(RetryPolicy)
    quota: RetryQuota = attrs.Factory(RetryQuota)
    on_call: Optional[OnCall] = None
    sleep: Callable[[float], None] = time.sleep
    _target: Tuple[str, str, int, str] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UpstreamError(
                f"the endpoint URL {self.url!r} for {self.service.name} is not an http(s) URL; "
                "fix AWS_ENDPOINT_URL or AWS_ENDPOINT_URL_<SERVICE>"
            )
        port = parts.port or (443 if parts.scheme == "https" else 80)
        self._target = (parts.scheme, parts.hostname, port, parts.path or "/")

    def call(
        self,
        operation: str,
        params: Mapping[str, Any],
        *,
        not_found: Iterable[str] = (),
        not_found_if: Optional[NotFoundPredicate] = None,
        what: str = "",
    ) -> Dict[str, Any]:
        """Call ``operation`` with ``params``; the parsed answer, or a classified error."""
        body = json.dumps(params, default=_json_default, separators=(",", ":")).encode("utf-8")
        if self.on_call is not None:
            self.on_call(self.service.name, operation)
        context = (operation, tuple(not_found), not_found_if, what)
        attempt = 0
        while True:
            attempt += 1
            error: CachelayerError
            retryable = False
            is_timeout = False
            try:
                response = self._send(operation, body)
            except CachelayerError:
                raise  # credentials and similar: nothing a retry would fix
            except (OSError, http.client.HTTPException) as exc:
                # HTTPException: a truncated or garbled answer (IncompleteRead, BadStatusLine).
                error, is_timeout = self._network_error(exc, operation, what)
                cause: BaseException = exc
                retryable = not isinstance(exc, ssl.SSLCertVerificationError)
            else:
                if response.status < 300:
                    parsed = self._parse(response, operation, what)
                    if parsed is not None:
                        self.quota.release(1 if attempt == 1 else 5)
                        return parsed
                    error = TransientError(
                        f"{self.service.name} {operation}: the answer failed its CRC32 check"
                    )
                    cause, retryable = error, True
                else:
                    code, message = parse_error(response.status, response.headers, response.body)
                    cause = ServiceError(
                        code, message, response.status, response.headers.get("x-amzn-requestid", "")
                    )
                    error = self._classify(cause, context)
                    retryable = (
                        code in THROTTLING_CODES
                        or code in RETRYABLE_CODES
                        or response.status in RETRYABLE_STATUS
                    )
            if not retryable or attempt >= self.retry.max_attempts:
                raise error from cause
            if not self.quota.acquire(is_timeout):
                raise error from cause
            self.sleep(self.retry.delay(attempt))

    def _classify(
        self,
        error: ServiceError,
        context: Tuple[str, Tuple[str, ...], Optional[NotFoundPredicate], str],
    ) -> CachelayerError:
        operation, not_found, not_found_if, what = context
        return classify_code(
            error.code or "Unknown",
            error.message,
            status=error.status,
            not_found=not_found,
            not_found_if=not_found_if,
            service=self.service.name,
            operation=operation,
            what=what,
        )

    def _network_error(
        self, exc: Exception, operation: str, what: str
    ) -> Tuple[CachelayerError, bool]:
        call = f"{self.service.name} {operation}" + (f" for {what}" if what else "")
        host = self._target[1]
        if isinstance(exc, ConnectTimeout):
            return UpstreamTimeoutError(f"{call} timed out: {exc}"), True
        if isinstance(exc, TimeoutError):
            return (
                UpstreamTimeoutError(
                    f"{call} timed out: no answer from {host} within {self.pool.read_timeout:g} s"
                ),
                True,
            )
        if isinstance(exc, ssl.SSLCertVerificationError):
            return (
                TransientError(
                    f"{call} failed: TLS certificate of {host} not trusted "
                    f"({exc.verify_message}); set AWS_CA_BUNDLE to the CA bundle that signs it"
                ),
                False,
            )
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        return (
            TransientError(
                f"{call} failed: connection to {host}:{self._target[2]}: "
                f"{type(exc).__name__}: {reason}"[: _MAX_MESSAGE + 100]
            ),
            False,
        )

    def _send(self, operation: str, body: bytes) -> HttpResponse:
        scheme, host, port, path = self._target
        creds = self.credentials.get()
        headers = sign(
            "POST",
            self.url if self.url.endswith(path) else self.url + path,
            {
                "Content-Type": f"application/x-amz-json-{self.service.json_version}",
                "X-Amz-Target": f"{self.service.target_prefix}.{operation}",
                "User-Agent": USER_AGENT,
                "Content-Length": str(len(body)),
            },
            body,
            access_key=creds.access_key,
            secret_key=creds.secret_key,
            session_token=creds.token,
            region=self.region,
            service=self.service.signing,
        )
        return self.pool.request(scheme, host, port, "POST", path, body, headers)

    def _parse(self, response: HttpResponse, operation: str, what: str) -> Optional[Dict[str, Any]]:
        if self.service.check_crc32:
            expected = response.headers.get("x-amz-crc32")
            if expected is not None and str(zlib.crc32(response.body) & 0xFFFFFFFF) != expected:
                return None
        if not response.body.strip():
            return {}
        try:
            parsed = json.loads(response.body)
        except ValueError:
            raise UpstreamError(
                f"{self.service.name} {operation}"
                + (f" for {what}" if what else "")
                + f": the answer is not JSON (HTTP {response.status})"
            ) from None
        if not isinstance(parsed, dict):
            raise UpstreamError(f"{self.service.name} {operation}: the answer is not a JSON object")
        return parsed


@attrs.define
class JsonClientFactory:
    """Shared JSON-protocol clients, one per (service, region), over one connection pool and
    one credential source; what ``ProviderContext.json_client`` returns clients from.

    ``service`` is a ``JsonService`` or the name of a built-in one (``ssm``,
    ``secretsmanager``, ``dynamodb``). ``environ`` supplies the region, endpoint overrides
    (``AWS_ENDPOINT_URL[_<SERVICE>]``), FIPS/dual-stack flags and credentials.
    """

    # The environment holds the secret key and session token: never in a repr.
    environ: Mapping[str, str] = attrs.field(factory=dict, repr=False)
    default_region: Optional[str] = None
    on_call: Optional[OnCall] = None
    connect_timeout: float = 2.0
    read_timeout: float = 5.0
    max_attempts: int = 2
    max_pool_connections: int = 32
    credentials: Optional[CredentialSource] = attrs.field(default=None, repr=False)
    sleep: Callable[[float], None] = time.sleep
    _pool: Optional[ConnectionPool] = attrs.field(default=None, init=False)
    _quota: RetryQuota = attrs.field(factory=RetryQuota, init=False)
    _clients: ClientCache[JsonClient] = attrs.field(factory=ClientCache, init=False)

    @classmethod
    def from_environment(
        cls, environ: Optional[Mapping[str, str]] = None, **kwargs: Any
    ) -> JsonClientFactory:
        """A factory reading ``environ`` (default: a snapshot of ``os.environ``)."""
        import os

        env = dict(os.environ if environ is None else environ)
        kwargs.setdefault("default_region", default_region(env))
        return cls(environ=env, **kwargs)

    def __call__(
        self, service: Union[str, JsonService], region: Optional[str] = None
    ) -> JsonClient:
        """The client for ``service`` in ``region`` (None: the default region)."""
        spec = self._service(service)
        region = region or self.default_region
        return self._clients.get((spec.name, region), self._create, spec, region)

    def _service(self, service: Union[str, JsonService]) -> JsonService:
        if isinstance(service, JsonService):
            return service
        spec = BUILT_IN.get(service)
        if spec is None:
            raise UpstreamError(
                f"no built-in JSON service {service!r} (known: {', '.join(sorted(BUILT_IN))}); "
                "pass a cachelayer.awsjson.JsonService describing it"
            )
        return spec

    def _create(self, spec: JsonService, region: Optional[str]) -> JsonClient:
        if not region:
            raise UpstreamError(
                f"{spec.name} failed: no AWS region; set AWS_REGION or a region in the config"
            )
        if self._pool is None:
            self._pool = ConnectionPool(
                connect_timeout=self.connect_timeout,
                read_timeout=self.read_timeout,
                max_idle=self.max_pool_connections,
                ca_bundle=self.environ.get("AWS_CA_BUNDLE") or None,
            )
        if self.credentials is None:
            self.credentials = default_credentials(self.environ)
        url = endpoint_url(spec.prefix, spec.service_id, region, self.environ)
        return JsonClient(
            spec,
            region,
            url,
            self.credentials,
            self._pool,
            retry=RetryPolicy(max_attempts=self.max_attempts),
            quota=self._quota,
            on_call=self.on_call,
            sleep=self.sleep,
        )

    def close(self) -> None:
        """Close idle connections."""
        if self._pool is not None:
            self._pool.close()
