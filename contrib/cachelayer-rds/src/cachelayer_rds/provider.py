"""The RDS provider: rows of a named source's query for one key, on ``GET /rds?name=src/key``."""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
import weakref
from typing import Any, Callable, ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import attrs

from cachelayer import (
    JSON,
    BadRequestError,
    CachelayerError,
    Item,
    NameIndex,
    NotFoundError,
    ProviderContext,
    TransientError,
    UpstreamError,
    UpstreamTimeoutError,
    Value,
)
from cachelayer_rds.config import INTEGER_KEY, MAX_KEY_LENGTH, RdsSource
from cachelayer_rds.drivers import Connection, DatabaseFailure, open_connection
from cachelayer_rds.encoding import encode_rows
from cachelayer_rds.iam import IamTokens

__all__ = ["ConnectionPool", "RdsProvider", "TooManyRowsError"]

log = logging.getLogger("cachelayer.rds")

_LIVE: weakref.WeakSet[RdsProvider] = weakref.WeakSet()


class TooManyRowsError(UpstreamError):
    """The query matched more rows than the source's ``max_rows``. Not transient: the fix is in
    the config (raise ``max_rows``) or the query (a narrower WHERE)."""

    code = "TooManyRows"


Opener = Callable[[RdsSource, Optional[str]], Connection]


