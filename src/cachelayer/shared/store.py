"""The shared store contract: what a second-tier backend (Redis, or a plugin's) must do."""

from __future__ import annotations

from typing import Callable, Optional, Protocol, Tuple, runtime_checkable

import attrs

__all__ = ["SharedStore", "SharedStoreKind", "StoreError", "StoreOptions"]


class StoreError(Exception):
    """A store operation failed or missed its deadline. The message never holds a value."""


@attrs.frozen
class StoreOptions:
    """What a store is opened with: the URL, its credentials and deadlines (seconds).

    ``read_secret(secret_id)`` reads a Secrets Manager secret's string (for a password kept
    there); call it lazily, on first use, never in the constructor.
    """

    url: str = attrs.field(repr=False)
    password: Optional[str] = attrs.field(default=None, repr=False)
    password_secret: Optional[str] = None
    read_secret: Optional[Callable[[str], str]] = attrs.field(default=None, repr=False)
    timeout: float = 0.05
    connect_timeout: float = 0.2
    cluster: bool = False
    ca_file: Optional[str] = None


@runtime_checkable
class SharedStore(Protocol):
    """A key-value store with expiry shared by every execution environment.

    Every method is blocking (called from worker threads), must finish within the options'
    deadlines, and raises ``StoreError`` for any failure. Constructors do no I/O: connect on
    first use, and reconnect (once, within the deadline) when a connection turns out broken,
    e.g. after the Lambda environment was frozen.
    """

    def get(self, key: str) -> Optional[bytes]:
        """The bytes stored at ``key``, or None."""

    def set(self, key: str, data: bytes, ttl: float) -> None:
        """Store ``data`` at ``key`` for ``ttl`` seconds."""

    def add(self, key: str, data: bytes, ttl: float) -> bool:
        """Store ``data`` at ``key`` for ``ttl`` seconds only if ``key`` is absent (a lease);
        True if stored."""

    def release(self, key: str, data: bytes) -> None:
        """Delete ``key`` if it still holds ``data`` (give back a lease that is still ours)."""

    def delete_prefix(self, prefix: str) -> int:
        """Delete every key starting with ``prefix``; return how many."""

    def close(self) -> None:
        """Drop connections (the store may be used again: it reconnects)."""


@attrs.frozen
class SharedStoreKind:
    """A store a plugin contributes: the URL schemes it answers and how to open one."""

    name: str
    schemes: Tuple[str, ...]
    open: Callable[[StoreOptions], SharedStore]
