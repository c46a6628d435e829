"""The lean JSON-protocol transport, proven against botocore (a test-only oracle) and AWS's vectors."""

from __future__ import annotations

import contextlib
import datetime
import http.server
import itertools
import json
import ssl
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple
from unittest import mock

import pytest

from cachelayer import (
    CachelayerError,
    NotFoundError,
    ThrottlingError,
    TransientError,
    UpstreamError,
    UpstreamTimeoutError,
)
from cachelayer.awsjson import (
    DYNAMODB,
    SECRETS_MANAGER,
    SSM,
    ContainerCredentials,
    Credentials,
    JsonClientFactory,
    JsonService,
    ServiceError,
    credentials_from_environment,
    endpoint_url,
    parse_error,
    partition_of,
    sign,
)
from cachelayer.awsjson.sigv4 import canonical_query
from cachelayer.testing.moto import aws_environment
from cachelayer.testing.proxy import Fault, UpstreamProxy
from cachelayer.testing.tls import make_test_ca

VECTORS = json.loads(
    (Path(__file__).parent / "data" / "sigv4" / "aws_sigv4_test_suite.json").read_text("utf-8")
)
FIXED = datetime.datetime(2026, 3, 14, 15, 9, 26, tzinfo=datetime.timezone.utc)


def botocore_authorization(
    method: str,
    url: str,
    headers: Dict[str, str],
    body: bytes,
    *,
    key: str,
    secret: str,
    token: Optional[str],
    region: str,
    service: str,
    now: datetime.datetime,
) -> Dict[str, str]:
    """The headers botocore's SigV4Auth produces for the same request at the same time."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials as BotoCredentials

    request = AWSRequest(method=method, url=url, data=body, headers=dict(headers))
    naive = now.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    with mock.patch("botocore.auth.get_current_datetime", return_value=naive):
        SigV4Auth(BotoCredentials(key, secret, token), service, region).add_auth(request)
    return {k: v for k, v in request.headers.items()}


class TestPublishedVectors:
    @pytest.mark.parametrize("case", VECTORS["cases"], ids=[c["name"] for c in VECTORS["cases"]])
    def test_vector_signs_to_its_published_authorization(self, case: Dict[str, Any]) -> None:
        """Each vendored aws-sig-v4-test-suite request signs to the Authorization AWS publishes."""
        import urllib.parse

        query = urllib.parse.urlencode(case["query"], quote_via=urllib.parse.quote, safe="-_.~")
        url = f"https://{VECTORS['host']}{case['path']}" + (f"?{query}" if query else "")
        when = datetime.datetime.fromisoformat(VECTORS["date"].replace("Z", "+00:00"))
        headers = {"Host": VECTORS["host"], **case["headers"]}
        signed = sign(
            case["method"],
            url,
            headers,
            case["body"].encode(),
            access_key=VECTORS["access_key"],
            secret_key=VECTORS["secret_key"],
            region=VECTORS["region"],
            service=VECTORS["service"],
            now=when,
        )
        assert signed["Authorization"] == case["authorization"]
        assert signed["X-Amz-Date"] == "20150830T123600Z"


def _corpus() -> List[Tuple[str, JsonService, str, str, Dict[str, Any], Optional[str]]]:
    """Requests the providers make, with the awkward inputs: slashes, unicode, ARNs, tokens,
    empty and large bodies; endpoints with and without ports."""
    arn = "arn:aws:secretsmanager:us-west-2:123456789012:secret:prod/db/password-AbCdEf"
    token = "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQ+token/with+plus=="
    big = {"Names": [f"/app/very/long/name/{i}/" + "x" * 900 for i in range(10)]}
    return [
        (
            "slashes",
            SSM,
            "us-west-2",
            "https://ssm.us-west-2.amazonaws.com",
            {"Name": "/a/b/c", "WithDecryption": True},
            None,
        ),
        (
            "unicode",
            SSM,
            "eu-west-1",
            "https://ssm.eu-west-1.amazonaws.com",
            {"Name": "/app/héllo/wörld/ключ/名前"},
            token,
        ),
        (
            "reference",
            SSM,
            "us-west-2",
            "https://ssm.us-west-2.amazonaws.com",
            {"Name": "/aws/reference/secretsmanager/secret_info"},
            token,
        ),
        (
            "arn",
            SECRETS_MANAGER,
            "us-west-2",
            "https://secretsmanager.us-west-2.amazonaws.com",
            {"SecretId": arn, "VersionStage": "AWSCURRENT"},
            token,
        ),
        (
            "batch-secrets",
            SECRETS_MANAGER,
            "cn-north-1",
            "https://secretsmanager.cn-north-1.amazonaws.com.cn",
            {"SecretIdList": ["a/b", arn, "ü"]},
            None,
        ),
        (
            "dynamodb-binary",
            DYNAMODB,
            "us-gov-west-1",
            "https://dynamodb.us-gov-west-1.amazonaws.com",
            {"TableName": "t", "Key": {"k": {"B": "AAEC/w=="}}},
            token,
        ),
        ("empty-body", SSM, "us-east-1", "https://ssm.us-east-1.amazonaws.com", {}, None),
        ("large-body", SSM, "us-east-1", "https://ssm.us-east-1.amazonaws.com", big, token),
        ("local-port", DYNAMODB, "us-west-2", "http://127.0.0.1:45123", {"TableName": "t"}, token),
        (
            "path-and-query",
            SSM,
            "us-west-2",
            "https://proxy.example.com:8443/prefix/a%2Fb/?b=2&a=1",
            {"Name": "x"},
            None,
        ),
    ]


class TestMatchesBotocore:
    @pytest.mark.parametrize("case", _corpus(), ids=lambda c: c[0])
    def test_signature_equals_botocores(self, case: Tuple[Any, ...]) -> None:
        """For the same request, credentials and time, the signed headers equal botocore's."""
        _, service, region, url, params, token = case
        body = b"" if not params else json.dumps(params, ensure_ascii=False).encode("utf-8")
        headers = {
            "Content-Type": f"application/x-amz-json-{service.json_version}",
            "X-Amz-Target": f"{service.target_prefix}.Operation",
            "User-Agent": "cachelayer/test",
            "Content-Length": str(len(body)),
        }
        kwargs = dict(region=region, service=service.signing, now=FIXED)
        ours = sign(
            "POST",
            url,
            headers,
            body,
            access_key="AKIDEXAMPLE",
            secret_key="s3cr3t/+key",
            session_token=token,
            **kwargs,  # type: ignore[arg-type]
        )
        theirs = botocore_authorization(
            "POST",
            url,
            headers,
            body,
            key="AKIDEXAMPLE",
            secret="s3cr3t/+key",
            token=token,
            **kwargs,  # type: ignore[arg-type]
        )
        assert ours["Authorization"] == theirs["Authorization"]
        assert ours["X-Amz-Date"] == theirs["X-Amz-Date"]
        assert ours.get("X-Amz-Security-Token") == theirs.get("X-Amz-Security-Token")

    def test_a_different_time_or_body_changes_the_signature(self) -> None:
        """The signature covers the time and the body (a comparison that could not fail would
        prove nothing)."""
        args: Dict[str, Any] = dict(
            access_key="a", secret_key="b", region="us-east-1", service="ssm"
        )
        one = sign("POST", "https://h/", {}, b"{}", now=FIXED, **args)["Authorization"]
        later = sign(
            "POST", "https://h/", {}, b"{}", now=FIXED + datetime.timedelta(seconds=1), **args
        )
        other = sign("POST", "https://h/", {}, b"{ }", now=FIXED, **args)["Authorization"]
        assert len({one, later["Authorization"], other}) == 3

    def test_canonical_query_sorts_and_reencodes(self) -> None:
        """Query pairs sort by encoded key then value, and reserved characters are encoded."""
        assert canonical_query("b=2&a=1&a=0") == "a=0&a=1&b=2"
        assert canonical_query("q=a+b&x=%7e") == "q=a%2Bb&x=~"


