"""A stdlib-only client of the Lambda Extensions API: register, event/next, init/exit error."""

from __future__ import annotations

import http.client
import json
from typing import Any, Dict, Iterable, Mapping, Optional, Tuple

EXTENSIONS_PATH = "/2020-01-01/extension"


class ExtensionsApiError(Exception):
    """The Extensions API refused a call, or could not be reached."""

    def __init__(
        self, operation: str, message: str, status: Optional[int] = None, error_type: str = ""
    ) -> None:
        super().__init__(f"Lambda Extensions API {operation} failed: {message}")
        self.operation = operation
        self.status = status
        self.error_type = error_type


class Registration:
    """What ``register`` returns: the identifier and the function described in the body.

    (A plain class, neither attrs nor a NamedTuple, which execs generated code: this module is
    imported before registering, where every millisecond counts toward the function's cold
    start.)
    """

    __slots__ = ("account_id", "function_name", "function_version", "handler", "identifier")

    def __init__(
        self,
        identifier: str,
        function_name: str,
        function_version: str,
        handler: str,
        account_id: Optional[str] = None,
    ) -> None:
        self.identifier = identifier
        self.function_name = function_name
        self.function_version = function_version
        self.handler = handler
        self.account_id = account_id

    def _fields(self) -> Tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        if type(other) is not Registration:
            return NotImplemented
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        fields = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__)
        return f"Registration({fields})"


class ExtensionsClient:
    """Talks to ``http://$AWS_LAMBDA_RUNTIME_API/2020-01-01/extension``.

    One connection per call: ``next_event`` blocks for as long as the environment stays frozen,
    and a kept-alive connection gains nothing across a freeze.
    """

    def __init__(self, runtime_api: str, identifier: Optional[str] = None) -> None:
        self.runtime_api = runtime_api
        self.identifier = identifier

    def __repr__(self) -> str:
        return f"ExtensionsClient(runtime_api={self.runtime_api!r}, identifier={self.identifier!r})"

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> ExtensionsClient:
        """Read ``AWS_LAMBDA_RUNTIME_API`` (``host:port``); a clear error when it is missing."""
        api = environ.get("AWS_LAMBDA_RUNTIME_API", "")
        if not api:
            raise ExtensionsApiError(
                "setup",
                "AWS_LAMBDA_RUNTIME_API is not set: this runs as a Lambda extension; "
                "outside Lambda use `cachelayer serve`",
            )
        return cls(api)

    def _call(
        self, operation: str, method: str, path: str, body: Optional[bytes], headers: Dict[str, str]
    ) -> Tuple[http.client.HTTPResponse, bytes]:
        host, _, port = self.runtime_api.rpartition(":")
        if not host or not port.isdigit():
            raise ExtensionsApiError(
                operation, f"AWS_LAMBDA_RUNTIME_API={self.runtime_api!r} is not host:port"
            )
        # No timeout: /event/next legitimately blocks until the next event.
        conn = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=None)
        try:
            conn.request(method, f"{EXTENSIONS_PATH}/{path}", body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
        except OSError as exc:
            raise ExtensionsApiError(operation, f"{self.runtime_api}: {exc}") from exc
        finally:
            conn.close()
        if response.status >= 300:
            error_type = ""
            message = data.decode("utf-8", "replace")
            try:
                parsed = json.loads(data)
                error_type = str(parsed.get("errorType", ""))
                message = f"{error_type}: {parsed.get('errorMessage', '')}"
            except (ValueError, AttributeError):
                pass
            raise ExtensionsApiError(
                operation, f"HTTP {response.status} {message}", response.status, error_type
            )
        return response, data

    def _identified(self) -> Dict[str, str]:
        if self.identifier is None:
            raise ExtensionsApiError("call", "not registered yet: call register() first")
        return {"Lambda-Extension-Identifier": self.identifier}

    def register(self, name: str, events: Iterable[str] = ("INVOKE", "SHUTDOWN")) -> Registration:
        """Register as ``name`` (the extension's file name) for ``events``."""
        body = json.dumps({"events": list(events)}).encode()
        response, data = self._call(
            "register",
            "POST",
            "register",
            body,
            {
                "Lambda-Extension-Name": name,
                "Lambda-Extension-Accept-Feature": "accountId",
                "Content-Type": "application/json",
            },
        )
        identifier = response.getheader("Lambda-Extension-Identifier")
        if not identifier:
            raise ExtensionsApiError("register", "no Lambda-Extension-Identifier in the response")
        self.identifier = identifier
        try:
            info: Dict[str, Any] = json.loads(data) if data else {}
        except ValueError:
            info = {}
        return Registration(
            identifier=identifier,
            function_name=str(info.get("functionName", "")),
            function_version=str(info.get("functionVersion", "")),
            handler=str(info.get("handler", "")),
            account_id=info.get("accountId"),
        )

    def next_event(self) -> Dict[str, Any]:
        """Block until the next event (INVOKE or SHUTDOWN) and return it."""
        _, data = self._call("event/next", "GET", "event/next", None, self._identified())
        try:
            event = json.loads(data)
        except ValueError as exc:
            raise ExtensionsApiError("event/next", f"the event is not JSON: {exc}") from exc
        if not isinstance(event, dict) or "eventType" not in event:
            raise ExtensionsApiError("event/next", "the event has no eventType")
        return event

    def _report(self, operation: str, error_type: str, message: str) -> None:
        headers = dict(self._identified())
        headers["Lambda-Extension-Function-Error-Type"] = error_type
        headers["Content-Type"] = "application/json"
        body = json.dumps({"errorMessage": message, "errorType": error_type}).encode()
        self._call(operation, "POST", operation, body, headers)

    def init_error(self, error_type: str, message: str) -> None:
        """Report a failed init (``Extension.<Reason>``); the extension should then exit."""
        self._report("init/error", error_type, message)

    def exit_error(self, error_type: str, message: str) -> None:
        """Report an error before exiting (``Extension.<Reason>``)."""
        self._report("exit/error", error_type, message)
