"""LocalLambda: one emulated execution environment driving real processes over the Lambda APIs."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import IO, Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

import attrs

from cachelayer.local.api import ApiServer, FunctionIdentity, Invocation, Sandbox

# Variables Lambda sets for the function but withholds from extensions (LAMBDA_API.md).
HIDDEN_FROM_EXTENSIONS = frozenset(
    {
        "AWS_EXECUTION_ENV",
        "AWS_LAMBDA_LOG_GROUP_NAME",
        "AWS_LAMBDA_LOG_STREAM_NAME",
        "AWS_XRAY_CONTEXT_MISSING",
        "AWS_XRAY_DAEMON_ADDRESS",
        "LAMBDA_RUNTIME_DIR",
        "LAMBDA_TASK_ROOT",
        "_AWS_XRAY_DAEMON_ADDRESS",
        "_AWS_XRAY_DAEMON_PORT",
        "_HANDLER",
    }
)
# Host variables a function sees on Lambda too; everything else of the host stays out.
PASSED_FROM_HOST = ("PATH", "LANG", "LD_LIBRARY_PATH", "TZ")
# Lambda hands the function its execution role's temporary credentials. Locally they come
# from the caller's environment when set there, else these inert test ones (moto takes any).
CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
TEST_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "ASIALOCALTESTKEY0000",
    "AWS_SECRET_ACCESS_KEY": "local-test-secret-access-key",
}
# Lambda's own search path for shared libraries; the caller's, if set, comes first.
LAMBDA_LD_LIBRARY_PATH = (
    "/var/lang/lib:/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:/var/task:/var/task/lib:/opt/lib"
)
LAMBDA_PATH = "/var/lang/bin:/usr/local/bin:/usr/bin/:/bin:/opt/bin"
SHUTDOWN_BUDGET_S = 2.0
RUNTIME_SHUTDOWN_BUDGET_S = 0.3
INIT_TIMEOUT_S = 10.0
ACCOUNT_ID = "123456789012"


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


@attrs.frozen
class Crash:
    """A process that exited while nobody asked it to."""

    name: str
    exit_code: int
    phase: str


@attrs.define
class _Process:
    name: str
    role: str  # "extension" | "runtime"
    popen: subprocess.Popen[bytes]
    exit_code: Optional[int] = None
    expected_exit: bool = False

    @property
    def alive(self) -> bool:
        return self.exit_code is None

    def signal_group(self, sig: int) -> None:
        # The group may be gone already (it exited, or was killed at shutdown).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)


class _Failure(Exception):
    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message


def _epoch_ms() -> int:
    return int(time.time() * 1000)


def _trace_id() -> str:
    return (
        f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};"
        f"Parent={uuid.uuid4().hex[:16]};Sampled=0"
    )


def _process_state(pid: int) -> str:
    """The state letter of a process in /proc (``T`` when stopped), ``?`` when unknown."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "?"


