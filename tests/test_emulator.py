"""The local Lambda emulator: its APIs, init order, freeze, shutdown, crashes."""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple

import pytest

from cachelayer.local import HIDDEN_FROM_EXTENSIONS, ApiServer, LocalLambda, Sandbox
from cachelayer.local.api import FunctionIdentity, Invocation
from cachelayer.local.cli import register as register_cli
from lambda_fixtures import HANDLERS_DIR, write_test_extension

EXT = "/2020-01-01/extension/"
RT = "/2018-06-01/runtime/"


# -- the APIs alone, over real HTTP, without processes -------------------------------------------


@pytest.fixture()
def api() -> Iterator[ApiServer]:
    server = ApiServer(Sandbox(FunctionIdentity("fn", "$LATEST", "app.handler", "123456789012")))
    server.start()
    yield server
    server.stop()


def call(
    server: ApiServer,
    method: str,
    path: str,
    body: Optional[bytes] = None,
    headers: Optional[Dict[str, str]] = None,
) -> Tuple[int, Dict[str, str], Any]:
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=5)
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    try:
        parsed = json.loads(data)
    except ValueError:
        parsed = data
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, parsed


def register(server: ApiServer, name: str = "ext", events: Any = ("INVOKE", "SHUTDOWN")) -> str:
    status, headers, _ = call(
        server,
        "POST",
        EXT + "register",
        json.dumps({"events": list(events)}).encode(),
        {"Lambda-Extension-Name": name},
    )
    assert status == 200
    return headers["lambda-extension-identifier"]


class TestRegisterApi:
    def test_register_returns_identifier_and_function(self, api: ApiServer) -> None:
        """Register answers 200 with a UUID identifier header and functionName/Version/handler."""
        status, headers, body = call(
            api,
            "POST",
            EXT + "register",
            b'{"events":["INVOKE","SHUTDOWN"]}',
            {"Lambda-Extension-Name": "ext"},
        )
        assert status == 200
        uuid.UUID(headers["lambda-extension-identifier"])
        assert body == {
            "functionName": "fn",
            "functionVersion": "$LATEST",
            "handler": "app.handler",
        }

    def test_account_id_only_when_asked(self, api: ApiServer) -> None:
        """The accountId feature adds accountId to the register body."""
        _, _, body = call(
            api,
            "POST",
            EXT + "register",
            b'{"events":[]}',
            {"Lambda-Extension-Name": "ext", "Lambda-Extension-Accept-Feature": "accountId"},
        )
        assert body["accountId"] == "123456789012"

    @pytest.mark.parametrize(
        ("headers", "body", "error_type"),
        [
            ({}, b'{"events":["INVOKE"]}', "Extension.InvalidExtensionName"),
            ({"Lambda-Extension-Name": "e"}, b"", "InvalidRequestFormat"),
            ({"Lambda-Extension-Name": "e"}, b"{not json", "InvalidRequestFormat"),
            ({"Lambda-Extension-Name": "e"}, b'{"events":"INVOKE"}', "InvalidRequestFormat"),
            (
                {"Lambda-Extension-Name": "e"},
                b'{"events":["INVOKE","LOGS"]}',
                "Extension.InvalidEventType",
            ),
        ],
    )
    def test_bad_register_is_refused(
        self, api: ApiServer, headers: Dict[str, str], body: bytes, error_type: str
    ) -> None:
        """A register with no name, a bad body or an unknown event is a 403 with its errorType."""
        status, _, reply = call(api, "POST", EXT + "register", body, headers)
        assert status == 403
        assert reply["errorType"] == error_type
        assert reply["errorMessage"]

    def test_empty_object_registers_for_no_events(self, api: ApiServer) -> None:
        """``{}`` is a valid register body (no events)."""
        register(api, "quiet", events=())
        assert api.sandbox.by_name("quiet").events == frozenset()

    def test_duplicate_register_is_refused(self, api: ApiServer) -> None:
        """Registering the same name twice is Extension.InvalidExtensionState."""
        register(api, "ext")
        status, _, reply = call(
            api, "POST", EXT + "register", b"{}", {"Lambda-Extension-Name": "ext"}
        )
        assert (status, reply["errorType"]) == (403, "Extension.InvalidExtensionState")

    def test_eleventh_extension_is_refused(self, api: ApiServer) -> None:
        """At most 10 extensions register; the 11th gets Extension.TooManyExtensions."""
        for i in range(10):
            register(api, f"ext{i}")
        status, _, reply = call(
            api, "POST", EXT + "register", b"{}", {"Lambda-Extension-Name": "ext10"}
        )
        assert (status, reply["errorType"]) == (403, "Extension.TooManyExtensions")

    def test_register_after_init_is_refused(self, api: ApiServer) -> None:
        """Once init is over, register is Extension.InvalidExtensionState."""
        api.sandbox.phase = "ready"
        status, _, reply = call(
            api, "POST", EXT + "register", b"{}", {"Lambda-Extension-Name": "late"}
        )
        assert (status, reply["errorType"]) == (403, "Extension.InvalidExtensionState")


