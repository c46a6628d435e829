"""cachelayer.aws: botocore error classification and the shared, thread-safe client factory."""

from __future__ import annotations

import subprocess
import sys
import threading
from typing import Any, Dict, List, Tuple

import boto3
import pytest
from botocore import exceptions as bce

from cachelayer import (
    BadRequestError,
    NotFoundError,
    ThrottlingError,
    TransientError,
    UpstreamError,
    UpstreamTimeoutError,
)
from cachelayer.aws import (
    THROTTLING_CODES,
    ClientFactory,
    classify,
    default_region,
    translate_errors,
)
from cachelayer.testing.moto import free_port
from cachelayer.testing.proxy import Fault, UpstreamProxy


def client_error(code: str, message: str = "AWS says no", status: int = 400) -> bce.ClientError:
    """A ClientError shaped exactly as botocore raises it."""
    return bce.ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        "GetParameter",
    )


class TestClassify:
    def test_not_found_codes_are_not_found(self) -> None:
        """Codes listed as not_found become NotFoundError; others with that code do not."""
        exc = client_error("ParameterNotFound")
        assert type(classify(exc, not_found=("ParameterNotFound",))) is NotFoundError
        assert type(classify(exc)) is UpstreamError

    @pytest.mark.parametrize("code", sorted(THROTTLING_CODES))
    def test_throttling_codes_are_transient(self, code: str) -> None:
        """Every throttling code is a ThrottlingError, a TransientError counted as a throttle."""
        error = classify(client_error(code))
        assert type(error) is ThrottlingError and isinstance(error, TransientError)

    @pytest.mark.parametrize(
        ("code", "status"),
        [
            ("InternalServerError", 500),
            ("ServiceUnavailable", 503),
            ("Whatever", 502),
            ("InternalFailure", 400),
        ],
    )
    def test_server_side_failures_are_transient(self, code: str, status: int) -> None:
        """5xx answers and the service-failure codes are TransientError."""
        assert type(classify(client_error(code, status=status))) is TransientError

    @pytest.mark.parametrize(
        "code", ["AccessDeniedException", "ValidationException", "KMS.AccessDenied"]
    )
    def test_other_client_errors_are_plain_upstream_errors(self, code: str) -> None:
        """Refusals that retrying will not fix are UpstreamError, not transient."""
        assert type(classify(client_error(code))) is UpstreamError

    @pytest.mark.parametrize(
        ("exc", "kind"),
        [
            (bce.ReadTimeoutError(endpoint_url="http://x"), UpstreamTimeoutError),
            (bce.ConnectTimeoutError(endpoint_url="http://x"), UpstreamTimeoutError),
            (bce.EndpointConnectionError(endpoint_url="http://x"), TransientError),
            (bce.ConnectionClosedError(endpoint_url="http://x"), TransientError),
            (bce.NoCredentialsError(), UpstreamError),
            (bce.NoRegionError(), UpstreamError),
            (bce.ParamValidationError(report="Invalid length for parameter Name"), BadRequestError),
        ],
    )
    def test_botocore_exceptions(self, exc: Exception, kind: type) -> None:
        """Timeouts, connection failures, credentials and validation map to their kinds."""
        assert type(classify(exc)) is kind

    def test_message_names_service_operation_code_and_aws_message(self) -> None:
        """The message says which call failed, with AWS's code and message."""
        error = classify(
            client_error("AccessDeniedException", "User is not authorized"),
            service="ssm",
            operation="GetParameter",
            what="parameter 'db'",
        )
        assert str(error) == (
            "ssm GetParameter for parameter 'db' failed: "
            "AccessDeniedException: User is not authorized"
        )

    def test_not_found_predicate(self) -> None:
        """not_found_if catches not-found cases that share a generic code."""
        exc = client_error("InvalidRequestException", "secret is marked for deletion")
        assert type(classify(exc, not_found_if=lambda c, m: "deletion" in m)) is NotFoundError
        assert type(classify(exc)) is UpstreamError


