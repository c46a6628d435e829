"""Opening the shared tier: the store picked by URL scheme among the plugins' stores."""

from __future__ import annotations

import importlib.util
import logging
from typing import Any, Callable, Dict, List, Optional

from cachelayer.errors import ConfigError, PluginError
from cachelayer.hooks import PluginHooks
from cachelayer.shared.settings import SharedConfig, redact_url
from cachelayer.shared.store import SharedStoreKind, StoreOptions
from cachelayer.shared.tier import SharedTier

__all__ = ["open_tier", "store_kinds"]

log = logging.getLogger("cachelayer.shared")


def store_kinds(pm: Any) -> Dict[str, SharedStoreKind]:
    """The stores by URL scheme: the built-in Redis store, and the plugins' (a plugin may
    replace the built-in one for its schemes). A plugin whose hook raises is logged by name and
    skipped; two plugins claiming one scheme raise ``PluginError``."""
    from cachelayer.shared import redis_store

    # Built in, not an entry point: the provider filters (CACHE_EXTENSION_PLUGINS) never
    # leave the tier without its store.
    builtin = redis_store.kind()
    kinds: Dict[str, SharedStoreKind] = dict.fromkeys(builtin.schemes, builtin)
    owners: Dict[str, str] = dict.fromkeys(builtin.schemes, "(built in)")
    for answer in PluginHooks(pm).shared_stores():
        plugin_name = answer.plugin_name
        if answer.error is not None:
            log.warning(
                "plugin %r is skipped: cachelayer_shared_stores() raised %s: %s",
                plugin_name,
                type(answer.error).__name__,
                answer.error,
            )
            continue
        contributed: List[SharedStoreKind] = list(answer.returned)
        for kind in contributed:
            for scheme in kind.schemes:
                scheme = scheme.lower()
                if scheme in kinds and owners[scheme] == "(built in)":
                    log.info(
                        "plugin %r replaces the built-in store for %s://",
                        plugin_name,
                        scheme,
                    )
                elif scheme in kinds:
                    raise PluginError(
                        f"two shared stores claim the URL scheme {scheme!r}: {kinds[scheme].name!r} "
                        f"(plugin {owners[scheme]!r}) and {kind.name!r} (plugin {plugin_name!r}); "
                        "uninstall one, or disable one with CACHE_EXTENSION_DISABLE_PLUGINS"
                    )
                kinds[scheme] = kind
                owners[scheme] = plugin_name
    return kinds


def open_tier(
    config: SharedConfig,
    pm: Any,
    *,
    read_secret: Optional[Callable[[str], str]] = None,
    source: Optional[str] = None,
) -> SharedTier:
    """The tier for ``config``, its store picked by the URL's scheme among the plugins'.

    No network I/O: the store connects on first use. Raises ``ConfigError`` for a scheme no
    store answers or a missing ``cachelayer[shared]`` extra.
    """
    if importlib.util.find_spec("cryptography") is None:
        raise ConfigError(
            "the shared tier seals values with the cryptography package, which is not "
            "installed; install cachelayer[shared] (pip install 'cachelayer[shared]') or "
            "remove cache.shared",
            source=source,
            key="cache.shared",
        )
    kinds = store_kinds(pm)
    kind = kinds.get(config.scheme)
    if kind is None:
        known = ", ".join(f"{s}://" for s in sorted(kinds)) or "(none installed)"
        raise ConfigError(
            f"no shared store answers {redact_url(config.url)!r} (scheme {config.scheme!r}); "
            f"stores installed: {known}",
            source=source,
            key="cache.shared.url",
        )
    if kind.name == "redis" and importlib.util.find_spec("redis") is None:
        raise ConfigError(
            "the Redis shared store needs redis-py, which is not installed; install "
            "cachelayer[shared] (pip install 'cachelayer[shared]')",
            source=source,
            key="cache.shared",
        )
    s = config.settings
    options = StoreOptions(
        url=config.url,
        password=config.password,
        password_secret=s.password_secret,
        read_secret=read_secret,
        timeout=float(s.timeout),
        connect_timeout=float(s.connect_timeout),
        cluster=s.cluster,
        ca_file=s.ca_file,
    )
    store = kind.open(options)
    log.info(
        "shared tier: %s (%s store, prefix %r, deadline %.0f ms)",
        redact_url(config.url),
        kind.name,
        s.prefix,
        float(s.timeout) * 1000,
    )
    return SharedTier(store, config, read_secret=read_secret)
