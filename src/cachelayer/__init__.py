"""cachelayer: an in-memory caching layer for AWS Lambda. The public face for provider authors."""

from __future__ import annotations

import pluggy

from cachelayer.errors import (
    BadRequestError,
    CachelayerError,
    ConfigError,
    NotFoundError,
    PluginError,
    TransientError,
    UpstreamError,
    UpstreamTimeoutError,
)
from cachelayer.provider import (
    BINARY,
    JSON,
    TEXT,
    Duration,
    Item,
    Provider, ProviderContext, SupportsFetchMany,
    Value,
)

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("cachelayer")
"""Marker for plugin hook implementations: ``@cachelayer.hookimpl def cachelayer_providers()``."""

__all__ = [
    "BINARY",
    "JSON",
    "TEXT",
    "BadRequestError",
    "CachelayerError",
    "ConfigError",
    "Duration",
    "Item",
    "NotFoundError",
    "PluginError",
    "Provider",
    "ProviderContext",
    "SupportsFetchMany",
    "SupportsRefresh",
    "TransientError",
    "UpstreamError",
    "UpstreamTimeoutError",
    "Value",
    "__version__",
    "hookimpl",
]