REGIONS = [
    "us-east-1",
    "us-west-2",
    "eu-west-1",
    "ca-central-1",
    "mx-central-1",
    "cn-north-1",
    "cn-northwest-1",
    "us-gov-west-1",
    "us-gov-east-1",
    "eusc-de-east-1",
    "us-iso-east-1",
    "us-isob-east-1",
    "eu-isoe-west-1",
    "us-isof-south-1",
]


class TestEndpoints:
    @pytest.mark.parametrize("service", [SSM, SECRETS_MANAGER, DYNAMODB], ids=lambda s: s.name)
    def test_every_region_and_variant_resolves_as_botocore_does(self, service: JsonService) -> None:
        """Standard, FIPS, dual-stack and FIPS dual-stack endpoints equal botocore's in every
        partition (the isolated partitions' dual-stack variants are refused, not guessed)."""
        import botocore.session
        from botocore.config import Config

        session = botocore.session.get_session()
        for region, fips, dual in itertools.product(REGIONS, (False, True), (False, True)):
            ours: Optional[str]
            try:
                ours = endpoint_url(
                    service.prefix, service.service_id, region, {}, fips=fips, dual_stack=dual
                )
            except UpstreamError:
                ours = None
            if ours is None:
                assert dual and partition_of(region).name.startswith("aws-iso"), (
                    region,
                    fips,
                    dual,
                )
                continue
            client = session.create_client(
                service.name,
                region_name=region,
                aws_access_key_id="a",
                aws_secret_access_key="b",
                config=Config(use_fips_endpoint=fips, use_dualstack_endpoint=dual),
            )
            assert ours == client.meta.endpoint_url, (region, fips, dual)

    def test_environment_flags_select_the_variant(self) -> None:
        """AWS_USE_FIPS_ENDPOINT and AWS_USE_DUALSTACK_ENDPOINT are read from the environment."""
        env = {"AWS_USE_FIPS_ENDPOINT": "true", "AWS_USE_DUALSTACK_ENDPOINT": "true"}
        assert endpoint_url("ssm", "SSM", "us-east-1", env) == "https://ssm-fips.us-east-1.api.aws"

    def test_service_specific_override_beats_the_global_one(self) -> None:
        """AWS_ENDPOINT_URL_<SERVICE_ID> wins over AWS_ENDPOINT_URL, which wins over the
        partition; AWS_IGNORE_CONFIGURED_ENDPOINT_URLS turns both off."""
        env = {
            "AWS_ENDPOINT_URL": "http://127.0.0.1:1/",
            "AWS_ENDPOINT_URL_SECRETS_MANAGER": "http://127.0.0.1:2",
        }
        assert (
            endpoint_url("secretsmanager", "Secrets Manager", "us-west-2", env)
            == "http://127.0.0.1:2"
        )
        assert endpoint_url("ssm", "SSM", "us-west-2", env) == "http://127.0.0.1:1"
        env["AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"] = "true"
        assert endpoint_url("ssm", "SSM", "us-west-2", env) == "https://ssm.us-west-2.amazonaws.com"

    def test_invalid_region_is_a_clear_error(self) -> None:
        """A region that cannot be a host name is refused with a message saying what to set."""
        with pytest.raises(UpstreamError, match="not a valid AWS region"):
            endpoint_url("ssm", "SSM", "us west 2", {})


