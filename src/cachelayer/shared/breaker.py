"""The shared tier's circuit breaker: stop asking a failing store, probe it after a cool-down."""

from __future__ import annotations

import threading
from typing import Callable

__all__ = ["CircuitBreaker"]


class CircuitBreaker:
    """Stops asking a failing store: after ``failures`` failures in a row it opens for
    ``cooldown`` seconds; then one caller is let through as a probe (half-open), whose success
    closes it and whose failure opens it again. Nothing runs on a timer: the state moves only
    when a caller asks, which is what a Lambda environment (frozen between invocations) needs.
    ``clock`` (monotonic seconds) may be replaced, e.g. by a test's manual clock.
    """

    def __init__(self, failures: int, cooldown: float, clock: Callable[[], float]) -> None:
        self._failures = failures
        self._cooldown = cooldown
        self.clock = clock
        self._lock = threading.Lock()
        self._consecutive = 0
        self._open_until = 0.0
        self._probing = False

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half-open``."""
        if self._consecutive < self._failures:
            return "closed"
        if self._probing or self.clock() >= self._open_until:
            return "half-open"
        return "open"

    def allow(self) -> bool:
        """Whether to try the store now (when open: False until the cool-down is over, then
        True once, for the probe)."""
        with self._lock:
            if self._consecutive < self._failures:
                return True
            if self._probing or self.clock() < self._open_until:
                return False
            self._probing = True
            return True

    def success(self) -> bool:
        """Record a success; True if this closed an open breaker."""
        with self._lock:
            reopened = self._consecutive >= self._failures
            self._consecutive = 0
            self._probing = False
            return reopened

    def failure(self) -> bool:
        """Record a failure; True if this opened the breaker."""
        with self._lock:
            self._consecutive += 1
            self._probing = False
            if self._consecutive >= self._failures:
                self._open_until = self.clock() + self._cooldown
                return self._consecutive == self._failures
            return False
