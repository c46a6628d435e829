"""cachelayer-rds: the plugin module behind the ``rds`` entry point in the ``cachelayer`` group."""

from __future__ import annotations

from typing import List, Type

import cachelayer
from cachelayer_rds.config import RdsSource
from cachelayer_rds.provider import RdsProvider, TooManyRowsError, close_all

__all__ = ["RdsProvider", "RdsSource", "TooManyRowsError", "cachelayer_providers"]
__version__ = "0.1.0"


@cachelayer.hookimpl
def cachelayer_providers() -> List[Type[RdsProvider]]:
    """The RDS provider type: the core builds it from the ``rds:`` section with ``from_config``."""
    return [RdsProvider]


@cachelayer.hookimpl
def cachelayer_shutdown(reason: str) -> None:
    """Close the kept database connections so the server frees their slots at once."""
    close_all()
