"""The example functions read the sample's values through a running cachelayer server, and
report the extension's errors."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, Iterator

import pytest

from cachelayer.testing.moto import aws_environment, free_port
from cachelayer.testing.sample import SAMPLE_PARAMETER_VALUE, SAMPLE_SECRET_VALUE, seed_sample

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "functions"
TOKEN = aws_environment("")["AWS_SESSION_TOKEN"]


@pytest.fixture()
def server(aws: str, tmp_path: Path) -> Iterator[Dict[str, str]]:
    """`cachelayer serve` with the examples' config against a seeded moto; yields client env."""
    seed_sample(aws)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CACHE_EXTENSION_")}
    env.update(aws_environment(aws))
    env["CACHE_EXTENSION_PORT"] = str(port)
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cachelayer",
            "serve",
            "--config",
            str(EXAMPLES / "python" / "config.yaml"),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(
                    urllib.request.Request(
                        f"http://127.0.0.1:{port}/-/health",
                        headers={"X-Aws-Parameters-Secrets-Token": TOKEN},
                    ),
                    timeout=1,
                ).read()
                break
            except OSError:
                assert proc.poll() is None, (tmp_path / "serve.log").read_text()
                assert time.monotonic() < deadline, "cachelayer serve did not come up in 20 s"
                time.sleep(0.1)
        yield {"CACHE_EXTENSION_PORT": str(port), "AWS_SESSION_TOKEN": TOKEN, "endpoint": aws}
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def _python_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("example_app", EXAMPLES / "python" / "app.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_python(env: Dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Dict[str, Any]:
    monkeypatch.setenv("AWS_SESSION_TOKEN", env["AWS_SESSION_TOKEN"])
    monkeypatch.setenv("CACHE_EXTENSION_PORT", env["CACHE_EXTENSION_PORT"])
    return _python_example().handler({}, None)  # type: ignore[no-any-return]


def _run_node(env: Dict[str, str]) -> Dict[str, Any]:
    node = shutil.which("node")
    assert node, "node is needed to run the Node.js example (apt-get install nodejs)"
    script = (
        f"import({json.dumps((EXAMPLES / 'node' / 'index.mjs').as_uri())})"
        ".then(m => m.handler({})).then(r => console.log(JSON.stringify(r)))"
    )
    child_env = {
        "PATH": os.environ.get("PATH", ""),
        "AWS_SESSION_TOKEN": env["AWS_SESSION_TOKEN"],
        "CACHE_EXTENSION_PORT": env["CACHE_EXTENSION_PORT"],
    }
    proc = subprocess.run(
        [node, "-e", script], capture_output=True, text=True, timeout=30, env=child_env
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _forget_secret(endpoint: str) -> None:
    import boto3

    sm = boto3.client("secretsmanager", region_name="us-west-2", endpoint_url=endpoint)
    sm.delete_secret(SecretId="secret_info", ForceDeleteWithoutRecovery=True)


@pytest.mark.slow
class TestPythonExample:
    def test_reads_parameter_secret_and_item(
        self, server: Dict[str, str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The Python handler gets the three sample values, the item as native JSON."""
        body = _run_python(server, monkeypatch)
        assert body["errors"] == {} and body["statusCode"] == 200
        assert body["values"]["parameter"] == SAMPLE_PARAMETER_VALUE
        assert body["values"]["secret"] == SAMPLE_SECRET_VALUE
        assert body["values"]["item"]["data"] == "DynamoDB sample data"
        assert body["values"]["item"]["enabled"] is True

    def test_reports_the_extensions_json_error(
        self, server: Dict[str, str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A missing secret comes back as the extension's 404 error, reported, not raised."""
        _forget_secret(server["endpoint"])
        body = _run_python(server, monkeypatch)
        assert body["statusCode"] == 502
        assert (
            body["errors"]["secret"]["status"] == 404
            and body["errors"]["secret"]["error"] == "NotFound"
        )
        assert body["values"]["parameter"] == SAMPLE_PARAMETER_VALUE

    def test_wrong_token_is_reported(
        self, server: Dict[str, str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without the session token the extension refuses, and the handler says so."""
        body = _run_python({**server, "AWS_SESSION_TOKEN": "not-the-token"}, monkeypatch)
        assert {e["status"] for e in body["errors"].values()} <= {401, 403} and len(
            body["errors"]
        ) == 3


@pytest.mark.slow
class TestNodeExample:
    def test_reads_parameter_secret_and_item(self, server: Dict[str, str]) -> None:
        """The Node.js handler, run by node, gets the three sample values through `localhost`."""
        body = _run_node(server)
        assert body["errors"] == {}, body
        assert body["values"]["parameter"] == SAMPLE_PARAMETER_VALUE
        assert body["values"]["secret"] == SAMPLE_SECRET_VALUE
        assert body["values"]["item"]["data"] == "DynamoDB sample data"

    def test_reports_the_extensions_json_error(self, server: Dict[str, str]) -> None:
        """A missing secret comes back to the Node.js handler as the extension's 404 error."""
        _forget_secret(server["endpoint"])
        body = _run_node(server)
        assert body["statusCode"] == 502 and body["errors"]["secret"]["status"] == 404
        assert body["errors"]["secret"]["error"] == "NotFound"