@attrs.define
class ConnectionPool:
    """Up to ``size`` connections of one source, opened lazily and kept between invocations.

    Thread-safe: fetches run in the core's worker threads. A connection found dead is
    discarded by the caller, who may ask for a fresh one.
    """

    size: int
    open: Callable[[], Connection]
    _idle: List[Connection] = attrs.Factory(list)
    _count: int = 0
    _closed: bool = False
    _cond: threading.Condition = attrs.Factory(threading.Condition)

    def acquire(self, deadline: float, *, fresh: bool = False) -> Tuple[Connection, bool]:
        """A connection and whether it was reused; waits for a free slot until ``deadline``."""
        with self._cond:
            while True:
                if self._closed:
                    raise UpstreamError("the rds provider is shutting down")
                if self._idle and not fresh:
                    return self._idle.pop(), True
                if fresh and self._idle and self._count >= self.size:
                    # Make room for the replacement: the oldest idle connection has most
                    # likely died in the same freeze as the one being replaced.
                    self._close(self._idle.pop(0))
                    self._count -= 1
                if self._count < self.size:
                    self._count += 1
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise UpstreamTimeoutError(
                        f"all {self.size} connections of the source stayed busy; raise pool_size"
                    )
                self._cond.wait(remaining)
        try:
            return self.open(), False
        except BaseException:
            with self._cond:
                self._count -= 1
                self._cond.notify()
            raise

    def release(self, conn: Connection) -> None:
        """Give a connection back: kept if still usable, closed otherwise."""
        if not conn.usable:
            self.discard(conn)
            return
        with self._cond:
            if not self._closed:
                self._idle.append(conn)
                self._cond.notify()
                return
        self._close(conn)

    def discard(self, conn: Connection) -> None:
        """Close a connection that failed, freeing its slot."""
        self._close(conn)
        with self._cond:
            self._count -= 1
            self._cond.notify()

    def close(self) -> None:
        """Close the idle connections; those in use close when given back."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._count -= len(idle)
            self._cond.notify_all()
        for conn in idle:
            self._close(conn)

    @property
    def open_connections(self) -> int:
        """Connections open now (idle or in use)."""
        with self._cond:
            return self._count

    @staticmethod
    def _close(conn: Connection) -> None:
        conn.close()


@attrs.frozen(eq=False)  # compared by identity: the shutdown hook keeps a weak set of them
class RdsProvider:
    """Serves the rows of the ``rds:`` section's sources: ``GET /rds?name=<source>/<key>``.

    The body is a JSON array of row objects; no rows is ``NotFound``. Providers never cache: the
    core keeps the answer for the source's ``ttl``. The connection pools are the provider's
    state; ``opener`` and ``tokens`` can be swapped in tests (``from_config(..., opener=...)``).
    """

    name: ClassVar[str] = "rds"
    route: ClassVar[str] = "rds"
    # Only used when the core has no ProviderContext.read (the password secret is then fetched
    # directly); kept so the layer builder keeps the model.
    services: ClassVar[Tuple[str, ...]] = ("secretsmanager",)
    config_schema: ClassVar[Any] = List[RdsSource]
    query_parameters: ClassVar[Tuple[str, ...]] = ()  # name= only
    ttl_environment_variable: ClassVar[Optional[str]] = None

    _context: ProviderContext
    _sources: NameIndex[RdsSource] = attrs.Factory(NameIndex)
    opener: Opener = open_connection
    tokens: IamTokens = attrs.Factory(IamTokens)
    _pools: Dict[str, ConnectionPool] = attrs.Factory(dict)

    def __attrs_post_init__(self) -> None:
        for source in self._sources.entries:
            self._pools[source.name] = ConnectionPool(
                size=source.pool_size, open=self._opener_for(source)
            )
        _LIVE.add(self)

    @classmethod
    def from_config(
        cls,
        config: Optional[Sequence[RdsSource]],
        context: ProviderContext,
        *,
        opener: Opener = open_connection,
        tokens: Optional[IamTokens] = None,
    ) -> RdsProvider:
        """Index the sources by name; no connection is made until the first fetch."""
        sources = NameIndex.build(
            config,
            names=lambda source: (("name", source.name),),
            section="rds",
            what="source",
            describe=lambda source: "{}://{}:{}/{}".format(*source.describe()),
        )
        return cls(context, sources, opener, tokens or IamTokens())

    def declared(self) -> Sequence[Item]:
        """The ``keys`` of each source, for init-startup prefetch."""
        return [self.resolve(f"{s.name}/{k}", {}) for s in self._sources.entries for k in s.keys]

    def resolve(self, name: str, params: Mapping[str, str]) -> Item:
        """``name`` is ``<source>/<key>``; the key is everything after the first ``/``."""
        source_name, slash, key = name.partition("/")
        source = self._sources.get(source_name)
        if source is None:
            known = ", ".join(self._sources.names()) or "none are declared"
            raise NotFoundError(
                f"no rds source named {source_name!r} (sources: {known}); declare it in the "
                "rds: section of the config"
            )
        if not slash or key == "":
            raise BadRequestError(f"no key: use /rds?name={source_name}/<key>")
        if len(key) > MAX_KEY_LENGTH:
            raise BadRequestError(f"the key is longer than {MAX_KEY_LENGTH} characters")
        if "\x00" in key:
            raise BadRequestError("the key holds a NUL character, which no database accepts")
        bound: Union[str, int] = key
        if source.key_type == "integer":
            if not INTEGER_KEY.match(key):
                raise BadRequestError(
                    f"the rds source {source_name!r} takes integer keys; {key!r} is not one"
                )
            bound = int(key, 10)
            key = str(bound)
        return Item(
            route=self.route,
            name=f"{source_name}/{key}",
            ttl=float(source.ttl) if source.ttl is not None else None,
            target=(source, bound),
        )

    def fetch(self, item: Item) -> Value:
        """Run the source's query for the key: a pooled connection, replaced once if dead."""
        source, key = item.target
        pool = self._pools[source.name]
        deadline = time.monotonic() + source.deadline
        conn, reused = pool.acquire(deadline)
        while True:
            try:
                columns, rows = conn.query(key)
            except DatabaseFailure as failure:
                pool.release(conn)  # closed if dead
                if failure.dead and reused and time.monotonic() < deadline:
                    # A connection kept across invocations may have died while the environment
                    # was frozen (server idle timeout, failover): replace it once.
                    log.info(
                        "rds %r: kept connection was dead (%s); reconnecting",
                        source.name,
                        failure.error.code,
                    )
                    conn, reused = pool.acquire(deadline, fresh=True)
                    continue
                raise failure.error from None
            break
        pool.release(conn)
        if len(rows) > source.max_rows:
            raise TooManyRowsError(
                f"rds source {source.name!r}: the key {item.name.partition('/')[2]!r} matches "
                f"more than max_rows ({source.max_rows}) rows; raise max_rows or narrow the query"
            )
        if not rows:
            raise NotFoundError(
                f"rds source {source.name!r}: no rows for the key {item.name.partition('/')[2]!r}"
            )
        if len(set(columns)) != len(columns):
            dupes = sorted({c for c in columns if columns.count(c) > 1})
            raise UpstreamError(
                f"rds source {source.name!r}: the query returns more than one column named "
                f"{', '.join(dupes)}; give them distinct names with AS"
            )
        return Value(body=encode_rows(columns, rows), content_type=JSON)

    def close(self) -> None:
        """Close every kept connection (at shutdown)."""
        for pool in self._pools.values():
            pool.close()

    def open_connections(self, source: str) -> int:
        """How many connections of ``source`` are open now."""
        return self._pools[source].open_connections

    # -- credentials ---------------------------------------------------------------------------

    def _opener_for(self, source: RdsSource) -> Callable[[], Connection]:
        def open_one() -> Connection:
            password = self._password(source)
            try:
                return self.opener(source, password)
            except DatabaseFailure as failure:
                raise failure.error from None

        return open_one

    def _password(self, source: RdsSource) -> Optional[str]:
        if source.iam_auth:
            db = source.database
            region = source.signing_region
            assert region is not None  # checked when the config was read
            return self.tokens.token(db.host, db.port, db.user, region)
        if source.password_secret is None:
            return None
        return _password_from(self._secret(source), source)

    def _secret(self, source: RdsSource) -> bytes:
        """The password secret's value: through the core's cache when it offers reads."""
        secret = source.password_secret
        assert secret is not None
        context = self._context
        try:
            if context.read is not None:
                return context.read("secrets", secret).body
            return self._secret_directly(context, source, secret)
        except NotFoundError as exc:
            # Not the rows' "not found": a missing password must not be negative-cached as if
            # the key had no rows.
            raise UpstreamError(
                f"rds source {source.name!r}: the password secret {secret!r} was not found ({exc})"
            ) from None
        except TransientError:
            raise
        except CachelayerError as exc:
            raise UpstreamError(
                f"rds source {source.name!r}: reading the password secret {secret!r} failed: {exc}"
            ) from None

    @staticmethod
    def _secret_directly(context: ProviderContext, source: RdsSource, secret: str) -> bytes:
        """GetSecretValue over the core's lean JSON transport (no boto3)."""
        client = context.json_client("secretsmanager", source.region)
        response = client.call(
            "GetSecretValue",
            {"SecretId": secret},
            not_found=("ResourceNotFoundException",),
            what=f"secret {secret!r}",
        )
        text = response.get("SecretString")
        if text is not None:
            return str(text).encode("utf-8")
        data = response.get("SecretBinary")
        if data is None:
            raise UpstreamError(
                f"secretsmanager returned neither SecretString nor SecretBinary for {secret!r}"
            )
        try:
            # A JSON-protocol blob is base64 text on the wire.
            return base64.b64decode(str(data), validate=True)
        except ValueError:
            raise UpstreamError(
                f"secretsmanager returned a SecretBinary for {secret!r} that is not base64"
            ) from None


def _password_from(raw: bytes, source: RdsSource) -> str:
    """The password in a secret: its text, or the ``password`` of the JSON RDS stores."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UpstreamError(
            f"rds source {source.name!r}: the password secret is binary; store it as text"
        ) from None
    if text.lstrip().startswith("{"):
        try:
            fields = json.loads(text)
        except ValueError:
            return text
        if isinstance(fields, dict):
            password = fields.get("password")
            if not isinstance(password, str):
                raise UpstreamError(
                    f"rds source {source.name!r}: the password secret is JSON without a "
                    "'password' string field"
                )
            return password
    return text


def close_all() -> None:
    """Close the connections of every live provider (the shutdown hook)."""
    for provider in list(_LIVE):
        provider.close()
