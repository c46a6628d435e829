"""The ``secrets:`` config section of the Secrets Manager provider, as attrs classes."""

from __future__ import annotations

from typing import Any, List, Optional, Union

import attrs

from cachelayer import Duration

__all__ = ["SecretGroup", "SecretName", "SecretsConfig", "SecretsSection"]


def _check_name(instance: Any, attribute: Any, value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{attribute.name} must be a non-empty secret name or ARN, got {value!r}")


def _check_ttl(instance: Any, attribute: Any, value: Any) -> None:
    if value is not None and value < 0:
        raise ValueError(f"{attribute.name} must not be negative (0 means no caching), got {value}")


def _check_region(instance: Any, attribute: Any, value: Any) -> None:
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise ValueError(f"region must be an AWS region such as us-west-2, got {value!r}")


def _check_names(instance: Any, attribute: Any, value: Any) -> None:
    if not value:
        raise ValueError("names must list at least one secret name or ARN")
    for entry in value:
        if isinstance(entry, str):
            _check_name(instance, attribute, entry)


@attrs.frozen(kw_only=True)
class SecretName:
    """One declared secret with its own TTL: ``{name: prod/db, ttl: 5m}``."""

    name: str = attrs.field(validator=_check_name)
    ttl: Optional[Duration] = attrs.field(default=None, validator=_check_ttl)


@attrs.frozen(kw_only=True)
class SecretGroup:
    """Secrets of one region: ``{region: us-west-2, ttl: 10m, names: [a, {name: b, ttl: 1m}]}``.

    ``region`` defaults to the function's region (``AWS_REGION``).
    """

    region: Optional[str] = attrs.field(default=None, validator=_check_region)
    names: List[Union[str, SecretName]] = attrs.field(validator=_check_names)
    ttl: Optional[Duration] = attrs.field(default=None, validator=_check_ttl)


@attrs.frozen(kw_only=True)
class SecretsSection:
    """The mapping form of the section, with a section-level TTL: ``{ttl: 15m, groups: [...]}``."""

    ttl: Optional[Duration] = attrs.field(default=None, validator=_check_ttl)
    groups: List[SecretGroup] = attrs.field(factory=list)


SecretsConfig = Union[List[SecretGroup], SecretsSection]
"""The whole ``secrets:`` section: a list of groups (like ``parameters:``), or the mapping form."""
