"""Sample Python function: reads the sample's parameter, secret and DynamoDB item through the
cachelayer extension on localhost, never calling AWS itself."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Dict, Optional, Tuple

PORT = os.environ.get("CACHE_EXTENSION_PORT", "4000")
TIMEOUT_S = 3.0

# (route, name) of each value this function reads; the names match config.yaml.
SOURCES: Dict[str, Tuple[str, str]] = {
    "parameter": ("parameters", "CacheExtensions_Parameter1"),
    "secret": ("secrets", "secret_info"),
    "item": ("dynamodb", "DynamoDbTable-pKey1-sKey1"),
}


class ExtensionError(Exception):
    """The extension answered with an error; ``code`` is its ``error`` field."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


def read(route: str, name: str) -> Any:
    """GET one value from the extension: text as str, DynamoDB items as parsed JSON."""
    url = f"http://localhost:{PORT}/{route}?" + urllib.parse.urlencode({"name": name})
    # The extension only answers requests that carry the environment's session token.
    headers = {"X-Aws-Parameters-Secrets-Token": os.environ.get("AWS_SESSION_TOKEN", "")}
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            body = response.read()
            if response.headers.get_content_type() == "application/json":
                return json.loads(body)
            return body.decode("utf-8")
    except urllib.error.HTTPError as exc:
        raise _extension_error(exc.code, exc.read()) from None
    except (urllib.error.URLError, OSError) as exc:
        raise ExtensionError(
            0, "Unreachable", f"cannot reach the extension at {url}: {exc}"
        ) from None


def _extension_error(status: int, body: bytes) -> ExtensionError:
    """Parse the extension's JSON error body, tolerating anything else."""
    try:
        data = json.loads(body)
        return ExtensionError(status, str(data.get("error")), str(data.get("message")))
    except (ValueError, AttributeError):
        return ExtensionError(status, "Unknown", body[:200].decode("utf-8", "replace"))


def handler(event: Any, context: Optional[Any]) -> Dict[str, Any]:
    """Read every source; report each failure instead of failing the whole invocation."""
    values: Dict[str, Any] = {}
    errors: Dict[str, Dict[str, Any]] = {}
    for key, (route, name) in SOURCES.items():
        try:
            values[key] = read(route, name)
        except ExtensionError as exc:
            print(f"reading {route}?name={name} failed: {exc}")  # goes to CloudWatch Logs
            errors[key] = {"status": exc.status, "error": exc.code, "message": exc.message}
    return {"statusCode": 502 if errors else 200, "values": values, "errors": errors}
