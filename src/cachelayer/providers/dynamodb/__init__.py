"""The DynamoDB provider plugin: ``dynamodb:`` section, ``GET /dynamodb``."""

from __future__ import annotations

from typing import List, Type

import cachelayer
from cachelayer.providers.dynamodb.config import DynamoDbConfig, DynamoDbSection, DynamoItem
from cachelayer.providers.dynamodb.encoding import item_to_json
from cachelayer.providers.dynamodb.provider import DynamoDbProvider

__all__ = [
    "DynamoDbConfig",
    "DynamoDbProvider",
    "DynamoDbSection",
    "DynamoItem",
    "cachelayer_providers",
    "item_to_json",
]


@cachelayer.hookimpl
def cachelayer_providers() -> List[Type[DynamoDbProvider]]:
    """This plugin's one provider type."""
    return [DynamoDbProvider]
