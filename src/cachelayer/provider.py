"""The provider contract: the records a provider exchanges with the core, and its Protocol."""

from __future__ import annotations

from typing import (
    Any,
    Callable,
    ClassVar,
    Mapping,
    Optional,
    Protocol,
    Sequence,
    Tuple,
    Union,
    runtime_checkable,
)

import attrs

from cachelayer.errors import CachelayerError

__all__ = [
    "Duration",
    "Item",
    "Provider",
    "ProviderContext",
    "SupportsFetchMany",
    "SupportsRefresh",
    "Value",
]

TEXT = "text/plain; charset=utf-8"
BINARY = "application/octet-stream"
JSON = "application/json"


class Duration(float):
    """Seconds, written in config as a Go duration (``30s``, ``1h30m``, ``1.5h``, ``500ms``).

    Use it as a field type in a provider's config schema; the core parses and validates it.
    """


@attrs.frozen
class Item:
    """One cacheable thing: what the cache keys on and what the provider knows how to fetch.

    The cache key is ``(route, name, variant)``. ``variant`` holds whatever changes the value
    (version, label, decryption) as sorted ``(key, value)`` pairs. ``ttl``, ``stale_if_error``
    and ``negative_ttl`` are in seconds, ``None`` meaning "not set here, use the next level of
    precedence" (the core fills in env, ``cache:`` and defaults). ``target`` is the provider's
    own data (region, key schema...) and takes no part in equality.
    """

    route: str
    name: str
    variant: Tuple[Tuple[str, str], ...] = ()
    ttl: Optional[float] = None
    target: Any = attrs.field(default=None, eq=False, hash=False, repr=False)
    key: Tuple[str, str, Tuple[Tuple[str, str], ...]] = attrs.field(
        init=False, eq=False, hash=False, repr=False
    )
    """The cache key of this item: ``(route, name, variant)``, computed once."""

    def __attrs_post_init__(self) -> None:
        # Built once: the server's hit path asks for it on every request.
        object.__setattr__(self, "key", (self.route, self.name, self.variant))


@attrs.frozen
class Value:
    """A fetched value as the core stores and serves it.

    ``body`` is what ``GET /<route>?name=`` returns, with ``content_type``. ``metadata`` carries
    upstream fields (ARN, version, dates...) for routes that answer with the service's own JSON;
    it is never logged. ``etag`` lets a provider make conditional refreshes.
    """

    body: bytes
    content_type: str = TEXT
    metadata: Mapping[str, Any] = attrs.field(factory=dict, repr=False)
    etag: Optional[str] = None

    def __repr__(self) -> str:  # values may be secrets: never show the body
        return f"Value(<{len(self.body)} bytes>, content_type={self.content_type!r})"

    @property
    def size(self) -> int:
        """Bytes this value costs against ``max_bytes``."""
        return len(self.body)


def _environment_json_clients() -> Callable[[Any, Optional[str]], Any]:
    from cachelayer.awsjson import JsonClientFactory

    return JsonClientFactory.from_environment()


@attrs.frozen
class ProviderContext:
    """What the core hands a provider type's ``from_config``.

    ``json_client(service, region)`` returns a shared, thread-safe ``cachelayer.awsjson``
    client for a JSON-protocol service (``"ssm"``, ``"secretsmanager"``, ``"dynamodb"`` or a
    ``JsonService``), with the core's timeouts and retries; it never loads boto3.
    ``client(service, region)`` returns a shared, thread-safe boto3 client built with the same
    policy and ``AWS_ENDPOINT_URL`` honoured; boto3 is imported the first time one is asked
    for. ``region`` ``None`` means the default region, ``default_region``
    (``AWS_REGION``/``AWS_DEFAULT_REGION``).

    ``read(route, name)`` reads another provider's value through the core's cache, as
    ``GET /<route>?name=<name>`` would (TTL, single-flight, stale-if-error, stats), e.g. a
    database password from ``("secrets", "app-db-password")``. Call it only from ``fetch`` or
    ``refresh`` (it blocks its worker thread until the value is there); it raises the errors
    that route would answer with. ``None`` where there is no core (a bare test context).
    """

    client: Callable[[str, Optional[str]], Any]
    default_region: Optional[str] = None
    read: Optional[Callable[[str, str], Value]] = None
    json_client: Callable[[Any, Optional[str]], Any] = attrs.field(
        factory=_environment_json_clients, repr=False
    )


