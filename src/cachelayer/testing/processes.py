"""Stopping the child processes tests and benchmarks start (cachelayer serve, nginx, ...)."""

from __future__ import annotations

import subprocess
from typing import Any


def stop_process(process: subprocess.Popen[Any], timeout: float = 5.0) -> None:
    """SIGTERM ``process`` if it still runs; SIGKILL it if it has not exited ``timeout`` s later."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
