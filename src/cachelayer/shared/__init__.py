"""The optional shared cache tier: a second tier on a store every execution environment shares.

Importing this package imports neither redis-py nor cryptography (they are imported when a tier
is configured and first used: the ``cachelayer[shared]`` extra), and its names are loaded on
first use, so the built-in store's entry point costs nothing at startup without a tier.
"""

from __future__ import annotations

import importlib
from typing import Any, Dict

__all__ = [
    "CircuitBreaker",
    "Fetched",
    "SharedConfig",
    "SharedSettings",
    "SharedStore",
    "SharedStoreKind",
    "SharedTier",
    "StoreError",
    "StoreOptions",
    "open_tier",
]

_LAZY: Dict[str, str] = {
    "CircuitBreaker": "cachelayer.shared.breaker",
    "Fetched": "cachelayer.shared.tier",
    "SharedTier": "cachelayer.shared.tier",
    "SharedConfig": "cachelayer.shared.settings",
    "SharedSettings": "cachelayer.shared.settings",
    "SharedStore": "cachelayer.shared.store",
    "SharedStoreKind": "cachelayer.shared.store",
    "StoreError": "cachelayer.shared.store",
    "StoreOptions": "cachelayer.shared.store",
    "open_tier": "cachelayer.shared.factory",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cachelayer.shared' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(__all__))
