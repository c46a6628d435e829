"""cachelayer: an in-memory caching layer for AWS Lambda. The public face for provider authors.

A provider package needs only this module: the hook marker, the Provider protocol and its
records, the error types, and the helpers every provider needs (``NameIndex``, the
``not_empty``/``positive`` validators, ``check_query_parameters``, ``ByteSize``).

Names are loaded on first use (PEP 562): the extension imports ``cachelayer`` before it
registers with Lambda, and registration should not wait for pluggy and attrs to load.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Dict, Tuple

from cachelayer._version import __version__

if TYPE_CHECKING:
    import pluggy

    from cachelayer.awsjson import JsonClient, JsonClientFactory, JsonService
    from cachelayer.errors import (
        BadRequestError,
        CachelayerError,
        ConfigError,
        NotFoundError,
        PluginError,
        ThrottlingError,
        TransientError,
        UpstreamError,
        UpstreamTimeoutError,
    )
    from cachelayer.helpers import (
        NameIndex,
        Validator,
        check_query_parameters,
        not_empty,
        positive,
    )
    from cachelayer.provider import (
        BINARY,
        JSON,
        TEXT,
        Duration,
        Item,
        Provider,
        ProviderContext,
        SupportsFetchMany,
        SupportsRefresh,
        Value,
    )
    from cachelayer.units import ByteSize, Ratio

    hookimpl: pluggy.HookimplMarker

_LAZY: Dict[str, Tuple[str, str]] = {
    **{
        name: ("cachelayer.awsjson", name)
        for name in ("JsonClient", "JsonClientFactory", "JsonService")
    },
    **{
        name: ("cachelayer.errors", name)
        for name in (
            "BadRequestError",
            "CachelayerError",
            "ConfigError",
            "NotFoundError",
            "PluginError",
            "ThrottlingError",
            "TransientError",
            "UpstreamError",
            "UpstreamTimeoutError",
        )
    },
    **{
        name: ("cachelayer.helpers", name)
        for name in ("NameIndex", "Validator", "check_query_parameters", "not_empty", "positive")
    },
    **{name: ("cachelayer.units", name) for name in ("ByteSize", "Ratio")},
    **{
        name: ("cachelayer.provider", name)
        for name in (
            "BINARY",
            "JSON",
            "TEXT",
            "Duration",
            "Item",
            "Provider",
            "ProviderContext",
            "SupportsFetchMany",
            "SupportsRefresh",
            "Value",
        )
    },
}


def __getattr__(name: str) -> Any:
    if name == "hookimpl":
        import pluggy

        marker = pluggy.HookimplMarker("cachelayer")
        globals()["hookimpl"] = marker
        return marker
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'cachelayer' has no attribute {name!r}")
    value = getattr(importlib.import_module(target[0]), target[1])
    globals()[name] = value
    return value


def __dir__() -> list:
    # The public API only: not the typing helpers and loader machinery of this module.
    return sorted(__all__)


__all__ = [
    "BINARY",
    "JSON",
    "TEXT",
    "BadRequestError",
    "ByteSize",
    "CachelayerError",
    "ConfigError",
    "Duration",
    "Item",
    "JsonClient",
    "JsonClientFactory",
    "JsonService",
    "NameIndex",
    "NotFoundError",
    "PluginError",
    "Provider",
    "ProviderContext",
    "Ratio",
    "SupportsFetchMany",
    "SupportsRefresh",
    "ThrottlingError",
    "TransientError",
    "UpstreamError",
    "UpstreamTimeoutError",
    "Validator",
    "Value",
    "__version__",
    "check_query_parameters",
    "hookimpl",
    "not_empty",
    "positive",
]
