"""cachelayer-example: the plugin module named by the ``example`` entry point."""

from __future__ import annotations

from typing import List, Type

import cachelayer
from cachelayer_example.provider import ExampleItem, ExampleProvider

__all__ = ["ExampleItem", "ExampleProvider", "cachelayer_providers"]


@cachelayer.hookimpl
def cachelayer_providers() -> List[Type[ExampleProvider]]:
    """Called once at startup: return your provider types (classes), with no I/O."""
    return [ExampleProvider]
