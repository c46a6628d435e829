"""Drop-in compatibility with AWS's Parameters and Secrets Lambda Extension, over real HTTP."""

from __future__ import annotations

import base64
import datetime
import json
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, Mapping

import boto3
import pytest

from cachelayer.compat import render_date
from cachelayer.providers.secrets.compat import SECRETS_PATH
from cachelayer.providers.ssm.compat import PARAMETERS_PATH, parameter_document, split_parameter_arn
from cachelayer.server.operations import openapi_bytes
from cachelayer.testing.live import Live, live_server

# -- what code written for AWS's extension does (as AWS's documentation shows it) -------------


def aws_extension_get(port: int, path: str) -> Dict[str, Any]:
    """Read through AWS's extension the way its documentation's Python example does."""
    url = f"http://localhost:{port}{path}"
    headers = {"X-Aws-Parameters-Secrets-Token": os.environ.get("AWS_SESSION_TOKEN", "")}
    req = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(req, timeout=15) as response:
        return json.loads(response.read())


def _from_wire(value: Any) -> Any:
    if isinstance(value, str) and value.endswith("Z") and "T" in value:
        try:
            return datetime.datetime.fromisoformat(value[:-1] + "+00:00")
        except ValueError:
            return value
    return value


def normalised_extension(document: Mapping[str, Any]) -> Dict[str, Any]:
    """The extension's JSON with nulls dropped (boto3 omits absent fields) and dates parsed."""
    out: Dict[str, Any] = {}
    for key, value in document.items():
        if value is None or key == "ResultMetadata":
            continue
        if isinstance(value, dict):
            out[key] = normalised_extension(value)
        elif key == "SecretBinary":
            out[key] = base64.b64decode(value)
        else:
            out[key] = _from_wire(value)
    return out


def normalised_boto3(response: Mapping[str, Any]) -> Dict[str, Any]:
    """boto3's parsed answer without ResponseMetadata, dates in UTC."""
    out: Dict[str, Any] = {}
    for key, value in response.items():
        if key == "ResponseMetadata":
            continue
        if isinstance(value, dict):
            out[key] = normalised_boto3(value)
        elif isinstance(value, datetime.datetime):
            out[key] = value.astimezone(datetime.timezone.utc)
        else:
            out[key] = value
    return out


def q(path: str, **params: str) -> str:
    return f"{path}?{urllib.parse.urlencode(params)}"


P = PARAMETERS_PATH
S = SECRETS_PATH


@pytest.fixture()
def live(aws: str, tmp_path: Path) -> Iterator[Live]:
    """A live cachelayer backed by a fresh moto, with the process environment's token."""
    with live_server(aws, tmp_path) as running:
        yield running


@pytest.fixture()
def ssm(aws: str) -> Any:
    return boto3.client("ssm")


@pytest.fixture()
def sm(aws: str) -> Any:
    return boto3.client("secretsmanager")


# -- pure parts ---------------------------------------------------------------------------------


class TestRendering:
    def test_dates_are_rfc3339_utc_like_aws_extension(self) -> None:
        """Dates render as Go's time.Time does in AWS's extension: UTC, 'Z', trimmed fraction."""
        tz = datetime.timezone(datetime.timedelta(hours=2))
        when = datetime.datetime(2022, 11, 16, 10, 22, 40, 362000, tzinfo=tz)
        assert render_date(when) == "2022-11-16T08:22:40.362Z"
        assert render_date(when.replace(microsecond=0)) == "2022-11-16T08:22:40Z"
        assert render_date(1668586960.5) == "2022-11-16T08:22:40.5Z"
        assert render_date(None) is None

    def test_parameter_arns_split_into_region_account_and_name(self) -> None:
        """An SSM parameter ARN gives back the name with its leading slash restored."""
        split = split_parameter_arn
        assert split("arn:aws:ssm:eu-west-1:123456789012:parameter/app/db") == (
            "eu-west-1",
            "123456789012",
            "/app/db",
        )
        assert split("arn:aws:ssm:eu-west-1:123456789012:parameter/plain") == (
            "eu-west-1",
            "123456789012",
            "plain",
        )
        assert split("plain") is None
        assert split("arn:aws:secretsmanager:eu-west-1:1:secret:x") is None

    def test_absent_parameter_fields_are_null(self) -> None:
        """Every field of the Parameter shape is present, absent ones null, as AWS's extension sends."""
        doc = parameter_document({"Name": "n", "Value": "v", "Type": "String", "Version": 1})
        assert list(doc) == [
            "ARN",
            "DataType",
            "LastModifiedDate",
            "Name",
            "Selector",
            "SourceResult",
            "Type",
            "Value",
            "Version",
        ]
        assert doc["Selector"] is None and doc["Value"] == "v"

    def test_openapi_bytes_are_the_package_document(self) -> None:
        """openapi_bytes() is the packaged openapi.json, parsed as an OpenAPI 3.1 document."""
        assert json.loads(openapi_bytes())["openapi"].startswith("3.1")


