"""Security properties: secrets stay out of logs, errors, stats and reprs; auth and bounds hold."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any, Iterator, List

import boto3
import pytest

from cachelayer.providers.secrets.compat import SECRETS_PATH
from cachelayer.providers.ssm.compat import PARAMETERS_PATH
from cachelayer.testing.live import TOKEN_HEADER, live_server
from cachelayer.testing.moto import aws_environment, free_port

SECRET_STRING = "s3cr3t-Value-7f1c9e"
SECRET_BINARY = b"\x01binary-s3cr3t-9a8b"
SECURE_PARAMETER = "p4ram-Value-2d4e6f"
SECRETS = [
    SECRET_STRING,
    SECURE_PARAMETER,
    SECRET_BINARY.decode("latin-1"),
    "YmluYXJ5LXMzY3IzdC05YThi",
]


def seed(endpoint: str) -> None:
    kw = {"endpoint_url": endpoint, "region_name": "us-west-2"}
    boto3.client("secretsmanager", **kw).create_secret(Name="sec/str", SecretString=SECRET_STRING)
    boto3.client("secretsmanager", **kw).create_secret(Name="sec/bin", SecretBinary=SECRET_BINARY)
    boto3.client("ssm", **kw).put_parameter(
        Name="/sec/param", Value=SECURE_PARAMETER, Type="SecureString"
    )


READS = [
    "/secrets?name=sec/str",
    "/secrets?name=sec/bin",
    "/parameters?name=/sec/param",
    "/secrets?name=sec/str&versionStage=NOPE",
    "/secrets?name=sec/str&versionId=nope",
    f"{SECRETS_PATH}?secretId=sec/str",
    f"{SECRETS_PATH}?secretId=sec/bin",
    f"{PARAMETERS_PATH}?name=/sec/param&withDecryption=true",
    f"{PARAMETERS_PATH}?name=/sec/param&withDecryption=maybe",
    "/aws/reference/secretsmanager/sec/str",
    "/parameters?name=/aws/reference/secretsmanager/sec/str",
    "/parameters?name=/aws/reference/secretsmanager/sec/str&withDecryption=false",
    "/-/stats",
    "/-/health",
]


def _get(port: int, path: str, token: str, method: str = "GET") -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        conn.request(method, urllib.parse.quote(path, safe="/?=&"), headers={TOKEN_HEADER: token})
        return conn.getresponse().read()
    finally:
        conn.close()


def _absent(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"a secret value appears in {where}"


class TestSecretsStayOut:
    @pytest.mark.slow
    def test_never_in_logs_at_debug(self, aws: str, tmp_path: Path) -> None:
        """A full flow through `cachelayer serve` at DEBUG logs no secret value, library logs included."""
        seed(aws)
        config = tmp_path / "config.yaml"
        config.write_text("secrets:\n  - names: [sec/str]\nparameters:\n  - names: [/sec/param]\n")
        port = free_port()
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("CACHE_EXTENSION_", "PARAMETERS_SECRETS_"))
        }
        env.update(aws_environment(aws))
        env.update({"CACHE_EXTENSION_LOG_LEVEL": "DEBUG", "CACHE_EXTENSION_INIT_STARTUP": "true"})
        log_path = tmp_path / "server.log"
        log_file = log_path.open(
            "wb"
        )  # a file, not a pipe: DEBUG output would fill a pipe and stall
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cachelayer",
                "serve",
                "--config",
                str(config),
                "--port",
                str(port),
            ],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        bodies: List[bytes] = []
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    assert proc.poll() is None, log_path.read_text(errors="replace")
                    time.sleep(0.1)
            token = env["AWS_SESSION_TOKEN"]
            for path in READS:
                bodies.append(_get(port, path, token))
            bodies.append(_get(port, "/-/invalidate", token, method="POST"))
            for path in READS[:3]:
                bodies.append(_get(port, path, token))
                bodies.append(_get(port, path, "wrong-token"))
        finally:
            proc.terminate()
            proc.wait(timeout=15)
            log_file.close()
        logs = log_path.read_text(encoding="utf-8", errors="replace")
        assert "DEBUG" in logs, "the server did not log at DEBUG, so this test proves nothing"
        assert SECRET_STRING.encode() in b"".join(bodies), "the flow never read the secret"
        _absent(logs, "the extension's logs")

    def test_never_in_error_messages_or_stats(self, aws: str, tmp_path: Path) -> None:
        """Error bodies and /-/stats never carry a cached value, even for cached items."""
        seed(aws)
        with live_server(aws, tmp_path) as live:
            assert live.request("/secrets?name=sec/str")[0] == 200
            for path in [
                *READS[3:5],
                READS[8],
                READS[11],
                "/secrets?name=sec/str&bogus=1",
                "/-/stats",
                "/-/health",
            ]:
                status, _, body = live.request(path)
                _absent(body.decode("utf-8", "replace"), f"the answer to {path} ({status})")
            for token in (None, "wrong"):
                _absent(
                    live.request("/secrets?name=sec/str", token=token)[2].decode(), "an auth error"
                )

    def test_never_in_reprs(self, aws: str, tmp_path: Path) -> None:
        """Reprs of settings, the application, items, values and lookups show no value or token."""
        seed(aws)
        with live_server(aws, tmp_path) as live:
            live.request("/secrets?name=sec/str")
            provider, item = live.app.router.resolve("secrets", {"name": "sec/str"})
            lookup = live.app.cache.peek(item)
            assert lookup is not None and lookup.value.body == SECRET_STRING.encode()
            token = live.env["AWS_SESSION_TOKEN"]
            for thing in (
                live.app.settings,
                live.app,
                item,
                lookup.value,
                lookup,
                provider,
                live.server,
            ):
                text = repr(thing)
                _absent(text, f"repr of {type(thing).__name__}")
                assert token not in text, (
                    f"the session token appears in repr of {type(thing).__name__}"
                )


@pytest.fixture()
def live(aws: str, tmp_path: Path) -> Iterator[Any]:
    seed(aws)
    with live_server(
        aws, tmp_path, extra_env={"AWS_SESSION_TOKEN": "T0ken-abcdefghijklmnop"}
    ) as running:
        yield running


class TestAuth:
    def test_wrong_tokens_of_every_length_get_identical_403s(self, live: Any) -> None:
        """Every wrong token, whatever its length or shared prefix, gets the same 403 body."""
        token = live.env["AWS_SESSION_TOKEN"]
        wrong = ["x" * n for n in range(0, 2 * len(token) + 2)]
        wrong += [token[:n] for n in range(len(token))] + [
            token + "x",
            token.upper(),
            token[:-1] + "Q",
        ]
        answers = set()
        for candidate in wrong:
            status, _, body = live.request("/secrets?name=sec/str", token=candidate)
            answers.add((status, body))
        assert len(answers) == 1
        status, body = answers.pop()
        assert status == 403 and json.loads(body)["error"] == "InvalidToken"
        assert live.request("/secrets?name=sec/str")[0] == 200

    def test_missing_token_is_401(self, live: Any) -> None:
        """No token header at all is a 401 naming the header."""
        status, _, body = live.request(f"{SECRETS_PATH}?secretId=sec/str", token=None)
        assert status == 401 and TOKEN_HEADER in json.loads(body)["message"]

    @pytest.mark.parametrize(
        "path", ["/secrets?name=sec/str", f"{SECRETS_PATH}?secretId=sec/str", "/-/stats"]
    )
    def test_x_forwarded_for_is_refused_even_with_the_token(self, live: Any, path: str) -> None:
        """A request relayed by a proxy (X-Forwarded-For) is refused with 403, token or not."""
        status, _, body = live.request(path, headers={"X-Forwarded-For": "127.0.0.1"})
        assert status == 403 and SECRET_STRING not in body.decode()


class TestBounds:
    def test_oversized_requests_are_refused(self, live: Any) -> None:
        """An over-long URL is 414 and an oversized header 431, both JSON errors."""
        assert live.request("/secrets?name=" + "a" * 20000)[0] == 414
        assert live.request("/secrets?name=sec/str", headers={"X-Pad": "b" * 20000})[0] == 431
        many = {f"X-H{i}": "v" for i in range(300)}
        assert live.request("/secrets?name=sec/str", headers=many)[0] == 431

    def test_connections_beyond_the_limit_are_refused(self, aws: str, tmp_path: Path) -> None:
        """With max_connections held by authenticated clients, a new connection is answered
        503 and closed."""
        with live_server(aws, tmp_path, max_connections=2) as running:
            held = [
                socket.create_connection(("127.0.0.1", running.port), timeout=5) for _ in range(2)
            ]
            try:
                for s in held:  # each authenticates once and keeps its connection open
                    s.sendall(
                        b"GET /-/health HTTP/1.1\r\nHost: localhost\r\n"
                        b"X-Aws-Parameters-Secrets-Token: %s\r\n\r\n" % running.token.encode()
                    )
                    assert s.recv(65536).startswith(b"HTTP/1.1 200")
                status, _headers, body = running.request("/-/health")
                assert status == 503 and json.loads(body)["error"] == "ServiceUnavailable"
            finally:
                for s in held:
                    s.close()
            deadline = time.monotonic() + 5
            while running.request("/-/health")[0] != 200:
                assert time.monotonic() < deadline, "connections were not released after closing"
                time.sleep(0.05)
