"""cachelayer-s3: the plugin module behind the ``s3`` entry point in the ``cachelayer`` group."""

from __future__ import annotations

from typing import List

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
def cachelayer_providers() -> List[S3Provider]:
    """One S3 provider, unconfigured: the core hands it the ``s3:`` section later."""
    return [S3Provider()]