class TestIdentifiedCalls:
    @pytest.mark.parametrize("path", ["event/next", "init/error", "exit/error"])
    @pytest.mark.parametrize(
        ("identifier", "error_type"),
        [
            (None, "Extension.MissingExtensionIdentifier"),
            ("not-a-uuid", "Extension.InvalidExtensionIdentifier"),
            (str(uuid.uuid4()), "Extension.UnknownExtensionIdentifier"),
        ],
    )
    def test_bad_identifier_is_refused(
        self, api: ApiServer, path: str, identifier: Optional[str], error_type: str
    ) -> None:
        """A missing, malformed or unknown identifier is a 403 naming the problem."""
        headers = {"Lambda-Extension-Function-Error-Type": "Extension.X"}
        if identifier is not None:
            headers["Lambda-Extension-Identifier"] = identifier
        method = "GET" if path == "event/next" else "POST"
        status, _, reply = call(api, method, EXT + path, b"{}", headers)
        assert (status, reply["errorType"]) == (403, error_type)

    @pytest.mark.parametrize("path", ["init/error", "exit/error"])
    def test_error_without_type_header_is_refused(self, api: ApiServer, path: str) -> None:
        """init/error and exit/error need Lambda-Extension-Function-Error-Type."""
        ident = register(api)
        status, _, reply = call(
            api, "POST", EXT + path, b"{}", {"Lambda-Extension-Identifier": ident}
        )
        assert (status, reply["errorType"]) == (403, "Extension.MissingHeader")

    @pytest.mark.parametrize("path", ["init/error", "exit/error"])
    def test_error_is_accepted(self, api: ApiServer, path: str) -> None:
        """A well-formed init/error or exit/error is 202 {"status":"OK"} and recorded."""
        ident = register(api)
        status, _, reply = call(
            api,
            "POST",
            EXT + path,
            b'{"errorMessage":"boom","errorType":"Extension.ConfigError"}',
            {
                "Lambda-Extension-Identifier": ident,
                "Lambda-Extension-Function-Error-Type": "Extension.ConfigError",
            },
        )
        assert (status, reply) == (202, {"status": "OK"})
        ext = api.sandbox.extensions[ident]
        recorded = ext.init_error if path == "init/error" else ext.exit_error
        assert (recorded.error_type, recorded.message) == ("Extension.ConfigError", "boom")

    def test_next_returns_queued_event(self, api: ApiServer) -> None:
        """event/next answers the queued event as JSON."""
        ident = register(api)
        with api.sandbox.cond:
            api.sandbox.deliver_to_extensions(
                {"eventType": "SHUTDOWN", "deadlineMs": 1, "shutdownReason": "spindown"}
            )
        status, headers, event = call(
            api, "GET", EXT + "event/next", headers={"Lambda-Extension-Identifier": ident}
        )
        assert status == 200
        assert headers["content-type"] == "application/json"
        assert event["eventType"] == "SHUTDOWN"


