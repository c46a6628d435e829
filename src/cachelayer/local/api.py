"""The Lambda Extensions and Runtime APIs: the sandbox state behind them and their routes."""

from __future__ import annotations

import functools
import json
import threading
import time
import uuid
from collections import deque
from typing import Any, Callable, Deque, Dict, FrozenSet, List, Mapping, Optional, Tuple

import attrs

EXTENSION_PREFIX = "/2020-01-01/extension/"
RUNTIME_PREFIX = "/2018-06-01/runtime/"
EVENT_TYPES: FrozenSet[str] = frozenset({"INVOKE", "SHUTDOWN"})
MAX_EXTENSIONS = 10
# Lambda's synchronous response payload limit.
MAX_RESPONSE_BYTES = 6 * 1024 * 1024

Headers = List[Tuple[str, str]]


class ApiError(Exception):
    """A request the Lambda API refuses; rendered as ``{"errorMessage", "errorType"}``."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message

    def body(self) -> bytes:
        return json.dumps({"errorMessage": self.message, "errorType": self.error_type}).encode()


@attrs.frozen
class ReportedError:
    """An error an extension or the runtime posted (init/error, exit/error, invocation error)."""

    error_type: str
    body: bytes

    @property
    def message(self) -> str:
        """The ``errorMessage`` of a JSON body, else the body as text."""
        try:
            parsed = json.loads(self.body)
        except ValueError:
            return self.body.decode("utf-8", "replace")
        if isinstance(parsed, dict) and "errorMessage" in parsed:
            return str(parsed["errorMessage"])
        return self.body.decode("utf-8", "replace")


@attrs.define
class RegisteredExtension:
    """One extension that registered: its events, its event queue, and where it stands."""

    identifier: str
    name: str
    events: FrozenSet[str]
    queue: Deque[bytes] = attrs.Factory(deque)
    # True while it is blocked in /event/next.
    waiting: bool = False
    init_error: Optional[ReportedError] = None
    exit_error: Optional[ReportedError] = None

    @property
    def idle(self) -> bool:
        """Blocked in /event/next with nothing left to hand it."""
        return self.waiting and not self.queue


@attrs.define
class Invocation:
    """One INVOKE as the runtime sees it, and what the runtime answered."""

    request_id: str
    payload: bytes
    deadline_ms: int
    function_arn: str
    trace_id: str
    response: Optional[bytes] = None
    error: Optional[ReportedError] = None
    answered_at: Optional[float] = None

    @property
    def answered(self) -> bool:
        return self.answered_at is not None


@attrs.frozen
class FunctionIdentity:
    """What the register response tells an extension about the function."""

    function_name: str
    function_version: str
    handler: str
    account_id: str


class Sandbox:
    """The shared state of one execution environment. Every access holds ``cond``."""

    def __init__(
        self, identity: FunctionIdentity, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.identity = identity
        self.clock = clock
        self.cond = threading.Condition()
        self.closed = False
        self.timeline: List[Tuple[float, str, str]] = []
        self.generation = 0
        self.reset()

    def reset(self) -> None:
        """Forget every extension and invocation: a fresh environment, back in the init phase."""
        with self.cond:
            # Requests still blocked from before the reset (killed processes) see the change
            # and give up, instead of taking an event meant for the new processes.
            self.generation += 1
            self.phase = "init"
            self.extensions: Dict[str, RegisteredExtension] = {}
            self.runtime_waiting = False
            self.runtime_queue: Deque[Invocation] = deque()
            self.runtime_init_error: Optional[ReportedError] = None
            self.invocations: Dict[str, Invocation] = {}
            self.cond.notify_all()

    def close(self) -> None:
        """Release every request blocked in a /next call."""
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def note(self, kind: str, who: str) -> None:
        """Record a lifecycle step (caller holds ``cond``), so tests can check the ordering."""
        self.timeline.append((self.clock(), kind, who))

    # -- queries the emulator makes (caller holds cond) --------------------------------------

    def extensions_idle(self) -> bool:
        return all(ext.idle for ext in self.extensions.values())

    def runtime_idle(self) -> bool:
        return self.runtime_waiting and not self.runtime_queue

    def by_name(self, name: str) -> Optional[RegisteredExtension]:
        for ext in self.extensions.values():
            if ext.name == name:
                return ext
        return None

    # -- Extensions API ----------------------------------------------------------------------

    def register(self, headers: Mapping[str, str], body: bytes) -> Tuple[Headers, bytes]:
        name = headers.get("lambda-extension-name", "")
        if not name:
            raise ApiError(403, "Extension.InvalidExtensionName", "Empty extension name")
        try:
            parsed = json.loads(body)
        except ValueError as exc:
            raise ApiError(403, "InvalidRequestFormat", f"Invalid register body: {exc}") from None
        if not isinstance(parsed, dict):
            raise ApiError(403, "InvalidRequestFormat", "Register body must be a JSON object")
        events = parsed.get("events", [])
        if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
            raise ApiError(403, "InvalidRequestFormat", '"events" must be a list of strings')
        for event in events:
            if event not in EVENT_TYPES:
                raise ApiError(
                    403,
                    "Extension.InvalidEventType",
                    f"Invalid event type {event!r} (INVOKE, SHUTDOWN)",
                )
        with self.cond:
            if self.phase != "init":
                raise ApiError(
                    403,
                    "Extension.InvalidExtensionState",
                    "Extensions can register only during init",
                )
            if self.by_name(name) is not None:
                raise ApiError(
                    403,
                    "Extension.InvalidExtensionState",
                    f"Extension {name} is already registered",
                )
            if len(self.extensions) >= MAX_EXTENSIONS:
                raise ApiError(
                    403,
                    "Extension.TooManyExtensions",
                    f"Too many extensions: at most {MAX_EXTENSIONS} may register",
                )
            identifier = str(uuid.uuid4())
            self.extensions[identifier] = RegisteredExtension(identifier, name, frozenset(events))
            self.note("register", name)
            self.cond.notify_all()
        reply: Dict[str, str] = {
            "functionName": self.identity.function_name,
            "functionVersion": self.identity.function_version,
            "handler": self.identity.handler,
        }
        if "accountid" in headers.get("lambda-extension-accept-feature", "").lower():
            reply["accountId"] = self.identity.account_id
        return [("Lambda-Extension-Identifier", identifier)], json.dumps(reply).encode()

    def _extension(self, headers: Mapping[str, str]) -> RegisteredExtension:
        identifier = headers.get("lambda-extension-identifier", "")
        if not identifier:
            raise ApiError(
                403,
                "Extension.MissingExtensionIdentifier",
                "Missing Lambda-Extension-Identifier header",
            )
        try:
            uuid.UUID(identifier)
        except ValueError:
            raise ApiError(
                403,
                "Extension.InvalidExtensionIdentifier",
                f"Invalid extension identifier {identifier!r}",
            ) from None
        ext = self.extensions.get(identifier)
        if ext is None:
            raise ApiError(
                403,
                "Extension.UnknownExtensionIdentifier",
                f"Unknown extension identifier {identifier}",
            )
        return ext

    def extension_next(self, headers: Mapping[str, str]) -> Tuple[Headers, bytes]:
        with self.cond:
            ext = self._extension(headers)
            ext.waiting = True
            self.note("next", ext.name)
            self.cond.notify_all()
            while not ext.queue:
                if self.closed or self.extensions.get(ext.identifier) is not ext:
                    raise ApiError(500, "InternalServerError", "The environment is shutting down")
                self.cond.wait()
            event = ext.queue.popleft()
            ext.waiting = False
            self.cond.notify_all()
        return [
            ("Content-Type", "application/json"),
            ("Lambda-Extension-Event-Identifier", str(uuid.uuid4())),
        ], event

    def extension_error(
        self, kind: str, headers: Mapping[str, str], body: bytes
    ) -> Tuple[Headers, bytes]:
        with self.cond:
            ext = self._extension(headers)
            error_type = headers.get("lambda-extension-function-error-type", "")
            if not error_type:
                raise ApiError(
                    403,
                    "Extension.MissingHeader",
                    "Missing Lambda-Extension-Function-Error-Type header",
                )
            if kind == "init":
                ext.init_error = ReportedError(error_type, body)
            else:
                ext.exit_error = ReportedError(error_type, body)
            self.note(f"{kind}_error", ext.name)
            self.cond.notify_all()
        return [("Content-Type", "application/json")], b'{"status":"OK"}'

    # -- Runtime API -------------------------------------------------------------------------

    def runtime_next(self) -> Tuple[Headers, bytes]:
        with self.cond:
            generation = self.generation
            self.runtime_waiting = True
            self.note("next", "runtime")
            self.cond.notify_all()
            while not self.runtime_queue:
                if self.closed or self.generation != generation:
                    raise ApiError(500, "InternalServerError", "The environment is shutting down")
                self.cond.wait()
            inv = self.runtime_queue.popleft()
            self.runtime_waiting = False
            self.cond.notify_all()
        return [
            ("Content-Type", "application/json"),
            ("Lambda-Runtime-Aws-Request-Id", inv.request_id),
            ("Lambda-Runtime-Deadline-Ms", str(inv.deadline_ms)),
            ("Lambda-Runtime-Invoked-Function-Arn", inv.function_arn),
            ("Lambda-Runtime-Trace-Id", inv.trace_id),
        ], inv.payload

    def runtime_answer(
        self, request_id: str, kind: str, headers: Mapping[str, str], body: bytes
    ) -> Tuple[Headers, bytes]:
        with self.cond:
            inv = self.invocations.get(request_id)
            if inv is None:
                raise ApiError(400, "InvalidRequestID", f"Unknown request id {request_id}")
            if inv.answered:
                raise ApiError(
                    403, "InvalidStateTransition", f"Invocation {request_id} was already answered"
                )
            if kind == "response":
                if len(body) > MAX_RESPONSE_BYTES:
                    raise ApiError(
                        413,
                        "RequestEntityTooLarge",
                        f"Exceeded maximum allowed payload size ({MAX_RESPONSE_BYTES} bytes).",
                    )
                inv.response = body
            else:
                error_type = headers.get("lambda-runtime-function-error-type", "")
                if not error_type:
                    try:
                        error_type = str(json.loads(body).get("errorType", ""))
                    except (ValueError, AttributeError):
                        error_type = ""
                inv.error = ReportedError(error_type or "Runtime.Unknown", body)
            inv.answered_at = self.clock()
            self.note(kind, "runtime")
            self.cond.notify_all()
        return [("Content-Type", "application/json")], b'{"status":"OK"}'

    def runtime_init_failed(self, headers: Mapping[str, str], body: bytes) -> Tuple[Headers, bytes]:
        error_type = headers.get("lambda-runtime-function-error-type", "") or "Runtime.Unknown"
        with self.cond:
            self.runtime_init_error = ReportedError(error_type, body)
            self.note("init_error", "runtime")
            self.cond.notify_all()
        return [("Content-Type", "application/json")], b'{"status":"OK"}'

    # -- what the emulator does --------------------------------------------------------------

    def dispatch(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> Tuple[int, Headers, bytes]:
        """Route one request; return (status, headers, body). ``headers`` keys are lower case."""
        path = path.split("?", 1)[0]
        routes: Dict[Tuple[str, str], Callable[[], Tuple[Headers, bytes]]] = {
            ("POST", EXTENSION_PREFIX + "register"): lambda: self.register(headers, body),
            ("GET", EXTENSION_PREFIX + "event/next"): lambda: self.extension_next(headers),
            ("POST", EXTENSION_PREFIX + "init/error"): lambda: self.extension_error(
                "init", headers, body
            ),
            ("POST", EXTENSION_PREFIX + "exit/error"): lambda: self.extension_error(
                "exit", headers, body
            ),
            ("GET", RUNTIME_PREFIX + "invocation/next"): self.runtime_next,
            ("POST", RUNTIME_PREFIX + "init/error"): lambda: self.runtime_init_failed(
                headers, body
            ),
        }
        try:
            action = routes.get((method, path))
            if (
                action is None
                and method == "POST"
                and path.startswith(RUNTIME_PREFIX + "invocation/")
            ):
                parts = path[len(RUNTIME_PREFIX + "invocation/") :].split("/")
                if len(parts) == 2 and parts[1] in ("response", "error"):
                    request_id, kind = parts
                    action = functools.partial(self.runtime_answer, request_id, kind, headers, body)
            if action is None:
                if any(p == path for (_, p) in routes):
                    raise ApiError(405, "MethodNotAllowed", f"{method} is not allowed on {path}")
                raise ApiError(404, "NotFound", f"No such Lambda API path: {path}")
            status = 202 if method == "POST" and not path.endswith("/register") else 200
            out_headers, out_body = action()
            return status, out_headers, out_body
        except ApiError as exc:
            return exc.status, [("Content-Type", "application/json")], exc.body()

    # -- events the emulator hands out (caller holds cond) -----------------------------------

    def deliver_to_extensions(self, event: Mapping[str, Any]) -> List[str]:
        """Queue ``event`` for every extension subscribed to its type; return their names."""
        data = json.dumps(event).encode()
        names = []
        for ext in self.extensions.values():
            if event["eventType"] in ext.events:
                ext.queue.append(data)
                names.append(ext.name)
        self.cond.notify_all()
        return names

    def deliver_to_runtime(self, inv: Invocation) -> None:
        self.invocations[inv.request_id] = inv
        self.runtime_queue.append(inv)
        self.cond.notify_all()
