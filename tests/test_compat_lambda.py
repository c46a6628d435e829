"""Code written for AWS's Parameters and Secrets extension runs unchanged against cachelayer,
under the local Lambda emulator, and gets the JSON boto3 gets from the services."""

from __future__ import annotations

import datetime
import textwrap
from pathlib import Path
from typing import Any, Dict

import boto3
import pytest

from cachelayer.local import LocalLambda
from cachelayer.testing.moto import aws_environment, free_port
from lambda_fixtures import write_dev_launcher

# The function AWS's documentation shows for its extension: urllib, the token header, port 2773
# unless PARAMETERS_SECRETS_EXTENSION_HTTP_PORT says otherwise. Not a line refers to cachelayer.
AWS_STYLE_FUNCTION = textwrap.dedent(
    """
    import json
    import os
    import urllib.parse
    import urllib.request

    headers = {"X-Aws-Parameters-Secrets-Token": os.environ.get("AWS_SESSION_TOKEN")}
    port = os.environ.get("PARAMETERS_SECRETS_EXTENSION_HTTP_PORT", "2773")


    def get(path):
        req = urllib.request.Request(f"http://localhost:{port}{path}", headers=headers)
        return json.loads(urllib.request.urlopen(req).read())


    def lambda_handler(event, context):
        name = urllib.parse.quote(event["parameter"], safe="")
        secret = urllib.parse.quote(event["secret"], safe="")
        return {
            "parameter": get(f"/systemsmanager/parameters/get?name={name}&withDecryption=true"),
            "secure": get(f"/systemsmanager/parameters/get?name={urllib.parse.quote(event['secure'], safe='')}&withDecryption=true"),
            "secret": get(f"/secretsmanager/get?secretId={secret}"),
        }
    """
)


def _normalise(document: Dict[str, Any]) -> Dict[str, Any]:
    """Dates as aware datetimes, nulls dropped, ResponseMetadata dropped (boto3's, not AWS's)."""
    out: Dict[str, Any] = {}
    for key, value in document.items():
        if value is None or key in ("ResponseMetadata", "ResultMetadata"):
            continue
        if key.endswith("Date"):
            if isinstance(value, str):
                value = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
            value = value.astimezone(datetime.timezone.utc).replace(
                microsecond=value.microsecond // 1000 * 1000
            )
        out[key] = value
    return out


@pytest.mark.slow
class TestAwsExtensionCodeUnderLambda:
    def test_identical_json_to_boto3(self, aws: str, tmp_path: Path) -> None:
        """An AWS-extension style function reads a parameter, a SecureString and a secret under the
        emulator and gets, field by field, what GetParameter and GetSecretValue return."""
        kw = {"region_name": "us-west-2", "endpoint_url": aws}
        ssm = boto3.client("ssm", **kw)
        secrets = boto3.client("secretsmanager", **kw)
        ssm.put_parameter(Name="/app/config/url", Value="https://example.test/a b", Type="String")
        ssm.put_parameter(Name="/app/db/password", Value="s3cr3t-pw", Type="SecureString")
        secrets.create_secret(Name="app/api-key", SecretString='{"key":"k-123"}')

        handler_dir = tmp_path / "function"
        handler_dir.mkdir()
        (handler_dir / "lambda_function.py").write_text(AWS_STYLE_FUNCTION)
        extensions = tmp_path / "extensions"
        write_dev_launcher(extensions)
        env = aws_environment(aws)
        env["PARAMETERS_SECRETS_EXTENSION_HTTP_PORT"] = str(free_port())
        # AWS's extension has no config file: an empty one declares nothing, all is on demand.
        (tmp_path / "config.yaml").write_text("")
        env["CACHE_EXTENSION_CONFIG"] = str(tmp_path / "config.yaml")

        event = {
            "parameter": "/app/config/url",
            "secure": "/app/db/password",
            "secret": "app/api-key",
        }
        with LocalLambda(
            extensions_dir=extensions,
            handler="lambda_function.lambda_handler",
            handler_dir=handler_dir,
            env=env,
            log_dir=tmp_path / "logs",
        ) as fn:
            first = fn.invoke(event)
            second = fn.invoke(event)
        assert first.ok and second.ok, (first.error, second.error)
        assert first.response == second.response  # the second is served from the cache

        got = first.response
        want_param = ssm.get_parameter(Name="/app/config/url", WithDecryption=True)["Parameter"]
        want_secure = ssm.get_parameter(Name="/app/db/password", WithDecryption=True)["Parameter"]
        want_secret = secrets.get_secret_value(SecretId="app/api-key")
        assert _normalise(got["parameter"]["Parameter"]) == _normalise(want_param)
        assert _normalise(got["secure"]["Parameter"]) == _normalise(want_secure)
        assert got["secure"]["Parameter"]["Value"] == "s3cr3t-pw"
        assert _normalise(got["secret"]) == _normalise(want_secret)
        assert got["parameter"]["ResultMetadata"] == {}
