"""The error the layer builder and publisher raise: what failed, and how to fix it."""

from __future__ import annotations

from typing import ClassVar

from cachelayer.errors import CachelayerError


class LayerBuildError(CachelayerError):
    """Building or publishing a layer failed; the message says what, where and how to fix it."""

    code: ClassVar[str] = "LayerBuildError"
