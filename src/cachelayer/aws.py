"""AWS helpers for provider authors: botocore error classification and a shared client factory.

Importing this module imports neither boto3 nor botocore (the extension must register with
Lambda before paying for them), so providers may import it at module level; botocore is
imported the first time a client is built or an error is classified.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import (
    Any,
    Callable,
    Dict,
    Generic,
    Hashable,
    Iterable,
    Iterator,
    Mapping,
    Optional,
    TypeVar,
)

import attrs

from cachelayer.errors import (
    BadRequestError,
    CachelayerError,
    NotFoundError,
    ThrottlingError,
    TransientError,
    UpstreamError,
    UpstreamTimeoutError,
)

__all__ = [
    "THROTTLING_CODES",
    "TRANSIENT_CODES",
    "ClientCache",
    "ClientFactory",
    "classify",
    "classify_code",
    "default_region",
    "translate_errors",
]

THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "RequestThrottled",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "SlowDown",
        "EC2ThrottledException",
        "PriorRequestNotComplete",
    }
)
"""Error codes that mean "slow down and try again" (botocore's standard retry list and more)."""

TRANSIENT_CODES = frozenset(
    {
        "InternalError",
        "InternalFailure",
        "InternalServerError",
        "InternalServerException",
        "InternalServiceError",
        "InternalServiceErrorException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "ServiceUnavailableError",
        "RequestTimeout",
        "RequestTimeoutException",
        "IDPCommunicationError",
    }
)
"""Error codes that mean the service failed on its side; retrying later may succeed."""

# AWS messages may echo request fields; they never carry a value we fetch (we only read), but
# keep them short so an error body stays readable.
_MAX_MESSAGE = 300

NotFoundPredicate = Callable[[str, str], bool]


def _short(message: str) -> str:
    message = " ".join(message.split())
    return message if len(message) <= _MAX_MESSAGE else message[: _MAX_MESSAGE - 1] + "…"


def _where(service: str, operation: str, what: str) -> str:
    call = " ".join(p for p in (service, operation) if p) or "AWS call"
    return f"{call} for {what}" if what else call


def classify_code(
    code: str,
    message: str = "",
    *,
    status: Optional[int] = None,
    not_found: Iterable[str] = (),
    not_found_if: Optional[NotFoundPredicate] = None,
    service: str = "",
    operation: str = "",
    what: str = "",
) -> CachelayerError:
    """The cachelayer error for an AWS error ``code`` (and HTTP ``status``, when known).

    Used for whole-call errors and for per-item errors of batch APIs (BatchGetSecretValue's
    ``Errors``). ``not_found`` lists the codes that mean "does not exist" for this call;
    ``not_found_if(code, message)`` catches the cases a code alone cannot tell (Secrets
    Manager's "marked for deletion"). ``what`` names the item (a name, never a value).
    """
    where = _where(service, operation, what)
    text = f"{where} failed: {code}" + (f": {_short(message)}" if message else "")
    if code in set(not_found) or (not_found_if is not None and not_found_if(code, message)):
        return NotFoundError(
            f"{where}: not found ({code}" + (f": {_short(message)})" if message else ")")
        )
    if code in THROTTLING_CODES:
        return ThrottlingError(f"{text} (throttled; will retry)")
    if code in TRANSIENT_CODES or (status is not None and status >= 500):
        return TransientError(text)
    return UpstreamError(text)


def classify(
    exc: BaseException,
    *,
    not_found: Iterable[str] = (),
    not_found_if: Optional[NotFoundPredicate] = None,
    service: str = "",
    operation: str = "",
    what: str = "",
) -> CachelayerError:
    """Map a botocore (or other) exception raised by an AWS call to a cachelayer error.

    The result is not chained; ``translate_errors`` raises it ``from`` the original.
    """
    from botocore import exceptions as bce

    if isinstance(exc, CachelayerError):
        return exc
    where = _where(service, operation, what)
    if isinstance(exc, bce.ClientError):
        error = exc.response.get("Error", {}) or {}
        meta = exc.response.get("ResponseMetadata", {}) or {}
        return classify_code(
            str(error.get("Code") or "Unknown"),
            str(error.get("Message") or ""),
            status=meta.get("HTTPStatusCode"),
            not_found=not_found,
            not_found_if=not_found_if,
            service=service,
            operation=operation or getattr(exc, "operation_name", ""),
            what=what,
        )
    if isinstance(exc, (bce.ReadTimeoutError, bce.ConnectTimeoutError)):
        return UpstreamTimeoutError(f"{where} timed out: {exc}")
    if isinstance(exc, (bce.NoCredentialsError, bce.PartialCredentialsError)):
        return UpstreamError(
            f"{where} failed: no usable AWS credentials ({type(exc).__name__}); the Lambda "
            "execution role provides them, or set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
        )
    if isinstance(exc, bce.NoRegionError):
        return UpstreamError(
            f"{where} failed: no AWS region; set AWS_REGION or a region in the config"
        )
    if isinstance(exc, bce.ParamValidationError):
        # botocore refused to send the request: the name or a parameter breaks the API's model.
        return BadRequestError(f"{where}: invalid request: {_short(str(exc))}")
    if isinstance(exc, (bce.ConnectionError, bce.HTTPClientError)):
        # EndpointConnectionError, ConnectionClosedError, SSL and proxy errors: the network.
        return TransientError(f"{where} failed: {type(exc).__name__}: {_short(str(exc))}")
    if isinstance(exc, (ConnectionError, TimeoutError)):  # raw socket errors, if any leak
        return TransientError(f"{where} failed: {type(exc).__name__}")
    return UpstreamError(f"{where} failed: {type(exc).__name__}: {_short(str(exc))}")


@contextlib.contextmanager
def translate_errors(
    not_found: Iterable[str] = (),
    *,
    not_found_if: Optional[NotFoundPredicate] = None,
    service: str = "",
    operation: str = "",
    what: str = "",
) -> Iterator[None]:
    """Re-raise botocore exceptions from the block as cachelayer errors, chained with ``from``.

    ``with translate_errors(("ParameterNotFound",), service="ssm", operation="GetParameter",
    what="parameter 'x'"): client.get_parameter(...)``. CachelayerErrors pass through.
    """
    not_found = tuple(not_found)
    try:
        yield
    except CachelayerError:
        raise
    except Exception as exc:
        raise classify(
            exc,
            not_found=not_found,
            not_found_if=not_found_if,
            service=service,
            operation=operation,
            what=what,
        ) from exc


def default_region(environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """``AWS_REGION`` (set by Lambda), else ``AWS_DEFAULT_REGION``, else None."""
    env = os.environ if environ is None else environ
    return env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None


OnCall = Callable[[str, str], None]


_C = TypeVar("_C")


class ClientCache(Generic[_C]):
    """Clients by key (service and region), each made once however many threads ask at once.

    Reads take no lock (a dict read is atomic); the lock guards making a client only."""

    def __init__(self) -> None:
        self._made: Dict[Hashable, _C] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, make: Callable[..., _C], *args: Any) -> _C:
        """The client kept for ``key``, made by ``make(*args)`` (once) if there is none."""
        client = self._made.get(key)
        if client is not None:
            return client
        with self._lock:
            client = self._made.get(key)
            if client is None:
                client = make(*args)
                self._made[key] = client
            return client


@attrs.define
class ClientFactory:
    """Shared, thread-safe boto3 clients: one per (service, region), from one Session.

    Clients are thread-safe once built, but a boto3 Session is not, so creation is serialised.
    ``AWS_ENDPOINT_URL`` and ``AWS_ENDPOINT_URL_<SERVICE>`` are honoured by botocore itself.
    ``on_call(service, operation)`` is called before every API call (botocore's
    ``before-call`` event: once per call, not per retry attempt), e.g. to count upstream calls.
    ``session`` may be passed in; by default one ``boto3.session.Session()`` is made lazily.
    ``max_attempts`` counts attempts in all (2: one retry, with botocore's standard backoff).
    ``endpoints`` holds ``AWS_ENDPOINT_URL[_<SERVICE>]`` values taken from an environment
    mapping that may not be ``os.environ`` (botocore itself only reads ``os.environ``).
    """

    default_region: Optional[str] = None
    on_call: Optional[OnCall] = None
    connect_timeout: float = 2.0
    read_timeout: float = 5.0
    max_attempts: int = 2
    max_pool_connections: int = 32
    session: Any = None
    endpoints: Mapping[str, str] = attrs.Factory(dict)
    _clients: ClientCache[Any] = attrs.field(init=False, factory=ClientCache)

    @classmethod
    def from_environment(
        cls, environ: Optional[Mapping[str, str]] = None, **kwargs: Any
    ) -> ClientFactory:
        """A factory with the default region and endpoint URLs of ``environ`` (or os.environ)."""
        env = os.environ if environ is None else environ
        endpoints = {k: v for k, v in env.items() if k.startswith("AWS_ENDPOINT_URL") and v}
        return cls(default_region=default_region(env), endpoints=endpoints, **kwargs)

    def botocore_config(self) -> Any:
        """The ``botocore.config.Config`` every client is built with."""
        from botocore.config import Config

        return Config(
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            # botocore's "max_attempts" counts retries, "total_max_attempts" counts attempts.
            retries={"total_max_attempts": self.max_attempts, "mode": "standard"},
            max_pool_connections=self.max_pool_connections,
            tcp_keepalive=True,
        )

    def __call__(self, service: str, region: Optional[str] = None) -> Any:
        """The client for ``service`` in ``region`` (None: the default region)."""
        region = region or self.default_region
        return self._clients.get((service, region), self._create, service, region)

    def _create(self, service: str, region: Optional[str]) -> Any:
        if self.session is None:
            import boto3.session

            self.session = boto3.session.Session()
        with translate_errors(service=service, operation="client creation"):
            client = self.session.client(service, region_name=region, config=self.botocore_config())
            endpoint = self._endpoint_for(client.meta.service_model.service_id)
            if endpoint and client.meta.endpoint_url != endpoint:
                client = self.session.client(
                    service,
                    region_name=region,
                    config=self.botocore_config(),
                    endpoint_url=endpoint,
                )
        if self.on_call is not None:
            client.meta.events.register("before-call", self._before_call)
        return client

    def _endpoint_for(self, service_id: str) -> Optional[str]:
        # botocore's own naming: "Secrets Manager" -> AWS_ENDPOINT_URL_SECRETS_MANAGER.
        specific = "AWS_ENDPOINT_URL_" + service_id.replace(" ", "_").upper()
        return self.endpoints.get(specific) or self.endpoints.get("AWS_ENDPOINT_URL")

    def _before_call(self, model: Any, **_: Any) -> None:
        if self.on_call is not None:
            self.on_call(model.service_model.service_name, model.name)
