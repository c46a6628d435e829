"""Secrets Manager GetSecretValue as AWS's extension answers it: ``/secretsmanager/get``."""

from __future__ import annotations

import base64
from typing import Any, Dict, Mapping, Optional

from cachelayer import Value
from cachelayer.compat import (
    AwsCompatRoute,
    CompatRead,
    CompatRequest,
    refresh_now,
    render_date,
    required,
)

__all__ = ["SECRETS_PATH", "SECRETS_ROUTE", "secret_document", "secret_request"]

SECRETS_PATH = "/secretsmanager/get"
QUERY = ("secretId", "versionId", "versionStage", "refreshNow")


def secret_request(params: Mapping[str, str]) -> CompatRequest:
    """The ``/secrets`` read for one GetSecretValue request."""
    refresh = refresh_now(params)
    secret_id = required(params, "secretId", SECRETS_PATH)
    # Secrets Manager takes names, full ARNs and partial ARNs as SecretId: pass them as is.
    native = {key: params[key] for key in ("versionId", "versionStage") if key in params}
    return CompatRequest([CompatRead(secret_id, native)], refresh=refresh)


def secret_document(
    metadata: Mapping[str, Any], body: Optional[bytes] = None, content_type: str = ""
) -> Dict[str, Any]:
    """GetSecretValue's answer as AWS's extension returns it: both value fields present (one
    null), ``SecretBinary`` base64, dates as RFC 3339 UTC strings, an empty ResultMetadata.
    The value is the ``body`` (text for ``SecretString``, else ``SecretBinary``; it is stored
    once), else the metadata's own fields."""
    text = metadata.get("SecretString")
    binary = metadata.get("SecretBinary")
    if body is not None:
        if content_type.startswith("text/"):
            text, binary = body.decode("utf-8", "replace"), None
        else:
            text, binary = None, body
    if isinstance(binary, (bytes, bytearray, memoryview)):
        binary = base64.b64encode(bytes(binary)).decode("ascii")
    stages = metadata.get("VersionStages")
    return {
        "ARN": metadata.get("ARN"),
        "CreatedDate": render_date(metadata.get("CreatedDate")),
        "Name": metadata.get("Name"),
        "SecretBinary": binary,
        "SecretString": text,
        "VersionId": metadata.get("VersionId"),
        "VersionStages": list(stages) if stages is not None else None,
        "ResultMetadata": {},
    }


def get_secret_value_result(value: Value) -> Dict[str, Any]:
    """GetSecretValue's answer for ``value``, as AWS's extension sends it."""
    return secret_document(value.metadata, value.body, value.content_type)


SECRETS_ROUTE = AwsCompatRoute(
    path=SECRETS_PATH,
    query=QUERY,
    to_request=secret_request,
    render=get_secret_value_result,
)
"""The ``aws_compat`` capability of ``SecretsManagerProvider``."""
