"""The shared tier's counters of one route, as ``/-/stats`` shows them (``shared_*``)."""

from __future__ import annotations

import collections
import threading
from typing import Deque, Dict

__all__ = ["RouteCounters"]

_LATENCY_SAMPLES = 512


class RouteCounters:
    """The tier's counters of one route, bumped from worker threads (under its own lock),
    with the latencies of its last store operations."""

    __slots__ = (
        "_lock",
        "errors",
        "hits",
        "latencies",
        "misses",
        "rejected",
        "stale",
        "waits",
        "writes",
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.hits = self.misses = self.errors = self.rejected = 0
        self.writes = self.waits = self.stale = 0
        self.latencies: Deque[float] = collections.deque(maxlen=_LATENCY_SAMPLES)

    def bump(self, name: str) -> None:
        """Add one to the counter ``name`` (``hits``, ``misses``, ``errors``...)."""
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)

    def timed(self, seconds: float) -> None:
        """Keep the latency of one store operation."""
        with self._lock:
            self.latencies.append(seconds)

    def as_dict(self) -> Dict[str, int]:
        """The counters by their ``/-/stats`` names, latency quantiles in microseconds."""
        with self._lock:
            ordered = sorted(self.latencies)
            counts = {
                "shared_hits": self.hits,
                "shared_misses": self.misses,
                "shared_errors": self.errors,
                "shared_rejected": self.rejected,
                "shared_writes": self.writes,
                "shared_lease_waits": self.waits,
                "shared_stale": self.stale,
            }

        def quantile(q: float) -> int:
            if not ordered:
                return 0
            return int(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e6)

        counts["shared_latency_p50_us"] = quantile(0.50)
        counts["shared_latency_p99_us"] = quantile(0.99)
        return counts
