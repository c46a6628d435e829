"""The extension process and its Extensions API client, end to end under the local emulator."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest

from cachelayer.core.lifecycle import ExtensionsApiError, ExtensionsClient
from cachelayer.local import ApiServer, LocalLambda
from cachelayer.testing.moto import aws_environment, free_port
from cachelayer.testing.proxy import UpstreamProxy
from cachelayer.testing.sample import (
    SAMPLE_CONFIG_YAML,
    SAMPLE_PARAMETER,
    SAMPLE_PARAMETER_VALUE,
    seed_sample,
)
from extension_helpers import deliver_shutdown, make_api, start_extension, wait_until
from lambda_fixtures import HANDLERS_DIR, write_dev_launcher, write_layer

# -- the client, in process, against the emulator's API server ---------------------------------


@pytest.fixture()
def api() -> Iterator[ApiServer]:
    server = make_api()
    server.start()
    yield server
    server.stop()


class TestExtensionsClient:
    def test_register_reads_identifier_and_body(self, api: ApiServer) -> None:
        """register() returns the identifier and the function fields, accountId included."""
        client = ExtensionsClient(api.address)
        reg = client.register("cachelayer")
        assert client.identifier == reg.identifier
        assert (reg.function_name, reg.function_version, reg.handler) == (
            "fn",
            "$LATEST",
            "app.handler",
        )
        assert reg.account_id == "123456789012"
        assert api.sandbox.by_name("cachelayer").events == frozenset({"INVOKE", "SHUTDOWN"})

    def test_next_event_returns_the_event(self, api: ApiServer) -> None:
        """next_event() blocks for, then returns, the queued event."""
        client = ExtensionsClient(api.address)
        client.register("cachelayer")
        with api.sandbox.cond:
            api.sandbox.deliver_to_extensions(
                {"eventType": "SHUTDOWN", "deadlineMs": 5, "shutdownReason": "spindown"}
            )
        assert client.next_event() == {
            "eventType": "SHUTDOWN",
            "deadlineMs": 5,
            "shutdownReason": "spindown",
        }

    @pytest.mark.parametrize("kind", ["init", "exit"])
    def test_errors_carry_type_header_and_body(self, api: ApiServer, kind: str) -> None:
        """init_error/exit_error post the type header and an errorMessage/errorType body."""
        client = ExtensionsClient(api.address)
        reg = client.register("cachelayer")
        getattr(client, f"{kind}_error")("Extension.ConfigError", "config.yaml:3: bad")
        recorded = getattr(api.sandbox.extensions[reg.identifier], f"{kind}_error")
        assert recorded.error_type == "Extension.ConfigError"
        assert json.loads(recorded.body) == {
            "errorMessage": "config.yaml:3: bad",
            "errorType": "Extension.ConfigError",
        }

    def test_refusal_is_an_error_with_its_type(self, api: ApiServer) -> None:
        """A refused call raises ExtensionsApiError with the API's status and errorType."""
        ExtensionsClient(api.address).register("cachelayer")
        with pytest.raises(ExtensionsApiError) as caught:
            ExtensionsClient(api.address).register("cachelayer")
        assert (caught.value.status, caught.value.error_type) == (
            403,
            "Extension.InvalidExtensionState",
        )

    def test_missing_runtime_api_is_explained(self) -> None:
        """Without AWS_LAMBDA_RUNTIME_API the error says what it is and what to run instead."""
        with pytest.raises(
            ExtensionsApiError, match=r"AWS_LAMBDA_RUNTIME_API is not set.*cachelayer serve"
        ):
            ExtensionsClient.from_environment({})

    def test_unreachable_api_is_an_error(self) -> None:
        """A connection failure is an ExtensionsApiError naming the address."""
        address = f"127.0.0.1:{free_port()}"
        with pytest.raises(ExtensionsApiError, match=address):
            ExtensionsClient(address).register("cachelayer")

    def test_next_before_register_is_refused_locally(self, api: ApiServer) -> None:
        """next_event() before register() is a clear error, not a request without identifier."""
        with pytest.raises(ExtensionsApiError, match="register"):
            ExtensionsClient(api.address).next_event()


# -- the extension process under the emulator ----------------------------------------------------

_RECORDING_LAUNCHER = """#!/bin/sh
exec "{python}" -c '
import json, sys
import cachelayer.core.lifecycle as lifecycle
original = lifecycle.ExtensionsClient.register
def register(self, *args, **kwargs):
    heavy = sorted(
        m for m in sys.modules if m.split(".")[0] in ("boto3", "botocore", "s3transfer", "yaml"))
    with open("{out}", "w") as f:
        json.dump(heavy, f)
    return original(self, *args, **kwargs)
lifecycle.ExtensionsClient.register = register
from cachelayer.extension import main
sys.exit(main(sys.argv[1:]))
' --name "$(basename "$0")"
"""


