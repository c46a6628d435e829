"""What the tests of the extension process share: the emulator's Runtime API, starting
``cachelayer.extension`` under it, waiting for what it does, and a SHUTDOWN with a deadline."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any, Callable, Mapping, Optional

from cachelayer.local import ApiServer, Sandbox
from cachelayer.local.api import FunctionIdentity


def make_api() -> ApiServer:
    """A Runtime API (not started) for function ``fn`` of account 123456789012."""
    return ApiServer(Sandbox(FunctionIdentity("fn", "$LATEST", "app.handler", "123456789012")))


def start_extension(api: ApiServer, env: Mapping[str, str]) -> subprocess.Popen[str]:
    """``python -m cachelayer.extension`` registered with ``api``, ``env`` laid over this
    process's environment; its stderr is a text pipe."""
    return subprocess.Popen(
        [sys.executable, "-m", "cachelayer.extension", "--name", "cachelayer"],
        env={**os.environ, **env, "AWS_LAMBDA_RUNTIME_API": api.address},
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_until(
    what: str,
    predicate: Callable[[], Any],
    *,
    process: Optional[subprocess.Popen[str]] = None,
    timeout: float = 15.0,
) -> None:
    """Until ``predicate()`` holds; AssertionError naming ``what`` after ``timeout``, or
    at once if ``process`` has exited."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the process exited ({process.returncode}) before {what}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def deliver_shutdown(api: ApiServer, within: float = 2.0) -> float:
    """Hand the extensions a SHUTDOWN whose deadline is ``within`` seconds away; the
    ``time.monotonic()`` just before it was delivered."""
    started = time.monotonic()
    with api.sandbox.cond:
        api.sandbox.deliver_to_extensions(
            {
                "eventType": "SHUTDOWN",
                "deadlineMs": int(time.time() * 1000) + int(within * 1000),
                "shutdownReason": "spindown",
            }
        )
    return started
