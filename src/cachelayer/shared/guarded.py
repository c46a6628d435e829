"""The shared store behind the breaker: each operation counted and timed, entries sealed."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any, Callable, Optional, Tuple

from cachelayer.shared.breaker import CircuitBreaker
from cachelayer.shared.counters import RouteCounters
from cachelayer.shared.crypto import Sealer, UnsealError
from cachelayer.shared.record import SharedRecord, decode_record, encode_record
from cachelayer.shared.settings import SharedConfig, decode_key, redact_url
from cachelayer.shared.store import SharedStore, StoreError

__all__ = ["GuardedStore", "Unavailable"]

log = logging.getLogger("cachelayer.shared")


class Unavailable(Exception):
    """The tier cannot be used for this read (breaker open, error, deadline): go upstream."""


class GuardedStore:
    """``store`` as the tier uses it: an operation is only tried while ``breaker`` allows,
    any failure is counted, fed to the breaker and raised as ``Unavailable``; records are
    sealed with AES-256-GCM (the storage key as associated data) on the way in and opened on
    the way out, an entry that does not open being a miss, counted and warned about. The key
    is the config's, or read once, on first use, from the secret it names."""

    def __init__(
        self,
        store: SharedStore,
        config: SharedConfig,
        breaker: CircuitBreaker,
        read_secret: Optional[Callable[[str], str]] = None,
    ) -> None:
        self.store = store
        self._config = config
        self._breaker = breaker
        self._read_secret = read_secret
        self._sealer: Optional[Sealer] = None
        self._sealer_lock = threading.Lock()

    def op(self, counters: RouteCounters, fn: Callable[[], Any]) -> Any:
        """``fn()`` (one store call) if the breaker allows it; raises ``Unavailable``."""
        if not self._breaker.allow():
            raise Unavailable
        started = time.perf_counter()
        try:
            result = fn()
        except StoreError as exc:
            counters.bump("errors")
            if self._breaker.failure():
                log.warning(
                    "shared tier %s is failing (%s); reading upstream directly, probing it "
                    "again in %.0fs",
                    redact_url(self._config.url),
                    exc,
                    float(self._config.settings.breaker_cooldown),
                )
            else:
                log.debug("shared tier operation failed: %s", exc)
            raise Unavailable from None
        counters.timed(time.perf_counter() - started)
        if self._breaker.success():
            log.warning("shared tier %s answers again; using it", redact_url(self._config.url))
        return result

    def read(
        self, counters: RouteCounters, key: str, known_bad: Optional[bytes] = None
    ) -> Tuple[Optional[SharedRecord], Optional[bytes]]:
        """The record at ``key`` (None if absent or rejected) and the bytes read.
        ``known_bad``: bytes already rejected once, not counted or warned about again."""
        sealer = self._sealer_for(counters)
        data = self.op(counters, lambda: self.store.get(key))
        if data is None or data == known_bad:
            return None, data
        try:
            return decode_record(sealer.open(key.encode("utf-8"), data)), data
        except (UnsealError, ValueError, KeyError, TypeError) as exc:
            counters.bump("rejected")
            log.warning("shared entry %r rejected and treated as a miss: %s", key, exc)
            return None, data

    def write(self, counters: RouteCounters, key: str, record: SharedRecord, ttl: float) -> None:
        """Seal and store ``record`` for ``ttl`` seconds; a failure only means not shared."""
        try:
            plaintext = encode_record(record)
        except (TypeError, ValueError) as exc:
            log.debug("not sharing %r: %s", key, exc)
            return
        try:
            sealer = self._sealer_for(counters)
            sealed = sealer.seal(key.encode("utf-8"), plaintext)
            self.op(counters, lambda: self.store.set(key, sealed, ttl))
        except Unavailable:
            return
        counters.bump("writes")

    def take_lease(self, counters: RouteCounters, lease_key: str, token: bytes, ttl: float) -> bool:
        """Whether this caller won the lease ``lease_key``; raises ``Unavailable``."""
        return bool(self.op(counters, lambda: self.store.add(lease_key, token, ttl)))

    def lease_released(self, counters: RouteCounters, lease_key: str) -> bool:
        """Whether nobody holds ``lease_key`` any more; raises ``Unavailable``."""
        return self.op(counters, lambda: self.store.get(lease_key)) is None

    def give_back(self, counters: RouteCounters, lease_key: str, token: bytes) -> None:
        """Release a lease this caller won (if the store fails, it expires by itself)."""
        with contextlib.suppress(Unavailable):
            self.op(counters, lambda: self.store.release(lease_key, token))

    def _sealer_for(self, counters: RouteCounters) -> Sealer:
        """The sealer, made on first use (the key may come from Secrets Manager); a failure to
        get the key makes the tier unavailable like a store failure."""
        if self._sealer is not None:
            return self._sealer
        if self._breaker.state == "open":  # looking does not take the half-open probe
            raise Unavailable
        try:
            return self._seal_key()
        except StoreError as exc:
            counters.bump("errors")
            self._breaker.failure()
            log.warning("shared tier unusable: %s", exc)
            raise Unavailable from None

    def _seal_key(self) -> Sealer:
        sealer = self._sealer
        if sealer is not None:
            return sealer
        with self._sealer_lock:
            if self._sealer is None:
                key = self._config.key
                self._sealer = Sealer(self._key_from_secret() if key is None else key)
            return self._sealer

    def _key_from_secret(self) -> bytes:
        secret = self._config.settings.key_secret
        if not secret or self._read_secret is None:
            raise StoreError("no encryption key for the shared tier")
        try:
            text = self._read_secret(secret)
        except Exception as exc:
            raise StoreError(
                f"could not read the key secret {secret!r}: {type(exc).__name__}"
            ) from None
        try:
            return decode_key(text, f"secret {secret}")
        except Exception as exc:
            raise StoreError(str(exc)) from None
