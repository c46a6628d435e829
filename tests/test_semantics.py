"""Cache semantics end to end: HTTP to a live cachelayer, boto3 through a fault proxy to moto.

Two ways of counting upstream calls are used, and each assertion says which:
- wire requests, counted by the proxy (``proxy.count("GetParameter")``): one per HTTP attempt,
  so a call that botocore retries (2 attempts in all, see ``ClientFactory.max_attempts``)
  counts twice when the first attempt fails;
- API calls, counted by cachelayer itself (``upstream_calls`` in ``/-/stats``): one per
  botocore call, however many attempts it took.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import time
from pathlib import Path
from typing import Any, Callable, Iterator, List, Mapping, Optional

import boto3
import pytest

from cachelayer.testing.live import Live, ManualClock, Requests, live_server, release_once_joined
from cachelayer.testing.proxy import Fault, UpstreamProxy

Serve = Callable[..., Live]


@pytest.fixture()
def proxy(aws: str) -> Iterator[UpstreamProxy]:
    """A counting, fault-injecting proxy in front of a clean moto."""
    with UpstreamProxy(aws) as p:
        yield p


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
    """A factory: ``serve(config, env=..., clock=..., json_clients=...)`` starts a live
    cachelayer whose AWS endpoint is the proxy; each is stopped after the test."""
    with contextlib.ExitStack() as stack:

        def start(
            config: str = "",
            env: Optional[Mapping[str, str]] = None,
            clock: Optional[Callable[[], float]] = None,
            json_clients: Any = None,
        ) -> Live:
            extra = {"AWS_ENDPOINT_URL": proxy.url, **(env or {})}
            return stack.enter_context(
                live_server(
                    proxy.url, tmp_path, config, extra, clock=clock, json_clients=json_clients
                )
            )

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
            (
                {"SSM_PARAMETER_STORE_TTL": "300", "CACHE_EXTENSION_TTL": "3m20s"},
                "cache: {ttl: 100s}",
                300,
                200,
            ),
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
        clock = ManualClock()
        live = serve("cache: {ttl: 3s}", clock=clock)
        assert live.get("/parameters?name=p").max_age == 3
        clock.advance(1.1)
        reply = live.get("/parameters?name=p")
        assert (reply.x_cache, reply.age, reply.max_age) == ("hit", 1, 1)
        clock.advance(1.0)
        reply = live.get("/parameters?name=p")
        assert (reply.x_cache, reply.age, reply.max_age) == ("hit", 2, 0)


class TestTtlZero:
    def test_every_read_goes_upstream(self, serve: Serve, proxy: UpstreamProxy, ssm: Any) -> None:
        """With TTL 0 each read is a miss that calls GetParameter and sees the latest value."""
        put(ssm, "p", "v1")
        live = serve("parameters: {ttl: 0s, groups: [{names: [p]}]}")
        for expected in ("v1", "v1", "v2"):
            if expected == "v2":
                put(ssm, "p", "v2")
            reply = live.get("/parameters?name=p")
            assert (reply.status, reply.x_cache, reply.max_age, reply.text) == (
                200,
                "miss",
                0,
                expected,
            )
        assert proxy.count("GetParameter") == 3
        assert live.stats()["parameters"]["entries"] == 0

    def test_concurrent_reads_share_one_call(
        self, serve: Serve, proxy: UpstreamProxy, ssm: Any
    ) -> None:
        """50 reads arriving while one GetParameter is in flight (held by the proxy until all
        have reached the server) all get its value: one wire request in all, though nothing
        is cached."""
        put(ssm, "p", "shared")
        live = serve("cache: {ttl: 0s}")
        proxy.inject(Fault.hold(), operation="GetParameter")
        requests = Requests()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            reading = pool.submit(
                live.get_many, ["/parameters?name=p"] * 50, connections=50, sent=requests.sent
            )
            try:
                release_once_joined(proxy, "GetParameter", live.loop, requests, 50)
            finally:
                proxy.release()
            replies = reading.result(30)
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


# -- stale-if-error -----------------------------------------------------------------------------

FAULTS = {
    "server-error": Fault.server_error(),
    "throttling": Fault.throttle(),
    "connection-reset": Fault.reset(),
}


class TestStaleIfError:
    @pytest.mark.parametrize("fault", list(FAULTS.values()), ids=list(FAULTS))
    def test_outage_serves_stale_with_backoff_then_recovers(
        self, serve: Serve, proxy: UpstreamProxy, ssm: Any, fault: Fault
    ) -> None:
        """While every GetParameter fails, reads answer the last value at once as ``stale``, with
        one retry at a time after a doubling backoff (four times longer when throttled), until
        a retry stores the fresh value."""
        # A manual clock makes the backoff windows exact; botocore still retries each call once
        # (2 wire requests per failed call). A long stale_wait lets the first read see the
        # failure itself rather than the stale value while the refresh is still going.
        clock = ManualClock()
        scale = 4.0 if fault.code == "ThrottlingException" else 1.0
        put(ssm, "p", "v1")
        live = serve("cache: {ttl: 10s, stale_if_error: 600s, stale_wait: 10s}", clock=clock)
        assert live.get("/parameters?name=p").x_cache == "miss"
        proxy.inject(fault, operation="GetParameter")
        put(ssm, "p", "v2")
        clock.advance(10.5)  # expired

        first = live.get("/parameters?name=p")  # waits for the failing refresh
        assert (first.status, first.x_cache, first.text, first.max_age, first.age) == (
            200,
            "stale",
            "v1",
            0,
            10,
        )
        assert proxy.count("GetParameter") == 1 + 2
        # First backoff: 0.5 to 1 s (times scale). Inside it, reads answer stale and call nobody.
        for _ in range(20):
            reply = live.get("/parameters?name=p")
            assert (reply.status, reply.x_cache, reply.text) == (200, "stale", "v1")
        assert proxy.count("GetParameter") == 3

        # Past it, 40 concurrent readers start exactly one retry between them.
        clock.advance(1.0 * scale)
        burst = live.get_many(["/parameters?name=p"] * 40, connections=20)
        assert {(r.status, r.x_cache, r.text) for r in burst} == {(200, "stale", "v1")}
        live.run(live.app.cache.drain(5.0))
        assert proxy.count("GetParameter") == 3 + 2

        # Second backoff: 1 to 2 s.
        clock.advance(0.99 * scale)
        assert live.get("/parameters?name=p").x_cache == "stale"
        live.run(live.app.cache.drain(5.0))
        assert proxy.count("GetParameter") == 5
        clock.advance(1.01 * scale)
        assert live.get("/parameters?name=p").x_cache == "stale"
        live.run(live.app.cache.drain(5.0))
        assert proxy.count("GetParameter") == 5 + 2

        # Upstream is back: the read past the third backoff (2 to 4 s) still answers stale at
        # once and starts the retry, which stores the fresh value for the next reads.
        proxy.clear()
        clock.advance(4.0 * scale)
        assert live.get("/parameters?name=p").text == "v1"
        live.run(live.app.cache.drain(5.0))
        fresh = live.get("/parameters?name=p")
        assert (fresh.status, fresh.x_cache, fresh.text, fresh.age, fresh.max_age) == (
            200,
            "hit",
            "v2",
            0,
            10,
        )
        assert proxy.count("GetParameter") == 7 + 1
        stats = live.stats()["parameters"]
        assert stats["upstream_calls"] == 5  # API calls: 1 fill + 3 failed refreshes + 1 good
        assert stats["upstream_errors"] == 3
        assert stats["stale"] == 1 + 20 + 40 + 1 + 1 + 1

    def test_real_outage_longer_than_ttl(
        self, serve: Serve, proxy: UpstreamProxy, ssm: Any
    ) -> None:
        """On the real clock, an outage of twice the 1 s TTL answers every read stale with few
        upstream calls, and the fresh value arrives within the backoff once upstream recovers."""
        put(ssm, "p", "v1")
        live = serve("cache: {ttl: 1s, stale_if_error: 1m}")
        assert live.get("/parameters?name=p").text == "v1"
        start = time.monotonic()  # the entry was stored just before: it expires before start+1
        proxy.inject(Fault.server_error(), operation="GetParameter")
        put(ssm, "p", "v2")
        wait_until(start + 1.05)
        reads = 0
        while time.monotonic() < start + 3.0:
            reply = live.get("/parameters?name=p")
            assert (reply.status, reply.x_cache, reply.text) == (200, "stale", "v1")
            reads += 1
            time.sleep(0.02)
        # At most 3 refreshes fit in those 2 s (backoff 0.5-1 s, then 1-2 s): 6 wire requests,
        # where retrying on every read would have made one or two per read.
        assert reads >= 20
        assert 2 <= proxy.count("GetParameter") - 1 <= 6
        assert 1 <= live.stats()["parameters"]["upstream_calls"] - 1 <= 3
        proxy.clear()
        deadline = time.monotonic() + 6.0  # the longest backoff after 3 failures, and margin
        reply = live.get("/parameters?name=p")
        while reply.text == "v1" and time.monotonic() < deadline:
            assert reply.x_cache == "stale"
            time.sleep(0.05)
            reply = live.get("/parameters?name=p")
        assert (reply.status, reply.text) == (200, "v2")
        # Fetched by a background retry started by a stale read: the first read that sees it
        # finds it in the cache just stored (a "hit" today; a "miss" if that read waited).
        assert reply.x_cache in ("miss", "hit") and reply.age == 0
        assert live.get("/parameters?name=p").x_cache == "hit"

    def test_past_stale_if_error_is_502(self, serve: Serve, proxy: UpstreamProxy, ssm: Any) -> None:
        """Once the value is older than its TTL plus ``stale_if_error``, a failing refresh
        answers 502 with a JSON error, not the stale value."""
        clock = ManualClock()
        put(ssm, "p", "v1")
        live = serve("cache: {ttl: 10s, stale_if_error: 5s}", clock=clock)
        live.get("/parameters?name=p")
        proxy.inject(Fault.server_error(), operation="GetParameter")
        clock.advance(14.0)
        assert live.get("/parameters?name=p").x_cache == "stale"
        clock.advance(1.5)  # 15.5 s old: past 10 s + 5 s
        reply = live.get("/parameters?name=p")
        assert reply.status == 502 and reply.x_cache is None
        assert reply.json()["error"] == "UpstreamUnavailable"
        assert "v1" not in reply.text

    def test_upstream_timeout_without_value_is_504(
        self, serve: Serve, proxy: UpstreamProxy, ssm: Any
    ) -> None:
        """A read whose GetParameter times out (proxy delay beyond a 0.3 s read timeout), with
        nothing cached, answers 504; the same timeout with a value cached answers it stale."""
        from cachelayer.awsjson import JsonClientFactory
        from cachelayer.testing.moto import aws_environment

        clock = ManualClock()
        put(ssm, "cold", "c")
        put(ssm, "warm", "w")
        factory = JsonClientFactory.from_environment(aws_environment(proxy.url), read_timeout=0.3)
        live = serve("cache: {ttl: 10s}", clock=clock, json_clients=factory)
        assert live.get("/parameters?name=warm").text == "w"
        proxy.inject(Fault.delay(1.0), operation="GetParameter")
        reply = live.get("/parameters?name=cold")
        assert reply.status == 504 and reply.json()["error"] == "UpstreamTimeout"
        clock.advance(11.0)
        reply = live.get("/parameters?name=warm")
        assert (reply.status, reply.x_cache, reply.text) == (200, "stale", "w")


# -- "not found" --------------------------------------------------------------------------------


class TestNotFound:
    def test_deleted_upstream_is_404_after_expiry_not_stale(
        self, serve: Serve, proxy: UpstreamProxy, ssm: Any
    ) -> None:
        """A parameter deleted upstream is served until its TTL ends, then answers 404: "not
        found" is not a transient error, so the old value is dropped, never served stale."""
        clock = ManualClock()
        put(ssm, "p", "v1")
        live = serve("cache: {ttl: 10s, stale_if_error: 1h}", clock=clock)
        assert live.get("/parameters?name=p").text == "v1"
        ssm.delete_parameter(Name="p")
        assert live.get("/parameters?name=p").x_cache == "hit"
        clock.advance(10.5)
        reply = live.get("/parameters?name=p")
        assert reply.status == 404 and reply.x_cache is None
        assert reply.json()["error"] == "NotFound" and "v1" not in reply.text
        assert live.get("/parameters?name=p").status == 404
        stats = live.stats()["parameters"]
        assert (stats["stale"], stats["entries"], stats["negative_hits"]) == (0, 1, 1)
        # The remembered "not found" holds its name and error: it counts, and less than before.
        assert 0 < stats["bytes"] < 2048
        assert proxy.count("GetParameter") == 2

    def test_missing_parameter_is_remembered(
        self, serve: Serve, proxy: UpstreamProxy, ssm: Any
    ) -> None:
        """20 reads of a missing parameter within ``negative_ttl`` make one GetParameter call;
        the other 19 are negative hits; after ``negative_ttl`` it is asked again and found."""
        clock = ManualClock()
        live = serve("cache: {negative_ttl: 30s}", clock=clock)
        replies = [live.get("/parameters?name=absent") for _ in range(20)]
        assert {r.status for r in replies} == {404}
        assert proxy.count("GetParameter") == 1  # ParameterNotFound is not retried by botocore
        stats = live.stats()["parameters"]
        assert (stats["misses"], stats["negative_hits"], stats["upstream_calls"]) == (1, 19, 1)
        put(ssm, "absent", "now here")
        clock.advance(29.0)
        assert live.get("/parameters?name=absent").status == 404  # still remembered
        clock.advance(1.5)
        reply = live.get("/parameters?name=absent")
        assert (reply.status, reply.x_cache, reply.text) == (200, "miss", "now here")
        assert proxy.count("GetParameter") == 2

    def test_missing_secret_and_dynamodb_item_are_404(
        self, serve: Serve, proxy: UpstreamProxy, dynamodb: Any
    ) -> None:
        """A missing secret, and a declared DynamoDB item absent from its table, answer 404 and
        are remembered like missing parameters."""
        dynamodb.create_table(
            TableName="t",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        live = serve("dynamodb: [{table: t, hashkey: pk, hashkeytype: S, hashkeyvalue: gone}]")
        for _ in range(3):
            assert live.get("/secrets?name=absent").status == 404
            assert live.get("/dynamodb?name=t-gone").status == 404
        assert proxy.count("GetSecretValue") == 1 and proxy.count("GetItem") == 1
        stats = live.stats()
        assert stats["secrets"]["negative_hits"] == stats["dynamodb"]["negative_hits"] == 2


# -- a throttling storm -------------------------------------------------------------------------


class TestThrottlingStorm:
    def test_storm_makes_at_most_one_call_per_key_per_ttl(
        self, serve: Serve, proxy: UpstreamProxy, ssm: Any
    ) -> None:
        """500 concurrent reads of 50 keys make one API call per key per TTL period, and every
        read answers 200 (fresh, or stale), even while the proxy throttles 70 requests."""
        # Counted: API calls in /-/stats (50 per period) and wire requests at the proxy (at most
        # 100 with botocore's retry). A manual clock holds the TTL period still during a storm.
        clock = ManualClock()
        names = [f"/storm/{i:02d}" for i in range(50)]
        for name in names:
            put(ssm, name, f"{name}=1")
        live = serve("cache: {ttl: 10s}", clock=clock)
        paths = [f"/parameters?name={names[i % 50]}" for i in range(500)]

        # Cold: single-flight alone, no faults.
        replies = live.get_many(paths, connections=25)
        assert {r.status for r in replies} == {200}
        assert all(r.text == p.split("=", 1)[1] + "=1" for r, p in zip(replies, paths))
        assert proxy.count("GetParameter") == 50
        assert live.stats()["parameters"]["upstream_calls"] == 50

        # Next TTL period, under throttling.
        for name in names:
            put(ssm, name, f"{name}=2")
        proxy.reset_counts()
        clock.advance(10.5)
        proxy.inject(Fault.throttle(), operation="GetParameter", times=70)
        replies = live.get_many(paths, connections=25)
        live.run(live.app.cache.drain(5.0))
        assert {r.status for r in replies} == {200}
        states = {r.x_cache for r in replies}
        assert states <= {"miss", "hit", "stale"} and "stale" in states
        for reply, path in zip(replies, paths):
            name = path.split("=", 1)[1]
            assert reply.text == (f"{name}=1" if reply.x_cache == "stale" else f"{name}=2")
        stats = live.stats()["parameters"]
        assert stats["upstream_calls"] == 50 + 50  # API calls: one per key in this period
        wire = proxy.count("GetParameter")
        assert 70 < wire <= 100  # the 70 throttled requests, plus the attempts that succeeded
        # Keys whose two attempts were both throttled failed; the others refreshed.
        failed_keys = stats["upstream_errors"]
        assert wire == 50 + (70 - failed_keys) and failed_keys >= 1


# -- bounds -------------------------------------------------------------------------------------


class TestEviction:
    def test_max_entries_evicts_least_recently_used(
        self, serve: Serve, proxy: UpstreamProxy, ssm: Any
    ) -> None:
        """With ``max_entries: 3`` the entry read least recently goes first (a hit counts as a
        read), and ``/-/stats`` counts the evictions."""
        for name in "abcd":
            put(ssm, name, name * 3)
        live = serve("cache: {max_entries: 3}")

        def read(name: str) -> str:
            reply = live.get(f"/parameters?name={name}")
            assert (reply.status, reply.text) == (200, name * 3)
            assert reply.x_cache is not None
            return reply.x_cache

        assert [read(n) for n in "abc"] == ["miss"] * 3
        assert read("a") == "hit"  # order now b, c, a
        assert read("d") == "miss"  # evicts b
        assert [read(n) for n in "acd"] == ["hit"] * 3  # order now a, c, d
        assert read("b") == "miss"  # evicts a
        assert read("a") == "miss"  # evicts c
        assert [read(n) for n in "db"] == ["hit"] * 2
        assert proxy.count("GetParameter") == 6
        stats = live.stats()["parameters"]
        assert (stats["evictions"], stats["entries"]) == (3, 3)
        assert stats["bytes"] > 9  # names, metadata and overhead count, not only the bodies

    def test_max_bytes_evicts_and_skips_oversized_values(
        self, serve: Serve, proxy: UpstreamProxy, ssm: Any
    ) -> None:
        """With ``max_bytes: 6000`` two 800-byte values (and their names, metadata and
        overhead) fit and a third evicts the oldest; a value bigger than the whole budget is
        served but never cached."""
        for name in ("x1", "x2", "x3"):
            put(ssm, name, name[-1] * 800)
        ssm.put_parameter(Name="huge", Value="h" * 7000, Type="String", Tier="Advanced")
        live = serve("cache: {max_bytes: 6000}")
        for name in ("x1", "x2"):
            assert live.get(f"/parameters?name={name}").x_cache == "miss"
        two = live.stats()["parameters"]["bytes"]
        assert 1600 < two <= 6000
        assert live.get("/parameters?name=x3").x_cache == "miss"
        stats = live.stats()["parameters"]
        assert (stats["evictions"], stats["entries"], stats["bytes"]) == (1, 2, two)
        assert live.get("/parameters?name=x2").x_cache == "hit"
        assert live.get("/parameters?name=x1").x_cache == "miss"  # was evicted; evicts x3
        for _ in range(2):
            reply = live.get("/parameters?name=huge")
            assert (reply.status, reply.x_cache, len(reply.body)) == (200, "miss", 7000)
        stats = live.stats()["parameters"]
        assert (stats["evictions"], stats["entries"], stats["bytes"]) == (2, 2, two)
        assert proxy.count("GetParameter") == 4 + 2


# -- prefetch -----------------------------------------------------------------------------------


def create_table(dynamodb: Any, table: str) -> None:
    dynamodb.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )


