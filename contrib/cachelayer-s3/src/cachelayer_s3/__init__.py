"""cachelayer-s3: the plugin module behind the ``s3`` entry point in the ``cachelayer`` group."""

from __future__ import annotations

from typing import List, Type

import cachelayer
from cachelayer_s3.provider import DEFAULT_MAX_SIZE, ObjectTooLargeError, S3Object, S3Provider

__all__ = [
    "DEFAULT_MAX_SIZE",
    "ObjectTooLargeError",
    "S3Object",
    "S3Provider",
    "cachelayer_providers",
]
__version__ = "0.1.0"


@cachelayer.hookimpl
def cachelayer_providers() -> List[Type[S3Provider]]:
    """The S3 provider type: the core builds it from the ``s3:`` section with ``from_config``."""
    return [S3Provider]
