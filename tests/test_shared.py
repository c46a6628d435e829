"""The shared tier against real parts: Debian's redis-server on loopback (standalone, a
three-node cluster, TLS with a CA made here), live cachelayers sharing it, and moto behind the
counting proxy, which counts upstream calls at the wire."""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional, Tuple

import boto3
import pytest

from cachelayer.errors import ConfigError, NotFoundError
from cachelayer.provider import Item, Value
from cachelayer.shared.crypto import Sealer, UnsealError
from cachelayer.shared.redis_store import RedisStore
from cachelayer.shared.settings import SharedConfig, SharedSettings
from cachelayer.shared.store import StoreError, StoreOptions
from cachelayer.shared.tier import SharedTier
from cachelayer.testing.fleet import fleet, read_all
from cachelayer.testing.live import Live, ManualClock, live_server
from cachelayer.testing.proxy import Fault, UpstreamProxy
from cachelayer.testing.redis import (
    RedisServer,
    make_test_ca,
    redis_available,
    redis_cluster,
    scan_all,
)

pytestmark = pytest.mark.skipif(
    redis_available() is not None and not os.environ.get("CI"),
    reason=str(redis_available()),
)

KEY = base64.b64encode(bytes(range(32))).decode()
Serve = Callable[..., Live]


def shared_config(url: str, **settings: Any) -> str:
    """A config whose ``cache.shared`` points at ``url`` (small test deadlines are generous:
    the machine is loaded; the tests pin behaviour, never timing)."""
    settings.setdefault("timeout", "500ms")
    settings.setdefault("connect_timeout", "500ms")
    lines = [f"    {k}: {v}" for k, v in {"url": url, **settings}.items()]
    return "cache:\n  shared:\n" + "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One standalone redis-server for the module; emptied before each test that uses it."""
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture()
def redis(redis_server: RedisServer) -> Iterator[RedisServer]:
    import redis as redis_py

    if redis_server._proc is None:  # a test stopped it and failed before starting it again
        redis_server.start()
    client = redis_py.Redis(host="127.0.0.1", port=redis_server.port)
    client.flushall()
    client.close()
    yield redis_server


@pytest.fixture()
def admin(redis: RedisServer) -> Iterator[Any]:
    """A plain redis-py client to the test server, to look at and tamper with entries."""
    import redis as redis_py

    client = redis_py.Redis(host="127.0.0.1", port=redis.port)
    yield client
    client.close()


@pytest.fixture()
def proxy(aws: str) -> Iterator[UpstreamProxy]:
    with UpstreamProxy(aws) as p:
        yield p


@pytest.fixture()
def serve(proxy: UpstreamProxy, tmp_path: Path) -> Iterator[Serve]:
    """``serve(config, env, wall=...)``: a live cachelayer (one execution environment) through
    the proxy, with the shared tier's key in its environment; ``wall`` replaces the tier's
    wall clock (the times shared entries carry), e.g. a ManualClock shared by environments."""
    with contextlib.ExitStack() as stack:

        def start(
            config: str = "", env: Any = None, wall: Optional[Callable[[], float]] = None
        ) -> Live:
            extra = {"CACHE_EXTENSION_SHARED_KEY": KEY, "CACHE_EXTENSION_AUTH": "none"}
            extra.update(env or {})
            live = stack.enter_context(live_server(proxy.url, tmp_path, config, extra))
            if wall is not None:
                assert live.app.cache.shared is not None, "no shared tier in this config"
                live.app.cache.shared.wall = wall
            return live

        yield start


def _tier(url: str, **settings: Any) -> SharedTier:
    settings.setdefault("timeout", 0.5)
    config = SharedConfig(url, SharedSettings(url=url, **settings), key=bytes(range(32)))
    s = config.settings
    options = StoreOptions(
        url=url,
        timeout=float(s.timeout),
        connect_timeout=float(s.connect_timeout),
        cluster=s.cluster,
        ca_file=s.ca_file,
    )
    return SharedTier(RedisStore(options), config)