@pytest.fixture()
def function_env(aws: str, tmp_path: Path) -> Dict[str, str]:
    """The function's environment: moto credentials, the sample config, a free cache port."""
    seed_sample(aws)
    config = tmp_path / "config.yaml"
    config.write_text(SAMPLE_CONFIG_YAML)
    env = aws_environment(aws)
    env["CACHE_EXTENSION_CONFIG"] = str(config)
    env["CACHE_EXTENSION_PORT"] = str(free_port())
    return env


def local(tmp_path: Path, extensions: Path, env: Dict[str, str], **kw: Any) -> LocalLambda:
    return LocalLambda(
        extensions_dir=extensions,
        handler="app.handler",
        handler_dir=HANDLERS_DIR,
        env=env,
        log_dir=tmp_path / "logs",
        **kw,
    )


def read(fn: LocalLambda, path: str, **kw: Any) -> Dict[str, Any]:
    result = fn.invoke({"op": "get", "path": path}, **kw)
    assert result.ok, result.error
    return result.response


PARAM_PATH = f"/parameters?name={SAMPLE_PARAMETER}"


@pytest.mark.slow
class TestRegistersFirst:
    def test_no_boto3_before_register(self, tmp_path: Path, function_env: Dict[str, str]) -> None:
        """It registers, named after its launcher, before importing boto3, botocore or yaml."""
        out = tmp_path / "modules.json"
        extensions = tmp_path / "extensions"
        extensions.mkdir()
        launcher = extensions / "my-cache"
        launcher.write_text(_RECORDING_LAUNCHER.format(python=sys.executable, out=out))
        launcher.chmod(0o755)
        with local(tmp_path, extensions, function_env) as fn:
            assert fn.init_reports[0].ok, fn.log("my-cache")
            assert fn.init_reports[0].extensions == ("my-cache",)
            assert read(fn, PARAM_PATH)["body"] == SAMPLE_PARAMETER_VALUE
        assert json.loads(out.read_text()) == []


@pytest.mark.slow
class TestLifecycle:
    def test_serves_then_shuts_down_cleanly(
        self, tmp_path: Path, function_env: Dict[str, str]
    ) -> None:
        """It serves during invocations; on SHUTDOWN it logs its stats and exits 0 in time."""
        with local(tmp_path, tmp_path / "ext", function_env) as fn:
            write_dev_launcher(tmp_path / "ext")
            fn.start()
            first = read(fn, PARAM_PATH)
            second = read(fn, PARAM_PATH)
            report = fn.shutdown()
            log = fn.log("cachelayer")
        assert (first["status"], first["body"], first["x_cache"]) == (
            200,
            SAMPLE_PARAMETER_VALUE,
            "miss",
        )
        assert second["x_cache"] == "hit"
        assert report.exit_codes["cachelayer"] == 0
        assert report.killed == ()
        assert report.duration_ms < 1500
        assert "cachelayer stats |" in log

    def test_sigterm_is_a_clean_exit(self, tmp_path: Path, function_env: Dict[str, str]) -> None:
        """SIGTERM (outside a SHUTDOWN event) also stops it with exit code 0."""
        write_dev_launcher(tmp_path / "ext")
        with local(tmp_path, tmp_path / "ext", function_env) as fn:
            proc = next(p for p in fn.processes if p.name == "cachelayer")
            fn.thaw()
            os.kill(proc.popen.pid, signal.SIGTERM)
            assert proc.popen.wait(timeout=5) == 0
        assert "cachelayer stats |" in fn.log("cachelayer")

    def test_bad_config_is_an_init_error(
        self, tmp_path: Path, function_env: Dict[str, str]
    ) -> None:
        """A bad config posts Extension.ConfigError, exits 1, and fails the invocation."""
        Path(function_env["CACHE_EXTENSION_CONFIG"]).write_text(
            "parameters:\n  - names: [a]\nbogus: 1\n"
        )
        write_dev_launcher(tmp_path / "ext")
        with local(tmp_path, tmp_path / "ext", function_env) as fn:
            init = fn.init_reports[0]
            result = fn.invoke({"op": "echo"})
            exit_code = fn.shutdown_reports[0].exit_codes["cachelayer"]
        assert init.error_type == "Extension.ConfigError"
        assert "bogus" in (init.error_message or "")
        assert exit_code == 1
        assert result.error["errorType"] == "Extension.ConfigError"
        assert "bogus" in fn.log("cachelayer")

    def test_bad_ttl_is_an_init_error(self, tmp_path: Path, function_env: Dict[str, str]) -> None:
        """An invalid CACHE_EXTENSION_TTL is an Extension.ConfigError naming the variable."""
        write_dev_launcher(tmp_path / "ext")
        with local(
            tmp_path, tmp_path / "ext", {**function_env, "CACHE_EXTENSION_TTL": "ten"}
        ) as fn:
            init = fn.init_reports[0]
        assert init.error_type == "Extension.ConfigError"
        assert "CACHE_EXTENSION_TTL" in (init.error_message or "")

    def test_port_in_use_is_an_init_error(
        self, tmp_path: Path, function_env: Dict[str, str]
    ) -> None:
        """A taken port posts init/error Extension.PortInUse naming the port."""
        write_dev_launcher(tmp_path / "ext")
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            with local(
                tmp_path, tmp_path / "ext", {**function_env, "CACHE_EXTENSION_PORT": str(port)}
            ) as fn:
                init = fn.init_reports[0]
        assert init.error_type == "Extension.PortInUse"
        assert str(port) in (init.error_message or "")