@runtime_checkable
class Provider(Protocol):
    """A source of cacheable values, born configured. Providers never cache: the core does.

    A plugin contributes provider *types* (classes); what the core needs before any config is
    read is static, on the class:

    Attributes:
        name: the config section it owns (``parameters``); also its name in listings.
        route: the HTTP route it answers (``GET /<route>?name=``).
        services: the AWS service names (botocore's) it calls, for the layer builder's pruning.
        config_schema: the type of its config section, e.g. ``List[ParameterGroup]`` of attrs
            classes; the core validates the YAML against it and passes the result to
            ``from_config``. ``None`` if the provider takes no configuration.
        query_parameters: the query parameters it takes besides ``name``, in the order its
            messages list them (``("version", "label")``); the router refuses any other one
            with a 400 before ``resolve`` is called. ``()`` for ``name`` only.
        ttl_environment_variable: an environment variable that sets the section's TTL in
            whole seconds (``SSM_PARAMETER_STORE_TTL``), or ``None``.

    Then ``from_config`` builds a ready provider, preferably frozen (``@attrs.frozen``): there
    is no "not configured yet" state to guard against.
    """

    name: ClassVar[str]
    route: ClassVar[str]
    services: ClassVar[Tuple[str, ...]]
    config_schema: ClassVar[Any]
    query_parameters: ClassVar[Tuple[str, ...]]
    ttl_environment_variable: ClassVar[Optional[str]]

    @classmethod
    def from_config(cls, config: Any, context: ProviderContext) -> Provider:
        """A ready provider from the validated section (``None`` when absent) and the context.

        No network I/O (it runs in the Lambda init phase). Raise ``ConfigError`` (with ``key``)
        or ``ValueError`` for a section that is valid field by field but wrong as a whole.
        """

    def declared(self) -> Sequence[Item]:
        """The items the config declares: what ``init_startup`` prefetches."""

    def resolve(self, name: str, params: Mapping[str, str]) -> Item:
        """Turn a request's ``name`` and its other query parameters into an Item.

        ``params`` holds the URL-decoded query parameters other than ``name``, each one of
        ``query_parameters`` (the router refused the others). Raise ``BadRequestError`` for a
        bad value, ``NotFoundError`` when the name cannot exist (e.g. an undeclared key).
        """

    def fetch(self, item: Item) -> Value:
        """Fetch one item from upstream. Blocking; runs in a worker thread, never on the loop.

        Raise ``NotFoundError``, ``TransientError`` / ``UpstreamTimeoutError`` or
        ``UpstreamError``; ``cachelayer.aws.translate_errors`` classifies botocore errors.
        """


@runtime_checkable
class SupportsFetchMany(Protocol):
    """Optional capability: fetch many items with the service's batch API."""

    def fetch_many(self, items: Sequence[Item]) -> Mapping[Item, Union[Value, CachelayerError]]:
        """Fetch ``items`` (already grouped as the provider likes); one result per item."""


@runtime_checkable
class SupportsRefresh(Protocol):
    """Optional capability: refresh an item conditionally, knowing the value held now.

    The core calls ``refresh`` instead of ``fetch`` when it holds a value for the item (expired
    or being refreshed ahead). Return ``previous`` itself when upstream says nothing changed
    (an S3 304, an AppConfig "unchanged"): the core renews its TTL without a transfer.
    """

    def refresh(self, item: Item, previous: Value) -> Value:
        """Fetch ``item`` again, or return ``previous`` if it is unchanged upstream."""