def _peak_rss_mb(pid: int) -> int:
    """VmHWM of a live process, in MB (0 when /proc is not there)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 0


class LocalLambda:
    """An execution environment: extensions from ``extensions_dir`` and ``awslambdaric`` running
    ``handler`` from ``handler_dir``, driven through the Extensions and Runtime APIs.
    ``runtime_command`` replaces ``awslambdaric`` with another runtime client's argv.

    ``with LocalLambda(...) as fn: fn.invoke(event)``. Logs of every process go to
    ``log_dir`` (a temporary directory by default); ``fn.log(name)`` reads one.
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
        self.log_dir = (
            Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="cachelayer-local-"))
        )
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._echo = echo
        # Called with (name, pid) right after each process starts (benchmarks watch it).
        self._on_spawn = on_spawn
        self._user_env = dict(env or {})
        self._credentials = self._resolve_credentials()
        # One execution environment, one log stream, as on Lambda.
        self.log_stream_name = (
            time.strftime("%Y/%m/%d", time.gmtime()) + f"/[$LATEST]{uuid.uuid4().hex}"
        )
        self.sandbox = Sandbox(FunctionIdentity(function_name, "$LATEST", handler, ACCOUNT_ID))
        self.server = ApiServer(self.sandbox)
        self._processes: List[_Process] = []
        self._log_files: Dict[str, IO[bytes]] = {}
        self._initialized = False
        self._pending_init_duration: Optional[float] = None
        self._last_init: Optional[InitReport] = None
        self.init_reports: List[InitReport] = []
        self.shutdown_reports: List[ShutdownReport] = []
        self.crashes: List[Crash] = []
        self.platform_log: List[str] = []
        self._started = False
        self._closed = False

    # -- environment -------------------------------------------------------------------------

    @property
    def runtime_api(self) -> str:
        return self.server.address

    @property
    def region(self) -> str:
        """The function's region: the caller's ``AWS_REGION`` or ``AWS_DEFAULT_REGION``."""
        return (
            self._user_env.get("AWS_REGION")
            or self._user_env.get("AWS_DEFAULT_REGION")
            or "us-east-1"
        )

    def _resolve_credentials(self) -> Dict[str, str]:
        """The caller's credentials (``env``, else this process's environment), or test ones.

        Lambda always sets a session token (execution roles give temporary credentials), and
        functions read it as the extension's auth token; long-term keys come without one, so
        a local one is made up then: it signs nothing that reaches real AWS unnoticed, since
        AWS refuses an unknown token, and moto ignores it.
        """
        for source in (self._user_env, os.environ):
            if source.get("AWS_ACCESS_KEY_ID") and source.get("AWS_SECRET_ACCESS_KEY"):
                creds = {k: source[k] for k in CREDENTIALS if source.get(k)}
                break
        else:
            creds = dict(TEST_CREDENTIALS)
        creds.setdefault("AWS_SESSION_TOKEN", f"local-session-token-{uuid.uuid4().hex}")
        return creds

    def function_environment(self) -> Dict[str, str]:
        """The variables the runtime gets (Lambda's defaults, then the caller's ``env``)."""
        region = self.region
        env = {k: os.environ[k] for k in PASSED_FROM_HOST if k in os.environ}
        env.update(self._credentials)
        env.update(
            {
                "AWS_REGION": region,
                "AWS_DEFAULT_REGION": region,
                "AWS_LAMBDA_FUNCTION_NAME": self.function_name,
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(self.memory_size_mb),
                "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
                "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
                "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{self.function_name}",
                "AWS_LAMBDA_LOG_STREAM_NAME": self.log_stream_name,
                "AWS_LAMBDA_RUNTIME_API": self.runtime_api,
                "AWS_EXECUTION_ENV": "AWS_Lambda_python{}.{}".format(*sys.version_info[:2]),
                "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
                "AWS_XRAY_DAEMON_ADDRESS": "169.254.79.129:2000",
                "_AWS_XRAY_DAEMON_ADDRESS": "169.254.79.129",
                "_AWS_XRAY_DAEMON_PORT": "2000",
                "LAMBDA_TASK_ROOT": str(self.handler_dir),
                "LAMBDA_RUNTIME_DIR": str(Path(self.runtime_python).parent),
                "_HANDLER": self.handler,
                "LANG": env.get("LANG", "en_US.UTF-8"),
                "TZ": ":UTC",
                # The host's PATH first: the runtime's interpreter and tools live there.
                "PATH": ":".join(p for p in (env.get("PATH"), LAMBDA_PATH) if p),
                "LD_LIBRARY_PATH": ":".join(
                    p for p in (env.get("LD_LIBRARY_PATH"), LAMBDA_LD_LIBRARY_PATH) if p
                ),
            }
        )
        env.update(self._user_env)
        # The emulator owns these two, whatever the caller passed.
        env["AWS_LAMBDA_RUNTIME_API"] = self.runtime_api
        env["_HANDLER"] = self.handler
        return env

    def extension_environment(self) -> Dict[str, str]:
        """The variables an extension gets: the function's minus those Lambda withholds."""
        return {
            k: v for k, v in self.function_environment().items() if k not in HIDDEN_FROM_EXTENSIONS
        }

    # -- logs --------------------------------------------------------------------------------

    def log_path(self, name: str) -> Path:
        """Where the output of process ``name`` (an extension's file name, or ``runtime``) goes."""
        return self.log_dir / f"{name}.log"

    def log(self, name: str) -> str:
        """Everything process ``name`` wrote to stdout and stderr so far."""
        path = self.log_path(name)
        return path.read_text(errors="replace") if path.exists() else ""

    def _platform(self, line: str) -> None:
        self.platform_log.append(line)
        with open(self.log_dir / "platform.log", "a") as f:
            f.write(line + "\n")
        if self._echo:
            self._echo(line)

    # -- processes ---------------------------------------------------------------------------

    def _spawn(
        self, name: str, role: str, argv: List[str], env: Mapping[str, str], cwd: Path
    ) -> _Process:
        with self.sandbox.cond:
            self.sandbox.note("spawn", name)
        log = self._log_files.get(name)
        if log is None:
            # Kept open across re-inits (one file per process name); closed by close().
            log = self._log_files[name] = open(self.log_path(name), "ab", buffering=0)  # noqa: SIM115
        popen = subprocess.Popen(
            argv,
            env=dict(env),
            cwd=str(cwd),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Its own process group, so freeze/kill reaches its children too.
            start_new_session=True,
        )
        proc = _Process(name, role, popen)
        self._processes.append(proc)
        if self._on_spawn:
            self._on_spawn(name, popen.pid)
        threading.Thread(
            target=self._watch, args=(proc,), name=f"watch-{name}", daemon=True
        ).start()
        return proc

    def _watch(self, proc: _Process) -> None:
        code = proc.popen.wait()
        with self.sandbox.cond:
            proc.exit_code = code
            self.sandbox.note("exit", proc.name)
            if not proc.expected_exit:
                self.crashes.append(Crash(proc.name, code, self.sandbox.phase))
            self.sandbox.cond.notify_all()

    def _alive(self) -> List[_Process]:
        return [p for p in self._processes if p.alive]

    def _unexpected_exit(self) -> Optional[_Process]:
        for proc in self._processes:
            if not proc.alive and not proc.expected_exit:
                return proc
        return None

    def _signal(self, sig: int, role: Optional[str] = None) -> None:
        for proc in self._alive():
            if role is None or proc.role == role:
                proc.signal_group(sig)

    def freeze(self) -> None:
        """SIGSTOP every process group: nothing in the environment runs until ``thaw``.

        Returns once the processes are seen stopped (SIGSTOP is delivered asynchronously).
        """
        self._signal(signal.SIGSTOP)
        deadline = time.monotonic() + 1.0
        pending = self._alive()
        while pending and time.monotonic() < deadline:
            pending = [
                p
                for p in pending
                if p.alive and _process_state(p.popen.pid) not in ("T", "t", "Z", "X", "?")
            ]
            if pending:
                time.sleep(0.001)

    def thaw(self) -> None:
        """SIGCONT every process group."""
        self._signal(signal.SIGCONT)

    @contextlib.contextmanager
    def thawed(self) -> Iterator[None]:
        """Let the processes run for a block, e.g. to reach the extension's port from a test
        (between invocations they are frozen, as on Lambda, and would not answer)."""
        self.thaw()
        try:
            yield
        finally:
            self.freeze()

    # -- waiting -----------------------------------------------------------------------------

    def _wait(self, check: Callable[[], bool], timeout_s: float, what: Callable[[], str]) -> None:
        """Wait (holding cond) until ``check()``; ``check`` raises _Failure to stop early."""
        deadline = time.monotonic() + timeout_s
        cond = self.sandbox.cond
        while not check():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Failure("Sandbox.Timedout", f"Timed out after {timeout_s:g} s {what()}")
            cond.wait(remaining)

    def _check_init_failures(self) -> None:
        for ext in self.sandbox.extensions.values():
            if ext.init_error is not None:
                raise _Failure(ext.init_error.error_type, ext.init_error.message)
        if self.sandbox.runtime_init_error is not None:
            err = self.sandbox.runtime_init_error
            raise _Failure(err.error_type, err.message)
        self._check_exits()

    def _check_exits(self) -> None:
        proc = self._unexpected_exit()
        if proc is None:
            return
        if proc.role == "runtime":
            raise _Failure("Runtime.ExitError", f"Runtime exited with code {proc.exit_code}")
        ext = self.sandbox.by_name(proc.name)
        detail = (
            f": {ext.exit_error.error_type}: {ext.exit_error.message}"
            if ext and ext.exit_error
            else ""
        )
        raise _Failure(
            "Extension.Crash", f"Extension {proc.name} exited with code {proc.exit_code}{detail}"
        )

    # -- init --------------------------------------------------------------------------------

    def start(self) -> InitReport:
        """Start the API server and run the init phase (extensions, then the runtime).

        Idempotent: when the environment is already initialised, return that init's report
        (``with LocalLambda(...)`` has started it already). After a failed init, try again.
        """
        if not self._started:
            self.server.start()
            self._started = True
        if self._initialized and self._last_init is not None:
            return self._last_init
        return self._init()

    def _init(self) -> InitReport:
        self.sandbox.reset()
        started = time.monotonic()
        self._processes = []
        try:
            self._launch_extensions()
            with self.sandbox.cond:
                expected = [p.name for p in self._processes]

                def all_registered() -> bool:
                    self._check_init_failures()
                    return len(self.sandbox.extensions) >= len(expected)

                self._wait(
                    all_registered,
                    self.init_timeout_s,
                    lambda: (
                        "waiting for extensions to register: "
                        + ", ".join(n for n in expected if self.sandbox.by_name(n) is None)
                    ),
                )
                self.sandbox.note("runtime_start", "runtime")
            self._spawn(
                "runtime",
                "runtime",
                self.runtime_command or [self.runtime_python, "-m", "awslambdaric", self.handler],
                self.function_environment(),
                self.handler_dir,
            )
            with self.sandbox.cond:

                def all_next() -> bool:
                    self._check_init_failures()
                    return self.sandbox.runtime_idle() and self.sandbox.extensions_idle()

                remaining = self.init_timeout_s - (time.monotonic() - started)
                self._wait(all_next, max(remaining, 0.0), self._who_is_busy)
                self.sandbox.phase = "ready"
                names = tuple(e.name for e in self.sandbox.extensions.values())
        except _Failure as failure:
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
                listed = ", ".join(sorted(events))
                self._platform(f"EXTENSION\tName: {name}\tState: {state}\tEvents: [{listed}]")
            self._platform(
                f"INIT_REPORT Init Duration: {report.duration_ms:.2f} ms\tPhase: init\t"
                f"Status: error\tError Type: {failure.error_type}"
            )
            self._record_init(report)
            self._teardown("failure")
            return report
        report = InitReport((time.monotonic() - started) * 1000, names)
        for ext in self.sandbox.extensions.values():
            self._platform(
                f"EXTENSION\tName: {ext.name}\tState: Ready\t"
                f"Events: [{', '.join(sorted(ext.events))}]"
            )
        self._record_init(report)
        self._initialized = True
        self._pending_init_duration = report.duration_ms
        self.freeze()
        return report

    def _record_init(self, report: InitReport) -> None:
        self.init_reports.append(report)
        self._last_init = report

    def _registered_names(self) -> Tuple[str, ...]:
        with self.sandbox.cond:
            return tuple(e.name for e in self.sandbox.extensions.values())

    def _who_is_busy(self) -> str:
        busy = [e.name for e in self.sandbox.extensions.values() if not e.idle]
        if not self.sandbox.runtime_idle():
            busy.append("runtime")
        return "waiting for /next from: " + (", ".join(busy) or "nobody")

    def _launch_extensions(self) -> None:
        if self.extensions_dir is None:
            return
        if not self.extensions_dir.is_dir():
            raise _Failure(
                "Extension.LaunchError",
                f"Extensions directory {self.extensions_dir} does not exist",
            )
        files = sorted(p for p in self.extensions_dir.iterdir() if p.is_file())
        for path in files:
            if not os.access(path, os.X_OK):
                raise _Failure(
                    "Extension.LaunchError",
                    f"Extension {path.name} is not executable (chmod +x {path})",
                )
        env = self.extension_environment()
        for path in files:
            try:
                self._spawn(
                    path.name, "extension", [str(path.resolve())], env, self.extensions_dir.parent
                )
            except OSError as exc:
                raise _Failure(
                    "Extension.LaunchError", f"Cannot start extension {path.name}: {exc}"
                ) from None

    # -- invoke ------------------------------------------------------------------------------

    def invoke(self, event: Any = None, *, freeze_between: float = 0.0) -> InvokeResult:
        """Invoke the function with ``event`` (JSON-serialisable, or bytes).

        ``freeze_between``: seconds to stay frozen before the event is delivered (a long idle).
        A failed init is retried here, as Lambda does; its error becomes this invocation's.
        """
        if not self._started:
            self.start()
        if freeze_between > 0:
            time.sleep(freeze_between)
        request_id = str(uuid.uuid4())
        with self.sandbox.cond:
            crashed = self._initialized and self._unexpected_exit() is not None
        if crashed:
            # An extension died while idle: Lambda resets the environment.
            self._teardown("failure")
        if not self._initialized:
            report = self._init()
            if not report.ok:
                return self._failed(
                    request_id,
                    report.error_type or "",
                    report.error_message or "",
                    0.0,
                    report.duration_ms,
                )
        init_ms, self._pending_init_duration = self._pending_init_duration, None
        payload = event if isinstance(event, bytes) else json.dumps(event).encode()
        arn = f"arn:aws:lambda:{self.region}:{ACCOUNT_ID}:function:{self.function_name}"
        started = time.monotonic()
        deadline_ms = _epoch_ms() + int(self.timeout_s * 1000)
        trace_id = _trace_id()
        inv = Invocation(request_id, payload, deadline_ms, arn, trace_id)
        self._platform(f"START RequestId: {request_id} Version: $LATEST")
        self.thaw()
        try:
            with self.sandbox.cond:
                self.sandbox.phase = "invoke"
                self.sandbox.note("invoke", request_id)
                self.sandbox.deliver_to_extensions(
                    {
                        "eventType": "INVOKE",
                        "deadlineMs": deadline_ms,
                        "requestId": request_id,
                        "invokedFunctionArn": arn,
                        "tracing": {"type": "X-Amzn-Trace-Id", "value": trace_id},
                    }
                )
                self.sandbox.deliver_to_runtime(inv)

                # The invocation ends (and its duration with it) only when the runtime and
                # every extension are back in /next: only then may the environment freeze.
                def finished() -> bool:
                    self._check_exits()
                    return (
                        inv.answered
                        and self.sandbox.runtime_idle()
                        and self.sandbox.extensions_idle()
                    )

                self._wait(finished, self.timeout_s, self._who_is_busy)
                ended = time.monotonic()
                self.sandbox.phase = "ready"
        except _Failure as failure:
            duration = (time.monotonic() - started) * 1000
            if failure.error_type == "Sandbox.Timedout":
                failure = _Failure(
                    "Sandbox.Timedout", f"Task timed out after {self.timeout_s:.2f} seconds"
                )
            result = self._failed(
                request_id, failure.error_type, failure.message, duration, init_ms
            )
            self._teardown("timeout" if failure.error_type == "Sandbox.Timedout" else "failure")
            return result
        memory = sum(_peak_rss_mb(p.popen.pid) for p in self._alive())
        self.freeze()
        duration = (ended - started) * 1000
        error = None
        function_error = None
        if inv.error is not None:
            function_error = "Unhandled"
            try:
                error = json.loads(inv.error.body)
            except ValueError:
                error = {"errorMessage": inv.error.message, "errorType": inv.error.error_type}
        result = InvokeResult(
            request_id=request_id,
            payload=inv.response,
            error=error,
            duration_ms=duration,
            billed_duration_ms=max(1, math.ceil(duration)),
            memory_size_mb=self.memory_size_mb,
            init_duration_ms=init_ms,
            max_memory_used_mb=memory or None,
            response_ms=((inv.answered_at or ended) - started) * 1000,
            function_error=function_error,
        )
        self._platform(f"END RequestId: {request_id}")
        self._platform(result.report_line())
        return result

    def _failed(
        self,
        request_id: str,
        error_type: str,
        message: str,
        duration: float,
        init_ms: Optional[float],
    ) -> InvokeResult:
        result = InvokeResult(
            request_id=request_id,
            payload=None,
            error={
                "errorMessage": f"RequestId: {request_id} Error: {message}",
                "errorType": error_type,
            },
            duration_ms=duration,
            billed_duration_ms=max(1, math.ceil(duration)),
            memory_size_mb=self.memory_size_mb,
            init_duration_ms=init_ms,
        )
        self._platform(f"END RequestId: {request_id}")
        self._platform(result.report_line())
        return result

    # -- shutdown ----------------------------------------------------------------------------

    def shutdown(self, reason: str = "spindown") -> ShutdownReport:
        """SHUTDOWN the environment: the event to subscribed extensions, SIGTERM to the runtime,
        SIGKILL to whatever still runs ``2000 ms`` later. Safe to call twice."""
        return self._teardown(reason)

    def _teardown(self, reason: str) -> ShutdownReport:
        started = time.monotonic()
        deadline = started + SHUTDOWN_BUDGET_S
        deadline_ms = _epoch_ms() + int(SHUTDOWN_BUDGET_S * 1000)
        with self.sandbox.cond:
            self.sandbox.phase = "shutdown"
            for proc in self._processes:
                proc.expected_exit = True
            self.sandbox.note("shutdown", reason)
        procs = list(self._processes)
        self._signal(signal.SIGCONT)
        self._signal(signal.SIGTERM, role="runtime")
        with self.sandbox.cond:
            self.sandbox.deliver_to_extensions(
                {"eventType": "SHUTDOWN", "deadlineMs": deadline_ms, "shutdownReason": reason}
            )
            runtime_deadline = started + RUNTIME_SHUTDOWN_BUDGET_S
            while (
                any(p.alive and p.role == "runtime" for p in procs)
                and time.monotonic() < runtime_deadline
            ):
                self.sandbox.cond.wait(runtime_deadline - time.monotonic())
        self._signal(signal.SIGKILL, role="runtime")
        with self.sandbox.cond:
            while any(p.alive for p in procs) and time.monotonic() < deadline:
                self.sandbox.cond.wait(deadline - time.monotonic())
            killed = tuple(p.name for p in procs if p.alive)
        for proc in procs:
            # Kill the whole group: a leader that exited may have left children behind.
            proc.signal_group(signal.SIGKILL)
        for proc in procs:
            proc.popen.wait()
        with self.sandbox.cond:
            # The watcher threads may lag behind wait(); their codes are the same.
            for proc in procs:
                proc.exit_code = proc.popen.returncode
        report = ShutdownReport(
            reason=reason,
            deadline_ms=deadline_ms,
            duration_ms=(time.monotonic() - started) * 1000,
            exit_codes={p.name: p.exit_code for p in procs},
            killed=killed,
        )
        if procs:
            self.shutdown_reports.append(report)
            self._platform(
                f"SHUTDOWN Reason: {reason}\tDuration: {report.duration_ms:.2f} ms"
                + (f"\tKilled: {', '.join(killed)}" if killed else "")
            )
        self._processes = []
        self._initialized = False
        self.sandbox.reset()
        return report

    def close(self) -> None:
        """Shut down (if still running), stop the API server, close logs."""
        if self._closed:
            return
        self._closed = True
        if self._processes:
            self._teardown("spindown")
        if self._started:
            self.server.stop()
        else:
            self.server.server_close()
        for log in self._log_files.values():
            log.close()
        if self._own_log_dir:
            shutil.rmtree(self.log_dir, ignore_errors=True)

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
