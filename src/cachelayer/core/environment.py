"""The environment variables: cachelayer's own, the plugin filters, and the AWS extension's."""

from __future__ import annotations

import re
from typing import Dict, List, Mapping, Optional, Tuple

from cachelayer.core.durations import DURATION_HINT, parse_bool, parse_duration
from cachelayer.core.metrics import check_namespace
from cachelayer.core.scalars import INT_RE
from cachelayer.core.yamlload import shorten
from cachelayer.errors import ConfigError
from cachelayer.shared.settings import ENV as SHARED_ENV

__all__ = [
    "DEFAULT_PORT",
    "KNOWN_ENV",
    "auth_and_token",
    "cache_enabled",
    "cache_size",
    "default_ttl",
    "env_warnings",
    "init_startup",
    "log_level",
    "metrics",
    "metrics_namespace",
    "plugin_filters",
    "port",
    "section_ttls",
]

DEFAULT_PORT = 4000

KNOWN_ENV: Tuple[str, ...] = (
    "CACHE_EXTENSION_TTL",
    "CACHE_EXTENSION_INIT_STARTUP",
    "CACHE_EXTENSION_CONFIG",
    "CACHE_EXTENSION_PORT",
    "CACHE_EXTENSION_AUTH",
    "CACHE_EXTENSION_LOG_LEVEL",
    "CACHE_EXTENSION_PLUGINS",
    "CACHE_EXTENSION_DISABLE_PLUGINS",
    "CACHE_EXTENSION_METRICS",
    "CACHE_EXTENSION_METRICS_NAMESPACE",
    *SHARED_ENV,
    # Read by the layer's launcher, not by Python; known so they draw no warning.
    "CACHE_EXTENSION_PYTHON",
    "CACHE_EXTENSION_NAME",
)
"""Every ``CACHE_EXTENSION_*`` variable the extension reads; any other one draws a warning."""

_PREFIX = "CACHE_EXTENSION_"


def env_warnings(environ: Mapping[str, str]) -> List[str]:
    """Warnings for unknown ``CACHE_EXTENSION_*`` variables (with the closest known name) and
    the AWS extension's variables cachelayer has no equivalent for."""
    warnings = []
    # Compare what follows the prefix, which all names share and would make any match.
    suffixes = [k[len(_PREFIX) :] for k in KNOWN_ENV]
    for name in sorted(environ):
        if name.startswith(_PREFIX) and name not in KNOWN_ENV:
            import difflib  # only for a mistake: not on every startup's way

            close = difflib.get_close_matches(name[len(_PREFIX) :], suffixes, n=1, cutoff=0.7)
            hint = f"; did you mean {_PREFIX}{close[0]}?" if close else ""
            warnings.append(
                f"unknown environment variable {name} is not used by cachelayer{hint} "
                f"(known: {', '.join(KNOWN_ENV)})"
            )
    if "PARAMETERS_SECRETS_EXTENSION_MAX_CONNECTIONS" in environ:
        warnings.append(
            "PARAMETERS_SECRETS_EXTENSION_MAX_CONNECTIONS has no equivalent in cachelayer and is "
            "not used; cachelayer shares one connection pool per AWS client"
        )
    return warnings


# --------------------------------------------------------------------------------------------
# Plugin filters (read before discovery)


def _split_list(name: str, value: str) -> Tuple[str, ...]:
    names = tuple(v.strip() for v in value.split(","))
    names = tuple(n for n in names if n)
    for n in names:
        if not re.match(r"^[A-Za-z0-9_.\-]+$", n):
            raise ConfigError(
                f"invalid plugin name {n!r}; write plugin (entry point) names separated by commas, "
                "e.g. parameters,secrets",
                source=name,
            )
    return names


