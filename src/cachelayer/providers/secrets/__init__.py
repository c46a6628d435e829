"""The Secrets Manager provider plugin: ``secrets:`` section, ``GET /secrets``."""

from __future__ import annotations

from typing import List, Type

import cachelayer
from cachelayer.providers.secrets.config import (
    SecretGroup,
    SecretName,
    SecretsConfig,
    SecretsSection,
)
from cachelayer.providers.secrets.provider import SecretsManagerProvider

__all__ = [
    "SecretGroup",
    "SecretName",
    "SecretsConfig",
    "SecretsManagerProvider",
    "SecretsSection",
    "cachelayer_providers",
]


@cachelayer.hookimpl
def cachelayer_providers() -> List[Type[SecretsManagerProvider]]:
    """This plugin's one provider type."""
    return [SecretsManagerProvider]