class TestRuntimeApi:
    def test_next_carries_lambda_headers(self, api: ApiServer) -> None:
        """invocation/next answers the event with Content-Type and every Lambda-Runtime-* header."""
        with api.sandbox.cond:
            api.sandbox.deliver_to_runtime(
                Invocation("req-1", b'{"a":1}', 123, "arn:aws:lambda:x", "Root=1")
            )
        status, headers, body = call(api, "GET", RT + "invocation/next")
        assert status == 200
        assert body == {"a": 1}
        assert headers["content-type"] == "application/json"
        assert headers["lambda-runtime-aws-request-id"] == "req-1"
        assert headers["lambda-runtime-deadline-ms"] == "123"
        assert headers["lambda-runtime-invoked-function-arn"] == "arn:aws:lambda:x"
        assert headers["lambda-runtime-trace-id"] == "Root=1"

    def test_response_for_unknown_request_is_refused(self, api: ApiServer) -> None:
        """A response for a request id that was never handed out is a 400."""
        status, _, reply = call(api, "POST", RT + "invocation/nope/response", b"{}")
        assert (status, reply["errorType"]) == (400, "InvalidRequestID")

    def test_second_response_is_refused(self, api: ApiServer) -> None:
        """An invocation is answered once."""
        with api.sandbox.cond:
            api.sandbox.deliver_to_runtime(Invocation("req-1", b"{}", 1, "arn", "Root=1"))
        assert call(api, "POST", RT + "invocation/req-1/response", b"1")[0] == 202
        assert call(api, "POST", RT + "invocation/req-1/error", b"{}")[0] == 403

    def test_unknown_path_is_404(self, api: ApiServer) -> None:
        """A path outside the Lambda APIs is a 404 with an error body."""
        status, _, reply = call(api, "GET", "/2018-06-01/runtime/nothing")
        assert status == 404
        assert reply["errorType"]


# -- processes under the emulator -----------------------------------------------------------------


def lambda_fn(tmp_path: Path, **kw: Any) -> LocalLambda:
    kw.setdefault("handler", "app.handler")
    kw.setdefault("handler_dir", HANDLERS_DIR)
    kw.setdefault("extensions_dir", tmp_path / "extensions")
    kw.setdefault("log_dir", tmp_path / "logs")
    (tmp_path / "extensions").mkdir(exist_ok=True)
    return LocalLambda(**kw)


def events_of(fn: LocalLambda, name: str) -> list:
    return [
        json.loads(line.split(" ", 2)[2])
        for line in fn.log(name).splitlines()
        if line.startswith(f"{name} event ")
    ]


def process_state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