class TestTranslateErrors:
    def test_raises_the_classified_error_chained(self) -> None:
        """The original exception is kept as __cause__."""
        original = client_error("ThrottlingException")
        with pytest.raises(TransientError) as info, translate_errors(service="ssm"):
            raise original
        assert info.value.__cause__ is original

    def test_cachelayer_errors_pass_through(self) -> None:
        """A CachelayerError raised inside the block is not rewrapped."""
        original = NotFoundError("already classified")
        with pytest.raises(NotFoundError) as info, translate_errors():
            raise original
        assert info.value is original

    def test_connection_refused_is_transient(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A real call to a port nobody listens on becomes a TransientError."""
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
        client = ClientFactory(default_region="us-west-2", max_attempts=1)("ssm")
        with (
            pytest.raises(TransientError) as info,
            translate_errors(service="ssm", operation="GetParameter"),
        ):
            client.get_parameter(Name="x")
        assert isinstance(info.value.__cause__, bce.EndpointConnectionError)


class _CountingSession:
    """A real boto3 Session that counts client creations (to observe the factory's lock)."""

    def __init__(self) -> None:
        self.inner = boto3.session.Session()
        self.created: List[Tuple[str, Any]] = []

    def client(self, service: str, **kw: Any) -> Any:
        self.created.append((service, kw.get("region_name")))
        return self.inner.client(service, **kw)


class TestClientFactory:
    def test_one_client_per_service_and_region(self, aws: str) -> None:
        """The same (service, region) gives the same client; None means the default region."""
        factory = ClientFactory(default_region="us-west-2")
        assert factory("ssm") is factory("ssm", "us-west-2")
        assert factory("ssm", "eu-west-1") is not factory("ssm")
        assert factory("ssm", "eu-west-1").meta.region_name == "eu-west-1"
        assert factory("dynamodb").meta.region_name == "us-west-2"

    def test_concurrent_first_calls_create_one_client(self, aws: str) -> None:
        """Many threads asking at once share one client, created once."""
        session = _CountingSession()
        factory = ClientFactory(default_region="us-west-2", session=session)
        barrier = threading.Barrier(16)
        got: List[Any] = []

        def ask() -> None:
            barrier.wait()
            got.append(factory("secretsmanager"))

        threads = [threading.Thread(target=ask) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len({id(c) for c in got}) == 1
        assert session.created == [("secretsmanager", "us-west-2")]

    def test_clients_carry_timeouts_retries_and_pool(self, aws: str) -> None:
        """Clients use 2 s connect, 5 s read, standard retries with 2 attempts, 32 connections."""
        config = ClientFactory(default_region="us-west-2")("ssm").meta.config
        assert (config.connect_timeout, config.read_timeout) == (2.0, 5.0)
        assert config.retries == {"total_max_attempts": 2, "mode": "standard"}
        assert config.max_pool_connections == 32
        assert config.tcp_keepalive is True

    def test_default_region_prefers_aws_region(self) -> None:
        """AWS_REGION wins over AWS_DEFAULT_REGION; neither gives None."""
        env: Dict[str, str] = {"AWS_REGION": "eu-north-1", "AWS_DEFAULT_REGION": "us-east-1"}
        assert default_region(env) == "eu-north-1"
        assert default_region({"AWS_DEFAULT_REGION": "us-east-1"}) == "us-east-1"
        assert default_region({}) is None
        assert ClientFactory.from_environment(env).default_region == "eu-north-1"

    def test_service_specific_endpoint_is_honoured(
        self, aws: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """AWS_ENDPOINT_URL_SSM sends SSM calls elsewhere while others use AWS_ENDPOINT_URL."""
        with UpstreamProxy(aws) as proxy:
            monkeypatch.setenv("AWS_ENDPOINT_URL_SSM", proxy.url)
            factory = ClientFactory(default_region="us-west-2")
            factory("ssm").describe_parameters()
            factory("dynamodb").list_tables()
            assert proxy.calls == {("ssm", "DescribeParameters"): 1}

    def test_endpoints_from_a_given_environment(self, aws: str) -> None:
        """from_environment(environ) applies that mapping's endpoint URLs, not only os.environ's."""
        with UpstreamProxy(aws) as proxy:
            env = {
                "AWS_REGION": "us-west-2",
                "AWS_ENDPOINT_URL": aws,
                "AWS_ENDPOINT_URL_SECRETS_MANAGER": proxy.url,
            }
            factory = ClientFactory.from_environment(env)
            factory("secretsmanager").list_secrets()
            factory("ssm").describe_parameters()
            assert proxy.calls == {("secretsmanager", "ListSecrets"): 1}
            assert factory("ssm").meta.endpoint_url == aws

    def test_on_call_sees_each_api_call_once(
        self, aws: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """on_call gets (service, operation) once per API call, retries included in that one."""
        calls: List[Tuple[str, str]] = []
        with UpstreamProxy(aws) as proxy:
            monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
            factory = ClientFactory(
                default_region="us-west-2", on_call=lambda s, o: calls.append((s, o))
            )
            proxy.inject(Fault.server_error(), operation="ListTables", times=1)
            factory("dynamodb").list_tables()
            factory("ssm").describe_parameters()
            assert proxy.count("ListTables") == 2  # the wire saw the retry
        assert calls == [("dynamodb", "ListTables"), ("ssm", "DescribeParameters")]

    def test_importing_aws_helpers_does_not_load_botocore(self) -> None:
        """cachelayer.aws can be imported before Lambda registration: botocore stays unloaded."""
        code = (
            "import sys, cachelayer.aws\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore')]\n"
            "assert not bad, bad\n"
        )
        subprocess.run([sys.executable, "-c", code], check=True)
