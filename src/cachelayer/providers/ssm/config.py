"""The ``parameters:`` config section of the SSM Parameter Store provider, as attrs classes."""

from __future__ import annotations

from typing import List, Optional, Union

import attrs

from cachelayer import Duration
from cachelayer.providers._named import check_region, check_ttl, name_checks

__all__ = ["ParameterGroup", "ParameterName", "ParametersConfig", "ParametersSection"]


_check_name, _check_names = name_checks("parameter name")


@attrs.frozen(kw_only=True)
class ParameterName:
    """One declared parameter with its own TTL: ``{name: /app/db-url, ttl: 5m}``."""

    name: str = attrs.field(validator=_check_name)
    ttl: Optional[Duration] = attrs.field(default=None, validator=check_ttl)


@attrs.frozen(kw_only=True)
class ParameterGroup:
    """Parameters of one region: ``{region: us-west-2, ttl: 10m, names: [a, {name: b, ttl: 1m}]}``.

    ``region`` defaults to the function's region (``AWS_REGION``).
    """

    region: Optional[str] = attrs.field(default=None, validator=check_region)
    names: List[Union[str, ParameterName]] = attrs.field(validator=_check_names)
    ttl: Optional[Duration] = attrs.field(default=None, validator=check_ttl)


@attrs.frozen(kw_only=True)
class ParametersSection:
    """The mapping form of the section, with a section-level TTL: ``{ttl: 15m, groups: [...]}``."""

    ttl: Optional[Duration] = attrs.field(default=None, validator=check_ttl)
    groups: List[ParameterGroup] = attrs.field(factory=list)


ParametersConfig = Union[List[ParameterGroup], ParametersSection]
"""The whole ``parameters:`` section: the sample's list of groups, or the mapping form."""