@pytest.mark.slow
class TestInitStartup:
    def test_prefetched_values_cost_no_upstream_call(
        self, tmp_path: Path, function_env: Dict[str, str]
    ) -> None:
        """With init startup the items are fetched in init; invocations call AWS zero times."""
        write_dev_launcher(tmp_path / "ext")
        with UpstreamProxy(function_env["AWS_ENDPOINT_URL"]) as proxy:
            env = {
                **function_env,
                "AWS_ENDPOINT_URL": proxy.url,
                "CACHE_EXTENSION_INIT_STARTUP": "true",
            }
            with local(tmp_path, tmp_path / "ext", env) as fn:
                assert fn.init_reports[0].ok, fn.log("cachelayer")
                assert proxy.count() > 0
                proxy.reset_counts()
                result = fn.invoke(
                    {
                        "op": "get_many",
                        "paths": [
                            PARAM_PATH,
                            "/parameters?name=/aws/reference/secretsmanager/secret_info",
                            "/dynamodb?name=DynamoDbTable-pKey1-sKey1",
                        ],
                    }
                )
                calls = proxy.calls
        assert result.ok, result.error
        assert [r["status"] for r in result.response] == [200, 200, 200]
        assert [r["x_cache"] for r in result.response] == ["hit", "hit", "hit"]
        assert calls == {}


@pytest.mark.slow
class TestInitWithAwsDown:
    def test_hanging_aws_cannot_blow_lambdas_init_limit(
        self, tmp_path: Path, function_env: Dict[str, str]
    ) -> None:
        """With AWS hanging at init, prefetch gives up within its budget, init succeeds inside
        Lambda's 10 s, and the items are fetched on demand once AWS answers again."""
        from cachelayer.extension import PREFETCH_BUDGET_S
        from cachelayer.testing.proxy import Fault

        write_dev_launcher(tmp_path / "ext")
        with UpstreamProxy(function_env["AWS_ENDPOINT_URL"]) as proxy:
            proxy.inject(Fault.delay(30))  # every call hangs past botocore's timeouts
            env = {
                **function_env,
                "AWS_ENDPOINT_URL": proxy.url,
                "CACHE_EXTENSION_INIT_STARTUP": "true",
            }
            with local(tmp_path, tmp_path / "ext", env) as fn:
                report = fn.start()
                assert report.ok, fn.log("cachelayer")
                assert report.duration_ms < (PREFETCH_BUDGET_S + 3) * 1000
                assert "prefetch did not finish" in fn.log("cachelayer")
                proxy.clear()
                result = fn.invoke({"op": "get", "path": PARAM_PATH})
        assert result.ok, result.error
        assert (result.response["status"], result.response["body"]) == (200, SAMPLE_PARAMETER_VALUE)


