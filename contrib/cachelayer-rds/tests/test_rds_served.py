"""The installed RDS provider served by a real ``cachelayer serve`` process: caching end to end.

Real parts: PostgreSQL / MariaDB on loopback, the password in moto's Secrets Manager read through
the core's /secrets route, and the server's own statistics to count the queries it really ran.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import time
import urllib.parse
from pathlib import Path
from typing import Any, Callable, List, Tuple

import boto3
import pytest
from rds_databases import APP_PASSWORD, SECRET_NAME, MariadbServer, PostgresServer

from cachelayer.testing.clock import FileClock

CONFIG = """\
rds:
  - name: flags
    url: postgresql://app@127.0.0.1:{port}/appdb   # or mysql://...; ?sslmode=require for TLS
    password_secret: app-db-password             # a Secrets Manager secret; or iam_auth: true
    query: "SELECT key, value, enabled FROM flags WHERE key = :key"
    ttl: {ttl}
    max_rows: 100
    statement_timeout: 2s
    pool_size: {pool}
"""


def pg_queries(server: PostgresServer) -> int:
    """How many times the server ran the flags query (pg_stat_statements)."""
    rows = server.sql(
        "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements "
        "WHERE query LIKE 'DECLARE cachelayer_rows%FROM flags WHERE key = $1'",
        database="appdb",
    )
    return int(rows[0][0])


def backends(server: PostgresServer) -> int:
    rows = server.sql(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'cachelayer-rds'"
    )
    return int(rows[0][0])


def wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)


@pytest.fixture()
def secret(aws: str) -> None:
    boto3.client("secretsmanager").create_secret(Name=SECRET_NAME, SecretString=APP_PASSWORD)


@pytest.mark.slow
class TestServedPostgres:
    def test_hits_misses_negative_ttl_and_single_flight(
        self,
        postgres: PostgresServer,
        secret: None,
        cachelayer_server: Callable[..., Any],
        tmp_path: Path,
    ) -> None:
        """The issue's config: miss then hit, no rows 404 cached, TTL expiry, and 50 concurrent
        reads of one key run the query once on the server."""
        clock = FileClock(tmp_path / "clock")
        server = cachelayer_server(CONFIG.format(port=postgres.port, ttl="2s", pool=2), clock=clock)
        postgres.sql("SELECT pg_stat_statements_reset()", database="appdb")

        first = server.get("/rds?name=flags/dark-mode")
        assert first.status == 200, first.body
        assert first.headers["Content-Type"].startswith("application/json")
        assert first.json() == [{"key": "dark-mode", "value": "on", "enabled": True}]
        assert first.headers["X-Cache"] == "miss"
        assert server.get("/rds?name=flags/dark-mode").headers["X-Cache"] == "hit"
        assert pg_queries(postgres) == 1

        missing = server.get("/rds?name=flags/no-such-flag")
        assert (missing.status, missing.json()["error"]) == (404, "NotFound")
        assert server.get("/rds?name=flags/no-such-flag").status == 404
        assert pg_queries(postgres) == 2  # the second 404 came from the negative cache

        with concurrent.futures.ThreadPoolExecutor(50) as pool:
            answers = list(pool.map(lambda _: server.get("/rds?name=flags/beta"), range(50)))
        assert [a.status for a in answers] == [200] * 50
        assert {a.body for a in answers} == {b'[{"key":"beta","value":"off","enabled":false}]'}
        assert pg_queries(postgres) == 3

        clock.advance(2.2)  # past the 2 s TTL
        expired = server.get("/rds?name=flags/dark-mode")
        assert (expired.status, expired.headers["X-Cache"]) == (200, "miss")
        assert pg_queries(postgres) == 4

        stats = server.get("/-/stats").json()
        # The password secret was fetched once, through the core's cache, like any value.
        secrets = stats["secrets"] if "secrets" in stats else stats["routes"]["secrets"]
        assert secrets["upstream_calls"] == 1
        assert backends(postgres) <= 2

    def test_outage_serves_stale_then_precise_502_then_recovers_without_leaks(
        self,
        postgres: PostgresServer,
        secret: None,
        cachelayer_server: Callable[..., Any],
        tmp_path: Path,
    ) -> None:
        """Database down: a cached key is served stale, an uncached one is a 502 naming the
        failure; back up: fresh values again and exactly one connection on the server."""
        clock = FileClock(tmp_path / "clock")
        server = cachelayer_server(CONFIG.format(port=postgres.port, ttl="1s", pool=1), clock=clock)
        assert server.get("/rds?name=flags/dark-mode").status == 200
        assert backends(postgres) == 1
        postgres.stop()
        try:
            clock.advance(1.1)  # past the TTL
            stale = server.get("/rds?name=flags/dark-mode")
            assert (stale.status, stale.headers["X-Cache"]) == (200, "stale")
            assert stale.json()[0]["value"] == "on"
            down = server.get("/rds?name=flags/beta")
            assert down.status == 502
            assert down.json()["error"] == "DatabaseUnavailable"
            assert "rds source 'flags'" in down.json()["message"]
            assert APP_PASSWORD not in down.body.decode()
        finally:
            postgres.start()

        def answers(name: str, states: Tuple[str, ...]) -> Callable[[], bool]:
            def check() -> bool:
                clock.advance(1.0)  # past the backoff the failures left (0.5 s to 1 s at first)
                answer = server.get(f"/rds?name=flags/{name}")
                return answer.status == 200 and answer.headers["X-Cache"] in states

            return check

        wait_for(answers("dark-mode", ("hit", "miss")))
        wait_for(answers("beta", ("hit", "miss")))
        assert backends(postgres) == 1


@pytest.mark.slow
class TestFreeze:
    def test_connection_killed_while_frozen_is_replaced_on_thaw(
        self,
        postgres: PostgresServer,
        secret: None,
        cachelayer_server: Callable[..., Any],
        tmp_path: Path,
    ) -> None:
        """Frozen (SIGSTOP) past the server's idle_session_timeout, the kept connection dies; on
        thaw the next read replaces it once and answers fresh, with one connection left."""
        postgres.sql(f"CREATE USER frozen PASSWORD '{APP_PASSWORD}'")
        try:
            postgres.sql("ALTER ROLE frozen SET idle_session_timeout = '500ms'")
            postgres.sql("GRANT SELECT ON flags TO frozen", database="appdb")
            config = CONFIG.format(port=postgres.port, ttl="1s", pool=1).replace(
                "postgresql://app@", "postgresql://frozen@"
            )
            clock = FileClock(tmp_path / "clock")
            server = cachelayer_server(config, clock=clock)
            assert server.get("/rds?name=flags/beta").status == 200
            assert backends(postgres) == 1
            os.kill(server.process.pid, signal.SIGSTOP)
            try:
                wait_for(lambda: backends(postgres) == 0, timeout=10)  # killed while frozen
                clock.advance(1.1)  # and past the TTL
            finally:
                os.kill(server.process.pid, signal.SIGCONT)
            thawed = server.get("/rds?name=flags/beta")
            assert (thawed.status, thawed.headers["X-Cache"]) == (200, "miss"), thawed.body
            assert backends(postgres) == 1
        finally:
            postgres.sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'frozen'"
            )
            postgres.sql("REVOKE ALL ON flags FROM frozen", database="appdb")
            postgres.sql("DROP USER frozen")


@pytest.mark.slow
class TestServedMariadb:
    def test_hits_and_single_flight_counted_in_the_general_log(
        self,
        mariadb: MariadbServer,
        secret: None,
        cachelayer_server: Callable[..., Any],
    ) -> None:
        """mysql:// sources serve the same way; 50 concurrent reads make one query (general log)."""
        config = (
            CONFIG.format(port=mariadb.port, ttl="1m", pool=2)
            .replace("postgresql://", "mysql://")
            .replace(
                "SELECT key, value, enabled FROM flags WHERE key = :key",
                "SELECT `key`, value, enabled FROM flags WHERE `key` = :key",
            )
        )
        server = cachelayer_server(config)

        def queries() -> int:
            rows: List[Any] = mariadb.sql(
                "SELECT count(*) FROM mysql.general_log WHERE command_type = 'Query' "
                "AND argument LIKE 'SELECT `key`, value, enabled FROM flags%'"
            )
            return int(rows[0][0])

        before = queries()
        unicode_path = "/rds?name=" + urllib.parse.quote("flags/ünïcødé-ключ")
        with concurrent.futures.ThreadPoolExecutor(50) as pool:
            answers = list(pool.map(lambda _: server.get(unicode_path), range(50)))
        assert [a.status for a in answers] == [200] * 50
        assert answers[0].json() == [{"key": "ünïcødé-ключ", "value": "yes", "enabled": 1}]
        assert queries() == before + 1
        assert server.get(unicode_path).headers["X-Cache"] == "hit"
        assert queries() == before + 1
