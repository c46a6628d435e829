"""Settings: the config file's sections checked against typed schemas, plus the environment.

The file is read by ``core.yamlload``, structured by ``core.structure``, its units are in
``core.units`` and the variables in ``core.environment``; the names they had here are
re-exported below, so ``cachelayer.core.config`` stays the one place to import settings from.
"""

from __future__ import annotations

import os.path
from typing import Any, Dict, List, Literal, Mapping, Optional, Tuple

import attrs
from yaml.nodes import MappingNode, Node, ScalarNode

from cachelayer.core import environment
from cachelayer.core.durations import format_duration
from cachelayer.core.environment import DEFAULT_PORT, KNOWN_ENV, plugin_filters
from cachelayer.core.metrics import DEFAULT_NAMESPACE, check_namespace
from cachelayer.core.schematypes import describe_type, union_args
from cachelayer.core.structure import (
    MAX_REPORTED_ERRORS,
    Ctx,
    Reported,
    mapping_items,
    structure,
    structure_in,
)
from cachelayer.core.units import ByteSize, Ratio
from cachelayer.core.yamlload import (
    MAX_DEPTH,
    empty_mapping,
    find_key,
    is_null,
    line,
    line_of,
    load_yaml,
    shorten,
)
from cachelayer.errors import ConfigError, PluginError
from cachelayer.provider import Duration
from cachelayer.shared.settings import SharedConfig, SharedSettings, resolve_shared

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "KNOWN_ENV",
    "MAX_DEPTH",
    "MAX_REPORTED_ERRORS",
    "ByteSize",
    "CacheSettings",
    "Ratio",
    "Settings",
    "describe",
    "line_of",
    "load_settings",
    "load_yaml",
    "plugin_filters",
    "structure",
]

# LAMBDA_TASK_ROOT is not passed to extensions, so the function's directory is hard-coded.
DEFAULT_CONFIG_PATH = "/var/task/config.yaml"
DEFAULT_TTL = 3600.0
MiB = 1024 * 1024


# --------------------------------------------------------------------------------------------
# The cache: section and the resolved settings


def _positive(instance: Any, attribute: Any, value: Any) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be greater than 0, got {value}", attribute)


def _not_negative(instance: Any, attribute: Any, value: Any) -> None:
    if value is not None and value < 0:
        raise ValueError(f"{attribute.name} must not be negative, got {value}", attribute)


