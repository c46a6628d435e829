"""Make the plugin manager, load providers from entry points, and survive a broken plugin."""

from __future__ import annotations

import logging
import re
import weakref
from typing import Any, Dict, Iterable, List, Optional, Tuple

import attrs
import pluggy

from cachelayer import hookspecs
from cachelayer.entrypoints import EntryPoint, entry_points
from cachelayer.errors import PluginError
from cachelayer.provider import Provider

log = logging.getLogger("cachelayer.plugins")

GROUP = "cachelayer"

# Entry-point names the built-ins had before they were named after their config sections:
# CACHE_EXTENSION_PLUGINS / _DISABLE_PLUGINS written with them keep working.
ALIASES: Dict[str, str] = {"ssm": "parameters"}


def canonical_name(name: str) -> str:
    """The plugin name ``name`` stands for: a section name, or an old built-in name's section."""
    return ALIASES.get(name, name)


def filter_warnings(allow: Optional[Iterable[str]], deny: Iterable[str]) -> List[str]:
    """A warning for each name in the plugin filters that no installed plugin has."""
    allow = list(allow or ())
    deny = list(deny)
    if not allow and not deny:  # nothing to check: no scan of the installed distributions
        return []
    installed = {canonical_name(ep.name) for ep in entry_points(GROUP)}
    warnings = []
    for variable, names in (
        ("CACHE_EXTENSION_PLUGINS", allow),
        ("CACHE_EXTENSION_DISABLE_PLUGINS", deny),
    ):
        for name in names:
            if canonical_name(name) not in installed:
                warnings.append(
                    f"{variable} names {name!r}, which is not an installed plugin; "
                    f"installed: {', '.join(sorted(installed)) or '(none)'}"
                )
    return warnings


def filtered_out(pm: pluggy.PluginManager) -> List[str]:
    """The plugins installed but not loaded because of the plugin filters (blocked names)."""
    return sorted(name for name, plugin in pm.list_name_plugin() if plugin is None)


@attrs.frozen
class ProviderInfo:
    """An installed provider and where it came from."""

    provider: Provider
    plugin: str
    distribution: str
    version: str


@attrs.frozen
class BrokenPlugin:
    """A plugin that could not be loaded, kept so a config that uses it can say why."""

    plugin: str
    distribution: str
    error: str


@attrs.define
class ProviderRegistry:
    """The providers found at startup, by config section and by route."""

    by_name: Dict[str, ProviderInfo] = attrs.Factory(dict)
    by_route: Dict[str, ProviderInfo] = attrs.Factory(dict)
    broken: List[BrokenPlugin] = attrs.Factory(list)

    def names(self) -> List[str]:
        """Config sections of the installed providers, sorted."""
        return sorted(self.by_name)

    def broken_for(self, section: str) -> Optional[BrokenPlugin]:
        """The broken plugin that was probably meant to provide ``section``, if any."""
        for b in self.broken:
            if b.plugin == section:
                return b
        return None


def make_plugin_manager() -> pluggy.PluginManager:
    """A fresh plugin manager with cachelayer's hookspecs and nothing registered."""
    pm = pluggy.PluginManager("cachelayer")
    pm.add_hookspecs(hookspecs)
    return pm


def load_plugins(
    pm: pluggy.PluginManager,
    *,
    allow: Optional[Iterable[str]] = None,
    deny: Iterable[str] = (),
) -> List[BrokenPlugin]:
    """Load every entry point in the ``cachelayer`` group into ``pm``, one at a time.

    A plugin that fails to import is logged with its name, distribution and error, and
    returned as a ``BrokenPlugin``; loading goes on. ``allow`` (if given) and ``deny`` filter
    by entry-point name, which is the provider's section name (``CACHE_EXTENSION_PLUGINS`` /
    ``CACHE_EXTENSION_DISABLE_PLUGINS``); the built-ins' old names (``ssm``) work too.
    Two distributions registering one entry-point name raise ``PluginError`` naming both
    (pluggy would load one and drop the other without a word).
    """
    allowed = {canonical_name(n) for n in allow} if allow is not None else None
    denied = {canonical_name(n) for n in deny}
    broken: List[BrokenPlugin] = []
    seen: Dict[str, EntryPoint] = {}
    for ep in sorted(entry_points(GROUP), key=lambda e: e.name):
        first = seen.get(ep.name)
        if first is not None:
            name = canonical_name(ep.name)
            skipped = name in denied or (allowed is not None and name not in allowed)
            if not skipped and _dist_key(first) != _dist_key(ep):
                raise PluginError(
                    f"two distributions register the plugin name {ep.name!r} (entry point group "
                    f"{GROUP!r}): {_dist_label(first)} ({first.value}) and {_dist_label(ep)} "
                    f"({ep.value}); uninstall one of them"
                )
            continue  # the same distribution visible twice on sys.path
        seen[ep.name] = ep
    for ep in seen.values():
        name = canonical_name(ep.name)
        if name in denied or (allowed is not None and name not in allowed):
            pm.set_blocked(ep.name)
            log.info("plugin %r disabled by configuration", ep.name)
            continue
        if pm.has_plugin(ep.name) or pm.is_blocked(ep.name):  # as pluggy's own loader skips
            continue
        try:
            # One entry point at a time, so one failure stops nothing. Not pluggy's
            # load_setuptools_entrypoints(name=): it scans every installed distribution again
            # for each name; this scan found the entry point and its distribution already.
            plugin = ep.load()
            pm.register(plugin, name=ep.name)
            _loaded_from.setdefault(pm, []).append((plugin, ep.dist))
        except Exception as exc:  # any import-time failure of third-party code
            dist = ep.dist.name if ep.dist is not None else "?"
            b = BrokenPlugin(ep.name, dist, f"{type(exc).__name__}: {exc}")
            log.warning(
                "plugin %r from distribution %r failed to load and is skipped: %s",
                b.plugin,
                b.distribution,
                b.error,
            )
            broken.append(b)
    return broken


