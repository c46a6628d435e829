"""The shared tier's own secrets (its encryption key, its store's password), read from AWS."""

from __future__ import annotations

from typing import Any


def read_secret_string(json_clients: Any, secret_id: str) -> str:
    """The ``SecretString`` of the Secrets Manager secret ``secret_id``, through the lean JSON
    transport (no boto3). ``json_clients`` is the core's ``JsonClientFactory``."""
    client = json_clients("secretsmanager", None)
    answer = client.call("GetSecretValue", {"SecretId": secret_id}, what=f"secret {secret_id!r}")
    text = answer.get("SecretString")
    if text is None:
        raise ValueError(f"secret {secret_id!r} holds no SecretString")
    return str(text)
