"""A local Lambda execution environment: the Extensions and Runtime APIs, freeze, shutdown."""

from __future__ import annotations

from cachelayer.local.api import ApiError, Sandbox
from cachelayer.local.emulator import LocalLambda
from cachelayer.local.environment import HIDDEN_FROM_EXTENSIONS
from cachelayer.local.reports import Crash, InitReport, InvokeResult, ShutdownReport
from cachelayer.local.server import ApiServer

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
