"""LocalLambda: one emulated execution environment driving real processes over the Lambda APIs."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

from cachelayer.local.api import FunctionIdentity, Invocation, Sandbox
from cachelayer.local.environment import (
    FunctionSettings,
    extension_environment,
    region_of,
    resolve_credentials,
)
from cachelayer.local.phases import (
    INIT_TIMEOUT_S,
    Launch,
    PhaseFailure,
    Phases,
    epoch_ms,
    trace_id,
)
from cachelayer.local.processes import ManagedProcess, ProcessTable
from cachelayer.local.procfs import peak_rss_mb
from cachelayer.local.reports import Crash, InitReport, InvokeResult, ShutdownReport
from cachelayer.local.server import ApiServer

ACCOUNT_ID = "123456789012"


class LocalLambda:
    """An execution environment: extensions from ``extensions_dir`` and ``awslambdaric`` running
    ``handler`` from ``handler_dir``, driven through the Extensions and Runtime APIs.
    ``runtime_command`` replaces ``awslambdaric`` with another runtime client's argv.

    ``with LocalLambda(...) as fn: fn.invoke(event)``. Construction does no I/O: ``open()``
    (which ``start()`` and ``with`` call) makes the log directory and binds the APIs' socket.
    Logs of every process go to ``log_dir`` (a temporary directory by default); ``fn.log(name)``
    reads one.
    """

    def __init__(
        self,
        *,
        extensions_dir: Optional[os.PathLike[str] | str],
        handler: str,
        handler_dir: os.PathLike[str] | str,
        env: Optional[Mapping[str, str]] = None,
        function_name: str = "cachelayer-local",
        memory_size_mb: int = 128,
        timeout_s: float = 30.0,
        init_timeout_s: float = INIT_TIMEOUT_S,
        runtime_python: str = sys.executable,
        log_dir: Optional[os.PathLike[str] | str] = None,
        echo: Optional[Callable[[str], None]] = None,
        on_spawn: Optional[Callable[[str, int], None]] = None,
        runtime_command: Optional[List[str]] = None,
    ) -> None:
        self.extensions_dir = Path(extensions_dir) if extensions_dir else None
        self.handler = handler
        self.handler_dir = Path(handler_dir).resolve()
        self.function_name = function_name
        self.memory_size_mb = memory_size_mb
        self.timeout_s = timeout_s
        self.init_timeout_s = init_timeout_s
        self.runtime_python = runtime_python
        # Another runtime client (AWS's Node.js one, say) instead of awslambdaric: its argv,
        # started in handler_dir with the function's environment.
        self.runtime_command = list(runtime_command) if runtime_command else None
        self._own_log_dir = log_dir is None
        self._log_dir = Path(log_dir) if log_dir else None
        self._echo = echo
        user_env = dict(env or {})
        self._settings = FunctionSettings(
            function_name=function_name,
            handler=handler,
            handler_dir=self.handler_dir,
            memory_size_mb=memory_size_mb,
            runtime_python=runtime_python,
            # One execution environment, one log stream, as on Lambda.
            log_stream_name=time.strftime("%Y/%m/%d", time.gmtime())
            + f"/[$LATEST]{uuid.uuid4().hex}",
            user_env=user_env,
            credentials=resolve_credentials(user_env),
        )
        self.sandbox = Sandbox(FunctionIdentity(function_name, "$LATEST", handler, ACCOUNT_ID))
        # on_spawn is called with (name, pid) right after each process starts (benchmarks
        # watch it).
        self._processes = ProcessTable(self.sandbox, self.log_path, on_spawn)
        self._phases = Phases(self.sandbox, self._processes, self._platform)
        self._server: Optional[ApiServer] = None
        self._initialized = False
        self._pending_init_duration: Optional[float] = None
        self._last_init: Optional[InitReport] = None
        self.init_reports: List[InitReport] = []
        self.shutdown_reports: List[ShutdownReport] = []
        self.platform_log: List[str] = []
        self._closed = False

    # -- environment -------------------------------------------------------------------------

    @property
    def log_stream_name(self) -> str:
        """The environment's one log stream (``AWS_LAMBDA_LOG_STREAM_NAME``)."""
        return self._settings.log_stream_name

    @property
    def runtime_api(self) -> str:
        """``AWS_LAMBDA_RUNTIME_API``: the APIs' ``127.0.0.1:PORT``, known once ``open()`` ran."""
        if self._server is None:
            raise RuntimeError(
                "LocalLambda.runtime_api: the Lambda APIs have no port before open() or "
                "start() binds one; call fn.open() first"
            )
        return self._server.address

    @property
    def region(self) -> str:
        """The function's region: the caller's ``AWS_REGION`` or ``AWS_DEFAULT_REGION``."""
        return region_of(self._settings.user_env)

    @property
    def crashes(self) -> List[Crash]:
        """Processes that exited while nobody asked them to, in order."""
        return self._processes.crashes

    @property
    def processes(self) -> Tuple[ManagedProcess, ...]:
        """The processes of the current environment (none before init or after shutdown)."""
        return tuple(self._processes.processes)

    def function_environment(self) -> Dict[str, str]:
        """The variables the runtime gets (Lambda's defaults, then the caller's ``env``)."""
        return self._settings.function_environment(self.runtime_api)

    def extension_environment(self) -> Dict[str, str]:
        """The variables an extension gets: the function's minus those Lambda withholds."""
        return extension_environment(self.function_environment())

    # -- logs --------------------------------------------------------------------------------

    @property
    def log_dir(self) -> Path:
        """Where the processes' logs go (a temporary directory made by ``open()`` by default)."""
        if self._log_dir is None:
            raise RuntimeError(
                "LocalLambda.log_dir: no log directory before open() or start() makes one "
                "(pass log_dir= to choose it up front)"
            )
        return self._log_dir

    def log_path(self, name: str) -> Path:
        """Where the output of process ``name`` (an extension's file name, or ``runtime``) goes."""
        return self.log_dir / f"{name}.log"

    def log(self, name: str) -> str:
        """Everything process ``name`` wrote to stdout and stderr so far."""
        if self._log_dir is None:
            return ""
        path = self.log_path(name)
        return path.read_text(errors="replace") if path.exists() else ""

    def _platform(self, line: str) -> None:
        self.platform_log.append(line)
        with open(self.log_dir / "platform.log", "a") as f:
            f.write(line + "\n")
        if self._echo:
            self._echo(line)

    # -- processes ---------------------------------------------------------------------------

    def freeze(self) -> None:
        """SIGSTOP every process group: nothing in the environment runs until ``thaw``.

        Returns once the processes are seen stopped (SIGSTOP is delivered asynchronously).
        """
        self._processes.freeze()

    def thaw(self) -> None:
        """SIGCONT every process group."""
        self._processes.signal(signal.SIGCONT)

    @contextlib.contextmanager
    def thawed(self) -> Iterator[None]:
        """Let the processes run for a block, e.g. to reach the extension's port from a test
        (between invocations they are frozen, as on Lambda, and would not answer)."""
        self.thaw()
        try:
            yield
        finally:
            self.freeze()

    # -- open / init -------------------------------------------------------------------------

    def open(self) -> None:
        """Make the log directory, then bind and serve the Lambda APIs on a free loopback port.

        No process starts. ``start()`` opens first; call ``open()`` alone to read the
        environments (``function_environment()`` needs the port). Idempotent.
        """
        if self._closed:
            raise RuntimeError("LocalLambda.open(): this environment was closed; make a new one")
        if self._server is not None:
            return
        if self._log_dir is None:
            self._log_dir = Path(tempfile.mkdtemp(prefix="cachelayer-local-"))
        self._log_dir.mkdir(parents=True, exist_ok=True)
        server = ApiServer(self.sandbox)
        server.start()
        self._server = server

    def start(self) -> InitReport:
        """Open (log directory, API server) and run the init phase (extensions, then runtime).

        Idempotent: when the environment is already initialised, return that init's report
        (``with LocalLambda(...)`` has started it already). After a failed init, try again.
        """
        self.open()
        if self._initialized and self._last_init is not None:
            return self._last_init
        return self._init()

    def _launch(self) -> Launch:
        function_env = self.function_environment()
        return Launch(
            extensions_dir=self.extensions_dir,
            extension_env=extension_environment(function_env),
            runtime_argv=self.runtime_command
            or [self.runtime_python, "-m", "awslambdaric", self.handler],
            function_env=function_env,
            handler_dir=self.handler_dir,
            init_timeout_s=self.init_timeout_s,
        )

    def _init(self) -> InitReport:
        report = self._phases.init(self._launch())
        self.init_reports.append(report)
        self._last_init = report
        if not report.ok:
            self._teardown("failure")
            return report
        self._initialized = True
        self._pending_init_duration = report.duration_ms
        self.freeze()
        return report

    # -- invoke ------------------------------------------------------------------------------

    def invoke(self, event: Any = None, *, freeze_between: float = 0.0) -> InvokeResult:
        """Invoke the function with ``event`` (JSON-serialisable, or bytes).

        ``freeze_between``: seconds to stay frozen before the event is delivered (a long idle).
        A failed init is retried here, as Lambda does; its error becomes this invocation's.
        """
        if self._server is None:
            self.start()
        if freeze_between > 0:
            time.sleep(freeze_between)
        request_id = str(uuid.uuid4())
        with self.sandbox.cond:
            crashed = self._initialized and self._processes.unexpected_exit() is not None
        if crashed:
            # An extension died while idle: Lambda resets the environment.
            self._teardown("failure")
        if not self._initialized:
            report = self._init()
            if not report.ok:
                return self._failed(
                    request_id,
                    PhaseFailure(report.error_type or "", report.error_message or ""),
                    0.0,
                    report.duration_ms,
                )
        init_ms, self._pending_init_duration = self._pending_init_duration, None
        return self._invoke(request_id, event, init_ms)

    def _invoke(self, request_id: str, event: Any, init_ms: Optional[float]) -> InvokeResult:
        payload = event if isinstance(event, bytes) else json.dumps(event).encode()
        arn = f"arn:aws:lambda:{self.region}:{ACCOUNT_ID}:function:{self.function_name}"
        deadline_ms = epoch_ms() + int(self.timeout_s * 1000)
        inv = Invocation(request_id, payload, deadline_ms, arn, trace_id())
        started = time.monotonic()
        self._platform(f"START RequestId: {request_id} Version: $LATEST")
        self.thaw()
        try:
            ended = self._phases.invoke(inv, self.timeout_s)
        except PhaseFailure as failure:
            duration = (time.monotonic() - started) * 1000
            timed_out = failure.error_type == "Sandbox.Timedout"
            if timed_out:
                failure = PhaseFailure(
                    "Sandbox.Timedout", f"Task timed out after {self.timeout_s:.2f} seconds"
                )
            result = self._failed(request_id, failure, duration, init_ms)
            self._teardown("timeout" if timed_out else "failure")
            return result
        memory = sum(peak_rss_mb(p.popen.pid) for p in self._processes.alive())
        self.freeze()
        result = InvokeResult.answered(
            inv,
            started=started,
            ended=ended,
            memory_size_mb=self.memory_size_mb,
            max_memory_used_mb=memory,
            init_duration_ms=init_ms,
        )
        self._report(result)
        return result

    def _failed(
        self, request_id: str, failure: PhaseFailure, duration: float, init_ms: Optional[float]
    ) -> InvokeResult:
        result = InvokeResult.failed(
            request_id,
            failure.error_type,
            failure.message,
            duration_ms=duration,
            memory_size_mb=self.memory_size_mb,
            init_duration_ms=init_ms,
        )
        self._report(result)
        return result

    def _report(self, result: InvokeResult) -> None:
        self._platform(f"END RequestId: {result.request_id}")
        self._platform(result.report_line())

    # -- shutdown ----------------------------------------------------------------------------

    def shutdown(self, reason: str = "spindown") -> ShutdownReport:
        """SHUTDOWN the environment: the event to subscribed extensions, SIGTERM to the runtime,
        SIGKILL to whatever still runs ``2000 ms`` later. Safe to call twice."""
        return self._teardown(reason)

    def _teardown(self, reason: str) -> ShutdownReport:
        report = self._phases.shutdown(reason)
        if report.exit_codes:
            self.shutdown_reports.append(report)
        self._initialized = False
        return report

    def close(self) -> None:
        """Shut down (if still running), stop the API server, close logs."""
        if self._closed:
            return
        self._closed = True
        if self._processes.processes:
            self._teardown("spindown")
        if self._server is not None:
            self._server.stop()
        self._processes.close_logs()
        if self._own_log_dir and self._log_dir is not None:
            shutil.rmtree(self._log_dir, ignore_errors=True)

    def __enter__(self) -> LocalLambda:
        try:
            self.start()
        except BaseException:
            # __exit__ is not called when __enter__ raises: stop what start() left running.
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