class TestConfiguration:
    def test_a_tier_without_a_key_is_a_config_error_naming_file_and_line(
        self, tmp_path: Path
    ) -> None:
        """cache.shared without any key refuses to start, naming the file and the line."""
        from cachelayer.core.config import load_settings

        path = tmp_path / "config.yaml"
        path.write_text("cache:\n  ttl: 5m\n  shared:\n    url: redis://127.0.0.1:1\n")
        with pytest.raises(ConfigError) as err:
            load_settings({}, {}, config_path=str(path))
        assert str(err.value).startswith(f"{path}:3: cache.shared: ")
        assert "CACHE_EXTENSION_SHARED_KEY" in str(err.value)

    def test_the_url_from_the_environment_without_a_key_names_the_variable(
        self, tmp_path: Path
    ) -> None:
        """CACHE_EXTENSION_SHARED_URL alone is refused, naming the variable."""
        from cachelayer.core.config import load_settings

        path = tmp_path / "config.yaml"
        path.write_text("")
        with pytest.raises(ConfigError, match="CACHE_EXTENSION_SHARED_URL: is set, but"):
            load_settings(
                {"CACHE_EXTENSION_SHARED_URL": "redis://127.0.0.1:1"}, {}, config_path=str(path)
            )

    @pytest.mark.parametrize(
        ("raw", "problem"),
        [("not base64!!", "not valid base64"), (base64.b64encode(b"short").decode(), "5 bytes")],
    )
    def test_a_bad_key_is_refused_without_echoing_it(
        self, tmp_path: Path, raw: str, problem: str
    ) -> None:
        """A key that is not 32 bytes of base64 is refused; the message never holds it."""
        from cachelayer.core.config import load_settings

        path = tmp_path / "config.yaml"
        path.write_text("")
        env = {"CACHE_EXTENSION_SHARED_URL": "redis://h:1", "CACHE_EXTENSION_SHARED_KEY": raw}
        with pytest.raises(ConfigError, match=problem) as err:
            load_settings(env, {}, config_path=str(path))
        assert raw not in str(err.value)

    def test_a_ca_file_needs_tls_and_must_exist(self, tmp_path: Path) -> None:
        """ca_file with a redis:// URL, or naming no file, is refused, not ignored."""
        from cachelayer.core.config import load_settings

        path = tmp_path / "config.yaml"
        env = {"CACHE_EXTENSION_SHARED_KEY": KEY}
        path.write_text("cache:\n  shared:\n    url: redis://h:1\n    ca_file: /etc/hosts\n")
        with pytest.raises(ConfigError, match="not a TLS URL"):
            load_settings(env, {}, config_path=str(path))
        path.write_text("cache:\n  shared:\n    url: rediss://h:1\n    ca_file: /nope.pem\n")
        with pytest.raises(ConfigError, match=r"no such file '/nope\.pem'"):
            load_settings(env, {}, config_path=str(path))

    def test_an_unknown_scheme_lists_the_installed_stores(self, aws: str, tmp_path: Path) -> None:
        """A URL no store answers names the stores installed (redis://, rediss://)."""
        config = "cache:\n  shared:\n    url: memcached://h:1\n"
        env = {"CACHE_EXTENSION_SHARED_KEY": KEY}
        with pytest.raises(ConfigError, match=r"scheme 'memcached'.*redis://, rediss://"):
            live_server(aws, tmp_path, config, env).__enter__()

    def test_provider_filters_never_take_the_built_in_store_away(
        self, aws: str, tmp_path: Path
    ) -> None:
        """With CACHE_EXTENSION_PLUGINS naming providers only, redis:// still has its store."""
        config = "cache:\n  shared:\n    url: redis://127.0.0.1:1\n"
        env = {"CACHE_EXTENSION_SHARED_KEY": KEY, "CACHE_EXTENSION_PLUGINS": "parameters"}
        with live_server(aws, tmp_path, config, env) as live:
            assert live.app.cache.shared is not None
            assert isinstance(live.app.cache.shared.store, RedisStore)

    def test_the_core_serves_without_redis_or_cryptography_installed(self, tmp_path: Path) -> None:
        """Without the extra, the core imports and builds an app; a configured tier says to
        install cachelayer[shared]."""
        script = f"""
import sys
sys.modules["redis"] = None
sys.modules["cryptography"] = None
import importlib.util
real = importlib.util.find_spec
importlib.util.find_spec = lambda n, *a: None if n in ("redis", "cryptography") else real(n, *a)
from cachelayer.core.app import Application
from cachelayer.errors import ConfigError
open({str(tmp_path / "c.yaml")!r}, "w").write("")
Application.from_environment({{}}, config_path={str(tmp_path / "c.yaml")!r}).close()
try:
    Application.from_environment({{"CACHE_EXTENSION_SHARED_URL": "redis://h:1",
        "CACHE_EXTENSION_SHARED_KEY": {KEY!r}}}, config_path={str(tmp_path / "c.yaml")!r})
except ConfigError as exc:
    print("refused:", exc)
"""
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        assert "install cachelayer[shared]" in done.stdout