def put_items(dynamodb: Any, table: str, keys: List[str]) -> None:
    for start in range(0, len(keys), 25):
        dynamodb.batch_write_item(
            RequestItems={
                table: [
                    {"PutRequest": {"Item": {"pk": {"S": k}, "n": {"N": str(i + start)}}}}
                    for i, k in enumerate(keys[start : start + 25])
                ]
            }
        )


def prefetch_config(parameters: List[str], secrets: List[str], table: str, keys: List[str]) -> str:
    lines = ["parameters:", "  - names:"]
    lines += [f"      - {p}" for p in parameters]
    lines += ["secrets:", "  - names:"]
    lines += [f"      - {s}" for s in secrets]
    lines += ["dynamodb:"]
    lines += [
        f"  - {{table: {table}, hashkey: pk, hashkeytype: S, hashkeyvalue: {k}}}" for k in keys
    ]
    return "\n".join(lines) + "\n"


class TestPrefetch:
    def test_uses_batch_apis(
        self, serve: Serve, proxy: UpstreamProxy, ssm: Any, secretsmanager: Any, dynamodb: Any
    ) -> None:
        """Prefetching 250 parameters, 45 secrets and 150 DynamoDB items makes 25 GetParameters,
        3 BatchGetSecretValue and 2 BatchGetItem calls and no single reads; every item is then a
        hit."""
        parameters = [f"/pre/p{i:03d}" for i in range(250)]
        secrets = [f"pre-s{i:02d}" for i in range(45)]
        keys = [f"k{i:03d}" for i in range(150)]
        for p in parameters:
            put(ssm, p, p.upper())
        for s in secrets:
            secretsmanager.create_secret(Name=s, SecretString=s.upper())
        create_table(dynamodb, "pre")
        put_items(dynamodb, "pre", keys)
        live = serve(prefetch_config(parameters, secrets, "pre", keys))
        report = live.run(live.app.prefetch(), timeout=60)
        assert (report.fetched, report.failed) == (250 + 45 + 150, 0)
        assert proxy.calls == {
            ("ssm", "GetParameters"): 25,
            ("secretsmanager", "BatchGetSecretValue"): 3,
            ("dynamodb", "BatchGetItem"): 2,
        }
        paths = [f"/parameters?name={p}" for p in parameters]
        paths += [f"/secrets?name={s}" for s in secrets]
        paths += [f"/dynamodb?name=pre-{k}" for k in keys]
        replies = live.get_many(paths, connections=8)
        assert {(r.status, r.x_cache) for r in replies} == {(200, "hit")}
        assert replies[0].text == "/PRE/P000" and replies[250].text == "PRE-S00"
        assert replies[-1].json() == {"pk": "k149", "n": 149}
        assert proxy.count() == 30
        stats = live.stats()
        entries = {
            route: stats[route]["entries"] for route in ("dynamodb", "parameters", "secrets")
        }
        assert entries == {"dynamodb": 150, "parameters": 250, "secrets": 45}

    def test_missing_items_are_logged_and_fetched_on_demand_later(
        self,
        serve: Serve,
        proxy: UpstreamProxy,
        ssm: Any,
        secretsmanager: Any,
        dynamodb: Any,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """Items missing at prefetch are each logged by name, answer 404 while remembered, and
        are fetched one by one once ``negative_ttl`` has passed, after they were created."""
        parameters = [f"/part/p{i}" for i in range(12)]
        secrets = [f"part-s{i}" for i in range(4)]
        keys = [f"k{i}" for i in range(6)]
        missing = {"/part/p3", "/part/p11", "part-s2", "k5"}
        for p in parameters:
            if p not in missing:
                put(ssm, p, "here")
        for s in secrets:
            if s not in missing:
                secretsmanager.create_secret(Name=s, SecretString="here")
        create_table(dynamodb, "part")
        put_items(dynamodb, "part", [k for k in keys if k not in missing])
        clock = ManualClock()
        config = "cache: {negative_ttl: 30s}\n" + prefetch_config(parameters, secrets, "part", keys)
        live = serve(config, clock=clock)
        with caplog.at_level(logging.WARNING, logger="cachelayer"):
            report = live.run(live.app.prefetch(), timeout=30)
        assert (report.fetched, report.failed) == (22 - 4, 4)
        logged = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
        for what in (
            "parameters '/part/p3'",
            "parameters '/part/p11'",
            "secrets 'part-s2'",
            "dynamodb 'part-k5'",
        ):
            assert f"prefetch of {what} failed" in logged and "fetched on demand" in logged, logged
        assert proxy.calls == {
            ("ssm", "GetParameters"): 2,
            ("secretsmanager", "BatchGetSecretValue"): 1,
            ("dynamodb", "BatchGetItem"): 1,
        }
        put(ssm, "/part/p3", "late")
        put(ssm, "/part/p11", "late")
        secretsmanager.create_secret(Name="part-s2", SecretString="late")
        put_items(dynamodb, "part", ["k5"])
        late = [
            "/parameters?name=/part/p3",
            "/parameters?name=/part/p11",
            "/secrets?name=part-s2",
            "/dynamodb?name=part-k5",
        ]
        assert [live.get(p).status for p in late] == [404] * 4  # remembered as not found
        assert live.get("/parameters?name=/part/p0").x_cache == "hit"
        clock.advance(30.5)
        replies = [live.get(p) for p in late]
        assert [(r.status, r.x_cache) for r in replies] == [(200, "miss")] * 4
        assert [r.text for r in replies[:3]] == ["late"] * 3 and replies[3].json()["pk"] == "k5"
        assert (
            proxy.count("GetParameter"),
            proxy.count("GetSecretValue"),
            proxy.count("GetItem"),
        ) == (2, 1, 1)

    def test_transient_batch_failure_is_fetched_on_demand_at_once(
        self, serve: Serve, proxy: UpstreamProxy, ssm: Any, caplog: pytest.LogCaptureFixture
    ) -> None:
        """When a GetParameters batch is throttled (both attempts), its 10 items are logged as
        failed and the first read of each fetches it with GetParameter; the other batch's items
        are hits. The two batches run at once, so three throttles of the four calls always
        fail exactly one of them (its second attempt is among the first three), either one."""
        parameters = [f"/tb/p{i:02d}" for i in range(20)]
        for p in parameters:
            put(ssm, p, p)
        live = serve("parameters:\n  - names:\n" + "".join(f"      - {p}\n" for p in parameters))
        proxy.inject(Fault.throttle(), operation="GetParameters", times=3)
        with caplog.at_level(logging.WARNING, logger="cachelayer"):
            report = live.run(live.app.prefetch(), timeout=30)
        assert (report.fetched, report.failed) == (10, 10)
        assert proxy.count("GetParameters") == 4  # each batch twice: one throttled twice
        failed = [p for p in parameters if f"prefetch of parameters {p!r} failed" in caplog.text]
        assert failed in (parameters[:10], parameters[10:])
        replies = [live.get(f"/parameters?name={p}") for p in parameters]
        assert [r.x_cache for r in replies] == [
            "miss" if p in failed else "hit" for p in parameters
        ]
        assert [r.text for r in replies] == parameters
        assert proxy.count("GetParameter") == 10


# -- refresh-ahead ------------------------------------------------------------------------------


class TestRefreshAhead:
    def test_invoke_refreshes_entries_read_recently_and_near_expiry(
        self, serve: Serve, proxy: UpstreamProxy, ssm: Any
    ) -> None:
        """An INVOKE in the last half of a 2 s TTL refreshes the entries read since their last
        refresh, in the background, so the next read is a fresh hit with the new value; an
        INVOKE earlier in the TTL, or for an entry not read since its refresh, calls nobody."""
        put(ssm, "p", "p1")
        put(ssm, "q", "q1")
        live = serve("cache: {ttl: 2s, refresh_ahead: 50%}")
        invoke = {"eventType": "INVOKE", "requestId": "r-1", "deadlineMs": 0}
        for _ in range(2):  # a miss, then a hit
            assert live.get("/parameters?name=p").text == "p1"
            assert live.get("/parameters?name=q").text == "q1"
        start = time.monotonic()  # both expire before start + 2
        put(ssm, "p", "p2")
        put(ssm, "q", "q2")

        live.call(live.app.on_invoke, invoke)  # too early: nothing is near expiry
        live.run(live.app.cache.drain(5.0))
        assert proxy.count("GetParameter") == 2

        wait_until(start + 1.1)  # inside the last 50% of both TTLs
        live.call(live.app.on_invoke, invoke)
        live.run(live.app.cache.drain(5.0))
        refreshed = time.monotonic()
        assert proxy.count("GetParameter") == 4
        reply = live.get("/parameters?name=p")
        assert (reply.status, reply.x_cache, reply.text, reply.age) == (200, "hit", "p2", 0)
        assert reply.max_age is not None and reply.max_age >= 1
        # q is not read again after its refresh: the next INVOKE in the window leaves it alone.
        put(ssm, "p", "p3")
        wait_until(refreshed + 1.1)
        live.call(live.app.on_invoke, invoke)
        live.run(live.app.cache.drain(5.0))
        assert proxy.count("GetParameter") == 5
        assert live.get("/parameters?name=p").text == "p3"
        stats = live.stats()["parameters"]
        assert stats["refreshes_ahead"] == 3 and stats["upstream_calls"] == 5

    def test_entry_read_once_is_refreshed(
        self, serve: Serve, proxy: UpstreamProxy, ssm: Any
    ) -> None:
        """The read that fetched an entry counts as a read: an entry read once (a miss) and in
        its refresh-ahead window is refreshed on INVOKE, so the next read is a fresh hit."""
        clock = ManualClock()
        put(ssm, "p", "v1")
        live = serve("cache: {ttl: 10s, refresh_ahead: 50%}", clock=clock)
        assert live.get("/parameters?name=p").x_cache == "miss"
        put(ssm, "p", "v2")
        clock.advance(6.0)
        live.call(live.app.on_invoke, {"eventType": "INVOKE"})
        live.run(live.app.cache.drain(5.0))
        assert proxy.count("GetParameter") == 2, "the entry read by its own fetch was not refreshed"
        reply = live.get("/parameters?name=p")
        assert (reply.x_cache, reply.text, reply.age, reply.max_age) == ("hit", "v2", 0, 10)

    def test_invoke_during_outage_keeps_the_value(
        self, serve: Serve, proxy: UpstreamProxy, ssm: Any
    ) -> None:
        """A refresh-ahead that fails transiently leaves the cached value in place: reads stay
        hits until the TTL ends, then answer stale."""
        clock = ManualClock()
        put(ssm, "p", "v1")
        live = serve("cache: {ttl: 10s, refresh_ahead: 50%}", clock=clock)
        live.get("/parameters?name=p")
        live.get("/parameters?name=p")
        proxy.inject(Fault.server_error(), operation="GetParameter")
        clock.advance(6.0)
        live.call(live.app.on_invoke, {"eventType": "INVOKE"})
        live.run(live.app.cache.drain(5.0))
        assert proxy.count("GetParameter") == 1 + 2
        reply = live.get("/parameters?name=p")
        assert (reply.status, reply.x_cache, reply.text, reply.max_age) == (200, "hit", "v1", 4)
        clock.advance(4.5)
        reply = live.get("/parameters?name=p")
        assert (reply.status, reply.x_cache, reply.text) == (200, "stale", "v1")


# -- operations ---------------------------------------------------------------------------------


class TestOperations:
    def test_invalidate_one_name_a_route_and_all(
        self, serve: Serve, proxy: UpstreamProxy, ssm: Any, secretsmanager: Any
    ) -> None:
        """``POST /-/invalidate`` drops one name (all its variants), a whole route, or
        everything; what it dropped is fetched again, what it kept stays a hit."""
        put(ssm, "a", "a1")
        put(ssm, "a", "a2")
        put(ssm, "b", "b1")
        secretsmanager.create_secret(Name="s", SecretString="s1")
        live = serve()
        paths = [
            "/parameters?name=a",
            "/parameters?name=a&version=1",
            "/parameters?name=b",
            "/secrets?name=s",
        ]

        def states() -> List[Optional[str]]:
            return [live.get(p).x_cache for p in paths]

        assert states() == ["miss"] * 4
        reply = live.get("/-/invalidate?route=parameters&name=a", method="POST")
        assert (reply.status, reply.json()) == (200, {"invalidated": 2})
        assert states() == ["miss", "miss", "hit", "hit"]
        assert live.get("/-/invalidate?route=parameters", method="POST").json() == {
            "invalidated": 3
        }
        assert states() == ["miss", "miss", "miss", "hit"]
        assert live.get("/-/invalidate", method="POST").json() == {"invalidated": 4}
        assert states() == ["miss"] * 4
        assert proxy.count("GetParameter") == 3 + 2 + 3 + 3 and proxy.count("GetSecretValue") == 2
        assert live.get("/-/invalidate?route=parameters&name=nothing", method="POST").json() == {
            "invalidated": 0
        }

    def test_stats_fields(self, serve: Serve, proxy: UpstreamProxy, ssm: Any) -> None:
        """``/-/stats`` reports per route hits, misses, stale, negative_hits, upstream_calls,
        upstream_errors, evictions, entries and bytes, each counting what happened."""
        clock = ManualClock()
        put(ssm, "a", "aaaa")
        put(ssm, "b", "bb")
        put(ssm, "c", "c")
        live = serve("cache: {ttl: 10s, max_entries: 3}", clock=clock)
        for path in ("a", "a", "x", "x", "b", "c"):  # hit on a, negative hit on x, c evicts a
            live.get(f"/parameters?name={path}")
        proxy.inject(Fault.server_error(), operation="GetParameter")
        clock.advance(10.5)
        assert live.get("/parameters?name=b").x_cache == "stale"
        live.run(live.app.cache.drain(10.0))  # the failing refresh may outlast stale_wait
        stats = live.stats()
        assert {"parameters", "secrets", "dynamodb"} <= set(stats)
        fields = {
            "hits": 1,
            "misses": 4,
            "stale": 1,
            "negative_hits": 1,
            "upstream_calls": 5,
            "upstream_errors": 1,
            "evictions": 1,
            "entries": 3,  # x (not found), b, c
        }
        assert {k: stats["parameters"][k] for k in fields} == fields
        assert stats["parameters"]["bytes"] > 3  # b, c and x: names, metadata, the error
        idle = stats["secrets"]
        assert all(isinstance(v, int) for v in idle.values())
        assert {k: idle[k] for k in [*fields, "bytes"]} == dict.fromkeys([*fields, "bytes"], 0)
