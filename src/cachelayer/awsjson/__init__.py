"""A lean client for AWS JSON-protocol services (SSM, Secrets Manager, DynamoDB, ...), no botocore.

SigV4 signing with the standard library, credentials from the environment or the container
credentials endpoint, partition endpoints with ``AWS_ENDPOINT_URL[_<SERVICE>]`` and the FIPS and
dual-stack variables, standard-mode retries, timeouts, keep-alive connections and verified TLS.
A provider gets clients from ``ProviderContext.json_client(service, region)``::

    client = context.json_client("ssm", None)
    answer = client.call("GetParameter", {"Name": "x"}, not_found=("ParameterNotFound",))

A third party's provider for another JSON-protocol service describes it with ``JsonService``.
"""

from __future__ import annotations

from cachelayer.awsjson.client import (
    DYNAMODB,
    SECRETS_MANAGER,
    SSM,
    JsonClient,
    JsonClientFactory,
    JsonService,
    RetryPolicy,
    ServiceError,
    parse_error,
)
from cachelayer.awsjson.credentials import (
    ContainerCredentials,
    Credentials,
    CredentialSource,
    credentials_from_environment,
    default_credentials,
)
from cachelayer.awsjson.endpoints import endpoint_url, partition_of
from cachelayer.awsjson.sigv4 import sign

__all__ = [
    "DYNAMODB",
    "SECRETS_MANAGER",
    "SSM",
    "ContainerCredentials",
    "CredentialSource",
    "Credentials",
    "JsonClient",
    "JsonClientFactory",
    "JsonService",
    "RetryPolicy",
    "ServiceError",
    "credentials_from_environment",
    "default_credentials",
    "endpoint_url",
    "parse_error",
    "partition_of",
    "sign",
]