# -- over HTTP --------------------------------------------------------------------------------


class TestParameterDropIn:
    def test_string_parameter_matches_boto3_field_by_field(self, live: Live, ssm: Any) -> None:
        """Code written for AWS's extension gets GetParameter's JSON, equal to boto3's from moto."""
        ssm.put_parameter(Name="/app/url", Value="https://example.test", Type="String")
        got = aws_extension_get(live.port, q(P, name="/app/url"))
        assert set(got) == {"Parameter", "ResultMetadata"} and got["ResultMetadata"] == {}
        assert normalised_extension(got) == normalised_boto3(ssm.get_parameter(Name="/app/url"))
        assert isinstance(got["Parameter"]["LastModifiedDate"], str)
        assert got["Parameter"]["Version"] == 1

    def test_securestring_is_encrypted_unless_asked_as_in_getparameter(
        self, live: Live, ssm: Any
    ) -> None:
        """withDecryption defaults to false like GetParameter; each flag is its own cache variant."""
        ssm.put_parameter(Name="/app/pw", Value="hunter2", Type="SecureString")
        enc = aws_extension_get(live.port, q(P, name="/app/pw"))
        dec = aws_extension_get(live.port, q(P, name="/app/pw", withDecryption="true"))
        assert normalised_extension(enc) == normalised_boto3(
            ssm.get_parameter(Name="/app/pw", WithDecryption=False)
        )
        assert normalised_extension(dec) == normalised_boto3(
            ssm.get_parameter(Name="/app/pw", WithDecryption=True)
        )
        assert dec["Parameter"]["Value"] == "hunter2" != enc["Parameter"]["Value"]
        status, headers, _ = live.request(q(P, name="/app/pw", withDecryption="false"))
        assert (status, headers["X-Cache"]) == (200, "hit")

    def test_version_label_and_name_selectors(self, live: Live, ssm: Any) -> None:
        """version=, label= and name:selector read the versions GetParameter reads."""
        ssm.put_parameter(Name="/app/v", Value="one", Type="String")
        ssm.put_parameter(Name="/app/v", Value="two", Type="String", Overwrite=True)
        ssm.label_parameter_version(Name="/app/v", ParameterVersion=1, Labels=["old"])
        for path, selector in (
            (q(P, name="/app/v", version="1"), "/app/v:1"),
            (q(P, name="/app/v", label="old"), "/app/v:old"),
            (q(P, name="/app/v:2"), "/app/v:2"),
        ):
            got = aws_extension_get(live.port, path)
            assert normalised_extension(got) == normalised_boto3(
                ssm.get_parameter(Name=selector)
            ), path
        assert aws_extension_get(live.port, q(P, name="/app/v"))["Parameter"]["Value"] == "two"

    def test_url_encoded_and_raw_names_share_one_entry(self, live: Live, ssm: Any) -> None:
        """%2F-encoded and raw slashes name the same parameter and the same cache entry."""
        ssm.put_parameter(Name="/a/b/c", Value="x", Type="String")
        first = live.request(f"{P}?name=%2Fa%2Fb%2Fc")
        second = live.request(f"{P}?name=/a/b/c")
        assert first[0] == second[0] == 200
        assert (first[1]["X-Cache"], second[1]["X-Cache"]) == ("miss", "hit")
        assert json.loads(first[2]) == json.loads(second[2])
        assert second[1]["Content-Type"].startswith("application/json")
        assert int(second[1]["Age"]) >= 0 and second[1]["Cache-Control"].startswith("max-age=")

    def test_parameter_arn_is_accepted_as_name(self, live: Live, ssm: Any) -> None:
        """A parameter ARN reads the parameter, sharing the entry of its plain name."""
        ssm.put_parameter(Name="/app/arn", Value="by-arn", Type="String")
        arn = ssm.get_parameter(Name="/app/arn")["Parameter"]["ARN"]
        by_name = live.request(q(P, name="/app/arn"))
        by_arn = live.request(q(P, name=arn))
        assert by_arn[0] == 200 and by_arn[1]["X-Cache"] == "hit"
        assert json.loads(by_arn[2]) == json.loads(by_name[2])
        assert json.loads(by_arn[2])["Parameter"]["Value"] == "by-arn"

    def test_reads_share_the_cache_with_the_native_route(self, live: Live, ssm: Any) -> None:
        """A value read on /parameters is a hit on the compat route (same key and variant)."""
        ssm.put_parameter(Name="shared", Value="s", Type="SecureString")
        assert live.request("/parameters?name=shared")[1]["X-Cache"] == "miss"
        status, headers, body = live.request(q(P, name="shared", withDecryption="true"))
        assert (status, headers["X-Cache"], json.loads(body)["Parameter"]["Value"]) == (
            200,
            "hit",
            "s",
        )

    def test_secrets_manager_reference_through_ssm(self, live: Live, ssm: Any, sm: Any) -> None:
        """/aws/reference/secretsmanager/ names answer like GetParameter does for them."""
        sm.create_secret(Name="ref_secret", SecretString="behind-ssm")
        name = "/aws/reference/secretsmanager/ref_secret"
        got = aws_extension_get(live.port, q(P, name=name, withDecryption="true"))
        assert got["Parameter"]["Value"] == "behind-ssm"
        assert normalised_extension(got) == normalised_boto3(
            ssm.get_parameter(Name=name, WithDecryption=True)
        )

    def test_missing_parameter_is_404_json(self, live: Live) -> None:
        """A parameter that does not exist is a 404 with a JSON error, never a 200."""
        status, headers, body = live.request(q(P, name="/does/not/exist"))
        assert status == 404 and headers["Content-Type"].startswith("application/json")
        assert json.loads(body)["error"] == "NotFound"

    @pytest.mark.parametrize(
        "query",
        [
            "",
            "?name=",
            "?name=x&version=1&label=a",
            "?name=x&bogus=1",
            "?name=x&withDecryption=maybe",
            "?name=x%3A1&version=1",
        ],
    )
    def test_bad_requests_are_400(self, live: Live, query: str) -> None:
        """Missing/empty name, unknown or conflicting parameters are 400 with a message."""
        status, _, body = live.request(P + query)
        doc = json.loads(body)
        assert status == 400 and doc["error"] == "BadRequest" and doc["message"]


