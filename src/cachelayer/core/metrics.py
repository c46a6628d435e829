"""CloudWatch metrics without an API call: per-route counters as Embedded Metric Format lines."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

__all__ = [
    "COUNTERS",
    "DEFAULT_NAMESPACE",
    "EMIT_INTERVAL_S",
    "GAUGES",
    "EmfMetrics",
    "check_namespace",
]

log = logging.getLogger("cachelayer.metrics")

DEFAULT_NAMESPACE = "cachelayer"
EMIT_INTERVAL_S = 60.0
"""At most one emission per this many seconds on INVOKE (SHUTDOWN always emits)."""

# (stats key, metric name): emitted as the change since the last emission, unit Count.
COUNTERS: Tuple[Tuple[str, str], ...] = (
    ("hits", "Hits"),
    ("misses", "Misses"),
    ("stale", "StaleServes"),
    ("negative_hits", "NegativeHits"),
    ("upstream_calls", "UpstreamCalls"),
    ("upstream_errors", "UpstreamErrors"),
    ("throttles", "Throttles"),
    ("evictions", "Evictions"),
)
# (stats key, metric name, unit): levels at the moment of emission. A delta of a level would
# be meaningless once CloudWatch sums it across execution environments; the level averages
# and maxes correctly.
GAUGES: Tuple[Tuple[str, str, str], ...] = (
    ("entries", "Entries", "Count"),
    ("bytes", "Bytes", "Bytes"),
)

# CloudWatch's PutMetricData rules for a namespace: 1-255 characters of this set, and the
# "AWS/" prefix is reserved for AWS's own services.
_NAMESPACE_RE = re.compile(r"^[A-Za-z0-9.\-_/#: ]{1,255}$")
_DIMENSION_MAX = 1024


def check_namespace(namespace: str) -> Optional[str]:
    """Why ``namespace`` is not a valid CloudWatch namespace, or None when it is."""
    if not _NAMESPACE_RE.match(namespace) or not namespace.strip():
        return (
            "a CloudWatch namespace is 1 to 255 characters of letters, digits, spaces and "
            ". - _ / # :"
        )
    if namespace.startswith("AWS/"):
        return "the 'AWS/' prefix is reserved for AWS's own services"
    return None


def _dimension_value(text: str, fallback: str) -> str:
    """A dimension value CloudWatch accepts: non-blank, at most 1024 characters."""
    text = text.strip()[:_DIMENSION_MAX]
    return text if text else fallback


class EmfMetrics:
    """Writes per-route deltas of the cache's counters as CloudWatch Embedded Metric Format.

    Lambda sends an extension's stdout to CloudWatch Logs, which turns each EMF line into
    metrics: no API call, no credentials. There is no timer (Lambda freezes the environment
    between invocations): ``on_invoke`` emits when at least ``interval`` seconds have passed
    since the last emission, by the clock read when the event arrives, and ``on_shutdown``
    always emits what is left. One line per route that has something to report, with the
    dimensions ``FunctionName`` and ``Route``; only counts and sizes, never a name or a value.
    """

    def __init__(
        self,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        function_name: str = "",
        write: Optional[Callable[[str], None]] = None,
        clock: Callable[[], float] = time.time,
        interval: float = EMIT_INTERVAL_S,
    ) -> None:
        problem = check_namespace(namespace)
        if problem is not None:
            raise ValueError(f"invalid metrics namespace {namespace!r}: {problem}")
        self.namespace = namespace
        self.function_name = _dimension_value(function_name, "local")
        self._write = write if write is not None else _stdout_line
        self._clock = clock
        self.interval = interval
        self._last: Dict[str, Dict[str, int]] = {}
        # The window starts when the environment starts: the first INVOKE of a cold start
        # does not emit, a SHUTDOWN or a later INVOKE does.
        self._emitted_at = clock()

    def on_invoke(self, stats: Mapping[str, Mapping[str, int]]) -> int:
        """On a Lambda INVOKE: emit if the interval has passed; return the lines written."""
        now = self._clock()
        if now - self._emitted_at < self.interval:
            return 0
        return self.emit(stats, now)

    def on_shutdown(self, stats: Mapping[str, Mapping[str, int]]) -> int:
        """At SHUTDOWN (or the end of ``serve``): emit whatever changed; return the lines."""
        return self.emit(stats, self._clock())

    def emit(self, stats: Mapping[str, Mapping[str, int]], now: Optional[float] = None) -> int:
        """Write one EMF line per route with news, remember the counters, return the lines."""
        now = self._clock() if now is None else now
        documents = self.documents(stats, now)
        try:
            for document in documents:
                self._write(json.dumps(document, separators=(",", ":"), sort_keys=True))
        except OSError as exc:  # stdout closed or full: metrics must never stop the cache
            log.warning("could not write EMF metrics to stdout: %s", exc)
        self._emitted_at = now
        self._last = {route: dict(counters) for route, counters in stats.items()}
        return len(documents)

    def documents(self, stats: Mapping[str, Mapping[str, int]], now: float) -> List[Dict[str, Any]]:
        """The EMF documents for ``stats`` (per route, as ``Cache.stats`` gives them) at
        ``now`` (epoch seconds), without writing or remembering anything."""
        out = []
        for route, counters in sorted(stats.items()):
            last = self._last.get(route, {})
            values: Dict[str, int] = {}
            for key, metric in COUNTERS:
                # Counters only grow; max() keeps a reset (never expected) from going negative.
                values[metric] = max(0, int(counters.get(key, 0)) - int(last.get(key, 0)))
            for key, metric, _ in GAUGES:
                values[metric] = int(counters.get(key, 0))
            if not any(values.values()):
                continue  # an idle, empty route: nothing worth a log line
            metrics = [{"Name": metric, "Unit": "Count"} for _, metric in COUNTERS]
            metrics += [{"Name": metric, "Unit": unit} for _, metric, unit in GAUGES]
            document: Dict[str, Any] = {
                "_aws": {
                    "Timestamp": int(now * 1000),
                    "CloudWatchMetrics": [
                        {
                            "Namespace": self.namespace,
                            "Dimensions": [["FunctionName", "Route"]],
                            "Metrics": metrics,
                        }
                    ],
                },
                "FunctionName": self.function_name,
                "Route": _dimension_value(route, "-"),
                **values,
            }
            out.append(document)
        return out


def _stdout_line(line: str) -> None:
    # stdout, not the log (stderr): CloudWatch Logs reads EMF from either, and keeping the
    # metrics apart lets `serve` users pipe them somewhere else.
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