def _fraction(instance: Any, attribute: Any, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{attribute.name} must be between 0 and 1, got {value}", attribute)


def _namespace(instance: Any, attribute: Any, value: str) -> None:
    problem = check_namespace(value)
    if problem is not None:
        raise ValueError(f"invalid namespace {value!r}: {problem}", attribute)


@attrs.frozen
class CacheSettings:
    """The ``cache:`` section: global cache settings (durations and fractions in seconds/0..1).

    ``stale_wait`` bounds how long a read of an expired key waits for its refresh before the
    stale value is served (the refresh goes on); ``upstream_timeout`` how long any read waits
    for upstream before it gets 504. ``max_entries`` 0 means "no caching"; only ``PARAMETERS_SECRETS_EXTENSION_CACHE_SIZE=0`` or
    ``PARAMETERS_SECRETS_EXTENSION_CACHE_ENABLED=false`` can set it (the file must say >= 1).
    """

    ttl: Optional[Duration] = attrs.field(default=None, validator=_not_negative)
    max_entries: int = attrs.field(default=1000, validator=_not_negative)
    max_bytes: ByteSize = attrs.field(default=ByteSize(64 * MiB), validator=_positive)
    negative_ttl: Duration = attrs.field(default=Duration(30.0), validator=_not_negative)
    stale_if_error: Duration = attrs.field(default=Duration(3600.0), validator=_not_negative)
    refresh_ahead: Ratio = attrs.field(default=Ratio(0.2), validator=_fraction)
    init_startup: Optional[bool] = None
    metrics: Literal["off", "emf"] = "off"
    metrics_namespace: str = attrs.field(default=DEFAULT_NAMESPACE, validator=_namespace)
    shared: Optional[SharedSettings] = None
    # How long a read of an expired key waits for its refresh before it is answered with the
    # stale value (the refresh goes on), and how long any read waits for upstream (then 504).
    stale_wait: Duration = attrs.field(default=Duration(0.25), validator=_not_negative)
    upstream_timeout: Duration = attrs.field(default=Duration(5.0), validator=_positive)


@attrs.frozen
class Settings:
    """Everything resolved from the config file, the environment and the command line."""

    config_path: str
    config_loaded: bool
    port: int = DEFAULT_PORT
    auth: str = "token"
    token: Optional[str] = attrs.field(default=None, repr=False)  # a credential: never printed
    log_level: str = "INFO"
    default_ttl: float = DEFAULT_TTL
    init_startup: bool = False
    cache: CacheSettings = attrs.Factory(CacheSettings)
    sections: Mapping[str, Any] = attrs.Factory(dict)
    env_ttl: Mapping[str, float] = attrs.Factory(dict)
    warnings: Tuple[str, ...] = ()
    shared: Optional[SharedConfig] = None

    def ttl_for(self, section: str) -> float:
        """The TTL (seconds) for a provider section when nothing more specific sets one."""
        return self.env_ttl.get(section, self.default_ttl)


# --------------------------------------------------------------------------------------------
# The file's sections


def _structure_every_section(
    root: MappingNode,
    source: str,
    schemas: Mapping[str, Any],
    broken: Mapping[str, str],
    disabled: Mapping[str, str],
) -> Tuple[Optional[CacheSettings], bool, Dict[str, Any]]:
    """``_structure_sections`` section by section, so that every section is checked even when
    one fails: the errors are raised together (the first, the others in its ``more``), up to
    MAX_REPORTED_ERRORS, one per failing list entry or section."""
    errors: List[ConfigError] = []
    cache: Optional[CacheSettings] = None
    sets_max = False
    sections: Dict[str, Any] = {}
    for _, knode, vnode in mapping_items(root, Ctx(source, "")):
        one = MappingNode(root.tag, [(knode, vnode)], root.start_mark, root.end_mark)
        try:
            got, got_max, got_sections = _structure_sections(
                one, source, schemas, broken, disabled, errors
            )
        except Reported:
            continue
        except ConfigError as exc:
            errors.append(exc)
            if len(errors) >= MAX_REPORTED_ERRORS:
                break
            continue
        cache = got if got is not None else cache
        sets_max = sets_max or got_max
        sections.update(got_sections)
    if errors:
        errors[0].more = tuple(errors[1:])
        raise errors[0]
    return cache, sets_max, sections


def _structure_cache(vnode: Node, ctx: Ctx) -> Tuple[CacheSettings, bool]:
    """The ``cache:`` section, and whether it writes ``max_entries``."""
    cache = structure_in(vnode, CacheSettings, ctx.child("cache"))
    assert isinstance(vnode, MappingNode)  # structuring an attrs class checked it
    mx = find_key(vnode, "max_entries")
    if mx is not None and cache.max_entries == 0:
        raise ctx.error(
            mx,
            "max_entries must be at least 1; to disable caching set a ttl of 0s instead",
            "cache.max_entries",
        )
    return cache, mx is not None


def _check_section_known(
    key: str,
    knode: Node,
    ctx: Ctx,
    schemas: Mapping[str, Any],
    broken: Mapping[str, str],
    disabled: Mapping[str, str],
) -> None:
    """A section of no loaded provider: say whether its plugin is broken, filtered out or
    not installed at all."""
    if key in schemas:
        return
    if key in broken:
        raise ctx.error(
            knode,
            f"section {key!r} belongs to plugin {key!r}, which failed to load: {broken[key]}; "
            "fix or reinstall that plugin, or remove the section",
            key,
        )
    if key in disabled:
        raise ctx.error(
            knode,
            f"section {key!r} belongs to plugin {key!r}, which is installed but not loaded: "
            f"{disabled[key]}; remove it from CACHE_EXTENSION_DISABLE_PLUGINS or add it to "
            "CACHE_EXTENSION_PLUGINS, or remove the section",
            key,
        )
    import difflib  # only for a mistake: not on every startup's way

    close = difflib.get_close_matches(key, [*schemas, "cache"], n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    installed = ", ".join(sorted(schemas)) or "(none)"
    # ConfigError's prefix already says "<file>:<line>: <key>: ".
    raise ctx.error(
        knode,
        f"unknown section {key!r}; {hint}installed providers: {installed}; "
        "is the provider package installed?",
        key,
    )


def _structure_provider_section(key: str, vnode: Node, schema: Any, ctx: Ctx) -> Any:
    if schema is None:
        if not is_null(vnode):
            raise ctx.error(
                vnode,
                f"provider {key!r} takes no configuration; remove the section's contents",
                key,
            )
        return None
    if is_null(vnode) and union_args(schema) is None:
        raise ctx.error(
            vnode,
            f"section {key!r} is empty; add its settings ({describe_type(schema)}) or remove it",
            key,
        )
    return structure_in(vnode, schema, ctx.child(key))


def _structure_sections(
    root: MappingNode,
    source: str,
    schemas: Mapping[str, Any],
    broken: Mapping[str, str],
    disabled: Mapping[str, str] = {},
    errors: Optional[List[ConfigError]] = None,
) -> Tuple[Optional[CacheSettings], bool, Dict[str, Any]]:
    """``(cache, whether cache.max_entries is written in the file, provider sections)``;
    errors in list entries are collected into ``errors`` when it is given."""
    ctx = Ctx(source, "", errors)
    cache: Optional[CacheSettings] = None
    sets_max = False
    sections: Dict[str, Any] = {}
    for key, knode, vnode in mapping_items(root, ctx):
        if key == "cache":
            cache, sets_max = _structure_cache(vnode, ctx)
            continue
        _check_section_known(key, knode, ctx, schemas, broken, disabled)
        sections[key] = _structure_provider_section(key, vnode, schemas[key], ctx)
    return cache, sets_max, sections


# --------------------------------------------------------------------------------------------
# load_settings, step by step


def _config_file(
    environ: Mapping[str, str], config_path: Optional[str], warnings: List[str]
) -> Tuple[str, bool, MappingNode]:
    """``(path, whether a file was read, its top-level mapping)``: ``--config``, else
    ``CACHE_EXTENSION_CONFIG``, else the default path, which may be absent."""
    explicit = config_path is not None or "CACHE_EXTENSION_CONFIG" in environ
    path = config_path if config_path is not None else environ.get("CACHE_EXTENSION_CONFIG")
    if path is not None and not path.strip():
        raise ConfigError(
            "is empty; unset it to use /var/task/config.yaml, or give the config file's path",
            source="CACHE_EXTENSION_CONFIG" if config_path is None else "--config",
        )
    path = path if path is not None else DEFAULT_CONFIG_PATH
    if not explicit and not os.path.exists(path):
        warnings.append(
            f"no config file at {path}: nothing is declared, items are fetched on demand; "
            "ship a config.yaml with the function or set CACHE_EXTENSION_CONFIG"
        )
        return path, False, empty_mapping()
    node = load_yaml(path)
    assert isinstance(node, MappingNode)
    return path, True, node


def _structure_file(
    root: MappingNode,
    path: str,
    schemas: Mapping[str, Any],
    broken: Mapping[str, str],
    disabled: Mapping[str, str],
) -> Tuple[CacheSettings, bool, Dict[str, Any]]:
    try:
        cache, sets_max, sections = _structure_every_section(root, path, schemas, broken, disabled)
    except (ValueError, RecursionError, OverflowError) as exc:
        # A backstop: every case known is reported above with its line; a file must never
        # crash the extension (inside Lambda that would skip /extension/init/error).
        raise ConfigError(
            f"cannot be read ({type(exc).__name__}: {shorten(str(exc), 200)}); check the "
            "file against the README's configuration reference",
            source=path,
        ) from None
    return (cache if cache is not None else CacheSettings()), sets_max, sections


def _shared_line(root: MappingNode) -> Optional[int]:
    """Where ``cache.shared:`` is written, for the shared tier's errors."""
    cache_node = find_key(root, "cache")
    at = None
    if isinstance(cache_node, MappingNode):
        for knode, _ in cache_node.value:
            if isinstance(knode, ScalarNode) and knode.value == "shared":
                at = line(knode)
    return at


def _cache_from_environment(
    cache: CacheSettings,
    environ: Mapping[str, str],
    config_sets_max: bool,
    path: str,
    warnings: List[str],
) -> CacheSettings:
    """The ``cache:`` settings with the environment's overrides applied."""
    size = environment.cache_size(environ)
    if size is not None:
        if config_sets_max:
            warnings.append(
                f"PARAMETERS_SECRETS_EXTENSION_CACHE_SIZE={size} is overridden by "
                f"cache.max_entries={cache.max_entries} in {path}"
            )
        else:
            cache = attrs.evolve(cache, max_entries=size)
    metrics = environment.metrics(environ)
    if metrics is not None:
        cache = attrs.evolve(cache, metrics="emf" if metrics == "emf" else "off")
    namespace = environment.metrics_namespace(environ)
    if namespace is not None:
        cache = attrs.evolve(cache, metrics_namespace=namespace)
    if environment.cache_enabled(environ) is False:
        cache = attrs.evolve(cache, max_entries=0)
    return cache


def load_settings(
    environ: Mapping[str, str],
    schemas: Mapping[str, Any],
    *,
    config_path: Optional[str] = None,
    port: Optional[int] = None,
    broken: Mapping[str, str] = {},
    disabled: Mapping[str, str] = {},
    ttl_variables: Mapping[str, str] = {},
) -> Settings:
    """Resolve the settings from the environment, the config file and the command line.

    ``schemas`` maps each installed provider's section to its ``config_schema``; ``broken``
    maps a section to the load error of a broken plugin of that name, ``disabled`` a section
    to why its installed plugin was filtered out, ``ttl_variables`` each provider-declared TTL
    variable (``SSM_PARAMETER_STORE_TTL``) to its section. Raises ``ConfigError``
    (naming the file and line, or the variable) for anything invalid.
    """
    if "cache" in schemas:
        raise PluginError(
            "a provider is named 'cache', which is the core's own config section; rename it"
        )
    warnings = environment.env_warnings(environ)
    path, loaded, root = _config_file(environ, config_path, warnings)
    cache, config_sets_max, sections = _structure_file(root, path, schemas, broken, disabled)
    shared = resolve_shared(environ, cache.shared, source=path, line=_shared_line(root))
    configured_ttl = float(cache.ttl) if cache.ttl is not None else DEFAULT_TTL
    default_ttl = environment.default_ttl(environ, configured_ttl)
    init_startup = environment.init_startup(environ, bool(cache.init_startup))  # None is false
    resolved_port = environment.port(environ, port)
    auth, token = environment.auth_and_token(environ, warnings)
    log_level = environment.log_level(environ)
    env_ttl = environment.section_ttls(environ, ttl_variables)
    cache = _cache_from_environment(cache, environ, config_sets_max, path, warnings)
    return Settings(
        config_path=path,
        config_loaded=loaded,
        port=resolved_port,
        auth=auth,
        token=token,
        log_level=log_level,
        default_ttl=default_ttl,
        init_startup=init_startup,
        cache=cache,
        sections=sections,
        env_ttl=env_ttl,
        warnings=tuple(warnings),
        shared=shared,
    )


def describe(settings: Settings) -> str:
    """A one-line summary of the effective settings for the startup log (never the token)."""
    return (
        f"config={settings.config_path}{'' if settings.config_loaded else ' (absent)'} "
        f"port={settings.port} auth={settings.auth} ttl={format_duration(settings.default_ttl)} "
        f"init_startup={str(settings.init_startup).lower()} "
        f"sections={','.join(sorted(settings.sections)) or '-'}"
    )
