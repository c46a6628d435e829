"""Test handler: echoes, reads cachelayer on localhost:4000, fails or sleeps on request."""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from typing import Any, Dict


def _get(path: str) -> Dict[str, Any]:
    request = urllib.request.Request(
        # The tests move the cache off 4000 (CACHE_EXTENSION_PORT) so parallel runs cannot clash.
        f"http://localhost:{os.environ.get('CACHE_EXTENSION_PORT', '4000')}" + path,
        headers={"X-Aws-Parameters-Secrets-Token": os.environ.get("AWS_SESSION_TOKEN", "")},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return {
                "status": response.status,
                "body": response.read().decode(),
                "x_cache": response.headers.get("X-Cache"),
            }
    except urllib.error.HTTPError as exc:
        return {
            "status": exc.code,
            "body": exc.read().decode(),
            "x_cache": exc.headers.get("X-Cache"),
        }


def handler(event: Dict[str, Any], context: Any) -> Any:
    op = event.get("op", "echo")
    if op == "echo":
        return {"event": event, "request_id": context.aws_request_id}
    if op == "env":
        return dict(os.environ)
    if op == "get":
        return _get(event["path"])
    if op == "get_many":
        return [_get(path) for path in event["paths"]]
    if op == "sleep":
        time.sleep(event["seconds"])
        return "slept"
    if op == "fail":
        raise ValueError("asked to fail")
    raise ValueError(f"unknown op {op!r}")
