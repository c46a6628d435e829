"""The ``cache: shared:`` section and its resolution with the environment (no I/O, no redis)."""

from __future__ import annotations

import base64
import binascii
import os.path
import urllib.parse
from typing import Any, Mapping, Optional

import attrs

from cachelayer.errors import ConfigError
from cachelayer.provider import Duration

__all__ = ["ENV", "SharedConfig", "SharedSettings", "redact_url", "resolve_shared"]

ENV = (
    "CACHE_EXTENSION_SHARED_URL",
    "CACHE_EXTENSION_SHARED_KEY",
    "CACHE_EXTENSION_SHARED_PASSWORD",
)
"""The environment variables of the shared tier."""

KEY_HINT = (
    "give it a 256-bit key: set CACHE_EXTENSION_SHARED_KEY to 32 random bytes in base64 "
    "(e.g. the output of `openssl rand -base64 32`), or set cache.shared.key_secret to a "
    "Secrets Manager secret holding such a key"
)


def _positive(instance: Any, attribute: Any, value: Any) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"{attribute.name} must be greater than 0, got {value}", attribute)


def _not_negative(instance: Any, attribute: Any, value: Any) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must not be negative, got {value}", attribute)


def _url(instance: Any, attribute: Any, value: Optional[str]) -> None:
    if value is not None:
        problem = url_problem(value)
        if problem:
            raise ValueError(problem, attribute)


def url_problem(url: str) -> Optional[str]:
    """Why ``url`` cannot name a shared store (None if it can); never echoes a password."""
    parts = urllib.parse.urlsplit(url.strip())
    if not parts.scheme or not parts.netloc:
        return (
            f"{redact_url(url)!r} is not a store URL; write e.g. redis://host:6379 or "
            "rediss://host:6379 (TLS)"
        )
    return None


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, fit for logs and errors."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


@attrs.frozen
class SharedSettings:
    """``cache: shared:`` — a second cache tier shared by every execution environment.

    ``url`` (or ``CACHE_EXTENSION_SHARED_URL``) picks the store by scheme (``redis://``,
    ``rediss://`` for TLS). Values are sealed with AES-256-GCM under the key from
    ``CACHE_EXTENSION_SHARED_KEY`` or the Secrets Manager secret ``key_secret``. ``timeout`` is
    the deadline of each operation; ``lease_wait`` bounds how long an environment waits for
    another one's fetch; after ``breaker_failures`` failures in a row the tier is skipped for
    ``breaker_cooldown``, then probed again on demand.
    """

    url: Optional[str] = attrs.field(default=None, validator=_url)
    key_secret: Optional[str] = None
    password_secret: Optional[str] = None
    prefix: str = "cachelayer:"
    timeout: Duration = attrs.field(default=Duration(0.05), validator=_positive)
    connect_timeout: Duration = attrs.field(default=Duration(0.2), validator=_positive)
    lease: Duration = attrs.field(default=Duration(5.0), validator=_positive)
    lease_wait: Duration = attrs.field(default=Duration(1.0), validator=_not_negative)
    cluster: bool = False
    ca_file: Optional[str] = None
    negative: bool = True
    breaker_failures: int = attrs.field(default=3, validator=_positive)
    breaker_cooldown: Duration = attrs.field(default=Duration(5.0), validator=_not_negative)


@attrs.frozen
class SharedConfig:
    """The shared tier as resolved from the file and the environment; secrets never shown."""

    url: str = attrs.field(repr=redact_url)
    settings: SharedSettings
    key: Optional[bytes] = attrs.field(default=None, repr=False)
    password: Optional[str] = attrs.field(default=None, repr=False)

    @property
    def scheme(self) -> str:
        """The URL's scheme, lower case: what picks the store."""
        return urllib.parse.urlsplit(self.url).scheme.lower()


def decode_key(text: str, source: str) -> bytes:
    """A 32-byte AES key from its base64 text; ``ConfigError`` naming ``source`` (never the
    text) otherwise."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"is not valid base64; {KEY_HINT}", source=source) from None
    if len(key) != 32:
        raise ConfigError(
            f"decodes to {len(key)} bytes, not the 32 of an AES-256 key; {KEY_HINT}", source=source
        )
    return key


def resolve_shared(
    environ: Mapping[str, str],
    section: Optional[SharedSettings],
    *,
    source: str,
    line: Optional[int],
) -> Optional[SharedConfig]:
    """The shared tier's config, or None when none is configured.

    ``section`` is the parsed ``cache.shared`` (None when absent), ``source``/``line`` where it
    is written. Raises ``ConfigError`` when a tier is configured without a URL or a key.
    """
    env_url = _url_from_environment(environ)
    if section is None and env_url is None:
        return None
    settings = section if section is not None else SharedSettings()
    url = (env_url or settings.url or "").strip()
    if not url:
        raise ConfigError(
            "a shared tier needs a url; add url: rediss://host:6379 or set "
            "CACHE_EXTENSION_SHARED_URL",
            source=source,
            line=line,
            key="cache.shared",
        )
    key = _key(environ, settings, from_section=section is not None, source=source, line=line)
    if settings.ca_file:
        _check_ca_file(url, settings.ca_file, source=source, line=line)
    password = environ.get("CACHE_EXTENSION_SHARED_PASSWORD") or None
    return SharedConfig(url=url, settings=settings, key=key, password=password)


def _url_from_environment(environ: Mapping[str, str]) -> Optional[str]:
    """``CACHE_EXTENSION_SHARED_URL``, checked; None when unset."""
    env_url = environ.get("CACHE_EXTENSION_SHARED_URL")
    if env_url is not None and not env_url.strip():
        raise ConfigError(
            "is empty; unset it, or give the store's URL, e.g. rediss://host:6379",
            source="CACHE_EXTENSION_SHARED_URL",
        )
    if env_url is not None:
        problem = url_problem(env_url)
        if problem:
            raise ConfigError(problem, source="CACHE_EXTENSION_SHARED_URL")
    return env_url


def _key(
    environ: Mapping[str, str],
    settings: SharedSettings,
    *,
    from_section: bool,
    source: str,
    line: Optional[int],
) -> Optional[bytes]:
    """The key from ``CACHE_EXTENSION_SHARED_KEY``, or None when ``key_secret`` names one to
    read later; a ConfigError when there is neither (where the tier was asked for)."""
    raw_key = environ.get("CACHE_EXTENSION_SHARED_KEY") or None  # empty is unset
    if raw_key is not None:
        return decode_key(raw_key, "CACHE_EXTENSION_SHARED_KEY")
    if settings.key_secret:
        return None
    if from_section:
        raise ConfigError(
            "a shared tier without an encryption key would store values in plaintext; " + KEY_HINT,
            source=source,
            line=line,
            key="cache.shared",
        )
    raise ConfigError(
        "is set, but the shared tier has no encryption key; " + KEY_HINT,
        source="CACHE_EXTENSION_SHARED_URL",
    )


def _check_ca_file(url: str, ca_file: str, *, source: str, line: Optional[int]) -> None:
    # A setting that would be silently ignored, or fail only on first use, is an error now.
    if urllib.parse.urlsplit(url).scheme.lower() != "rediss":
        raise ConfigError(
            f"ca_file is set but {redact_url(url)!r} is not a TLS URL; use rediss://, or "
            "remove ca_file",
            source=source,
            line=line,
            key="cache.shared.ca_file",
        )
    if not os.path.isfile(ca_file):
        raise ConfigError(
            f"no such file {ca_file!r}; give the PEM file of the CA that signed the "
            "server's certificate",
            source=source,
            line=line,
            key="cache.shared.ca_file",
        )
