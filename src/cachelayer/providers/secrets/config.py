"""The ``secrets:`` config section of the Secrets Manager provider, as attrs classes."""

from __future__ import annotations

from typing import List, Optional, Union

import attrs

from cachelayer import Duration
from cachelayer.providers._named import check_region, check_ttl, name_checks

__all__ = ["SecretGroup", "SecretName", "SecretsConfig", "SecretsSection"]


_check_name, _check_names = name_checks("secret name or ARN")


@attrs.frozen(kw_only=True)
class SecretName:
    """One declared secret with its own TTL: ``{name: prod/db, ttl: 5m}``."""

    name: str = attrs.field(validator=_check_name)
    ttl: Optional[Duration] = attrs.field(default=None, validator=check_ttl)


@attrs.frozen(kw_only=True)
class SecretGroup:
    """Secrets of one region: ``{region: us-west-2, ttl: 10m, names: [a, {name: b, ttl: 1m}]}``.

    ``region`` defaults to the function's region (``AWS_REGION``).
    """

    region: Optional[str] = attrs.field(default=None, validator=check_region)
    names: List[Union[str, SecretName]] = attrs.field(validator=_check_names)
    ttl: Optional[Duration] = attrs.field(default=None, validator=check_ttl)


@attrs.frozen(kw_only=True)
class SecretsSection:
    """The mapping form of the section, with a section-level TTL: ``{ttl: 15m, groups: [...]}``."""

    ttl: Optional[Duration] = attrs.field(default=None, validator=check_ttl)
    groups: List[SecretGroup] = attrs.field(factory=list)


SecretsConfig = Union[List[SecretGroup], SecretsSection]
"""The whole ``secrets:`` section: a list of groups (like ``parameters:``), or the mapping form."""
