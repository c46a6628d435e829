"""A clock for tests that moves only when told to (TTLs, backoffs and ages without sleeping)."""

from __future__ import annotations

__all__ = ["ManualClock"]


class ManualClock:
    """A monotonic clock that only moves when told to; pass it as ``clock=`` to freeze TTLs."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``."""
        self.now += seconds
