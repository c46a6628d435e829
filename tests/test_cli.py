"""The ``cachelayer`` command as a user runs it: check-config, providers, serve, demo."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest

from cachelayer.testing.moto import aws_environment, free_port
from cachelayer.testing.sample import (
    SAMPLE_CONFIG_YAML,
    SAMPLE_PARAMETER,
    SAMPLE_PARAMETER_VALUE,
    seed_sample,
)

TOKEN = "testing-session-token"


def cachelayer(
    *args: str, env: Optional[Dict[str, str]] = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cachelayer", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


class TestCheckConfig:
    def test_sample_config_is_valid_and_listed(self, tmp_path: Path) -> None:
        """The Go sample's config.yaml passes unchanged and every declared item is listed with its TTL."""
        path = tmp_path / "config.yaml"
        path.write_text(SAMPLE_CONFIG_YAML)
        done = cachelayer("check-config", str(path), env={"CACHE_EXTENSION_TTL": "1h30m"})
        assert done.returncode == 0, done.stderr
        assert f"{path}: OK" in done.stdout
        assert "CacheExtensions_Parameter1  ttl 1h30m0s" in done.stdout
        assert "DynamoDbTable-pKey1-sKey1  ttl 1h30m0s" in done.stdout
        assert "3 items would be cached" in done.stdout

    def test_bad_duration_names_file_line_and_key(self, tmp_path: Path) -> None:
        """A bad TTL in the file is refused with the file, line, key and a hint, exit code 2."""
        path = tmp_path / "config.yaml"
        path.write_text("cache:\n  ttl: 30\n")
        done = cachelayer("check-config", str(path))
        assert done.returncode == 2
        assert f"{path}:2: cache.ttl:" in done.stderr
        assert "30s" in done.stderr  # the hint shows how to write it

    def test_unknown_section_lists_installed_providers(self, tmp_path: Path) -> None:
        """An unknown section names itself and the installed providers."""
        path = tmp_path / "config.yaml"
        path.write_text("paramters:\n  - names: [a]\n")
        done = cachelayer("check-config", str(path))
        assert done.returncode == 2
        assert "paramters" in done.stderr and "parameters" in done.stderr
        assert "dynamodb" in done.stderr and "secrets" in done.stderr

    def test_invalid_env_ttl_is_a_clear_error(self, tmp_path: Path) -> None:
        """An invalid CACHE_EXTENSION_TTL is reported naming the variable, never a crash."""
        path = tmp_path / "config.yaml"
        path.write_text(SAMPLE_CONFIG_YAML)
        done = cachelayer("check-config", str(path), env={"CACHE_EXTENSION_TTL": "3d"})
        assert done.returncode == 2
        assert "CACHE_EXTENSION_TTL" in done.stderr and "Traceback" not in done.stderr

    def test_every_config_example_in_the_readme_is_valid(self, tmp_path: Path) -> None:
        """The README's YAML examples pass check-config as written."""
        import re

        readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
        blocks = re.findall(r"```yaml\n(.*?)```", readme, re.S)
        assert len(blocks) >= 2
        for i, block in enumerate(blocks):
            path = tmp_path / f"example{i}.yaml"
            path.write_text(block)
            done = cachelayer("check-config", str(path), env={"AWS_SESSION_TOKEN": TOKEN})
            assert done.returncode == 0, (block, done.stderr)
            assert done.stderr == ""


class TestProviders:
    def test_lists_builtins_with_distribution_and_version(self) -> None:
        """`cachelayer providers` shows each built-in's section, route, services and distribution."""
        done = cachelayer("providers")
        assert done.returncode == 0, done.stderr
        rows = {
            line.split()[0]: line.split() for line in done.stdout.splitlines()[1:] if line.strip()
        }
        from cachelayer import __version__

        assert rows["parameters"][:5] == [
            "parameters",
            "/parameters",
            "ssm",
            "cachelayer",
            __version__,
        ]
        assert rows["secrets"][:4] == ["secrets", "/secrets", "secretsmanager", "cachelayer"]
        assert rows["dynamodb"][:4] == ["dynamodb", "/dynamodb", "dynamodb", "cachelayer"]


