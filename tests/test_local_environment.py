"""The local emulator's environment against Lambda's documented one, and the README's example
function run as written under ``cachelayer local invoke``."""

from __future__ import annotations

import re
import socket
import sys
import textwrap
from pathlib import Path
from typing import Callable, Dict, Iterator, List

import pytest

from cachelayer.cli import main as cli_main
from cachelayer.local import HIDDEN_FROM_EXTENSIONS, LocalLambda
from cachelayer.testing.sample import SAMPLE_PARAMETER_VALUE, seed_sample
from test_metrics import check_emf

ROOT = Path(__file__).resolve().parent.parent

# What Lambda sets in a function's environment (AWS Lambda Developer Guide, "Defined runtime
# environment variables", as summarised in LAMBDA_API.md). _X_AMZN_TRACE_ID is set per
# invocation by the runtime client, not in the environment, and is left out.
LAMBDA_FUNCTION_VARIABLES = {
    "_HANDLER",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_INITIALIZATION_TYPE",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_LAMBDA_RUNTIME_API",
    "LAMBDA_TASK_ROOT",
    "LAMBDA_RUNTIME_DIR",
    "AWS_XRAY_CONTEXT_MISSING",
    "AWS_XRAY_DAEMON_ADDRESS",
    "_AWS_XRAY_DAEMON_ADDRESS",
    "_AWS_XRAY_DAEMON_PORT",
    "LANG",
    "PATH",
    "LD_LIBRARY_PATH",
    "TZ",
}
# What LAMBDA_API.md says an extension gets, besides the customer's variables.
EXTENSION_VARIABLES = {
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_RUNTIME_API",
    "AWS_LAMBDA_INITIALIZATION_TYPE",
    "TZ",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "PATH",
    "LANG",
    "LD_LIBRARY_PATH",
}
WITHHELD = {
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
CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
MakeEnvironment = Callable[[Dict[str, str]], LocalLambda]


@pytest.fixture()
def environment_of(tmp_path: Path) -> Iterator[MakeEnvironment]:
    """Emulators that are opened (their API port bound, so the environments can be computed)
    but never started: no process runs. Each is closed after the test."""
    opened: List[LocalLambda] = []

    def make(env: Dict[str, str]) -> LocalLambda:
        fn = LocalLambda(
            extensions_dir=None,
            handler="app.handler",
            handler_dir=tmp_path,
            env=env,
            function_name="orders",
            memory_size_mb=512,
            log_dir=tmp_path / "logs",
        )
        opened.append(fn)
        fn.open()
        return fn

    yield make
    for fn in opened:
        fn.close()


@pytest.fixture()
def no_host_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in CREDENTIALS:
        monkeypatch.delenv(key, raising=False)


class TestFunctionEnvironment:
    def test_every_documented_variable_is_set(
        self, environment_of: MakeEnvironment, tmp_path: Path, no_host_credentials: None
    ) -> None:
        """The function gets each variable Lambda documents, none of them empty."""
        env = environment_of({}).function_environment()
        missing = LAMBDA_FUNCTION_VARIABLES - set(env)
        assert not missing, f"Lambda sets these, the emulator does not: {sorted(missing)}"
        assert all(env[k] for k in LAMBDA_FUNCTION_VARIABLES)
        assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "512"
        assert env["AWS_LAMBDA_LOG_GROUP_NAME"] == "/aws/lambda/orders"
        assert re.match(
            r"^\d{4}/\d{2}/\d{2}/\[\$LATEST\][0-9a-f]{32}$", env["AWS_LAMBDA_LOG_STREAM_NAME"]
        )
        assert env["LAMBDA_TASK_ROOT"] == str(tmp_path.resolve())
        assert env["AWS_EXECUTION_ENV"].startswith("AWS_Lambda_python3.")
        assert "/opt/bin" in env["PATH"].split(":") and "/opt/lib" in env["LD_LIBRARY_PATH"].split(
            ":"
        )

    def test_test_credentials_when_the_caller_has_none(
        self, environment_of: MakeEnvironment, tmp_path: Path, no_host_credentials: None
    ) -> None:
        """Without credentials anywhere, the function still gets all three, a session token
        included (functions send it to the extension), the same for the whole environment."""
        fn = environment_of({})
        first, again = fn.function_environment(), fn.function_environment()
        assert all(first[k] for k in CREDENTIALS)
        assert {k: first[k] for k in CREDENTIALS} == {k: again[k] for k in CREDENTIALS}
        assert first["AWS_LAMBDA_LOG_STREAM_NAME"] == again["AWS_LAMBDA_LOG_STREAM_NAME"]

    def test_credentials_come_from_the_callers_environment(
        self, environment_of: MakeEnvironment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """This process's credentials are passed on, token included, as a role's would be."""
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDHOST")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "host-secret")
        monkeypatch.setenv("AWS_SESSION_TOKEN", "host-token")
        env = environment_of({}).function_environment()
        assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == (
            "AKIDHOST",
            "host-secret",
        )
        assert env["AWS_SESSION_TOKEN"] == "host-token"

    def test_env_argument_wins_over_the_host(
        self, environment_of: MakeEnvironment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Credentials given with ``env`` (``--env``) replace the host's."""
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDHOST")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "host-secret")
        env = environment_of(
            {"AWS_ACCESS_KEY_ID": "AKIDARG", "AWS_SECRET_ACCESS_KEY": "arg-secret"}
        ).function_environment()
        assert (
            env["AWS_ACCESS_KEY_ID"] == "AKIDARG" and env["AWS_SECRET_ACCESS_KEY"] == "arg-secret"
        )
        assert env["AWS_SESSION_TOKEN"]  # long-term keys come without one; Lambda always has one


class TestExtensionEnvironment:
    def test_extension_gets_the_functions_minus_the_withheld(
        self, environment_of: MakeEnvironment, tmp_path: Path, no_host_credentials: None
    ) -> None:
        """Extensions get every variable LAMBDA_API.md lists for them and none it withholds."""
        fn = environment_of({"CUSTOMER": "x"})
        function, extension = fn.function_environment(), fn.extension_environment()
        assert HIDDEN_FROM_EXTENSIONS == WITHHELD
        assert not WITHHELD & set(extension)
        assert set(extension) >= EXTENSION_VARIABLES
        assert extension == {k: v for k, v in function.items() if k not in WITHHELD}
        assert extension["CUSTOMER"] == "x"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _readme_blocks(language: str) -> list:
    text = (ROOT / "README.md").read_text()
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


@pytest.mark.slow
class TestReadmeExample:
    def test_readme_python_example_passes_under_local_invoke(
        self,
        aws: str,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """The README's config and Python snippet, as a handler, read the parameter through the
        extension under `cachelayer local invoke`, with no credentials in the caller's shell
        (only the port is changed, to a free one)."""
        seed_sample(aws)
        for key in CREDENTIALS:
            monkeypatch.delenv(key, raising=False)
        config = next(b for b in _readme_blocks(r"yaml\s*") if "CacheExtensions_Parameter1" in b)
        snippet = next(b for b in _readme_blocks("python") if "X-Aws-Parameters-Secrets-Token" in b)
        port = _free_port()
        assert "localhost:4000" in snippet
        (tmp_path / "config.yaml").write_text(textwrap.dedent(config))
        handler = tmp_path / "fn"
        handler.mkdir()
        body = textwrap.indent(textwrap.dedent(snippet).replace("4000", str(port)), "    ")
        (handler / "app.py").write_text(f"def handler(event, context):\n{body}\n    return value\n")
        extensions = tmp_path / "extensions"
        extensions.mkdir()
        launcher = extensions / "cachelayer"
        launcher.write_text(
            f'#!/bin/sh\nexec "{sys.executable}" -m cachelayer.extension --name cachelayer\n'
        )
        launcher.chmod(0o755)
        code = cli_main(
            [
                "local",
                "invoke",
                "--extensions",
                str(extensions),
                "--handler",
                "app.handler",
                "--handler-dir",
                str(handler),
                "--env",
                f"AWS_ENDPOINT_URL={aws}",
                "--env",
                f"CACHE_EXTENSION_CONFIG={tmp_path / 'config.yaml'}",
                "--env",
                f"CACHE_EXTENSION_PORT={port}",
                "--env",
                "AWS_REGION=us-west-2",
                "--env",
                "CACHE_EXTENSION_METRICS=emf",
                "--show-logs",
            ]
        )
        out = capsys.readouterr().out
        assert code == 0, out
        assert f'"{SAMPLE_PARAMETER_VALUE}"' in out.splitlines()[0]
        # The extension's stdout (its CloudWatch log) carries the metrics written at SHUTDOWN.
        emf = [check_emf(line) for line in out.splitlines() if line.startswith('{"')]
        emf = [d for d in emf if "_aws" in d]
        parameters = next(d for d in emf if d["Route"] == "parameters")
        assert parameters["FunctionName"] == "cachelayer-local"
        assert (parameters["Misses"], parameters["UpstreamCalls"]) == (1, 1)
        assert SAMPLE_PARAMETER_VALUE not in "".join(
            line for line in out.splitlines() if "_aws" in line
        )
