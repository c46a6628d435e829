"""Cache semantics end to end: HTTP to a live cachelayer, boto3 through a fault proxy to moto.

Two ways of counting upstream calls are used, and each assertion says which:
- wire requests, counted by the proxy (``proxy.count("GetParameter")``): one per HTTP attempt,
  so a call that botocore retries (2 attempts in all, see ``ClientFactory.max_attempts``)
  counts twice when the first attempt fails;
- API calls, counted by cachelayer itself (``upstream_calls`` in ``/-/stats``): one per
  botocore call, however many attempts it took.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional

import boto3
import pytest

from cachelayer.testing.live import Live, ManualClock, live_server
from cachelayer.testing.proxy import Fault, UpstreamProxy

Serve = Callable[..., Live]


@pytest.fixture()
def proxy(aws: str) -> Iterator[UpstreamProxy]:
    """A counting, fault-injecting proxy in front of a clean moto."""
    with UpstreamProxy(aws) as p:
        yield p


@pytest.fixture()
def ssm(aws: str) -> Any:
    """An SSM client straight to moto (not through the proxy): seeding is never counted."""
    return boto3.client("ssm", endpoint_url=aws, region_name="us-west-2")


@pytest.fixture()
def secretsmanager(aws: str) -> Any:
    """A Secrets Manager client straight to moto."""
    return boto3.client("secretsmanager", endpoint_url=aws, region_name="us-west-2")


@pytest.fixture()
def dynamodb(aws: str) -> Any:
    """A DynamoDB client straight to moto."""
    return boto3.client("dynamodb", endpoint_url=aws, region_name="us-west-2")


@pytest.fixture()
def serve(proxy: UpstreamProxy, tmp_path: Path) -> Iterator[Serve]:
    """A factory: ``serve(config_yaml, env={...}, clock=...)`` starts a live cachelayer whose AWS
    endpoint is the proxy; every server started is stopped after the test."""
    with contextlib.ExitStack() as stack:

        def start(
            config: str = "",
            env: Optional[Mapping[str, str]] = None,
            clock: Optional[Callable[[], float]] = None,
        ) -> Live:
            extra = {"AWS_ENDPOINT_URL": proxy.url, **(env or {})}
            return stack.enter_context(live_server(proxy.url, tmp_path, config, extra, clock=clock))

        yield start


def put(ssm: Any, name: str, value: str, kind: str = "String") -> int:
    """Create or overwrite a parameter in moto; its new version."""
    return int(ssm.put_parameter(Name=name, Value=value, Type=kind, Overwrite=True)["Version"])


def wait_until(deadline: float) -> None:
    """Sleep until ``time.monotonic()`` reaches ``deadline``."""
    delay = deadline - time.monotonic()
    if delay > 0:
        time.sleep(delay)


# -- TTL ----------------------------------------------------------------------------------------


class TestTtlPrecedence:
    def test_item_group_section_then_env(self, serve: Serve, ssm: Any, secretsmanager: Any) -> None:
        """An item's TTL beats its group's, a group's beats the section's, the section's beats
        SSM_PARAMETER_STORE_TTL, which beats CACHE_EXTENSION_TTL, which beats ``cache.ttl``."""
        for name in ("p-item", "p-group", "p-section", "p-undeclared"):
            put(ssm, name, name)
        secretsmanager.create_secret(Name="s-env", SecretString="s")
        live = serve(
            """
cache:
  ttl: 100s
parameters:
  ttl: 400s
  groups:
    - ttl: 500s
      names:
        - {name: p-item, ttl: 600s}
        - p-group
    - names: [p-section]
""",
            env={"CACHE_EXTENSION_TTL": "200s", "SSM_PARAMETER_STORE_TTL": "300"},
        )
        expected = {
            "/parameters?name=p-item": 600,
            "/parameters?name=p-group": 500,
            "/parameters?name=p-section": 400,
            "/parameters?name=p-undeclared": 400,
            "/secrets?name=s-env": 200,
        }
        for path, ttl in expected.items():
            reply = live.get(path)
            assert (reply.status, reply.x_cache, reply.max_age) == (200, "miss", ttl), path

    def test_env_then_cache_section_then_default(
        self, serve: Serve, ssm: Any, secretsmanager: Any
    ) -> None:
        """Without section TTLs, SSM_PARAMETER_STORE_TTL and CACHE_EXTENSION_TTL apply; without
        them ``cache.ttl``; without that the default of 60 minutes."""
        put(ssm, "p", "v")
        secretsmanager.create_secret(Name="s", SecretString="s")
        cases = [
            ({"SSM_PARAMETER_STORE_TTL": "300", "CACHE_EXTENSION_TTL": "3m20s"}, "cache: {ttl: 100s}", 300, 200),
            ({"CACHE_EXTENSION_TTL": "200s"}, "cache: {ttl: 100s}", 200, 200),
            ({}, "cache: {ttl: 100s}", 100, 100),
            ({}, "", 3600, 3600),
        ]
        for env, config, parameters_ttl, secrets_ttl in cases:
            live = serve(config, env=env)
            assert live.get("/parameters?name=p").max_age == parameters_ttl, (env, config)
            assert live.get("/secrets?name=s").max_age == secrets_ttl, (env, config)

    def test_max_age_counts_down_on_hits(self, serve: Serve, ssm: Any) -> None:
        """A hit's ``max-age`` is what is left of the TTL and its ``Age`` the time since fetch."""
        put(ssm, "p", "v")
        live = serve("cache: {ttl: 3s}")
        assert live.get("/parameters?name=p").max_age == 3
        time.sleep(1.1)
        reply = live.get("/parameters?name=p")
        assert (reply.x_cache, reply.age, reply.max_age) == ("hit", 1, 1)


