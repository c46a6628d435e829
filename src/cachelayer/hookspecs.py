"""Hook specifications of cachelayer. Hooks announce capabilities and lifecycle events only."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Mapping, Type

import pluggy

from cachelayer.provider import Provider

if TYPE_CHECKING:
    from cachelayer.shared.store import SharedStoreKind

hookspec = pluggy.HookspecMarker("cachelayer")


@hookspec
def cachelayer_providers() -> Iterable[Type[Provider]]:
    """Return the provider types (classes) this plugin contributes.

    Called once at startup, before the config is read, for every entry point in the
    ``cachelayer`` group. The core reads each type's static ``name``, ``route``, ``services``,
    ``config_schema``, ``query_parameters`` and ``ttl_environment_variable``, validates the
    config, then builds each provider with ``from_config(section, context)``. Do no I/O here.
    """
    raise NotImplementedError  # a specification: plugins implement it


@hookspec
def cachelayer_shared_stores() -> Iterable[SharedStoreKind]:
    """Return the shared-tier stores this plugin contributes (``SharedStoreKind`` records).

    Called once at startup, only when a shared tier is configured (``cache: shared:``); the
    tier's URL scheme picks the store (``redis``/``rediss`` are built in). Each store's
    constructor must do no I/O: it connects on first use.
    """
    raise NotImplementedError  # a specification: plugins implement it


@hookspec
def cachelayer_startup(providers: Mapping[str, Provider]) -> None:
    """Announce that config is loaded and the providers are built (by section name), before
    serving. No network I/O: it delays the Lambda init phase."""


@hookspec
def cachelayer_invoke(event: Mapping[str, Any]) -> None:
    """Announce a Lambda INVOKE event (the environment was just thawed).

    Called on the extension's event loop thread; must return at once.
    """


@hookspec
def cachelayer_shutdown(reason: str) -> None:
    """Announce shutdown (Lambda SHUTDOWN with its reason, or ``signal``) before exit."""