def plugin_filters(environ: Mapping[str, str]) -> Tuple[Optional[Tuple[str, ...]], Tuple[str, ...]]:
    """``(allow, deny)`` plugin names from ``CACHE_EXTENSION_PLUGINS`` / ``_DISABLE_PLUGINS``.

    ``allow`` is None when the variable is unset (load every plugin). Needed before discovery,
    hence separate from ``load_settings``.
    """
    allow: Optional[Tuple[str, ...]] = None
    raw = environ.get("CACHE_EXTENSION_PLUGINS")
    if raw is not None:
        allow = _split_list("CACHE_EXTENSION_PLUGINS", raw)
        if not allow:
            raise ConfigError(
                "is empty, which would load no provider at all; unset it to load every "
                "installed plugin, or list the ones to load, e.g. parameters,secrets",
                source="CACHE_EXTENSION_PLUGINS",
            )
    deny = _split_list(
        "CACHE_EXTENSION_DISABLE_PLUGINS", environ.get("CACHE_EXTENSION_DISABLE_PLUGINS", "")
    )
    return allow, deny


# --------------------------------------------------------------------------------------------
# Value parsers


def _env_port(name: str, raw: str) -> int:
    text = raw.strip()
    if len(text) > 5 or not INT_RE.match(text) or not 1 <= int(text) <= 65535:
        raise ConfigError(
            f"invalid port {shorten(raw)!r}; write a number from 1 to 65535, e.g. 4000",
            source=name,
        )
    return int(text)


def _env_whole(name: str, raw: str, what: str, unit: str, example: int) -> int:
    """A whole number, 0 or more, from the AWS extension's variables (TTLs, cache size)."""
    text = raw.strip()
    if len(text) > 18 or not INT_RE.match(text) or int(text) < 0:
        raise ConfigError(
            f"invalid {what} {shorten(raw)!r}; write a whole number of {unit}, 0 or more "
            f"(0 disables caching), e.g. {example}",
            source=name,
        )
    return int(text)


def _env_choice(name: str, raw: str, choices: Mapping[str, str]) -> str:
    value = choices.get(raw.strip().upper())
    if value is None:
        raise ConfigError(
            f"invalid value {shorten(raw)!r}; write one of {', '.join(choices)} (any case)",
            source=name,
        )
    return value


# --------------------------------------------------------------------------------------------
# One function per setting the environment gives or overrides


def section_ttls(environ: Mapping[str, str], variables: Mapping[str, str]) -> Dict[str, float]:
    """Seconds by provider section, from the TTL ``variables`` (name to section, as the
    providers declare them) that are set."""
    env_ttl: Dict[str, float] = {}
    for name, section in variables.items():
        if name in environ:
            env_ttl[section] = float(_env_whole(name, environ[name], "TTL", "seconds", 300))
    return env_ttl


def default_ttl(environ: Mapping[str, str], configured: float) -> float:
    """``CACHE_EXTENSION_TTL`` in seconds, or ``configured`` when it is unset."""
    raw = environ.get("CACHE_EXTENSION_TTL")
    if raw is None:
        return configured
    try:
        ttl = parse_duration(raw)
    except ValueError as exc:
        raise ConfigError(str(exc), source="CACHE_EXTENSION_TTL") from None
    if ttl < 0:
        raise ConfigError(
            f"must not be negative, got {raw!r}; {DURATION_HINT}", source="CACHE_EXTENSION_TTL"
        )
    return ttl


def init_startup(environ: Mapping[str, str], configured: bool) -> bool:
    """``CACHE_EXTENSION_INIT_STARTUP``, or ``configured`` when it is unset."""
    raw = environ.get("CACHE_EXTENSION_INIT_STARTUP")
    if raw is None:
        return configured
    try:
        return parse_bool(raw)
    except ValueError as exc:
        raise ConfigError(str(exc), source="CACHE_EXTENSION_INIT_STARTUP") from None


def port(environ: Mapping[str, str], given: Optional[int]) -> int:
    """The port: ``--port``, else ``CACHE_EXTENSION_PORT``, else the AWS extension's variable."""
    if given is not None:
        if isinstance(given, bool) or not isinstance(given, int) or not 1 <= given <= 65535:
            raise ConfigError(
                f"invalid port {given!r}; give a number from 1 to 65535", source="--port"
            )
        return given
    for name in ("CACHE_EXTENSION_PORT", "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT"):
        if name in environ:
            return _env_port(name, environ[name])
    return DEFAULT_PORT


