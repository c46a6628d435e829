"""The built-in shared store: any Redis-protocol server (Valkey, Redis, ElastiCache, MemoryDB).

redis-py is imported on first use, so the core stays importable without the ``shared`` extra.
"""

from __future__ import annotations

import contextlib
import re
import threading
import urllib.parse
from typing import Any, Callable, Iterable, List, Optional, TypeVar

from cachelayer.shared.settings import redact_url
from cachelayer.shared.store import SharedStoreKind, StoreError, StoreOptions

__all__ = ["RedisStore", "kind"]

T = TypeVar("T")

# Give back a lease only if it is still ours (it may have expired and been taken since).
_RELEASE = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
)
_GLOB = re.compile(r"([*?\[\]\\])")


class RedisStore:
    """A ``SharedStore`` on redis-py: standalone (``redis.Redis``) or cluster mode
    (``redis.cluster.RedisCluster``, which follows MOVED/ASK redirections).

    Connects lazily on first use. Every command has the options' deadline as its socket
    timeout; a connection found broken (e.g. closed while Lambda was frozen) is retried once
    on a fresh connection, a timeout is not retried.
    """

    def __init__(self, options: StoreOptions) -> None:
        self._options = options
        self._client: Any = None
        self._lock = threading.Lock()
        self._errors: Any = None

    def __repr__(self) -> str:
        return f"RedisStore({redact_url(self._options.url)!r}, cluster={self._options.cluster})"

    # -- connection ----------------------------------------------------------------------

    def _connect(self) -> Any:
        try:
            import redis
            import redis.exceptions
            from redis.backoff import NoBackoff
            from redis.retry import Retry
        except ImportError:
            raise StoreError(
                "the shared tier needs redis-py, which is not installed; "
                "install cachelayer[shared] (pip install 'cachelayer[shared]')"
            ) from None
        self._errors = redis.exceptions
        o = self._options
        kwargs: dict[str, Any] = {
            "socket_timeout": o.timeout,
            "socket_connect_timeout": o.connect_timeout,
            # One retry, on a fresh connection, for a connection found broken; never on a
            # timeout (the deadline is the deadline).
            "retry": Retry(NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,)),
            "health_check_interval": 0,  # nothing on a timer; Lambda freezes us anyway
        }
        password = o.password
        if password is None and o.password_secret:
            if o.read_secret is None:
                raise StoreError("password_secret is set but no Secrets Manager reader is given")
            try:
                password = o.read_secret(o.password_secret)
            except Exception as exc:
                raise StoreError(
                    f"could not read the password secret {o.password_secret!r}: {type(exc).__name__}"
                ) from None
        if password is not None and urllib.parse.urlsplit(o.url).password is None:
            kwargs["password"] = password
        if urllib.parse.urlsplit(o.url).scheme.lower() == "rediss":
            kwargs["ssl_cert_reqs"] = "required"
            kwargs["ssl_check_hostname"] = True
            if o.ca_file:
                kwargs["ssl_ca_certs"] = o.ca_file
        try:
            if o.cluster:
                from redis.cluster import RedisCluster

                # The constructor reads the cluster's slot map: network I/O, done here, lazily.
                return RedisCluster.from_url(o.url, **kwargs)
            return redis.Redis.from_url(o.url, **kwargs)
        except (redis.exceptions.RedisError, OSError, ValueError) as exc:
            raise StoreError(self._describe(exc)) from None

    def _describe(self, exc: BaseException) -> str:
        text = str(exc)
        if type(exc).__name__ in ("MovedError", "AskError") or text.startswith(("MOVED", "ASK")):
            return (
                f"{redact_url(self._options.url)} is a cluster-mode server ({text[:80]}); "
                "set cache.shared.cluster: true"
            )
        # redis-py messages name hosts and commands, never our (sealed) values.
        return f"{type(exc).__name__}: {text[:200]}"

    def _call(self, fn: Callable[[Any], T]) -> T:
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._connect()
                client = self._client
        try:
            return fn(client)
        except (self._errors.RedisError, OSError) as exc:
            raise StoreError(self._describe(exc)) from None

    # -- the SharedStore protocol --------------------------------------------------------

    def get(self, key: str) -> Optional[bytes]:
        """The bytes at ``key`` or None."""
        got = self._call(lambda c: c.get(key))
        return None if got is None else bytes(got)

    def set(self, key: str, data: bytes, ttl: float) -> None:
        """SET key data PX ttl."""
        self._call(lambda c: c.set(key, data, px=max(1, int(ttl * 1000))))

    def add(self, key: str, data: bytes, ttl: float) -> bool:
        """SET key data NX PX ttl: True if it was absent and is now ours."""
        return bool(self._call(lambda c: c.set(key, data, nx=True, px=max(1, int(ttl * 1000)))))

    def release(self, key: str, data: bytes) -> None:
        """Delete ``key`` if it still holds ``data`` (a Lua compare-and-delete)."""
        self._call(lambda c: c.eval(_RELEASE, 1, key, data))

    def delete_prefix(self, prefix: str) -> int:
        """SCAN every node for ``prefix*`` and UNLINK what it finds."""
        pattern = _GLOB.sub(r"\\\1", prefix) + "*"

        def run(client: Any) -> int:
            keys: List[Any] = list(client.scan_iter(match=pattern, count=1000))
            for chunk in _chunks(keys, 500):
                pipe = client.pipeline(transaction=False)
                for k in chunk:
                    pipe.unlink(k)
                pipe.execute()
            return len(keys)

        return self._call(run)

    def close(self) -> None:
        """Drop the client and its connections; the next call reconnects."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            # Closing a broken connection may fail; it is gone either way.
            with contextlib.suppress(Exception):
                client.close()


def _chunks(items: List[Any], size: int) -> Iterable[List[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def kind() -> SharedStoreKind:
    """The built-in Redis protocol store, for ``redis://`` and ``rediss://`` (TLS) URLs."""
    return SharedStoreKind("redis", ("redis", "rediss"), RedisStore)