class TestSealing:
    def test_a_sealed_value_opens_only_under_its_own_key_intact(self) -> None:
        """AES-GCM with the cache key as associated data: a flipped bit, another key, a
        truncation or another secret key all fail to open."""
        sealer = Sealer(bytes(range(32)))
        sealed = sealer.seal(b"k1", b"the secret")
        assert sealer.open(b"k1", sealed) == b"the secret"
        assert b"the secret" not in sealed
        for i in range(len(sealed)):
            flipped = bytearray(sealed)
            flipped[i] ^= 0x01
            with pytest.raises(UnsealError):
                sealer.open(b"k1", bytes(flipped))
        with pytest.raises(UnsealError, match="authentication"):
            sealer.open(b"k2", sealed)
        with pytest.raises(UnsealError, match="truncated"):
            sealer.open(b"k1", sealed[:20])
        with pytest.raises(UnsealError):
            Sealer(bytes(32)).open(b"k1", sealed)


class TestReadThrough:
    def test_a_second_environment_gets_the_value_with_its_remaining_ttl(
        self, redis: RedisServer, serve: Serve, proxy: UpstreamProxy, ssm: Any
    ) -> None:
        """B's in-memory miss is answered by the tier: no upstream call, and the freshness
        left is A's, not a new TTL."""
        ssm.put_parameter(Name="p1", Value="v1", Type="String")
        config = "parameters:\n  - ttl: 30s\n    names: [p1]\n" + shared_config(redis.url)
        wall = ManualClock(1_000_000.0)
        a, b = serve(config, wall=wall), serve(config, wall=wall)
        assert a.get("/parameters?name=p1").text == "v1"
        wall.advance(2.5)
        reply = b.get("/parameters?name=p1")
        assert (reply.text, reply.x_cache, reply.age, reply.max_age) == ("v1", "miss", 2, 27)
        assert proxy.count("GetParameter") == 1
        stats = b.stats()["parameters"]
        assert stats["shared_hits"] == 1
        assert stats["upstream_calls"] == 0

    def test_concurrent_misses_in_many_environments_make_one_upstream_call(
        self, redis: RedisServer
    ) -> None:
        """One environment wins the lease and fetches; the others wait on the tier for its
        value instead of calling upstream (the winner's call is held until all five wait)."""
        tiers = [_tier(redis.url, lease_wait=10) for _ in range(6)]
        calls: List[int] = []
        release = threading.Event()

        def upstream() -> Value:
            calls.append(1)
            assert release.wait(10), "never released"
            return Value(b"slow value")

        def waiting() -> int:
            return sum(t.stats_for("parameters")["shared_lease_waits"] for t in tiers)

        item = Item("parameters", "slow")
        barrier = threading.Barrier(len(tiers))
        got: List[bytes] = []

        def read(tier: SharedTier) -> None:
            barrier.wait()
            fetched = tier.fetch(item, upstream, ttl=60, negative_ttl=30, stale_if_error=3600)
            got.append(fetched.value.body)

        threads = [threading.Thread(target=read, args=(t,)) for t in tiers]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while waiting() < len(tiers) - 1:  # the winner is held; the others wait for its value
            assert time.monotonic() < deadline, (calls, waiting())
            time.sleep(0.01)
        assert (len(calls), waiting()) == (1, len(tiers) - 1)
        release.set()
        for t in threads:
            t.join(10)
        assert got == [b"slow value"] * len(tiers)
        assert len(calls) == 1
        for t in tiers:
            t.close()

    def test_refresh_ahead_is_done_once_by_the_leases_winner(self, redis: RedisServer) -> None:
        """A value in the last share of its TTL is refreshed upstream only by the environment
        that wins the lease; one that finds the lease taken keeps the still-fresh value."""
        now = [1_000_000.0]
        a, b = _tier(redis.url), _tier(redis.url)
        for t in (a, b):
            t.wall = lambda: now[0]
        item = Item("parameters", "r")
        args = {"ttl": 60, "negative_ttl": 30, "stale_if_error": 60}
        a.fetch(item, lambda: Value(b"v1"), **args)
        now[0] += 55  # 5 s left: inside the last 20 % (12 s)
        lease = b._lease_key(b.storage_key(item))
        assert b.store.add(lease, b"b is refreshing", 5)
        got = a.fetch(item, upstream_fails, refresh_within=12, has_local=True, **args)
        assert (got.value.body, got.remaining) == (b"v1", 5)
        b.store.release(lease, b"b is refreshing")
        got = a.fetch(item, lambda: Value(b"v2"), refresh_within=12, has_local=True, **args)
        assert (got.value.body, got.remaining) == (b"v2", 60)
        got = b.fetch(item, upstream_fails, refresh_within=12, has_local=True, **args)
        assert (got.value.body, got.remaining) == (b"v2", 60)
        for t in (a, b):
            t.close()

    def test_not_found_is_shared_for_the_negative_ttl(
        self, redis: RedisServer, serve: Serve, proxy: UpstreamProxy
    ) -> None:
        """A "not found" is shared too: the second environment answers 404 without asking."""
        config = shared_config(redis.url)
        a, b = serve(config), serve(config)
        assert a.get("/parameters?name=missing").status == 404
        assert b.get("/parameters?name=missing").status == 404
        assert proxy.count("GetParameter") == 1

    def test_the_tiers_stale_copy_is_served_when_upstream_fails(
        self, redis: RedisServer, serve: Serve, proxy: UpstreamProxy, ssm: Any
    ) -> None:
        """A new environment whose refresh is throttled serves the tier's expired copy,
        marked stale, within stale_if_error."""
        ssm.put_parameter(Name="p1", Value="v1", Type="String")
        config = "parameters:\n  - ttl: 1s\n    names: [p1]\n" + shared_config(redis.url)
        wall = ManualClock(1_000_000.0)
        assert serve(config, wall=wall).get("/parameters?name=p1").text == "v1"
        wall.advance(1.2)
        proxy.inject(Fault.throttle(), operation="GetParameter")
        b = serve(config, wall=wall)
        reply = b.get("/parameters?name=p1")
        assert (reply.status, reply.text, reply.x_cache) == (200, "v1", "stale")
        assert b.stats()["parameters"]["shared_stale"] == 1

    def test_invalidate_clears_the_shared_copy(
        self, redis: RedisServer, serve: Serve, proxy: UpstreamProxy, ssm: Any, admin: Any
    ) -> None:
        """POST /-/invalidate drops the shared copies as well: the next environment fetches."""
        ssm.put_parameter(Name="p1", Value="v1", Type="String")
        config = shared_config(redis.url)
        a, b = serve(config), serve(config)
        a.get("/parameters?name=p1")
        reply = a.get("/-/invalidate?route=parameters&name=p1", method="POST")
        assert reply.json() == {"invalidated": 1, "shared": {"invalidated": 1}}
        assert [k for k in admin.keys("*") if b"lease" not in k] == []
        b.get("/parameters?name=p1")
        assert proxy.count("GetParameter") == 2