@pytest.mark.slow
class TestStopWhileAwsHangs:
    def test_sigterm_during_a_hanging_prefetch_exits_0_at_once(
        self, api: ApiServer, function_env: Dict[str, str]
    ) -> None:
        """SIGTERM while init's prefetch waits on a hanging AWS stops the extension cleanly,
        exit 0 with the stats line, without waiting for the AWS calls to time out."""
        from cachelayer.testing.proxy import Fault

        with UpstreamProxy(function_env["AWS_ENDPOINT_URL"]) as proxy:
            proxy.inject(Fault.delay(30))
            env = {
                **function_env,
                "AWS_ENDPOINT_URL": proxy.url,
                "CACHE_EXTENSION_INIT_STARTUP": "true",
            }
            proc = start_extension(api, env)
            wait_until("a hanging AWS call", lambda: proxy.count() > 0)
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(10)
            took = time.monotonic() - started
            err = proc.stderr.read() if proc.stderr else ""
        assert code == 0, err
        assert took < 1.5, err
        assert "asked to stop during the prefetch" in err and "cachelayer stats |" in err

    def test_shutdown_with_a_fetch_in_flight_exits_inside_the_deadline(
        self, api: ApiServer, function_env: Dict[str, str]
    ) -> None:
        """A SHUTDOWN while a read waits on a hanging AWS call still exits 0 well inside 2 s."""
        from cachelayer.testing.proxy import Fault

        with UpstreamProxy(function_env["AWS_ENDPOINT_URL"]) as proxy:
            env = {**function_env, "AWS_ENDPOINT_URL": proxy.url}
            proc = start_extension(api, env)
            port = int(env["CACHE_EXTENSION_PORT"])
            wait_until(
                "the extension's next",
                lambda: api.sandbox.extensions_idle() and bool(api.sandbox.extensions),
            )
            proxy.inject(Fault.delay(30))
            reader = socket.create_connection(("127.0.0.1", port), timeout=30)
            reader.sendall(
                f"GET {PARAM_PATH} HTTP/1.1\r\nHost: localhost\r\n"
                f"X-Aws-Parameters-Secrets-Token: {env['AWS_SESSION_TOKEN']}\r\n\r\n".encode()
            )
            wait_until("the read's AWS call", lambda: proxy.count() > 0)
            started = deliver_shutdown(api, within=2.0)
            code = proc.wait(10)
            took = time.monotonic() - started
            reader.close()
            err = proc.stderr.read() if proc.stderr else ""
        assert code == 0, err
        assert took < 1.9, err
        assert "cachelayer stats |" in err


@pytest.mark.slow
class TestFreeze:
    def test_value_is_refreshed_after_a_freeze_longer_than_ttl(
        self, tmp_path: Path, function_env: Dict[str, str]
    ) -> None:
        """Frozen past the TTL, thawed, read again: the new upstream value is served."""
        import boto3

        write_dev_launcher(tmp_path / "ext")
        env = {**function_env, "CACHE_EXTENSION_TTL": "1s"}
        with local(tmp_path, tmp_path / "ext", env) as fn:
            assert read(fn, PARAM_PATH)["body"] == SAMPLE_PARAMETER_VALUE
            boto3.client(
                "ssm", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-west-2"
            ).put_parameter(Name=SAMPLE_PARAMETER, Value="changed", Type="String", Overwrite=True)
            # Still fresh: the old value, from the cache.
            assert read(fn, PARAM_PATH)["body"] == SAMPLE_PARAMETER_VALUE
            after = read(fn, PARAM_PATH, freeze_between=1.5)
        assert (after["status"], after["body"]) == (200, "changed")


@pytest.mark.slow
class TestLayerLauncher:
    def test_real_launcher_runs_isolated(
        self, tmp_path: Path, function_env: Dict[str, str]
    ) -> None:
        """launcher.sh finds its packages next to it and ignores the function's PYTHONPATH."""
        poison = tmp_path / "poison"
        (poison / "boto3").mkdir(parents=True)
        (poison / "boto3" / "__init__.py").write_text(
            "raise ImportError('the function leaked into the extension')\n"
        )
        extensions = write_layer(tmp_path / "opt")
        env = {**function_env, "CACHE_EXTENSION_PYTHON": sys.executable, "PYTHONPATH": str(poison)}
        with local(tmp_path, extensions, env) as fn:
            assert fn.init_reports[0].ok, fn.log("cachelayer")
            assert read(fn, PARAM_PATH)["body"] == SAMPLE_PARAMETER_VALUE
            proc = next(p for p in fn.processes if p.name == "cachelayer")
            argv = Path(f"/proc/{proc.popen.pid}/cmdline").read_bytes().split(b"\0")
            report = fn.shutdown()
        # exec'd: the launcher's pid is Python's own, with isolation flags.
        assert argv[0] == sys.executable.encode() and b"-I" in argv and b"-S" in argv
        assert report.exit_codes["cachelayer"] == 0

    def test_launcher_without_packages_says_so(
        self, tmp_path: Path, function_env: Dict[str, str]
    ) -> None:
        """A launcher with no packages directory next to it exits with a message naming it."""
        extensions = write_layer(tmp_path / "opt")
        shutil.rmtree(tmp_path / "opt" / "cachelayer")
        env = {**function_env, "CACHE_EXTENSION_PYTHON": sys.executable}
        with local(tmp_path, extensions, env) as fn:
            assert fn.init_reports[0].error_type == "Extension.Crash"
        assert "packages directory" in fn.log("cachelayer")