class TestTtlZero:
    def test_every_read_goes_upstream(self, serve: Serve, proxy: UpstreamProxy, ssm: Any) -> None:
        """With TTL 0 each read is a miss that calls GetParameter and sees the latest value."""
        put(ssm, "p", "v1")
        live = serve("parameters: {ttl: 0s, groups: [{names: [p]}]}")
        for expected in ("v1", "v1", "v2"):
            if expected == "v2":
                put(ssm, "p", "v2")
            reply = live.get("/parameters?name=p")
            assert (reply.status, reply.x_cache, reply.max_age, reply.text) == (200, "miss", 0, expected)
        assert proxy.count("GetParameter") == 3
        assert live.stats()["parameters"]["entries"] == 0

    def test_concurrent_reads_share_one_call(
        self, serve: Serve, proxy: UpstreamProxy, ssm: Any
    ) -> None:
        """50 reads arriving while one GetParameter is in flight (slowed to 0.5 s by the proxy)
        all get its value: one wire request in all, though nothing is cached."""
        put(ssm, "p", "shared")
        live = serve("cache: {ttl: 0s}")
        proxy.inject(Fault.delay(0.5), operation="GetParameter")
        replies = live.get_many(["/parameters?name=p"] * 50, connections=50)
        assert {(r.status, r.x_cache, r.text) for r in replies} == {(200, "miss", "shared")}
        assert proxy.count("GetParameter") == 1
        stats = live.stats()["parameters"]
        assert (stats["misses"], stats["upstream_calls"], stats["entries"]) == (50, 1, 0)


# -- variants -----------------------------------------------------------------------------------


class TestVariants:
    def test_ssm_version_label_and_decryption(
        self, serve: Serve, proxy: UpstreamProxy, ssm: Any
    ) -> None:
        """``version``, ``label`` and ``withDecryption`` each key their own entry, with the value
        SSM gives for that selector; reading them again makes no call."""
        put(ssm, "p", "first")
        put(ssm, "p", "second")
        ssm.label_parameter_version(Name="p", ParameterVersion=1, Labels=["stable"])
        put(ssm, "secure", "plain-text", kind="SecureString")
        live = serve()
        expected = {
            "/parameters?name=p": "second",
            "/parameters?name=p&version=1": "first",
            "/parameters?name=p&version=2": "second",
            "/parameters?name=p&label=stable": "first",
            "/parameters?name=secure": "plain-text",
            "/parameters?name=secure&withDecryption=true": "plain-text",
        }
        for path, value in expected.items():
            reply = live.get(path)
            assert (reply.status, reply.text) == (200, value), path
        encrypted = live.get("/parameters?name=secure&withDecryption=false")
        assert encrypted.status == 200 and encrypted.text != "plain-text"
        # withDecryption=true is the default variant: 6 distinct entries, 6 calls.
        assert proxy.count("GetParameter") == 6
        for path, value in expected.items():
            reply = live.get(path)
            assert (reply.x_cache, reply.text) == ("hit", value), path
        assert live.get("/parameters?name=secure&withDecryption=false").text == encrypted.text
        assert proxy.count("GetParameter") == 6
        assert live.stats()["parameters"]["entries"] == 6

    def test_secrets_version_id_and_stage(
        self, serve: Serve, proxy: UpstreamProxy, secretsmanager: Any
    ) -> None:
        """``versionId`` and ``versionStage`` each key their own entry with that version's value."""
        first = secretsmanager.create_secret(Name="s", SecretString="old")["VersionId"]
        second = secretsmanager.put_secret_value(SecretId="s", SecretString="new")["VersionId"]
        live = serve()
        expected = {
            "/secrets?name=s": "new",
            f"/secrets?name=s&versionId={first}": "old",
            f"/secrets?name=s&versionId={second}": "new",
            "/secrets?name=s&versionStage=AWSPREVIOUS": "old",
            "/secrets?name=s&versionStage=AWSCURRENT": "new",
        }
        for path, value in expected.items():
            reply = live.get(path)
            assert (reply.status, reply.x_cache, reply.text) == (200, "miss", value), path
        for path, value in expected.items():
            reply = live.get(path)
            assert (reply.status, reply.x_cache, reply.text) == (200, "hit", value), path
        assert proxy.count("GetSecretValue") == 5