class TestNeverWorse:
    def test_a_dead_server_means_upstream_then_the_tier_again_once_back(
        self, redis: RedisServer, serve: Serve, proxy: UpstreamProxy, ssm: Any
    ) -> None:
        """Killed mid-run: every read is still answered (from upstream) and the breaker stops
        asking; back again: probed after the cool-down and used again."""
        for i in range(12):
            ssm.put_parameter(Name=f"p{i}", Value=f"v{i}", Type="String")
        config = shared_config(redis.url, breaker_failures=2, breaker_cooldown="1s")
        a, b = serve(config), serve(config)
        clock = ManualClock()
        assert a.app.cache.shared is not None
        a.app.cache.shared.breaker.clock = clock  # the cool-down passes when told to
        assert a.get("/parameters?name=p0").status == 200
        redis.stop()
        replies = [a.get(f"/parameters?name=p{i}") for i in range(1, 11)]
        assert [r.text for r in replies] == [f"v{i}" for i in range(1, 11)]
        errors = a.stats()["parameters"]["shared_errors"]
        assert 2 <= errors <= 4  # the breaker opened after 2 failures (a probe or so more)
        redis.start()
        assert a.app.cache.shared.breaker.state == "open"
        clock.advance(1.1)
        assert a.get("/parameters?name=p11").text == "v11"  # the probe succeeds: used again
        assert a.app.cache.shared.breaker.state == "closed"
        before = proxy.count("GetParameter")
        assert b.get("/parameters?name=p11").text == "v11"
        assert proxy.count("GetParameter") == before
        assert b.stats()["parameters"]["shared_hits"] == 1

    def test_connections_are_lazy_and_a_server_never_there_only_costs_errors(
        self, serve: Serve, proxy: UpstreamProxy, ssm: Any
    ) -> None:
        """Startup makes no connection (a server that is not there does not stop it); reads
        are answered from upstream."""
        from cachelayer.testing.moto import free_port

        ssm.put_parameter(Name="p1", Value="v1", Type="String")
        live = serve(shared_config(f"redis://127.0.0.1:{free_port()}"))
        assert live.stats()["parameters"]["shared_errors"] == 0  # nothing tried yet
        assert live.get("/parameters?name=p1").text == "v1"
        assert live.stats()["parameters"]["shared_errors"] == 1

    def test_a_connection_broken_while_frozen_is_retried_once(
        self, redis: RedisServer, admin: Any
    ) -> None:
        """The server closed our idle connection (as after a Lambda freeze): the next read
        reconnects within its deadline, with no error."""
        tier = _tier(redis.url)
        item = Item("parameters", "p")
        tier.fetch(item, lambda: Value(b"v"), ttl=60, negative_ttl=30, stale_if_error=60)
        killed = admin.client_kill_filter(_type="normal", skipme=True)
        assert killed >= 1
        fetched = tier.fetch(
            item, lambda: Value(b"other"), ttl=60, negative_ttl=30, stale_if_error=60
        )
        assert fetched.value.body == b"v"
        assert tier.stats_for("parameters")["shared_errors"] == 0
        tier.close()

    def test_a_hung_server_costs_one_deadline_then_the_breaker_skips_it(
        self, redis: RedisServer
    ) -> None:
        """A server that stops answering (SIGSTOP) makes each operation time out at its
        deadline; after breaker_failures the tier is not asked at all."""
        tier = _tier(redis.url, timeout=0.05, breaker_failures=2, breaker_cooldown=60)
        item = Item("parameters", "p")
        tier.fetch(item, lambda: Value(b"v"), ttl=60, negative_ttl=30, stale_if_error=60)
        assert redis._proc is not None
        redis._proc.send_signal(19)  # SIGSTOP
        try:
            started = time.monotonic()
            for i in range(5):
                got = tier.fetch(
                    Item("parameters", f"q{i}"),
                    lambda: Value(b"up"),
                    ttl=60,
                    negative_ttl=30,
                    stale_if_error=60,
                )
                assert got.value.body == b"up"
            elapsed = time.monotonic() - started
        finally:
            redis._proc.send_signal(18)  # SIGCONT
        assert tier.breaker.state == "open"
        assert tier.stats_for("parameters")["shared_errors"] == 2
        assert elapsed < 5  # two deadlines of 50 ms, not five reads' worth of waiting
        tier.close()


