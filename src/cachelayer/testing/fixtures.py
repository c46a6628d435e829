"""pytest fixtures for provider authors: moto on loopback, provider context, upstream call counter.

Load it with ``-p cachelayer.testing.fixtures`` in ``addopts`` (or ``pytest_plugins =
["cachelayer.testing.fixtures"]`` in your top-level ``conftest.py``). Fixtures:

- ``moto_endpoint`` (session): a moto server on 127.0.0.1; its URL.
- ``aws``: moto reset, and the process environment pointing boto3 at it with fake credentials
  (``AWS_ENDPOINT_URL``, ``AWS_REGION=us-west-2``); never the developer's real account.
- ``upstream_calls``: an ``UpstreamCalls`` record of every AWS API call made through
  ``provider_context`` clients.
- ``provider_context``: a ``ProviderContext`` whose clients come from cachelayer's own
  ``ClientFactory`` and lean JSON-protocol clients from its ``JsonClientFactory`` (the same
  timeouts and retries as in production), counted by ``upstream_calls``.
- ``cachelayer_server``: a factory starting the real application and HTTP server with a given
  config on a free loopback port; returns a ``RunningCachelayer`` with ``url`` and ``get()``.
"""

from __future__ import annotations

import os
import threading
import urllib.request
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import attrs
import pytest

from cachelayer.provider import ProviderContext
from cachelayer.testing.moto import aws_environment, moto_server

__all__ = ["UpstreamCalls"]


@attrs.define
class UpstreamCalls:
    """Every AWS API call seen, as ``(service, operation)`` in order. Thread-safe.

    One entry per API call, not per retry attempt (botocore's ``before-call`` event).
    """

    calls: List[Tuple[str, str]] = attrs.Factory(list)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, repr=False)

    def record(self, service: str, operation: str) -> None:
        """Note one call; pass this as ``ClientFactory(on_call=...)`` or
        ``JsonClientFactory(on_call=...)``."""
        with self._lock:
            self.calls.append((service, operation))

    def count(self, operation: Optional[str] = None, service: Optional[str] = None) -> int:
        """How many calls matched ``operation`` (e.g. ``"GetObject"``) and ``service``."""
        with self._lock:
            return sum(
                1
                for s, o in self.calls
                if (operation is None or o == operation) and (service is None or s == service)
            )

    def clear(self) -> None:
        """Forget the calls so far (e.g. after seeding moto through the same clients)."""
        with self._lock:
            self.calls.clear()


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """One moto server on 127.0.0.1 for the whole session; the ``aws`` fixture resets it."""
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture()
def aws(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A freshly reset moto, with boto3 pointed at it by environment and fake credentials."""
    request = urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()
    # Never a real account: no profile, no credentials or config files of the developer.
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    for key, value in aws_environment(moto_endpoint).items():
        monkeypatch.setenv(key, value)
    return moto_endpoint


@pytest.fixture()
def upstream_calls() -> UpstreamCalls:
    """A fresh record of the AWS calls made through ``provider_context``."""
    return UpstreamCalls()


@pytest.fixture()
def provider_context(aws: str, upstream_calls: UpstreamCalls) -> ProviderContext:
    """What the core would hand ``configure``: boto3 clients from cachelayer's ``ClientFactory``
    and lean JSON-protocol clients from its ``JsonClientFactory``, both counted."""
    from cachelayer.aws import ClientFactory
    from cachelayer.awsjson import JsonClientFactory

    factory = ClientFactory.from_environment(on_call=upstream_calls.record)
    return ProviderContext(
        client=factory,
        default_region=factory.default_region,
        json_client=JsonClientFactory.from_environment(on_call=upstream_calls.record),
    )


@attrs.frozen
class Response:
    """One HTTP answer from the running cachelayer."""

    status: int
    headers: Dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON."""
        import json

        return json.loads(self.body)


@attrs.define
class RunningCachelayer:
    """A cachelayer server process serving on loopback, started by ``cachelayer_server``."""

    url: str
    token: str
    process: Any

    def get(self, path: str, headers: Optional[Dict[str, str]] = None) -> Response:
        """``GET url+path`` with the auth token; errors come back as a Response, not raised."""
        import urllib.error

        all_headers = {"X-Aws-Parameters-Secrets-Token": self.token, **(headers or {})}
        request = urllib.request.Request(self.url + path, headers=all_headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return Response(response.status, dict(response.headers.items()), response.read())
        except urllib.error.HTTPError as exc:
            return Response(exc.code, dict(exc.headers.items()), exc.read())


def _wait_healthy(process: Any, url: str, token: str, timeout: float = 20.0) -> None:
    """Until ``url`` answers ``/-/health``; RuntimeError (with the output) if the process
    exits first or ``timeout`` passes."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            output = process.stdout.read().decode(errors="replace") if process.stdout else ""
            raise RuntimeError(f"cachelayer serve exited with {process.returncode}:\n{output}")
        try:
            with urllib.request.urlopen(
                urllib.request.Request(
                    url + "/-/health", headers={"X-Aws-Parameters-Secrets-Token": token}
                ),
                timeout=1,
            ):
                return
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                message = f"cachelayer serve did not answer /-/health within {timeout:g} s"
                raise RuntimeError(message) from None
            time.sleep(0.05)


@pytest.fixture()
def cachelayer_server(aws: str, tmp_path: Any) -> Iterator[Callable[..., RunningCachelayer]]:
    """A factory: ``cachelayer_server(config_yaml, env=..., python=..., clock=...)`` runs
    ``cachelayer serve``.

    It is the real command in a child process (``python``, default this interpreter, with the
    providers installed in its environment, discovered by entry points), on a free loopback
    port, pointed at moto, with auth on. With ``clock`` (a ``FileClock``) it is the same
    application and server with the cache on that clock (``python -m
    cachelayer.testing.clocked``): ``clock.advance()`` lets TTLs pass without sleeping. The
    process is stopped after the test.
    """
    import subprocess
    import sys

    from cachelayer.testing.clock import FileClock
    from cachelayer.testing.clocked import CLOCK_VARIABLE
    from cachelayer.testing.moto import free_port

    started: List[subprocess.Popen[bytes]] = []

    def start(
        config: str,
        env: Optional[Dict[str, str]] = None,
        python: Optional[str] = None,
        clock: Optional[FileClock] = None,
    ) -> RunningCachelayer:
        config_path = tmp_path / f"config-{len(started)}.yaml"
        config_path.write_text(config)
        port = free_port()
        token = "test-session-token"
        child_env = dict(os.environ)
        child_env.update(aws_environment(aws))
        child_env.update(
            {
                "AWS_SESSION_TOKEN": token,
                "CACHE_EXTENSION_CONFIG": str(config_path),
                "CACHE_EXTENSION_PORT": str(port),
            }
        )
        child_env.update(env or {})
        command = ["-m", "cachelayer", "serve"]
        if clock is not None:
            command = ["-m", "cachelayer.testing.clocked"]
            child_env[CLOCK_VARIABLE] = str(clock.path)
        process = subprocess.Popen(
            [python or sys.executable, *command],
            env=child_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        started.append(process)
        url = f"http://127.0.0.1:{port}"
        _wait_healthy(process, url, token)
        return RunningCachelayer(url=url, token=token, process=process)

    yield start
    for process in started:
        _stop(process)


def _stop(process: Any) -> None:
    """SIGTERM, SIGKILL after 5 s; close the output pipe."""
    from cachelayer.testing.processes import stop_process

    stop_process(process, timeout=5)
    if process.stdout is not None:
        process.stdout.close()
