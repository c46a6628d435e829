"""cachelayer-appconfig: the plugin module named by the ``appconfig`` entry point."""

from __future__ import annotations

from typing import List, Type

import cachelayer
from cachelayer_appconfig.provider import MIN_POLL_INTERVAL, AppConfigProfile, AppConfigProvider

__all__ = ["MIN_POLL_INTERVAL", "AppConfigProfile", "AppConfigProvider", "cachelayer_providers"]
__version__ = "0.1.0"


@cachelayer.hookimpl
def cachelayer_providers() -> List[Type[AppConfigProvider]]:
    """The AppConfig provider type: the core builds it from the ``appconfig:`` section."""
    return [AppConfigProvider]