ERROR_CASES = [
    (400, {}, b'{"__type":"ParameterNotFound","message":"gone"}'),
    (
        400,
        {},
        b'{"__type":"com.amazonaws.dynamodb.v20120810#ResourceNotFoundException","message":"Requested resource not found"}',
    ),
    (
        400,
        {},
        b'{"__type":"ThrottlingException:http://internal.amazon.com/","Message":"Rate exceeded"}',
    ),
    (
        400,
        {"x-amzn-query-error": "AWS.SimpleQueueService.NonExistentQueue;Sender"},
        b'{"__type":"QueueDoesNotExist","message":"q"}',
    ),
    (403, {}, b'{"message":"The security token included in the request is invalid."}'),
    (500, {}, b""),
    (503, {}, b"<html><body><b>Http/1.1 Service Unavailable</b></body></html>"),
    (502, {}, b"Bad gateway from a proxy"),
    (400, {}, b"not json at all"),
    (500, {}, b'{"__type":"InternalServerError"}'),
]


class TestErrors:
    @pytest.mark.parametrize("status,headers,body", ERROR_CASES)
    def test_error_code_and_message_as_botocore_parses_them(
        self, status: int, headers: Dict[str, str], body: bytes
    ) -> None:
        """The (code, message) read from an error answer equal botocore's JSON parser's."""
        from botocore.parsers import create_parser

        parsed = create_parser("json").parse(
            {"status_code": status, "headers": headers, "body": body}, None
        )
        assert parse_error(status, headers, body) == (
            parsed["Error"]["Code"],
            parsed["Error"]["Message"],
        )

    @pytest.mark.parametrize(
        "fault,expected",
        [
            (Fault.aws_error("ParameterNotFound"), NotFoundError),
            (Fault.throttle(), ThrottlingError),
            (Fault.server_error(503, "ServiceUnavailable"), TransientError),
            (Fault.aws_error("AccessDeniedException", 400), UpstreamError),
            (Fault.reset(), TransientError),
        ],
        ids=["not-found", "throttled", "5xx", "access-denied", "reset"],
    )
    def test_classified_as_with_boto3(
        self, proxy: UpstreamProxy, fault: Fault, expected: type
    ) -> None:
        """Each failure becomes the cachelayer error boto3 plus cachelayer.aws.classify gives."""
        from cachelayer.aws import ClientFactory, translate_errors

        factory = JsonClientFactory.from_environment(max_attempts=1)
        proxy.inject(fault)
        with pytest.raises(CachelayerError) as ours:
            factory("ssm").call("GetParameter", {"Name": "x"}, not_found=("ParameterNotFound",))
        boto = ClientFactory.from_environment(max_attempts=1)("ssm")
        with pytest.raises(CachelayerError) as theirs, translate_errors(("ParameterNotFound",)):
            boto.get_parameter(Name="x")
        assert type(ours.value) is type(theirs.value) is expected
        if isinstance(ours.value.__cause__, ServiceError):
            assert ours.value.__cause__.code == fault.code


