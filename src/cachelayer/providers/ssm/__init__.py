"""The SSM Parameter Store provider plugin: ``parameters:`` section, ``GET /parameters``."""

from __future__ import annotations

from typing import List, Type

import cachelayer
from cachelayer.providers.ssm.config import (
    ParameterGroup,
    ParameterName,
    ParametersConfig,
    ParametersSection,
)
from cachelayer.providers.ssm.provider import ParameterStoreProvider

__all__ = [
    "ParameterGroup",
    "ParameterName",
    "ParameterStoreProvider",
    "ParametersConfig",
    "ParametersSection",
    "cachelayer_providers",
]


@cachelayer.hookimpl
def cachelayer_providers() -> List[Type[ParameterStoreProvider]]:
    """This plugin's one provider type."""
    return [ParameterStoreProvider]
