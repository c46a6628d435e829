"""Make the plugin manager, load provider types from entry points, survive a broken plugin."""

from __future__ import annotations

import logging
import re
import weakref
from typing import Any, Dict, Iterable, List, Optional, Tuple, Type

import attrs
import pluggy

from cachelayer import hookspecs
from cachelayer.entrypoints import EntryPoint, entry_points
from cachelayer.errors import PluginError
from cachelayer.hooks import PluginHooks
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
    """An installed provider type and where it came from."""

    provider_type: Type[Provider]
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

    def ttl_variables(self) -> Dict[str, str]:
        """Each provider-declared TTL environment variable and the section it sets."""
        found: Dict[str, str] = {}
        for name, info in sorted(self.by_name.items()):
            variable = ttl_variable_of(info.provider_type)
            if variable is not None:
                found[variable] = name
        return found

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
    """Ask every plugin for its provider types (through pluggy, one plugin at a time) and
    index them by name and route.

    A plugin whose ``cachelayer_providers()`` raises, or that returns something that is not a
    provider type, is reported as broken and the others still load. Two providers claiming
    one name or one route raise ``PluginError`` naming both distributions.
    """
    reg = ProviderRegistry(broken=list(broken))
    for answer in PluginHooks(pm).providers():
        plugin_name = answer.plugin_name
        dist, version = _distribution_of(pm, answer.plugin)
        problems: List[Optional[str]]
        if answer.error is not None:
            error = answer.error
            problems = [f"cachelayer_providers() raised {type(error).__name__}: {error}"]
        else:
            problems = [type_problem(provided) for provided in answer.returned]
        for problem in problems:
            if problem is not None:
                b = BrokenPlugin(plugin_name, dist, problem)
                log.warning("plugin %r from %r is skipped: %s", plugin_name, dist, b.error)
                reg.broken.append(b)
        for provided, problem in zip(answer.returned, problems):
            if problem is None:
                _index(reg, ProviderInfo(provided, plugin_name, dist, version))
    return reg


_REQUIRED = ("name", "route", "services", "from_config", "declared", "resolve", "fetch")


def type_problem(provided: Any) -> Optional[str]:
    """Why ``provided`` (from a ``cachelayer_providers()`` answer) is not a provider type, or
    None if it is one."""
    if not isinstance(provided, type):
        return (
            f"cachelayer_providers() returned {provided!r}, which is not a provider type: return "
            f"the classes (with a from_config classmethod), e.g. [{type(provided).__name__}]"
        )
    label = provided.__name__
    missing = [a for a in _REQUIRED if not hasattr(provided, a)]
    if missing:
        return f"provider {label} lacks {', '.join(missing)}"
    for attr in ("name", "route"):
        value = getattr(provided, attr)
        if not isinstance(value, str) or not value.strip():
            return f"provider {label}.{attr} must be a non-empty string, got {value!r}"
    params = getattr(provided, "query_parameters", ())
    if not isinstance(params, (tuple, list, frozenset, set)) or not all(
        isinstance(p, str) and p for p in params
    ):
        return (
            f"provider {label}.query_parameters must be a tuple of parameter names such as "
            f'("version",), got {params!r}'
        )
    variable = ttl_variable_of(provided)
    if variable is not None and (not isinstance(variable, str) or not variable.strip()):
        return f"provider {label}.ttl_environment_variable must be a name or None, got {variable!r}"
    return None


def ttl_variable_of(provider: Any) -> Optional[str]:
    """The environment variable setting ``provider``'s section TTL, if it declares one."""
    return getattr(provider, "ttl_environment_variable", None)


def _index(reg: ProviderRegistry, info: ProviderInfo) -> None:
    provider = info.provider_type
    for index, attr in ((reg.by_name, "name"), (reg.by_route, "route")):
        key = getattr(provider, attr)
        if key in index:
            other = index[key]
            raise PluginError(
                f"two providers claim the {attr} {key!r}: {other.provider_type.__name__} "
                f"from distribution {other.distribution!r} (plugin {other.plugin!r}) and "
                f"{provider.__name__} from distribution {info.distribution!r} (plugin "
                f"{info.plugin!r}); uninstall one, or disable one with "
                "CACHE_EXTENSION_DISABLE_PLUGINS"
            )
    reg.by_name[provider.name] = info
    reg.by_route[provider.route] = info


def discover(
    *, allow: Optional[Iterable[str]] = None, deny: Iterable[str] = (), pm: Optional[Any] = None
) -> Tuple[pluggy.PluginManager, ProviderRegistry]:
    """Make a plugin manager, load entry points, and collect providers, in one call."""
    pm = pm or make_plugin_manager()
    broken = load_plugins(pm, allow=allow, deny=deny)
    return pm, collect_providers(pm, broken)