class _Recorder:
    def __init__(self) -> None:
        self.sleeps: List[float] = []

    def __call__(self, seconds: float) -> None:
        self.sleeps.append(seconds)


class TestRetries:
    def test_throttling_is_retried_with_jittered_backoff(
        self, proxy: UpstreamProxy, ssm_param: str
    ) -> None:
        """A throttled call is retried (standard mode) after a pause below botocore's cap."""
        sleeps = _Recorder()
        factory = JsonClientFactory.from_environment(max_attempts=3, sleep=sleeps)
        proxy.inject(Fault.throttle(), operation="GetParameter", times=2)
        answer = factory("ssm").call("GetParameter", {"Name": ssm_param})
        assert answer["Parameter"]["Value"] == "v"
        assert proxy.count("GetParameter") == 3
        assert len(sleeps.sleeps) == 2
        assert 0 <= sleeps.sleeps[0] <= 1.0 and 0 <= sleeps.sleeps[1] <= 2.0

    def test_not_found_and_access_denied_are_not_retried(self, proxy: UpstreamProxy) -> None:
        """Errors a retry cannot fix are raised after one attempt."""
        factory = JsonClientFactory.from_environment(max_attempts=3, sleep=_Recorder())
        with pytest.raises(NotFoundError):
            factory("ssm").call("GetParameter", {"Name": "ghost"}, not_found=("ParameterNotFound",))
        proxy.inject(Fault.aws_error("AccessDeniedException"))
        with pytest.raises(UpstreamError) as denied:
            factory("ssm").call("GetParameter", {"Name": "ghost"})
        assert not isinstance(denied.value, TransientError)
        assert proxy.count("GetParameter") == 2

    def test_retry_quota_stops_retrying_in_an_outage(self, proxy: UpstreamProxy) -> None:
        """Once the retry quota is spent, failures are raised without retrying."""
        sleeps = _Recorder()
        factory = JsonClientFactory.from_environment(max_attempts=2, sleep=sleeps)
        proxy.inject(Fault.server_error())
        for _ in range(105):  # 500 tokens at 5 per retry: 100 retries
            with pytest.raises(TransientError):
                factory("ssm").call("GetParameter", {"Name": "x"})
        assert len(sleeps.sleeps) == 100
        assert proxy.count("GetParameter") == 205


