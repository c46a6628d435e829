"""What the emulator reports: init, invocation and shutdown records, and Lambda's log lines."""

from __future__ import annotations

import json
import math
from typing import Any, Dict, Iterable, Optional, Tuple

import attrs

from cachelayer.local.api import Invocation


@attrs.frozen
class InitReport:
    """How one init phase went. ``error_type`` is None when it succeeded."""

    duration_ms: float
    extensions: Tuple[str, ...]
    error_type: Optional[str] = None
    error_message: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.error_type is None

    def error_line(self) -> str:
        """The INIT_REPORT line Lambda writes when init failed."""
        return (
            f"INIT_REPORT Init Duration: {self.duration_ms:.2f} ms\tPhase: init\t"
            f"Status: error\tError Type: {self.error_type}"
        )


@attrs.frozen
class InvokeResult:
    """One invocation as Lambda reports it: the payload or error, and the REPORT figures."""

    request_id: str
    payload: Optional[bytes]
    error: Optional[Dict[str, Any]]
    duration_ms: float
    billed_duration_ms: int
    memory_size_mb: int
    init_duration_ms: Optional[float] = None
    max_memory_used_mb: Optional[int] = None
    # When the runtime posted its answer, from the start of the invocation.
    response_ms: Optional[float] = None
    # "Unhandled" when the handler raised (Lambda's X-Amz-Function-Error).
    function_error: Optional[str] = None

    @classmethod
    def answered(
        cls,
        inv: Invocation,
        *,
        started: float,
        ended: float,
        memory_size_mb: int,
        max_memory_used_mb: int,
        init_duration_ms: Optional[float],
    ) -> InvokeResult:
        """The result of an invocation the runtime answered (``started``/``ended``: monotonic)."""
        duration = (ended - started) * 1000
        error = None
        function_error = None
        if inv.error is not None:
            function_error = "Unhandled"
            try:
                error = json.loads(inv.error.body)
            except ValueError:
                error = {"errorMessage": inv.error.message, "errorType": inv.error.error_type}
        return cls(
            request_id=inv.request_id,
            payload=inv.response,
            error=error,
            duration_ms=duration,
            billed_duration_ms=max(1, math.ceil(duration)),
            memory_size_mb=memory_size_mb,
            init_duration_ms=init_duration_ms,
            max_memory_used_mb=max_memory_used_mb or None,
            response_ms=((inv.answered_at or ended) - started) * 1000,
            function_error=function_error,
        )

    @classmethod
    def failed(
        cls,
        request_id: str,
        error_type: str,
        message: str,
        *,
        duration_ms: float,
        memory_size_mb: int,
        init_duration_ms: Optional[float],
    ) -> InvokeResult:
        """An invocation the environment failed (init error, timeout, crash)."""
        return cls(
            request_id=request_id,
            payload=None,
            error={
                "errorMessage": f"RequestId: {request_id} Error: {message}",
                "errorType": error_type,
            },
            duration_ms=duration_ms,
            billed_duration_ms=max(1, math.ceil(duration_ms)),
            memory_size_mb=memory_size_mb,
            init_duration_ms=init_duration_ms,
        )

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def response(self) -> Any:
        """The handler's response decoded from JSON (None when the invocation failed)."""
        return None if self.payload is None else json.loads(self.payload)

    def report_line(self) -> str:
        """The REPORT line Lambda writes to the function's log."""
        line = (
            f"REPORT RequestId: {self.request_id}\tDuration: {self.duration_ms:.2f} ms\t"
            f"Billed Duration: {self.billed_duration_ms} ms\tMemory Size: {self.memory_size_mb} MB"
        )
        if self.max_memory_used_mb is not None:
            line += f"\tMax Memory Used: {self.max_memory_used_mb} MB"
        if self.init_duration_ms is not None:
            line += f"\tInit Duration: {self.init_duration_ms:.2f} ms"
        if self.error is not None and self.function_error is None:
            line += f"\tStatus: error\tError Type: {self.error.get('errorType')}"
        return line


@attrs.frozen
class ShutdownReport:
    """How a shutdown went: exit codes by process name, and who had to be SIGKILLed."""

    reason: str
    deadline_ms: int
    duration_ms: float
    exit_codes: Dict[str, Optional[int]]
    killed: Tuple[str, ...]

    def line(self) -> str:
        """The platform log's SHUTDOWN line."""
        return f"SHUTDOWN Reason: {self.reason}\tDuration: {self.duration_ms:.2f} ms" + (
            f"\tKilled: {', '.join(self.killed)}" if self.killed else ""
        )


@attrs.frozen
class Crash:
    """A process that exited while nobody asked it to."""

    name: str
    exit_code: int
    phase: str


def extension_line(name: str, state: str, events: Iterable[str]) -> str:
    """The platform log's EXTENSION line: its name, state and the events it subscribed to."""
    return f"EXTENSION\tName: {name}\tState: {state}\tEvents: [{', '.join(sorted(events))}]"