class TestTampering:
    def test_entries_written_by_hand_flipped_or_moved_are_rejected_and_served_upstream(
        self,
        redis: RedisServer,
        serve: Serve,
        proxy: UpstreamProxy,
        ssm: Any,
        admin: Any,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """Each bad entry is a miss with one warning, counted as rejected; the read is
        answered from upstream with the right value."""
        ssm.put_parameter(Name="p1", Value="v1", Type="String")
        ssm.put_parameter(Name="p2", Value="v2", Type="String")
        config = shared_config(redis.url)
        serve(config).get("/parameters?name=p1")
        serve(config).get("/parameters?name=p2")
        (k1,) = admin.keys("*v1:parameters:p1|*")
        (k2,) = admin.keys("*v1:parameters:p2|*")
        good1 = admin.get(k1)
        flipped = bytearray(good1)
        flipped[-3] ^= 0x10
        cases = [
            (k1, b"written by hand"),  # not sealed at all
            (k1, bytes(flipped)),  # one bit flipped
            (k2, good1),  # p1's sealed value moved under p2's key
        ]
        caplog.set_level(logging.WARNING, logger="cachelayer.shared")
        for n, (key, data) in enumerate(cases, start=1):
            admin.set(key, data)
            live = serve(config)
            name = "p1" if key == k1 else "p2"
            before = proxy.count("GetParameter")
            reply = live.get(f"/parameters?name={name}")
            assert (reply.status, reply.text) == (200, f"v{name[1]}")
            assert proxy.count("GetParameter") == before + 1
            assert live.stats()["parameters"]["shared_rejected"] == 1
            warnings = [r for r in caplog.records if "rejected" in r.getMessage()]
            assert len(warnings) == n

    def test_no_secret_is_stored_in_plaintext(
        self, redis: RedisServer, serve: Serve, ssm: Any, admin: Any
    ) -> None:
        """Scanning every key and value on the server finds no value's plaintext."""
        secrets = [f"s3cr3t-{os.urandom(6).hex()}" for _ in range(5)]
        for i, s in enumerate(secrets):
            ssm.put_parameter(Name=f"sec{i}", Value=s, Type="SecureString")
        config = shared_config(redis.url)
        a, b = serve(config), serve(config)
        for i, s in enumerate(secrets):
            assert a.get(f"/parameters?name=sec{i}").text == s
            assert b.get(f"/parameters?name=sec{i}").text == s
        everything = scan_all([redis])
        assert len(everything) >= 10
        for blob in everything:
            for s in secrets:
                assert s.encode() not in blob
                assert base64.b64encode(s.encode()) not in blob


@pytest.mark.slow
class TestCluster:
    def test_cluster_mode_follows_moved_and_ask_redirections(self, tmp_path: Path) -> None:
        """Against a three-node cluster: values land on every node, a slot moved after the
        client read the slot map (MOVED) and a slot half-migrated (ASK) are followed; a
        standalone client is told to set cluster: true."""
        import redis as redis_py

        with redis_cluster(tmp_path) as nodes:
            url = f"redis://127.0.0.1:{nodes[0].port}"
            writer, reader = _tier(url, cluster=True), _tier(url, cluster=True)
            items = [Item("parameters", f"k{i}") for i in range(24)]
            for it in items:
                writer.fetch(
                    it,
                    lambda it=it: Value(it.name.encode()),
                    ttl=60,
                    negative_ttl=30,
                    stale_if_error=60,
                )
            assert all(len(scan_all([n])) > 0 for n in nodes)  # spread over the three
            for it in items:
                got = reader.fetch(
                    it, lambda: Value(b"upstream!"), ttl=60, negative_ttl=30, stale_if_error=60
                )
                assert got.value.body == it.name.encode()

            admin = redis_py.RedisCluster(host="127.0.0.1", port=nodes[0].port)
            ids = {n.port: _raw(n.port, "CLUSTER", "MYID") for n in nodes}

            def start_migration(it: Item) -> Tuple[RedisServer, RedisServer, str]:
                key = reader.storage_key(it)
                slot = str(admin.keyslot(key))
                src = next(
                    n for n in nodes if _raw(n.port, "CLUSTER", "COUNTKEYSINSLOT", slot) != "0"
                )
                dst = next(n for n in nodes if n is not src)
                _raw(dst.port, "CLUSTER", "SETSLOT", slot, "IMPORTING", ids[src.port])
                _raw(src.port, "CLUSTER", "SETSLOT", slot, "MIGRATING", ids[dst.port])
                _raw(src.port, "MIGRATE", "127.0.0.1", str(dst.port), key, "0", "5000")
                return src, dst, slot

            # A slot moved after the reader learnt the slot map: the old owner answers MOVED.
            _, dst, slot = start_migration(items[1])
            for n in nodes:
                _raw(n.port, "CLUSTER", "SETSLOT", slot, "NODE", ids[dst.port])
            got = reader.fetch(items[1], upstream_fails, ttl=60, negative_ttl=30, stale_if_error=60)
            assert got.value.body == items[1].name.encode()
            # A slot half-migrated, its key already moved: the source answers ASK.
            start_migration(items[0])
            got = reader.fetch(items[0], upstream_fails, ttl=60, negative_ttl=30, stale_if_error=60)
            assert got.value.body == items[0].name.encode()
            assert reader.stats_for("parameters")["shared_errors"] == 0
            admin.close()

            standalone = RedisStore(StoreOptions(url=url, timeout=0.5))
            with pytest.raises(StoreError, match="cluster: true"):
                for it in items:  # some key lives on another node
                    standalone.get(writer.storage_key(it))
            for t in (writer, reader):
                t.close()


def _raw(port: int, *args: str) -> str:
    return subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout.strip()


def _entries(port: int) -> int:
    """How many entries a cachelayer serve process holds for /parameters."""
    import json
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/stats", timeout=5) as r:
        return int(json.load(r)["parameters"]["entries"])


def upstream_fails() -> Value:
    raise AssertionError("the value should have come from the shared tier")


class TestTLS:
    def test_tls_with_verification_of_the_servers_certificate(
        self, tmp_path: Path, serve: Serve, proxy: UpstreamProxy, ssm: Any
    ) -> None:
        """rediss:// with the test CA works; without it the certificate is not trusted, the
        tier fails and reads are answered from upstream."""
        ca = make_test_ca(tmp_path / "ca")
        ssm.put_parameter(Name="p1", Value="v1", Type="String")
        with RedisServer(tmp_path / "tls", tls=ca) as server:
            trusted = shared_config(server.url, ca_file=str(ca.ca_file))
            a, b = serve(trusted), serve(trusted)
            assert a.get("/parameters?name=p1").text == "v1"
            assert b.get("/parameters?name=p1").text == "v1"
            assert b.stats()["parameters"]["shared_hits"] == 1
            assert proxy.count("GetParameter") == 1

            untrusting = _tier(server.url)
            with pytest.raises(StoreError, match="certificate verify failed"):
                untrusting.store.get("x")
            got = untrusting.fetch(
                Item("parameters", "p1"),
                lambda: Value(b"upstream"),
                ttl=60,
                negative_ttl=30,
                stale_if_error=60,
            )
            assert got.value.body == b"upstream"
            untrusting.close()


@pytest.mark.slow
class TestManyEnvironments:
    def test_twenty_processes_fifty_keys_make_fifty_upstream_calls(
        self, redis: RedisServer, proxy: UpstreamProxy, ssm: Any, tmp_path: Path
    ) -> None:
        """20 cachelayer serve processes started together each read the same 50 keys: with
        the tier, 50 upstream calls in all (each process alone would make 50: 1,000)."""
        for i in range(50):
            ssm.put_parameter(Name=f"k{i}", Value=f"value-{i}", Type="String")
        paths = [f"/parameters?name=k{i}" for i in range(50)]
        config = tmp_path / "config.yaml"
        # Deadlines and lease wait sized for 20 processes on two loaded cores.
        config.write_text(shared_config(redis.url, timeout="1s", lease_wait="5s"))
        env = {
            "AWS_ENDPOINT_URL": proxy.url,
            "CACHE_EXTENSION_SHARED_KEY": KEY,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-west-2",
        }
        with fleet(20, config, env) as envs:
            statuses = read_all(envs, paths)
        assert statuses == {200: 1000}
        assert proxy.count("GetParameter") == 50

        proxy.reset_counts()
        config.write_text("")
        with fleet(4, config, {**env, "CACHE_EXTENSION_SHARED_KEY": ""}) as envs:
            assert read_all(envs, paths) == {200: 200}
        assert proxy.count("GetParameter") == 200  # without the tier: 50 per process


def test_shared_value_errors_are_not_found_exceptions() -> None:
    """A shared "not found" is raised as NotFoundError carrying its remaining time."""
    from cachelayer.shared.record import SharedRecord

    tier = _tier("redis://127.0.0.1:1")
    with pytest.raises(NotFoundError) as err:
        tier._answer(SharedRecord(None, 0.0, 10.0, "nope"), 4.0, 60)
    assert err.value.shared_remaining == 6.0  # type: ignore[attr-defined]


@pytest.mark.slow
class TestColdStartWave:
    def test_a_wave_of_prefetching_cold_starts_batch_fetches_once(
        self, redis: RedisServer, proxy: UpstreamProxy, ssm: Any, tmp_path: Path
    ) -> None:
        """Five environments prefetching the same 25 declared parameters at init: one wins
        the prefetch lease and batch-fetches (GetParameters by 10: 3 calls), the others take
        the values from the tier."""
        names = [f"d{i}" for i in range(25)]
        for n in names:
            ssm.put_parameter(Name=n, Value=f"value-of-{n}", Type="String")
        config = tmp_path / "config.yaml"
        config.write_text(
            "parameters:\n  - names: ["
            + ", ".join(names)
            + "]\n"
            + shared_config(redis.url, timeout="1s", lease_wait="5s")
        )
        env = {
            "AWS_ENDPOINT_URL": proxy.url,
            "CACHE_EXTENSION_SHARED_KEY": KEY,
            "CACHE_EXTENSION_INIT_STARTUP": "true",
        }
        with fleet(5, config, env) as envs:
            deadline = time.monotonic() + 60
            for e in envs:  # serving starts before the prefetch is done: wait for it
                while _entries(e.port) < 25:
                    assert time.monotonic() < deadline, "prefetch did not finish"
                    time.sleep(0.05)
            assert proxy.count("GetParameters") == 3
            assert read_all(envs, [f"/parameters?name={n}" for n in names]) == {200: 125}
        assert proxy.count("GetParameter") == 0


class TestCredentials:
    def test_password_and_key_from_secrets_manager(
        self, tmp_path: Path, serve: Serve, proxy: UpstreamProxy, ssm: Any, aws: str
    ) -> None:
        """key_secret and password_secret are read from Secrets Manager on first use; a
        server requiring AUTH accepts the password; two environments share values."""
        sm = boto3.client("secretsmanager", endpoint_url=aws, region_name="us-west-2")
        sm.create_secret(Name="tier-key", SecretString=KEY)
        sm.create_secret(Name="tier-password", SecretString="pa55-word")
        ssm.put_parameter(Name="p1", Value="v1", Type="String")
        with RedisServer(tmp_path / "auth", password="pa55-word") as server:
            config = shared_config(
                server.url, key_secret="tier-key", password_secret="tier-password"
            )
            no_key = {"CACHE_EXTENSION_SHARED_KEY": ""}  # empty is unset: the secret is used
            a, b = serve(config, no_key), serve(config, no_key)
            assert a.get("/parameters?name=p1").text == "v1"
            assert b.get("/parameters?name=p1").text == "v1"
            assert b.stats()["parameters"]["shared_hits"] == 1
            assert proxy.count("GetParameter") == 1
            # Reading the tier's secrets is the core's own business, not the route's.
            assert a.stats()["parameters"]["upstream_calls"] == 1
            assert b.stats()["parameters"]["upstream_calls"] == 0

    def test_a_wrong_password_means_upstream(
        self, tmp_path: Path, serve: Serve, proxy: UpstreamProxy, ssm: Any
    ) -> None:
        """CACHE_EXTENSION_SHARED_PASSWORD is used; a wrong one fails the tier, not reads."""
        ssm.put_parameter(Name="p1", Value="v1", Type="String")
        with RedisServer(tmp_path / "auth", password="right") as server:
            good = serve(shared_config(server.url), {"CACHE_EXTENSION_SHARED_PASSWORD": "right"})
            bad = serve(shared_config(server.url), {"CACHE_EXTENSION_SHARED_PASSWORD": "wrong"})
            assert good.get("/parameters?name=p1").text == "v1"
            assert bad.get("/parameters?name=p1").text == "v1"
            assert good.stats()["parameters"]["shared_writes"] == 1
            assert bad.stats()["parameters"]["shared_errors"] >= 1
            assert bad.stats()["parameters"]["shared_hits"] == 0


class TestPluginSeam:
    def test_a_plugin_store_is_chosen_by_its_url_scheme(
        self, aws: str, tmp_path: Path, ssm: Any
    ) -> None:
        """A third party's store answers its own scheme through cachelayer_shared_stores;
        the tier seals what it stores there too. (The store is a dict: the seam is what is
        tested here; the real stores are tested above.)"""
        from cachelayer import hookimpl
        from cachelayer.plugins import make_plugin_manager
        from cachelayer.shared.store import SharedStoreKind

        held: dict = {}

        class DictStore:
            def __init__(self, options: StoreOptions) -> None:
                self.options = options

            def get(self, key: str) -> Any:
                return held.get(key)

            def set(self, key: str, data: bytes, ttl: float) -> None:
                held[key] = data

            def add(self, key: str, data: bytes, ttl: float) -> bool:
                return held.setdefault(key, data) == data

            def release(self, key: str, data: bytes) -> None:
                if held.get(key) == data:
                    del held[key]

            def delete_prefix(self, prefix: str) -> int:
                doomed = [k for k in held if k.startswith(prefix)]
                for k in doomed:
                    del held[k]
                return len(doomed)

            def close(self) -> None:
                pass

        class Plugin:
            @hookimpl
            def cachelayer_shared_stores(self) -> List[SharedStoreKind]:
                return [SharedStoreKind("dict", ("dict",), DictStore)]

        ssm.put_parameter(Name="p1", Value="plugin-stored", Type="String")
        pm = make_plugin_manager()
        pm.register(Plugin(), name="dict-store")
        config = tmp_path / "c.yaml"
        config.write_text("cache:\n  shared:\n    url: dict://anywhere\n")
        from cachelayer.core.app import Application
        from cachelayer.testing.moto import aws_environment

        env = {**aws_environment(aws), "CACHE_EXTENSION_SHARED_KEY": KEY}
        app = Application.from_environment(env, config_path=str(config), pm=pm)
        try:
            assert isinstance(app.cache.shared.store, DictStore)  # type: ignore[union-attr]
            provider, item = app.router.resolve("parameters", {"name": "p1"})
            import asyncio

            assert asyncio.run(app.cache.get(provider, item)).value.body == b"plugin-stored"
            assert len(held) == 1
            assert all(b"plugin-stored" not in v for v in held.values())
        finally:
            app.close()
