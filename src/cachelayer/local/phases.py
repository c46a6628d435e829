"""The lifecycle phases of one environment: init, invoke and shutdown, over the Lambda APIs."""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path
from typing import Callable, List, Mapping, Optional, Tuple

import attrs

from cachelayer.local.api import Invocation, Sandbox
from cachelayer.local.processes import ManagedProcess, ProcessTable
from cachelayer.local.reports import InitReport, ShutdownReport, extension_line

SHUTDOWN_BUDGET_S = 2.0
RUNTIME_SHUTDOWN_BUDGET_S = 0.3
INIT_TIMEOUT_S = 10.0


class PhaseFailure(Exception):
    """A phase that cannot go on: Lambda's error type and message for it."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message


def epoch_ms() -> int:
    return int(time.time() * 1000)


def trace_id() -> str:
    """An X-Ray trace header value, as Lambda hands one to each invocation."""
    return (
        f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};"
        f"Parent={uuid.uuid4().hex[:16]};Sampled=0"
    )


@attrs.frozen
class Launch:
    """What an init phase starts: the extensions in a directory, then the runtime."""

    extensions_dir: Optional[Path]
    extension_env: Mapping[str, str]
    runtime_argv: List[str]
    function_env: Mapping[str, str]
    handler_dir: Path
    init_timeout_s: float


@attrs.define
class Phases:
    """Runs the phases of the environment whose state is ``sandbox`` and processes
    ``processes``; ``platform`` writes one line of the platform log."""

    sandbox: Sandbox
    processes: ProcessTable
    platform: Callable[[str], None]

    # -- waiting (caller holds cond) ---------------------------------------------------------

    def wait(self, check: Callable[[], bool], timeout_s: float, what: Callable[[], str]) -> None:
        """Wait until ``check()``; ``check`` raises PhaseFailure to stop early."""
        deadline = time.monotonic() + timeout_s
        while not check():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PhaseFailure("Sandbox.Timedout", f"Timed out after {timeout_s:g} s {what()}")
            self.sandbox.cond.wait(remaining)

    def check_exits(self) -> None:
        """Raise PhaseFailure when a process exited while nobody asked it to."""
        proc = self.processes.unexpected_exit()
        if proc is None:
            return
        if proc.role == "runtime":
            raise PhaseFailure("Runtime.ExitError", f"Runtime exited with code {proc.exit_code}")
        ext = self.sandbox.by_name(proc.name)
        detail = (
            f": {ext.exit_error.error_type}: {ext.exit_error.message}"
            if ext and ext.exit_error
            else ""
        )
        raise PhaseFailure(
            "Extension.Crash", f"Extension {proc.name} exited with code {proc.exit_code}{detail}"
        )

    def _check_init_failures(self) -> None:
        for ext in self.sandbox.extensions.values():
            if ext.init_error is not None:
                raise PhaseFailure(ext.init_error.error_type, ext.init_error.message)
        if self.sandbox.runtime_init_error is not None:
            err = self.sandbox.runtime_init_error
            raise PhaseFailure(err.error_type, err.message)
        self.check_exits()

    def who_is_busy(self) -> str:
        busy = [e.name for e in self.sandbox.extensions.values() if not e.idle]
        if not self.sandbox.runtime_idle():
            busy.append("runtime")
        return "waiting for /next from: " + (", ".join(busy) or "nobody")

    # -- init --------------------------------------------------------------------------------

    def init(self, launch: Launch) -> InitReport:
        """Start the extensions, wait for them to register, start the runtime, and wait until
        every one is in /next. A failure is reported (and logged), not raised."""
        self.sandbox.reset()
        started = time.monotonic()
        self.processes.clear()
        try:
            names = self._run_init(launch, started)
        except PhaseFailure as failure:
            report = InitReport(
                (time.monotonic() - started) * 1000,
                self._registered_names(),
                failure.error_type,
                failure.message,
            )
            with self.sandbox.cond:
                states = [
                    (e.name, "InitError" if e.init_error else "Registered", e.events)
                    for e in self.sandbox.extensions.values()
                ]
            for name, state, events in states:
                self.platform(extension_line(name, state, events))
            self.platform(report.error_line())
            return report
        report = InitReport((time.monotonic() - started) * 1000, names)
        for ext in self.sandbox.extensions.values():
            self.platform(extension_line(ext.name, "Ready", ext.events))
        return report

    def _run_init(self, launch: Launch, started: float) -> Tuple[str, ...]:
        self._launch_extensions(launch)
        with self.sandbox.cond:
            expected = [p.name for p in self.processes.processes]

            def all_registered() -> bool:
                self._check_init_failures()
                return len(self.sandbox.extensions) >= len(expected)

            self.wait(
                all_registered,
                launch.init_timeout_s,
                lambda: (
                    "waiting for extensions to register: "
                    + ", ".join(n for n in expected if self.sandbox.by_name(n) is None)
                ),
            )
            self.sandbox.note("runtime_start", "runtime")
        self.processes.spawn(
            "runtime", "runtime", launch.runtime_argv, launch.function_env, launch.handler_dir
        )
        with self.sandbox.cond:

            def all_next() -> bool:
                self._check_init_failures()
                return self.sandbox.runtime_idle() and self.sandbox.extensions_idle()

            remaining = launch.init_timeout_s - (time.monotonic() - started)
            self.wait(all_next, max(remaining, 0.0), self.who_is_busy)
            self.sandbox.phase = "ready"
            return tuple(e.name for e in self.sandbox.extensions.values())

    def _registered_names(self) -> Tuple[str, ...]:
        with self.sandbox.cond:
            return tuple(e.name for e in self.sandbox.extensions.values())

    def _launch_extensions(self, launch: Launch) -> None:
        directory = launch.extensions_dir
        if directory is None:
            return
        if not directory.is_dir():
            raise PhaseFailure(
                "Extension.LaunchError", f"Extensions directory {directory} does not exist"
            )
        files = sorted(p for p in directory.iterdir() if p.is_file())
        for path in files:
            if not os.access(path, os.X_OK):
                raise PhaseFailure(
                    "Extension.LaunchError",
                    f"Extension {path.name} is not executable (chmod +x {path})",
                )
        for path in files:
            try:
                self.processes.spawn(
                    path.name,
                    "extension",
                    [str(path.resolve())],
                    launch.extension_env,
                    directory.parent,
                )
            except OSError as exc:
                raise PhaseFailure(
                    "Extension.LaunchError", f"Cannot start extension {path.name}: {exc}"
                ) from None

    # -- invoke ------------------------------------------------------------------------------

    def invoke(self, inv: Invocation, timeout_s: float) -> float:
        """Hand ``inv`` to the extensions (INVOKE) and the runtime; return when (monotonic) the
        runtime answered and every process is back in /next. Raise PhaseFailure otherwise."""
        with self.sandbox.cond:
            self.sandbox.phase = "invoke"
            self.sandbox.note("invoke", inv.request_id)
            self.sandbox.deliver_to_extensions(
                {
                    "eventType": "INVOKE",
                    "deadlineMs": inv.deadline_ms,
                    "requestId": inv.request_id,
                    "invokedFunctionArn": inv.function_arn,
                    "tracing": {"type": "X-Amzn-Trace-Id", "value": inv.trace_id},
                }
            )
            self.sandbox.deliver_to_runtime(inv)

            # The invocation ends (and its duration with it) only when the runtime and
            # every extension are back in /next: only then may the environment freeze.
            def finished() -> bool:
                self.check_exits()
                return (
                    inv.answered and self.sandbox.runtime_idle() and self.sandbox.extensions_idle()
                )

            self.wait(finished, timeout_s, self.who_is_busy)
            ended = time.monotonic()
            self.sandbox.phase = "ready"
        return ended

    # -- shutdown ----------------------------------------------------------------------------

    def shutdown(self, reason: str) -> ShutdownReport:
        """SHUTDOWN to subscribed extensions, SIGTERM to the runtime (SIGKILL after 300 ms),
        SIGKILL to whatever still runs at the 2 s deadline; reset the sandbox."""
        started = time.monotonic()
        deadline_ms = epoch_ms() + int(SHUTDOWN_BUDGET_S * 1000)
        with self.sandbox.cond:
            self.sandbox.phase = "shutdown"
            for proc in self.processes.processes:
                proc.expected_exit = True
            self.sandbox.note("shutdown", reason)
        procs = list(self.processes.processes)
        self.processes.signal(signal.SIGCONT)
        self.processes.signal(signal.SIGTERM, role="runtime")
        with self.sandbox.cond:
            self.sandbox.deliver_to_extensions(
                {"eventType": "SHUTDOWN", "deadlineMs": deadline_ms, "shutdownReason": reason}
            )
            self._wait_for_exit(procs, "runtime", started + RUNTIME_SHUTDOWN_BUDGET_S)
        self.processes.signal(signal.SIGKILL, role="runtime")
        with self.sandbox.cond:
            self._wait_for_exit(procs, None, started + SHUTDOWN_BUDGET_S)
            killed = tuple(p.name for p in procs if p.alive)
        self.processes.reap(procs)
        report = ShutdownReport(
            reason=reason,
            deadline_ms=deadline_ms,
            duration_ms=(time.monotonic() - started) * 1000,
            exit_codes={p.name: p.exit_code for p in procs},
            killed=killed,
        )
        if procs:
            self.platform(report.line())
        self.processes.clear()
        self.sandbox.reset()
        return report

    def _wait_for_exit(
        self, procs: List[ManagedProcess], role: Optional[str], until: float
    ) -> None:
        """Wait (holding cond) until every one of ``procs`` (of ``role``) exited, or ``until``."""
        while (
            any(p.alive and (role is None or p.role == role) for p in procs)
            and time.monotonic() < until
        ):
            self.sandbox.cond.wait(until - time.monotonic())