class TestSecretDropIn:
    def test_string_secret_matches_boto3_field_by_field(self, live: Live, sm: Any) -> None:
        """GetSecretValue's JSON through the extension equals boto3's from moto."""
        sm.create_secret(Name="db/creds", SecretString='{"user":"u","password":"p"}')
        got = aws_extension_get(live.port, q(S, secretId="db/creds"))
        assert got["ResultMetadata"] == {} and got["SecretBinary"] is None
        assert normalised_extension(got) == normalised_boto3(
            sm.get_secret_value(SecretId="db/creds")
        )

    def test_binary_secret_is_base64(self, live: Live, sm: Any) -> None:
        """SecretBinary comes back base64-encoded, SecretString null."""
        sm.create_secret(Name="blob", SecretBinary=b"\x00\xffbinary\n")
        got = aws_extension_get(live.port, q(S, secretId="blob"))
        assert got["SecretString"] is None
        assert base64.b64decode(got["SecretBinary"]) == b"\x00\xffbinary\n"
        assert normalised_extension(got) == normalised_boto3(sm.get_secret_value(SecretId="blob"))

    def test_version_stage_and_version_id(self, live: Live, sm: Any) -> None:
        """versionStage and versionId read the versions GetSecretValue reads."""
        sm.create_secret(Name="rot", SecretString="v1")
        sm.put_secret_value(SecretId="rot", SecretString="v2")
        previous = sm.get_secret_value(SecretId="rot", VersionStage="AWSPREVIOUS")
        got = aws_extension_get(live.port, q(S, secretId="rot", versionStage="AWSPREVIOUS"))
        assert normalised_extension(got) == normalised_boto3(previous)
        got = aws_extension_get(live.port, q(S, secretId="rot", versionId=previous["VersionId"]))
        assert got["SecretString"] == "v1"
        assert aws_extension_get(live.port, q(S, secretId="rot"))["SecretString"] == "v2"

    def test_secret_arn_is_accepted(self, live: Live, sm: Any) -> None:
        """A secret's ARN works as secretId."""
        arn = sm.create_secret(Name="by-arn", SecretString="a")["ARN"]
        got = aws_extension_get(live.port, q(S, secretId=arn))
        assert got["SecretString"] == "a" and got["ARN"] == arn

    def test_missing_secret_is_404_and_missing_id_400(self, live: Live) -> None:
        """An unknown secret is 404; a request without secretId is 400."""
        assert live.request(q(S, secretId="nope"))[0] == 404
        status, _, body = live.request(S)
        assert status == 400 and "secretId" in json.loads(body)["message"]


class TestAuthOnCompatRoutes:
    def test_token_is_required(self, live: Live, ssm: Any) -> None:
        """Without the token header the compat routes answer 401; with a wrong one 403."""
        ssm.put_parameter(Name="guarded", Value="g", Type="String")
        assert live.request(q(P, name="guarded"), token=None)[0] == 401
        assert live.request(q(P, name="guarded"), token="wrong")[0] == 403


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class TestAwsPort:
    @pytest.mark.parametrize(
        "variable", ["CACHE_EXTENSION_PORT", "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT"]
    )
    def test_listens_on_awss_port_when_told(
        self, aws: str, tmp_path: Path, ssm: Any, variable: str
    ) -> None:
        """Setting the port to AWS's 2773 makes existing code using that port work unchanged."""
        if not _port_free(2773):
            pytest.skip("port 2773 is busy on this machine")
        ssm.put_parameter(Name="on2773", Value="yes", Type="String")
        with live_server(aws, tmp_path, extra_env={variable: "2773"}, port=None) as running:
            assert running.port == 2773
            assert aws_extension_get(2773, q(P, name="on2773"))["Parameter"]["Value"] == "yes"