class TestNoIoBeforeOpen:
    def test_construction_makes_no_directory_and_binds_no_socket(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Constructing LocalLambda makes no log directory (given or temporary) and binds no
        socket; open() makes the directory and serves the APIs on one bound port, and close()
        removes the temporary directory."""
        temp_root = tmp_path / "tmp"
        temp_root.mkdir()
        monkeypatch.setattr(tempfile, "tempdir", str(temp_root))
        binds: list = []
        real_bind = socket.socket.bind

        def recording_bind(sock: socket.socket, address: Any) -> None:
            if threading.get_ident() == threading.main_thread().ident:
                binds.append(address)
            real_bind(sock, address)

        monkeypatch.setattr(socket.socket, "bind", recording_bind)
        given = LocalLambda(
            extensions_dir=tmp_path / "extensions",
            handler="app.handler",
            handler_dir=HANDLERS_DIR,
            log_dir=tmp_path / "logs",
        )
        own = LocalLambda(extensions_dir=None, handler="app.handler", handler_dir=HANDLERS_DIR)
        assert binds == []
        assert not (tmp_path / "logs").exists()
        assert list(temp_root.iterdir()) == []
        with pytest.raises(RuntimeError, match=r"before open\(\)"):
            own.runtime_api  # noqa: B018 - the property's error is what is tested
        try:
            given.open()
            own.open()
            assert len(binds) == 2
            assert (tmp_path / "logs").is_dir()
            (own_dir,) = temp_root.iterdir()
            assert own.log_dir == own_dir
            host, port = own.runtime_api.split(":")
            conn = http.client.HTTPConnection(host, int(port), timeout=5)
            conn.request("GET", RT + "nothing")
            assert conn.getresponse().status == 404
            conn.close()
        finally:
            given.close()
            own.close()
        assert list(temp_root.iterdir()) == []


@pytest.mark.slow
class TestInitOrdering:
    def test_runtime_starts_only_after_every_extension_registered(self, tmp_path: Path) -> None:
        """The runtime is started after the slowest extension registered."""
        write_test_extension(tmp_path / "extensions", "fast")
        write_test_extension(tmp_path / "extensions", "slow", register_delay=0.4)
        with lambda_fn(tmp_path) as fn:
            steps = [(kind, who) for _, kind, who in fn.sandbox.timeline]
            assert fn.init_reports[-1].ok
        start = steps.index(("runtime_start", "runtime"))
        assert ("register", "slow") in steps[:start]
        assert ("register", "fast") in steps[:start]

    def test_first_invoke_waits_for_every_next(self, tmp_path: Path) -> None:
        """Init ends, and INVOKE comes, only after the runtime and every extension called next."""
        write_test_extension(tmp_path / "extensions", "lazy", init_delay=0.4)
        with lambda_fn(tmp_path) as fn:
            assert fn.init_reports[-1].duration_ms >= 400
            result = fn.invoke({"op": "echo"})
            steps = [(kind, who) for _, kind, who in fn.sandbox.timeline]
        invoke = next(i for i, (kind, _) in enumerate(steps) if kind == "invoke")
        assert ("next", "lazy") in steps[:invoke]
        assert ("next", "runtime") in steps[:invoke]
        assert result.ok
        assert result.init_duration_ms == pytest.approx(fn.init_reports[0].duration_ms)

    def test_extension_environment_is_lambdas(self, tmp_path: Path) -> None:
        """Extensions get the function's variables minus those Lambda withholds."""
        env_file = tmp_path / "env.json"
        write_test_extension(tmp_path / "extensions", "ext", env_file=str(env_file))
        with lambda_fn(
            tmp_path, env={"CUSTOMER_VAR": "x", "AWS_REGION": "eu-west-1"}, memory_size_mb=256
        ) as fn:
            runtime_env = fn.invoke({"op": "env"}).response
        ext_env = json.loads(env_file.read_text())
        assert not HIDDEN_FROM_EXTENSIONS & set(ext_env)
        assert set(runtime_env) >= HIDDEN_FROM_EXTENSIONS
        for key in (
            "AWS_LAMBDA_FUNCTION_NAME",
            "AWS_LAMBDA_FUNCTION_VERSION",
            "AWS_LAMBDA_RUNTIME_API",
            "TZ",
        ):
            assert ext_env[key] == runtime_env[key]
        assert ext_env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"
        assert ext_env["AWS_REGION"] == ext_env["AWS_DEFAULT_REGION"] == "eu-west-1"
        assert ext_env["CUSTOMER_VAR"] == "x"
        assert runtime_env["_HANDLER"] == "app.handler"
        assert runtime_env["LAMBDA_TASK_ROOT"] == str(HANDLERS_DIR.resolve())

    def test_start_twice_is_one_init(self, tmp_path: Path) -> None:
        """start() inside ``with`` returns the init already done instead of starting again."""
        write_test_extension(tmp_path / "extensions", "ext")
        with lambda_fn(tmp_path) as fn:
            assert fn.start() is fn.init_reports[0]
            assert fn.invoke({"op": "echo"}).ok
        assert len(fn.init_reports) == 1

    def test_register_body_reaches_extension(self, tmp_path: Path) -> None:
        """The extension's register call gets 200 with the function's name, version and handler."""
        write_test_extension(tmp_path / "extensions", "ext")
        with lambda_fn(tmp_path, function_name="my-fn") as fn:
            line = fn.log("ext").splitlines()[0]
        assert line.startswith("ext registered 200 ")
        assert json.loads(line.split(" ", 3)[3]) == {
            "functionName": "my-fn",
            "functionVersion": "$LATEST",
            "handler": "app.handler",
        }


@pytest.mark.slow
class TestInitFailures:
    def test_non_executable_extension_is_a_launch_error(self, tmp_path: Path) -> None:
        """A non-executable file fails init and the invoke with Extension.LaunchError."""
        (tmp_path / "extensions").mkdir()
        (tmp_path / "extensions" / "notes.txt").write_text("hello")
        with lambda_fn(tmp_path) as fn:
            assert fn.init_reports[0].error_type == "Extension.LaunchError"
            result = fn.invoke({})
        assert result.error["errorType"] == "Extension.LaunchError"
        assert "chmod +x" in result.error["errorMessage"]

    def test_extension_init_error_fails_the_invocation(self, tmp_path: Path) -> None:
        """An extension's init/error fails init and the invocation with the type it posted."""
        write_test_extension(tmp_path / "extensions", "ext", init_error="Extension.ConfigError")
        with lambda_fn(tmp_path) as fn:
            assert fn.init_reports[0].error_type == "Extension.ConfigError"
            result = fn.invoke({"op": "echo"})
            assert fn.shutdown_reports[0].exit_codes["ext"] == 1
        assert not result.ok
        assert result.error["errorType"] == "Extension.ConfigError"
        assert "Status: error" in result.report_line()
        line = "EXTENSION\tName: ext\tState: InitError\tEvents: [INVOKE, SHUTDOWN]"
        assert line in fn.platform_log
        # Lambda retries init on the invoke: the extension ran twice.
        assert len(fn.init_reports) == 2

    def test_extension_exiting_before_register_is_a_crash(self, tmp_path: Path) -> None:
        """An extension that exits during init (even with 0) fails init with Extension.Crash."""
        write_test_extension(tmp_path / "extensions", "ext", exit_before_register=0)
        with lambda_fn(tmp_path) as fn:
            assert fn.init_reports[0].error_type == "Extension.Crash"

    def test_broken_handler_is_an_import_error(self, tmp_path: Path) -> None:
        """An unimportable handler fails init with the runtime's Runtime.ImportModuleError."""
        with lambda_fn(tmp_path, handler="broken.handler") as fn:
            assert fn.init_reports[0].error_type == "Runtime.ImportModuleError"

    def test_extension_that_never_registers_times_out(self, tmp_path: Path) -> None:
        """Init is capped: an extension that does not register in time fails it, named."""
        write_test_extension(tmp_path / "extensions", "sleepy", register_delay=5)
        with lambda_fn(tmp_path, init_timeout_s=0.5) as fn:
            report = fn.init_reports[0]
        assert report.error_type == "Sandbox.Timedout"
        assert "sleepy" in (report.error_message or "")


@pytest.mark.slow
class TestInvoke:
    def test_response_and_report(self, tmp_path: Path) -> None:
        """An invocation returns the response and REPORT figures; init duration only first."""
        write_test_extension(tmp_path / "extensions", "ext")
        with lambda_fn(tmp_path) as fn:
            first = fn.invoke({"op": "echo", "n": 1})
            second = fn.invoke({"op": "echo", "n": 2})
            events = events_of(fn, "ext")
        assert first.response == {"event": {"op": "echo", "n": 1}, "request_id": first.request_id}
        assert first.init_duration_ms is not None and second.init_duration_ms is None
        assert second.billed_duration_ms >= second.duration_ms
        line = first.report_line()
        assert line.startswith(f"REPORT RequestId: {first.request_id}\tDuration: ")
        assert "Init Duration: " in line and "Billed Duration: " in line
        invoke = events[0]
        assert set(invoke) == {
            "eventType",
            "deadlineMs",
            "requestId",
            "invokedFunctionArn",
            "tracing",
        }
        assert invoke["requestId"] == first.request_id
        assert invoke["invokedFunctionArn"].startswith("arn:aws:lambda:")
        assert invoke["deadlineMs"] > time.time() * 1000

    def test_duration_includes_extension_post_invoke_time(self, tmp_path: Path) -> None:
        """The invocation lasts until every extension called next again, after the response."""
        write_test_extension(tmp_path / "extensions", "ext", post_invoke_sleep=0.3)
        with lambda_fn(tmp_path) as fn:
            result = fn.invoke({"op": "echo"})
        assert result.duration_ms >= 300
        assert result.response_ms is not None and result.response_ms < result.duration_ms - 200

    def test_handler_error_is_reported_and_environment_survives(self, tmp_path: Path) -> None:
        """A handler exception is an Unhandled function error; the next invocation works."""
        with lambda_fn(tmp_path) as fn:
            failed = fn.invoke({"op": "fail"})
            ok = fn.invoke({"op": "echo"})
        assert failed.function_error == "Unhandled"
        assert failed.error["errorType"] == "ValueError"
        assert ok.ok and ok.init_duration_ms is None

    def test_environment_is_frozen_between_invocations(self, tmp_path: Path) -> None:
        """Between invocations every process is stopped (SIGSTOP); during one they run."""
        write_test_extension(tmp_path / "extensions", "ext")
        with lambda_fn(tmp_path) as fn:
            fn.invoke({"op": "echo"})
            pids = [p.popen.pid for p in fn.processes]
            assert [process_state(pid) for pid in pids] == ["T"] * len(pids)
            assert fn.invoke({"op": "echo"}, freeze_between=0.2).ok
            with fn.thawed():
                # SIGCONT is delivered asynchronously: give it a moment.
                deadline = time.monotonic() + 2
                while "T" in [process_state(pid) for pid in pids] and time.monotonic() < deadline:
                    time.sleep(0.005)
                assert "T" not in [process_state(pid) for pid in pids]
            assert [process_state(pid) for pid in pids] == ["T"] * len(pids)

    def test_timeout_fails_and_resets(self, tmp_path: Path) -> None:
        """A handler past its timeout gets Sandbox.Timedout; the next invoke re-inits."""
        write_test_extension(tmp_path / "extensions", "ext")
        with lambda_fn(tmp_path, timeout_s=0.5) as fn:
            result = fn.invoke({"op": "sleep", "seconds": 3})
            after = fn.invoke({"op": "echo"})
            shutdown_events = [e for e in events_of(fn, "ext") if e["eventType"] == "SHUTDOWN"]
        assert result.error["errorType"] == "Sandbox.Timedout"
        assert "timed out after 0.50 seconds" in result.error["errorMessage"]
        assert shutdown_events[0]["shutdownReason"] == "timeout"
        assert after.ok and after.init_duration_ms is not None


@pytest.mark.slow
class TestShutdown:
    def test_shutdown_event_and_clean_exit(self, tmp_path: Path) -> None:
        """SHUTDOWN comes with a 2 s deadline; extensions exit 0; the runtime gets SIGTERM."""
        write_test_extension(tmp_path / "extensions", "ext")
        with lambda_fn(tmp_path) as fn:
            fn.invoke({"op": "echo"})
            before = time.time() * 1000
            report = fn.shutdown()
            event = events_of(fn, "ext")[-1]
        assert event["eventType"] == "SHUTDOWN" and event["shutdownReason"] == "spindown"
        assert 1800 <= event["deadlineMs"] - before <= 2200
        assert report.exit_codes == {"ext": 0, "runtime": -signal.SIGTERM}
        assert report.killed == ()
        assert report.duration_ms < 1000

    def test_extension_ignoring_shutdown_is_killed_at_deadline(self, tmp_path: Path) -> None:
        """An extension still running at the deadline is SIGKILLed and reported."""
        write_test_extension(tmp_path / "extensions", "stubborn", ignore_shutdown=True)
        with lambda_fn(tmp_path) as fn:
            report = fn.shutdown()
        assert report.killed == ("stubborn",)
        assert report.exit_codes["stubborn"] == -signal.SIGKILL
        assert 1900 <= report.duration_ms <= 3000


@pytest.mark.slow
class TestCrash:
    def test_crash_during_invoke_fails_it_and_resets(self, tmp_path: Path) -> None:
        """An extension exiting (even with 0) mid-invoke is Extension.Crash; the next re-inits."""
        write_test_extension(
            tmp_path / "extensions", "ext", crash_after=1, crash_marker=str(tmp_path / "crashed")
        )
        write_test_extension(tmp_path / "extensions", "other")
        with lambda_fn(tmp_path) as fn:
            failed = fn.invoke({"op": "echo"})
            after = fn.invoke({"op": "echo"})
            other_events = events_of(fn, "other")
        assert failed.error["errorType"] == "Extension.Crash"
        assert "ext exited with code 0" in failed.error["errorMessage"]
        assert [c.name for c in fn.crashes] == ["ext"]
        assert {"eventType": "SHUTDOWN", "shutdownReason": "failure"}.items() <= other_events[
            1
        ].items()
        assert after.ok and after.init_duration_ms is not None

    def test_crash_while_idle_resets_before_next_invoke(self, tmp_path: Path) -> None:
        """An extension killed between invocations is reported; the next invoke re-inits."""
        write_test_extension(tmp_path / "extensions", "ext")
        with lambda_fn(tmp_path) as fn:
            fn.invoke({"op": "echo"})
            pid = next(p.popen.pid for p in fn.processes if p.name == "ext")
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while not fn.crashes and time.monotonic() < deadline:
                time.sleep(0.02)
            result = fn.invoke({"op": "echo"})
        assert fn.crashes[0].name == "ext" and fn.crashes[0].exit_code == -signal.SIGKILL
        assert result.ok, (result.error, fn.platform_log, fn.log("ext"))
        assert result.init_duration_ms is not None
        assert len(fn.init_reports) == 2


@pytest.mark.slow
class TestCli:
    def test_local_invoke_prints_responses_and_reports(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`cachelayer local invoke` prints each response and REPORT line."""
        write_test_extension(tmp_path / "extensions", "ext")
        parser = argparse.ArgumentParser(prog="cachelayer")
        register_cli(parser.add_subparsers(dest="command"))
        args = parser.parse_args(
            [
                "local",
                "invoke",
                "--extensions",
                str(tmp_path / "extensions"),
                "--handler",
                "app.handler",
                "--handler-dir",
                str(HANDLERS_DIR),
                "--event",
                '{"op": "echo"}',
                "--times",
                "2",
                "--env",
                "A=B",
            ]
        )
        assert args.func(args) == 0
        out = capsys.readouterr().out.splitlines()
        reports = [line for line in out if line.startswith("REPORT RequestId: ")]
        assert len(reports) == 2
        assert "Init Duration" in reports[0] and "Init Duration" not in reports[1]
        assert json.loads(out[0])["event"] == {"op": "echo"}

    def test_bad_env_pair_is_a_clear_error(self, tmp_path: Path) -> None:
        """--env without '=' stops with a message naming the flag."""
        parser = argparse.ArgumentParser(prog="cachelayer")
        register_cli(parser.add_subparsers(dest="command"))
        args = parser.parse_args(
            [
                "local",
                "invoke",
                "--extensions",
                str(tmp_path),
                "--handler",
                "app.handler",
                "--env",
                "NOEQUALS",
            ]
        )
        with pytest.raises(SystemExit, match="--env 'NOEQUALS'"):
            args.func(args)
