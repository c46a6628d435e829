"""The ``parameters:`` config section of the SSM Parameter Store provider, as attrs classes."""

from __future__ import annotations

from typing import Any, List, Optional, Union

import attrs

from cachelayer import Duration

__all__ = ["ParameterGroup", "ParameterName", "ParametersConfig", "ParametersSection"]


def _check_name(instance: Any, attribute: Any, value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{attribute.name} must be a non-empty parameter name, got {value!r}")


def _check_ttl(instance: Any, attribute: Any, value: Any) -> None:
    if value is not None and value < 0:
        raise ValueError(f"{attribute.name} must not be negative (0 means no caching), got {value}")


def _check_region(instance: Any, attribute: Any, value: Any) -> None:
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise ValueError(f"region must be an AWS region such as us-west-2, got {value!r}")


def _check_names(instance: Any, attribute: Any, value: Any) -> None:
    if not value:
        raise ValueError("names must list at least one parameter name")
    for entry in value:
        if isinstance(entry, str):
            _check_name(instance, attribute, entry)


@attrs.frozen(kw_only=True)
class ParameterName:
    """One declared parameter with its own TTL: ``{name: /app/db-url, ttl: 5m}``."""

    name: str = attrs.field(validator=_check_name)
    ttl: Optional[Duration] = attrs.field(default=None, validator=_check_ttl)


@attrs.frozen(kw_only=True)
class ParameterGroup:
    """Parameters of one region: ``{region: us-west-2, ttl: 10m, names: [a, {name: b, ttl: 1m}]}``.

    ``region`` defaults to the function's region (``AWS_REGION``).
    """

    region: Optional[str] = attrs.field(default=None, validator=_check_region)
    names: List[Union[str, ParameterName]] = attrs.field(validator=_check_names)
    ttl: Optional[Duration] = attrs.field(default=None, validator=_check_ttl)


@attrs.frozen(kw_only=True)
class ParametersSection:
    """The mapping form of the section, with a section-level TTL: ``{ttl: 15m, groups: [...]}``."""

    ttl: Optional[Duration] = attrs.field(default=None, validator=_check_ttl)
    groups: List[ParameterGroup] = attrs.field(factory=list)


ParametersConfig = Union[List[ParameterGroup], ParametersSection]
"""The whole ``parameters:`` section: the sample's list of groups, or the mapping form."""