def auth_and_token(environ: Mapping[str, str], warnings: List[str]) -> Tuple[str, Optional[str]]:
    """``CACHE_EXTENSION_AUTH`` (default ``token``) and the token, ``AWS_SESSION_TOKEN``; a
    warning is added when requests would all be refused."""
    auth = "token"
    if "CACHE_EXTENSION_AUTH" in environ:
        auth = _env_choice(
            "CACHE_EXTENSION_AUTH",
            environ["CACHE_EXTENSION_AUTH"],
            {"TOKEN": "token", "NONE": "none"},
        )
    token = environ.get("AWS_SESSION_TOKEN") or None
    if auth == "token" and token is None:
        warnings.append(
            "auth is 'token' but AWS_SESSION_TOKEN is not set, so every request will be refused; "
            "set CACHE_EXTENSION_AUTH=none to serve without authentication (local use only)"
        )
    return auth, token


_LOG_LEVELS = {
    "DEBUG": "DEBUG",
    "INFO": "INFO",
    "WARNING": "WARNING",
    "WARN": "WARNING",
    "ERROR": "ERROR",
}
# AWS's NONE means "no logs"; CRITICAL is the closest level logging understands.
_AWS_LOG_LEVELS = {
    "DEBUG": "DEBUG",
    "INFO": "INFO",
    "WARN": "WARNING",
    "ERROR": "ERROR",
    "NONE": "CRITICAL",
}


def log_level(environ: Mapping[str, str]) -> str:
    """``CACHE_EXTENSION_LOG_LEVEL``, else the AWS extension's, else INFO."""
    if "CACHE_EXTENSION_LOG_LEVEL" in environ:
        name, choices = "CACHE_EXTENSION_LOG_LEVEL", _LOG_LEVELS
    elif "PARAMETERS_SECRETS_EXTENSION_LOG_LEVEL" in environ:
        name, choices = "PARAMETERS_SECRETS_EXTENSION_LOG_LEVEL", _AWS_LOG_LEVELS
    else:
        return "INFO"
    return _env_choice(name, environ[name], choices)


def cache_size(environ: Mapping[str, str]) -> Optional[int]:
    """``PARAMETERS_SECRETS_EXTENSION_CACHE_SIZE`` (entries), or None when unset."""
    name = "PARAMETERS_SECRETS_EXTENSION_CACHE_SIZE"
    if name not in environ:
        return None
    return _env_whole(name, environ[name], "cache size", "entries", 1000)


def metrics(environ: Mapping[str, str]) -> Optional[str]:
    """``CACHE_EXTENSION_METRICS`` (``emf`` or ``off``), or None when unset."""
    if "CACHE_EXTENSION_METRICS" not in environ:
        return None
    return _env_choice(
        "CACHE_EXTENSION_METRICS", environ["CACHE_EXTENSION_METRICS"], {"EMF": "emf", "OFF": "off"}
    )


def metrics_namespace(environ: Mapping[str, str]) -> Optional[str]:
    """``CACHE_EXTENSION_METRICS_NAMESPACE``, checked, or None when unset."""
    namespace = environ.get("CACHE_EXTENSION_METRICS_NAMESPACE")
    if namespace is None:
        return None
    problem = check_namespace(namespace)
    if problem is not None:
        raise ConfigError(
            f"invalid namespace {shorten(namespace)!r}: {problem}",
            source="CACHE_EXTENSION_METRICS_NAMESPACE",
        )
    return namespace


def cache_enabled(environ: Mapping[str, str]) -> Optional[bool]:
    """``PARAMETERS_SECRETS_EXTENSION_CACHE_ENABLED``, or None when unset."""
    raw = environ.get("PARAMETERS_SECRETS_EXTENSION_CACHE_ENABLED")
    if raw is None:
        return None
    try:
        return parse_bool(raw.strip().lower())
    except ValueError:
        raise ConfigError(
            f"invalid value {shorten(raw)!r}; write true or false",
            source="PARAMETERS_SECRETS_EXTENSION_CACHE_ENABLED",
        ) from None