def _dist_key(ep: EntryPoint) -> str:
    name = ep.dist.name if ep.dist is not None else "?"
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503 normalisation


def _dist_label(ep: EntryPoint) -> str:
    if ep.dist is None:
        return "an unknown distribution"
    return f"distribution {ep.dist.name!r} {ep.dist.version}"


# The distribution each plugin ``load_plugins`` registered came from, per plugin manager.
_loaded_from: weakref.WeakKeyDictionary[pluggy.PluginManager, List[Tuple[object, Any]]] = (
    weakref.WeakKeyDictionary()
)


def _distribution_of(pm: pluggy.PluginManager, plugin: object) -> Tuple[str, str]:
    for p, found in _loaded_from.get(pm, ()):
        if p is plugin:
            if found is None:
                return "?", ""
            return found.name, found.version
    for p, dist in pm.list_plugin_distinfo():
        if p is plugin:
            return dist.metadata["name"], dist.version
    return "(registered directly)", ""


def collect_providers(
    pm: pluggy.PluginManager, broken: Iterable[BrokenPlugin] = ()
) -> ProviderRegistry:
    """Ask every plugin for its providers and index them by name and route.

    Two providers claiming one name or one route raise ``PluginError`` naming both
    distributions. A provider missing a required attribute is reported as broken.
    """
    reg = ProviderRegistry(broken=list(broken))
    for plugin in pm.get_plugins():
        if not hasattr(plugin, "cachelayer_providers"):
            continue
        plugin_name = pm.get_name(plugin) or repr(plugin)
        dist, version = _distribution_of(pm, plugin)
        try:
            provided = list(plugin.cachelayer_providers() or [])
        except Exception as exc:
            b = BrokenPlugin(
                plugin_name, dist, f"cachelayer_providers() raised {type(exc).__name__}: {exc}"
            )
            log.warning("plugin %r from %r is skipped: %s", plugin_name, dist, b.error)
            reg.broken.append(b)
            continue
        for provider in provided:
            missing = [
                a
                for a in ("name", "route", "services", "resolve", "fetch")
                if not hasattr(provider, a)
            ]
            if missing:
                b = BrokenPlugin(
                    plugin_name, dist, f"provider {provider!r} lacks {', '.join(missing)}"
                )
                log.warning("plugin %r from %r is skipped: %s", plugin_name, dist, b.error)
                reg.broken.append(b)
                continue
            info = ProviderInfo(provider, plugin_name, dist, version)
            for index, attr in ((reg.by_name, "name"), (reg.by_route, "route")):
                key = getattr(provider, attr)
                if key in index:
                    other = index[key]
                    raise PluginError(
                        f"two providers claim the {attr} {key!r}: {other.provider.__class__.__name__} "
                        f"from distribution {other.distribution!r} (plugin {other.plugin!r}) and "
                        f"{provider.__class__.__name__} from distribution {dist!r} (plugin {plugin_name!r}); "
                        "uninstall one, or disable one with CACHE_EXTENSION_DISABLE_PLUGINS"
                    )
            reg.by_name[provider.name] = info
            reg.by_route[provider.route] = info
    return reg


def discover(
    *, allow: Optional[Iterable[str]] = None, deny: Iterable[str] = (), pm: Optional[Any] = None
) -> Tuple[pluggy.PluginManager, ProviderRegistry]:
    """Make a plugin manager, load entry points, and collect providers, in one call."""
    pm = pm or make_plugin_manager()
    broken = load_plugins(pm, allow=allow, deny=deny)
    return pm, collect_providers(pm, broken)
