"""The counting, fault-injecting proxy: counts reach it, faults reach boto3 as botocore errors."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from typing import Any

import pytest
from botocore import exceptions as bce

from cachelayer import TransientError, UpstreamError, UpstreamTimeoutError
from cachelayer.aws import ClientFactory, translate_errors
from cachelayer.testing.proxy import Fault, UpstreamProxy


@pytest.fixture()
def clients(proxy: UpstreamProxy) -> ClientFactory:
    """Clients through the proxy with a single attempt, so each fault surfaces."""
    return ClientFactory(default_region="us-west-2", max_attempts=1)


class TestCounting:
    def test_counts_json_and_query_protocol_calls(
        self, proxy: UpstreamProxy, clients: ClientFactory
    ) -> None:
        """Calls are counted per (service, operation) from X-Amz-Target or the Action field."""
        clients("ssm").describe_parameters()
        clients("ssm").describe_parameters()
        clients("dynamodb").list_tables()
        clients("sts").get_caller_identity()  # query protocol: Action=GetCallerIdentity
        assert proxy.calls == {
            ("ssm", "DescribeParameters"): 2,
            ("dynamodb", "ListTables"): 1,
            ("sts", "GetCallerIdentity"): 1,
        }
        assert proxy.count("DescribeParameters") == 2
        assert proxy.count(service="dynamodb") == 1
        assert proxy.count() == 4
        proxy.reset_counts()
        assert proxy.count() == 0

    def test_forwarded_answers_are_moto_s(
        self, proxy: UpstreamProxy, clients: ClientFactory
    ) -> None:
        """Values written and read through the proxy round-trip unchanged."""
        ssm = clients("ssm")
        ssm.put_parameter(Name="through", Value="the proxy ✓", Type="String")
        assert ssm.get_parameter(Name="through")["Parameter"]["Value"] == "the proxy ✓"

    def test_keep_alive_connection_serves_several_requests(self, proxy: UpstreamProxy) -> None:
        """One client connection carries several requests (HTTP/1.1 keep-alive)."""
        port = proxy.url.rsplit(":", 1)[1]
        conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=5)
        headers = {
            "X-Amz-Target": "DynamoDB_20120810.ListTables",
            "Content-Type": "application/x-amz-json-1.0",
            "Authorization": (
                "AWS4-HMAC-SHA256 Credential=x/20240101/us-west-2/dynamodb/aws4_request"
            ),
        }
        for _ in range(3):
            conn.request("POST", "/", body=b"{}", headers=headers)
            response = conn.getresponse()
            assert response.status == 200
            response.read()
        local = conn.sock.getsockname()
        conn.request("POST", "/", body=b"{}", headers=headers)
        conn.getresponse().read()
        assert conn.sock.getsockname() == local
        conn.close()
        assert proxy.calls == {("dynamodb", "ListTables"): 4}


class TestFaults:
    def test_throttle_is_a_throttling_client_error(
        self, proxy: UpstreamProxy, clients: ClientFactory
    ) -> None:
        """A throttle fault reaches boto3 as ThrottlingException (HTTP 400) and is transient."""
        proxy.inject(Fault.throttle(), operation="ListTables")
        with pytest.raises(bce.ClientError) as info:
            clients("dynamodb").list_tables()
        error = info.value.response
        assert error["Error"]["Code"] == "ThrottlingException"
        assert error["Error"]["Message"] == "Rate exceeded"
        assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert error["ResponseMetadata"]["HTTPHeaders"]["x-amzn-errortype"] == "ThrottlingException"
        with pytest.raises(TransientError), translate_errors():
            clients("dynamodb").list_tables()

    def test_query_protocol_throttle(self, proxy: UpstreamProxy, clients: ClientFactory) -> None:
        """For query-protocol services the fault is an XML error botocore parses the same way."""
        proxy.inject(Fault.throttle("Throttling"), service="sts")
        with pytest.raises(TransientError) as info, translate_errors(service="sts"):
            clients("sts").get_caller_identity()
        assert info.value.__cause__.response["Error"]["Code"] == "Throttling"  # type: ignore[union-attr]

    def test_server_error_is_a_500(self, proxy: UpstreamProxy, clients: ClientFactory) -> None:
        """A server-error fault reaches boto3 as HTTP 500 and is transient."""
        proxy.inject(Fault.server_error())
        with pytest.raises(bce.ClientError) as info:
            clients("ssm").describe_parameters()
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
        with pytest.raises(TransientError), translate_errors():
            clients("ssm").describe_parameters()

    def test_reset_is_a_closed_connection(
        self, proxy: UpstreamProxy, clients: ClientFactory
    ) -> None:
        """A reset fault reaches boto3 as ConnectionClosedError and is transient."""
        proxy.inject(Fault.reset())
        with pytest.raises(bce.ConnectionClosedError):
            clients("ssm").describe_parameters()
        with pytest.raises(TransientError), translate_errors():
            clients("ssm").describe_parameters()

    def test_delay_past_read_timeout_is_a_timeout(
        self, proxy: UpstreamProxy, clients: ClientFactory
    ) -> None:
        """A delay longer than the read timeout is ReadTimeoutError, classified as a timeout."""
        clients("ssm").describe_parameters()  # warm moto up: its first call may be slow
        impatient = ClientFactory(default_region="us-west-2", max_attempts=1, read_timeout=0.3)
        proxy.inject(Fault.delay(0.6), times=2)
        with pytest.raises(bce.ReadTimeoutError):
            impatient("ssm").describe_parameters()
        with pytest.raises(UpstreamTimeoutError), translate_errors():
            impatient("ssm").describe_parameters()

    def test_short_delay_still_forwards(self, proxy: UpstreamProxy, clients: ClientFactory) -> None:
        """A delay under the read timeout slows the answer but does not change it."""
        proxy.inject(Fault.delay(0.2), times=1)
        start = time.monotonic()
        clients("dynamodb").list_tables()
        assert time.monotonic() - start >= 0.2

    def test_aws_error_is_not_transient(self, proxy: UpstreamProxy, clients: ClientFactory) -> None:
        """An injected AccessDeniedException is a plain UpstreamError."""
        proxy.inject(Fault.aws_error("AccessDeniedException", message="no"))
        with pytest.raises(UpstreamError) as info, translate_errors():
            clients("ssm").describe_parameters()
        assert type(info.value) is UpstreamError


class TestRules:
    def test_times_limits_a_rule(self, proxy: UpstreamProxy, clients: ClientFactory) -> None:
        """A rule with times=N applies to the next N matching requests only."""
        proxy.inject(Fault.server_error(), times=2)
        for _ in range(2):
            with pytest.raises(bce.ClientError):
                clients("ssm").describe_parameters()
        clients("ssm").describe_parameters()

    def test_rule_without_times_lasts_until_cleared(
        self, proxy: UpstreamProxy, clients: ClientFactory
    ) -> None:
        """A rule without times applies until clear()."""
        proxy.inject(Fault.throttle())
        for _ in range(3):
            with pytest.raises(bce.ClientError):
                clients("ssm").describe_parameters()
        proxy.clear()
        clients("ssm").describe_parameters()

    def test_rule_matches_only_its_operation_and_service(
        self, proxy: UpstreamProxy, clients: ClientFactory
    ) -> None:
        """A rule for one operation leaves other operations and services alone."""
        proxy.inject(Fault.throttle(), operation="GetParameter", service="ssm")
        clients("ssm").describe_parameters()
        clients("dynamodb").list_tables()
        with pytest.raises(bce.ClientError):
            clients("ssm").get_parameter(Name="x")

    def test_bad_times_is_refused(self, proxy: UpstreamProxy) -> None:
        """times must be at least 1."""
        with pytest.raises(ValueError, match="at least 1"):
            proxy.inject(Fault.reset(), times=0)


class TestHold:
    def test_a_held_request_waits_for_release_and_is_counted_in_flight(
        self, proxy: UpstreamProxy, clients: ClientFactory
    ) -> None:
        """A held request is counted and in flight, and unanswered, until ``release()``; then
        it is forwarded and answered, and no longer in flight."""
        clients("ssm").put_parameter(Name="held", Value="v", Type="String")
        proxy.inject(Fault.hold(), operation="GetParameter")
        got: list[str] = []
        reader = threading.Thread(
            target=lambda: got.append(
                clients("ssm").get_parameter(Name="held")["Parameter"]["Value"]
            )
        )
        reader.start()
        assert proxy.wait_for(1, "GetParameter") == 1
        assert (proxy.in_flight("GetParameter"), got) == (1, [])
        proxy.release()
        reader.join(10)
        assert got == ["v"]
        assert (proxy.in_flight("GetParameter"), proxy.in_flight()) == (0, 0)

    def test_a_request_never_released_is_reset(
        self, proxy: UpstreamProxy, clients: ClientFactory
    ) -> None:
        """A hold that is not released within its timeout resets the connection: a test
        that forgets to release fails rather than hangs."""
        proxy.inject(Fault.hold(timeout=0.2), operation="DescribeParameters")
        with (
            pytest.raises(TransientError),
            translate_errors(service="ssm", operation="DescribeParameters"),
        ):
            clients("ssm").describe_parameters()

    def test_wait_for_names_what_it_saw_when_it_times_out(self, proxy: UpstreamProxy) -> None:
        """Waiting for requests that never come raises TimeoutError saying how many came."""
        with pytest.raises(
            TimeoutError, match="0 of the 1 GetParameter requests waited for were seen"
        ):
            proxy.wait_for(1, "GetParameter", timeout=0.1)


class TestLifecycle:
    def test_stop_frees_the_port_and_wakes_delayed_requests(self, aws: str) -> None:
        """Stopping returns promptly even with a long delay pending, and the port closes."""
        proxy = UpstreamProxy(aws).start()
        port = int(proxy.url.rsplit(":", 1)[1])
        proxy.inject(Fault.delay(60))
        outcome: list[Any] = []

        def slow_request() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                conn.request("POST", "/", body=b"{}", headers={"X-Amz-Target": "X.Y"})
                outcome.append(conn.getresponse().status)
            except (OSError, http.client.HTTPException) as exc:
                outcome.append(type(exc).__name__)

        thread = threading.Thread(target=slow_request)
        thread.start()
        proxy.wait_for(1, "Y")  # the request is in, and delayed
        assert proxy.in_flight("Y") == 1
        start = time.monotonic()
        proxy.stop()
        thread.join(timeout=5)
        assert time.monotonic() - start < 3
        assert outcome and outcome[0] != 200
        with (
            pytest.raises(ConnectionRefusedError),
            socket.create_connection(("127.0.0.1", port), timeout=1),
        ):
            pass

    def test_url_before_start_is_an_error(self, aws: str) -> None:
        """Asking an unstarted proxy for its URL raises a clear error."""
        with pytest.raises(RuntimeError, match="not started"):
            _ = UpstreamProxy(aws).url
