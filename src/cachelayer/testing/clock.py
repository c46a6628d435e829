"""A clock for tests that moves only when told to (TTLs, backoffs and ages without sleeping)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["FileClock", "ManualClock"]


class ManualClock:
    """A monotonic clock that only moves when told to; pass it as ``clock=`` to freeze TTLs."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``."""
        self.now += seconds


class FileClock:
    """A manual clock another process can move: ``start`` plus the seconds written in
    ``path`` (none yet: 0). The test holds one and calls ``advance``; the server process it
    started reads the same file (``python -m cachelayer.testing.clocked``). Each write
    replaces the file whole, so a reader never sees half of one."""

    def __init__(self, path: Path, start: float = 1000.0) -> None:
        self.path = Path(path)
        self.start = start

    def __call__(self) -> float:
        try:
            return self.start + float(self.path.read_text() or 0.0)
        except FileNotFoundError:
            return self.start

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` (for every process reading the file)."""
        moved = self() - self.start + seconds
        partial = self.path.with_name(self.path.name + ".partial")
        partial.write_text(repr(moved))
        os.replace(partial, self.path)