class TestConnections:
    def test_calls_reuse_one_keep_alive_connection(
        self, proxy: UpstreamProxy, ssm_param: str
    ) -> None:
        """Sequential calls through one factory open one TCP connection."""
        from cachelayer.awsjson import http as transport_http

        opened = []
        original = transport_http.ConnectionPool._connect

        def counting(self: Any, *args: Any) -> Any:
            opened.append(args)
            return original(self, *args)

        factory = JsonClientFactory.from_environment()
        with mock.patch.object(transport_http.ConnectionPool, "_connect", counting):
            for _ in range(5):
                factory("ssm").call("GetParameter", {"Name": ssm_param})
        assert len(opened) == 1

    def test_read_timeout_is_upstream_timeout(self, proxy: UpstreamProxy) -> None:
        """No answer within the read timeout is an UpstreamTimeoutError."""
        factory = JsonClientFactory.from_environment(max_attempts=1, read_timeout=0.3)
        proxy.inject(Fault.delay(1.0))
        started = time.monotonic()
        with pytest.raises(UpstreamTimeoutError, match="timed out"):
            factory("ssm").call("GetParameter", {"Name": "x"})
        assert time.monotonic() - started < 0.9

    def test_refused_connection_is_transient(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A closed port is a TransientError naming the host and port."""
        from cachelayer.testing.moto import free_port

        port = free_port()
        env = {**aws_environment(f"http://127.0.0.1:{port}")}
        factory = JsonClientFactory.from_environment(env, max_attempts=1)
        with pytest.raises(TransientError, match=f"127.0.0.1:{port}"):
            factory("ssm").call("GetParameter", {"Name": "x"})

    def test_truncated_answer_is_transient(self) -> None:
        """An answer cut short (fewer body bytes than its Content-Length) is a TransientError."""

        class Handler(_Quiet):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                self.send_response(200)
                self.send_header("Content-Length", "100")
                self.end_headers()
                self.wfile.write(b'{"Item":')
                self.wfile.flush()
                self.connection.close()

        with _serve(Handler) as url:
            factory = JsonClientFactory.from_environment(aws_environment(url), max_attempts=1)
            with pytest.raises(TransientError, match="IncompleteRead"):
                factory("dynamodb").call("GetItem", {"TableName": "t", "Key": {}})

    def test_dynamodb_crc32_mismatch_is_retried_then_transient(self, tmp_path: Path) -> None:
        """A DynamoDB answer whose x-amz-crc32 does not match its body is not trusted."""
        with _json_server({"x-amz-crc32": "1"}, b'{"Item":{}}') as url:
            env = aws_environment(url)
            factory = JsonClientFactory.from_environment(env, max_attempts=2, sleep=_Recorder())
            with pytest.raises(TransientError, match="CRC32"):
                factory("dynamodb").call("GetItem", {"TableName": "t", "Key": {}})


class TestTls:
    def test_untrusted_certificate_is_refused_then_trusted_with_a_ca_bundle(
        self, tmp_path: Path
    ) -> None:
        """TLS is verified: a server whose CA is not trusted is refused with a hint at
        AWS_CA_BUNDLE, and accepted once AWS_CA_BUNDLE names that CA."""
        ca = make_test_ca(tmp_path / "ca")
        with _json_server({}, b'{"ok": true}', tls=(ca.cert_file, ca.key_file)) as url:
            env = aws_environment(url)
            with pytest.raises(TransientError, match="AWS_CA_BUNDLE"):
                JsonClientFactory.from_environment(env, max_attempts=1)("ssm").call("X", {})
            env["AWS_CA_BUNDLE"] = str(ca.ca_file)
            assert JsonClientFactory.from_environment(env)("ssm").call("X", {}) == {"ok": True}


class TestCredentials:
    def test_environment_credentials_with_token(self) -> None:
        """AWS_ACCESS_KEY_ID/SECRET/SESSION_TOKEN make the credentials; half a pair is an error."""
        creds = credentials_from_environment(
            {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b", "AWS_SESSION_TOKEN": "t"}
        )
        assert creds == Credentials("a", "b", "t")
        assert "b" not in repr(creds).replace("expires_at", "")
        with pytest.raises(UpstreamError, match="AWS_SECRET_ACCESS_KEY is not set"):
            credentials_from_environment({"AWS_ACCESS_KEY_ID": "a"})

    def test_container_endpoint_with_authorization_token(self) -> None:
        """AWS_CONTAINER_CREDENTIALS_FULL_URI is read with AWS_CONTAINER_AUTHORIZATION_TOKEN
        as the Authorization header (what SnapStart functions get)."""
        seen: List[Optional[str]] = []
        with _credentials_server(seen, lambda n: _creds_doc(n, hours=6)) as url:
            source = ContainerCredentials.from_environment(
                {
                    "AWS_CONTAINER_CREDENTIALS_FULL_URI": url,
                    "AWS_CONTAINER_AUTHORIZATION_TOKEN": "tok",
                }
            )
            assert source is not None
            first = source.get()
            assert (first.access_key, first.token) == ("AKID1", "token-1")
            assert source.get() is first  # cached while far from expiry
        assert seen == ["tok"]

    def test_token_file_is_read_on_each_refresh(self, tmp_path: Path) -> None:
        """AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE is read when fetching (EKS rotates it)."""
        token_file = tmp_path / "token"
        token_file.write_text("from-file\n")
        seen: List[Optional[str]] = []
        with _credentials_server(seen, lambda n: _creds_doc(n, hours=6)) as url:
            source = ContainerCredentials.from_environment(
                {
                    "AWS_CONTAINER_CREDENTIALS_FULL_URI": url,
                    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": str(token_file),
                }
            )
            assert source is not None and source.get().access_key == "AKID1"
        assert seen == ["from-file"]

    def test_refreshed_before_expiry_and_kept_if_refresh_fails_early(self) -> None:
        """Within 15 minutes of expiry they are fetched again; if that fails with more than 10
        minutes left the current ones are kept; past that the failure is raised."""
        now = [time.time()]
        seen: List[Optional[str]] = []
        answers = {1: _creds_doc(1, minutes=20), 2: _creds_doc(2, minutes=60)}
        with _credentials_server(seen, lambda n: answers.get(n)) as url:
            source = ContainerCredentials(url, clock=lambda: now[0])
            assert source.get().access_key == "AKID1"
            now[0] += 6 * 60  # 14 minutes left: refresh
            assert source.get().access_key == "AKID2"
            now[0] += 40 * 60  # 14 minutes left on the second (issued at t0): refresh fails, kept
            assert source.get().access_key == "AKID2"
            now[0] += 8 * 60  # 6 minutes left: the failure is raised
            with pytest.raises(TransientError, match="HTTP 500"):
                source.get()
        assert len(seen) >= 3

    def test_relative_uri_and_plain_http_rules(self) -> None:
        """A relative URI targets 169.254.170.2; plain http to any other host is refused."""
        relative = ContainerCredentials.from_environment(
            {"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/credentials/abc"}
        )
        assert relative is not None and relative.url == "http://169.254.170.2/v2/credentials/abc"
        with pytest.raises(UpstreamError, match="plain http"):
            ContainerCredentials.from_environment(
                {"AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://example.com/creds"}
            )

    def test_transport_signs_with_container_credentials(
        self, proxy: UpstreamProxy, ssm_param: str
    ) -> None:
        """A factory without environment keys gets its credentials from the container endpoint
        and moto accepts the calls signed with them."""
        seen: List[Optional[str]] = []
        with _credentials_server(seen, lambda n: _creds_doc(n, hours=1)) as url:
            env = {
                "AWS_ENDPOINT_URL": proxy.url,
                "AWS_REGION": "us-west-2",
                "AWS_CONTAINER_CREDENTIALS_FULL_URI": url,
                "AWS_CONTAINER_AUTHORIZATION_TOKEN": "tok",
            }
            answer = JsonClientFactory.from_environment(env)("ssm").call(
                "GetParameter", {"Name": ssm_param}
            )
        assert answer["Parameter"]["Value"] == "v"
        assert seen == ["tok"]


# -- helpers ---------------------------------------------------------------------------------


@pytest.fixture()
def ssm_param(aws: str) -> str:
    import boto3

    boto3.client("ssm", region_name="us-west-2", endpoint_url=aws).put_parameter(
        Name="/t/p", Value="v", Type="String"
    )
    return "/t/p"


def _creds_doc(n: int, *, hours: float = 0, minutes: float = 0) -> Dict[str, str]:
    expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(
        hours=hours, minutes=minutes
    )
    return {
        "AccessKeyId": f"AKID{n}",
        "SecretAccessKey": "testing",
        "Token": f"token-{n}",
        "Expiration": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


class _Quiet(http.server.BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def _serve(handler: type, tls: Optional[Tuple[Path, Path]] = None) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    scheme = "http"
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(tls[0]), str(tls[1]))
        server.socket = context.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{scheme}://{'localhost' if tls else '127.0.0.1'}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _credentials_server(seen: List[Optional[str]], answer: Any) -> Any:
    calls = itertools.count(1)

    class Handler(_Quiet):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization"))
            doc = answer(next(calls))
            body = json.dumps(doc).encode() if doc else b"{}"
            self.send_response(200 if doc else 500)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return _serve(Handler)


def _json_server(
    headers: Dict[str, str], body: bytes, tls: Optional[Tuple[Path, Path]] = None
) -> Any:
    class Handler(_Quiet):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(200)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return _serve(Handler, tls)


class TestThirdPartyService:
    def test_a_described_json_service_works_against_moto(
        self, proxy: UpstreamProxy, aws: str
    ) -> None:
        """A provider author's JsonService (KMS here, as in the docs) is signed, sent and its
        errors classified like the built-in ones."""
        import boto3

        key = boto3.client("kms", region_name="us-west-2", endpoint_url=aws).create_key()
        kms = JsonService("kms", service_id="KMS", target_prefix="TrentService", json_version="1.1")
        client = JsonClientFactory.from_environment(max_attempts=1)(kms, None)
        answer = client.call("DescribeKey", {"KeyId": key["KeyMetadata"]["KeyId"]})
        assert answer["KeyMetadata"]["Arn"] == key["KeyMetadata"]["Arn"]
        with pytest.raises(NotFoundError):
            client.call("DescribeKey", {"KeyId": "alias/none"}, not_found=("NotFoundException",))
        assert proxy.count("DescribeKey", "kms") == 2
