"""The one typed caller of cachelayer's hooks: a method per hook specification.

The core calls hooks only through ``PluginHooks`` (as tox's ``Plugin`` wrapper does). Each call
goes through pluggy, one plugin at a time (``subset_hook_caller``), so that one plugin that
raises or blocks is named in the log and the others still run.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Generic, List, Mapping, Optional, Tuple, TypeVar

import attrs
import pluggy

if TYPE_CHECKING:
    from cachelayer.provider import Provider
    from cachelayer.shared.store import SharedStoreKind

__all__ = ["HookAnswer", "PluginHooks"]

log = logging.getLogger("cachelayer")

T = TypeVar("T")

# A lifecycle hook slower than this is named in a warning (INVOKE hooks run on the event loop).
SLOW_HOOK = 0.1


@attrs.frozen
class HookAnswer(Generic[T]):
    """What one plugin's implementation of a contributing hook gave: the things it returned,
    or the exception it raised (``error``), with the plugin's registered name and object."""

    plugin_name: str
    plugin: object = attrs.field(eq=False, repr=False)
    returned: Tuple[T, ...] = ()
    error: Optional[Exception] = None


@attrs.frozen
class PluginHooks:
    """Every hook of ``cachelayer.hookspecs``, called on the plugins registered in ``pm``."""

    pm: pluggy.PluginManager

    def providers(self) -> List[HookAnswer[Any]]:
        """Each plugin's ``cachelayer_providers()``: the provider types it contributes, or why
        it failed (an exception, or an answer that is not a list of types)."""
        return self._collect("cachelayer_providers")

    def shared_stores(self) -> List[HookAnswer[SharedStoreKind]]:
        """Each plugin's ``cachelayer_shared_stores()``: its stores, or the exception."""
        return self._collect("cachelayer_shared_stores")

    def startup(self, providers: Mapping[str, Provider]) -> None:
        """``cachelayer_startup(providers=...)`` on every plugin, each isolated."""
        self._announce("cachelayer_startup", {"providers": providers})

    def invoke(self, event: Mapping[str, Any]) -> None:
        """``cachelayer_invoke(event=...)`` on every plugin, each isolated. On the event loop's
        thread: a slow hook is named in a warning."""
        self._announce("cachelayer_invoke", {"event": event})

    def shutdown(self, reason: str, timeout: float) -> bool:
        """``cachelayer_shutdown(reason=...)`` on every plugin at once, each in its own daemon
        thread, waiting at most ``timeout`` seconds in all. A hook still running then is named
        in a warning and left behind (exit never waits for it). True if all returned."""
        return self._announce_within("cachelayer_shutdown", {"reason": reason}, timeout)

    # -- one plugin at a time, through pluggy ---------------------------------------------------

    def _callers(self, name: str) -> List[Tuple[str, object, Callable[..., List[Any]]]]:
        """``(plugin name, plugin, caller)`` per implementation of hook ``name``, in the order
        pluggy calls them (last registered first); each caller calls that plugin's alone."""
        impls = list(reversed(getattr(self.pm.hook, name).get_hookimpls()))
        plugins = [impl.plugin for impl in impls]
        return [
            (
                impl.plugin_name,
                impl.plugin,
                self.pm.subset_hook_caller(name, [p for p in plugins if p is not impl.plugin]),
            )
            for impl in impls
        ]

    def _collect(self, name: str) -> List[HookAnswer[Any]]:
        answers: List[HookAnswer[Any]] = []
        for plugin_name, plugin, call in self._callers(name):
            try:
                results = call()  # pluggy leaves a None answer out of the list
                returned = tuple(results[0]) if results and results[0] is not None else ()
            except Exception as exc:  # third-party code: reported, never fatal here
                answers.append(HookAnswer(plugin_name, plugin, error=exc))
                continue
            answers.append(HookAnswer(plugin_name, plugin, returned))
        return answers

    def _announce(self, name: str, kwargs: Mapping[str, Any]) -> None:
        for plugin_name, _, call in self._callers(name):
            _call_isolated(name, plugin_name, call, kwargs)

    def _announce_within(self, name: str, kwargs: Mapping[str, Any], timeout: float) -> bool:
        threads = []
        for plugin_name, _, call in self._callers(name):
            thread = threading.Thread(
                target=_call_isolated,
                args=(name, plugin_name, call, kwargs),
                name=f"cachelayer-{name}-{plugin_name}",
                daemon=True,
            )
            thread.start()
            threads.append((plugin_name, thread))
        deadline = time.monotonic() + timeout
        done = True
        for plugin_name, thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                done = False
                log.warning(
                    "plugin %r: its %s hook did not return within %.2f s; going on without it",
                    plugin_name,
                    name,
                    timeout,
                )
        return done


def _call_isolated(
    name: str, plugin_name: str, call: Callable[..., Any], kwargs: Mapping[str, Any]
) -> None:
    """One plugin's lifecycle hook: an exception is logged with its name, a slow one warned."""
    started = time.monotonic()
    try:
        call(**kwargs)
    except Exception:
        log.error(
            "plugin %r: its %s hook raised; ignored, cachelayer goes on",
            plugin_name,
            name,
            exc_info=True,
        )
    elapsed = time.monotonic() - started
    if elapsed > SLOW_HOOK:
        log.warning(
            "plugin %r: its %s hook took %.0f ms; hooks must return at once",
            plugin_name,
            name,
            elapsed * 1000,
        )