class Served:
    def __init__(self, proc: subprocess.Popen, port: int) -> None:
        self.proc, self.port = proc, port

    def get(self, path: str) -> tuple:
        req = urllib.request.Request(
            f"http://localhost:{self.port}{path}", headers={"X-Aws-Parameters-Secrets-Token": TOKEN}
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()


def start_serve(env: Dict[str, str], args: List[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "cachelayer", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )


def wait_listening(port: int, proc: subprocess.Popen, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited with {proc.returncode}: {proc.stderr.read()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("serve did not start listening")


@pytest.fixture()
def served(aws: str, tmp_path: Path) -> Iterator[Served]:
    seed_sample(aws)
    config = tmp_path / "config.yaml"
    config.write_text(SAMPLE_CONFIG_YAML)
    port = free_port()
    proc = start_serve(aws_environment(aws), ["--config", str(config), "--port", str(port)])
    try:
        wait_listening(port, proc)
        yield Served(proc, port)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


class TestServe:
    def test_serves_the_samples_values_and_stops_on_sigterm(self, served: Served) -> None:
        """`cachelayer serve` answers the sample's routes, then SIGTERM stops it with exit 0 and a stats line."""
        status, headers, body = served.get(f"/parameters?name={SAMPLE_PARAMETER}")
        assert (status, body.decode(), headers["X-Cache"]) == (200, SAMPLE_PARAMETER_VALUE, "miss")
        status, headers, body = served.get(f"/parameters?name={SAMPLE_PARAMETER}")
        assert (status, headers["X-Cache"]) == (200, "hit")
        status, _, body = served.get("/dynamodb?name=DynamoDbTable-pKey1-sKey1")
        assert status == 200 and b'"enabled":true' in body and b"12345678901234567890.125" in body
        served.proc.send_signal(signal.SIGTERM)
        assert served.proc.wait(10) == 0
        err = served.proc.stderr.read()
        assert "cachelayer stats | " in err and "parameters: hits=1 misses=1" in err
        assert SAMPLE_PARAMETER_VALUE not in err

    def test_sigterm_with_a_fetch_in_flight_exits_at_once(self, aws: str, tmp_path: Path) -> None:
        """SIGTERM while a read waits on a hanging AWS call stops `serve` at once with exit 0."""
        from cachelayer.testing.proxy import Fault, UpstreamProxy

        seed_sample(aws)
        config = tmp_path / "config.yaml"
        config.write_text(SAMPLE_CONFIG_YAML)
        port = free_port()
        with UpstreamProxy(aws) as proxy:
            proc = start_serve(
                {**aws_environment(aws), "AWS_ENDPOINT_URL": proxy.url},
                ["--config", str(config), "--port", str(port)],
            )
            try:
                wait_listening(port, proc)
                proxy.inject(Fault.delay(30))
                reader = socket.create_connection(("127.0.0.1", port), timeout=30)
                reader.sendall(
                    f"GET /parameters?name={SAMPLE_PARAMETER} HTTP/1.1\r\nHost: localhost\r\n"
                    f"X-Aws-Parameters-Secrets-Token: {TOKEN}\r\n\r\n".encode()
                )
                deadline = time.monotonic() + 10
                while proxy.count() == 0 and time.monotonic() < deadline:
                    time.sleep(0.05)
                started = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(10) == 0
                assert time.monotonic() - started < 1.5
                reader.close()
            finally:
                if proc.poll() is None:
                    proc.kill()

    def test_sigint_stops_it_too(self, served: Served) -> None:
        """SIGINT (Ctrl-C) stops the server cleanly with exit 0."""
        served.proc.send_signal(signal.SIGINT)
        assert served.proc.wait(10) == 0

    def test_port_in_use_is_a_clear_error(self, served: Served, tmp_path: Path, aws: str) -> None:
        """A second server on a taken port exits non-zero naming the port and how to change it."""
        config = tmp_path / "config.yaml"
        other = start_serve(
            aws_environment(aws), ["--config", str(config), "--port", str(served.port)]
        )
        _, err = other.communicate(timeout=30)
        assert other.returncode == 1
        assert str(served.port) in err and "CACHE_EXTENSION_PORT" in err
        assert "Traceback" not in err

    def test_bad_config_exits_with_the_error(self, aws: str, tmp_path: Path) -> None:
        """A config error stops `serve` before binding, with the file and line."""
        config = tmp_path / "config.yaml"
        config.write_text(
            "dynamodb:\n  - table: T\n    hashkey: k\n    hashkeytype: X\n    hashkeyvalue: v\n"
        )
        proc = start_serve(
            aws_environment(aws), ["--config", str(config), "--port", str(free_port())]
        )
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 2
        assert f"{config}:4: dynamodb[0].hashkeytype" in err


@pytest.mark.slow
class TestDemo:
    def test_demo_runs_the_walkthrough(self) -> None:
        """The README's demo command runs both functions under the emulator and prints the table."""
        done = cachelayer("demo", "--invocations", "2", timeout=180)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert "through cachelayer" in done.stdout and "boto3 every call" in done.stdout
        assert "MyParameter   X-Cache: hit" in done.stdout
        assert '"count":12345678901234567890.125' in done.stdout  # exact digits, end to end
        assert "werkzeug" not in done.stdout + done.stderr
        assert "Init Duration" in done.stdout
        assert "MySecret" not in done.stdout  # the demo never prints the secret itself
