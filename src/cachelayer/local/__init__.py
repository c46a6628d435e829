"""A local Lambda execution environment: the Extensions and Runtime APIs, freeze, shutdown."""

from __future__ import annotations

from cachelayer.local.api import ApiError, ApiServer, Sandbox
from cachelayer.local.emulator import (
    HIDDEN_FROM_EXTENSIONS,
    Crash,
    InitReport,
    InvokeResult,
    LocalLambda,
    ShutdownReport,
)

__all__ = [
    "HIDDEN_FROM_EXTENSIONS",
    "ApiError",
    "ApiServer",
    "Crash",
    "InitReport",
    "InvokeResult",
    "LocalLambda",
    "Sandbox",
    "ShutdownReport",
]
