"""cachelayer-example: the plugin module named by the ``example`` entry point."""

from __future__ import annotations

from typing import List

import cachelayer
from cachelayer_example.provider import ExampleItem, ExampleProvider

__all__ = ["ExampleItem", "ExampleProvider", "cachelayer_providers"]


@cachelayer.hookimpl
def cachelayer_providers() -> List[ExampleProvider]:
    """Called once at startup: return your providers, unconfigured, with no I/O."""
    return [ExampleProvider()]
