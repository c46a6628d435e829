"""The RDS provider against real PostgreSQL and MariaDB servers, with the password in moto."""

from __future__ import annotations

import base64
import json
import threading
from typing import Any, List, Optional

import attrs
import boto3
import pytest
from cachelayer_rds import RdsProvider, RdsSource, TooManyRowsError
from cachelayer_rds.drivers import DatabaseUnavailableError
from rds_databases import APP_PASSWORD, SECRET_NAME, MariadbServer, PostgresServer

from cachelayer import (
    BadRequestError,
    NotFoundError,
    ProviderContext,
    TransientError,
    UpstreamError,
    UpstreamTimeoutError,
)
from cachelayer.core.router import Router
from cachelayer.plugins import discover
from cachelayer.testing.fixtures import UpstreamCalls

FLAGS = "SELECT key, value, enabled FROM flags WHERE key = :key"
MY_FLAGS = "SELECT `key`, value, enabled FROM flags WHERE `key` = :key"


def pg_url(server: PostgresServer, query: str = "") -> str:
    return f"postgresql://app@127.0.0.1:{server.port}/appdb{query}"


def my_url(server: MariadbServer) -> str:
    return f"mysql://app@127.0.0.1:{server.port}/appdb"


@pytest.fixture()
def secret(aws: str) -> str:
    """The database password, stored in (moto's) Secrets Manager."""
    boto3.client("secretsmanager").create_secret(Name=SECRET_NAME, SecretString=APP_PASSWORD)
    return SECRET_NAME


@pytest.fixture()
def make(provider_context: ProviderContext, secret: str) -> Any:
    """A factory of configured providers; each is closed after the test."""
    made: List[RdsProvider] = []

    def build(*sources: RdsSource, context: Optional[ProviderContext] = None) -> RdsProvider:
        provider = RdsProvider.from_config(list(sources), context or provider_context)
        made.append(provider)
        return provider

    yield build
    for provider in made:
        provider.close()


def get(provider: RdsProvider, name: str) -> Any:
    value = provider.fetch(provider.resolve(name, {}))
    assert value.content_type == "application/json"
    return json.loads(value.body)


def pg_source(server: PostgresServer, **kw: Any) -> RdsSource:
    fields = {
        "name": "flags",
        "url": pg_url(server),
        "query": FLAGS,
        "password_secret": SECRET_NAME,
    }
    fields.update(kw)
    return RdsSource(**fields)


def my_source(server: MariadbServer, **kw: Any) -> RdsSource:
    fields = {
        "name": "flags",
        "url": my_url(server),
        "query": MY_FLAGS,
        "password_secret": SECRET_NAME,
    }
    fields.update(kw)
    return RdsSource(**fields)


def backends(server: PostgresServer) -> int:
    rows = server.sql(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'cachelayer-rds'"
    )
    return int(rows[0][0])


class TestEntryPoint:
    def test_installed_distribution_provides_the_rds_section(self) -> None:
        """The installed cachelayer-rds distribution provides the rds section and route."""
        _, registry = discover()
        info = registry.by_name["rds"]
        assert info.distribution == "cachelayer-rds"
        assert info.provider_type.route == "rds"


class TestPostgres:
    def test_rows_for_a_key_are_a_json_array_of_objects(
        self, postgres: PostgresServer, make: Any
    ) -> None:
        """A key's rows come back as objects keyed by column, with native booleans."""
        provider = make(pg_source(postgres))
        assert get(provider, "flags/dark-mode") == [
            {"key": "dark-mode", "value": "on", "enabled": True}
        ]

    def test_no_rows_is_not_found(self, postgres: PostgresServer, make: Any) -> None:
        """A key matching no row is NotFound (which the core caches negatively)."""
        provider = make(pg_source(postgres))
        with pytest.raises(NotFoundError, match="no rows"):
            provider.fetch(provider.resolve("flags/nope", {}))

    @pytest.mark.parametrize(
        "key, expected",
        [
            ("' OR 1=1 --", "quoted"),
            (";", "semi"),
            ("ünïcødé-ключ", "yes"),
        ],
    )
    def test_injection_attempts_match_only_their_own_row(
        self, postgres: PostgresServer, make: Any, key: str, expected: str
    ) -> None:
        """A key is bound, never spliced: SQL in it matches only a row with exactly that key."""
        provider = make(pg_source(postgres))
        rows = get(provider, "flags/" + key)
        assert rows == [{"key": key, "value": expected, "enabled": True}]

    def test_injection_without_a_matching_row_is_not_found(
        self, postgres: PostgresServer, make: Any
    ) -> None:
        """A classic injection with no such key matches nothing, instead of every row."""
        provider = make(pg_source(postgres))
        for key in ("x' OR '1'='1", "1; DROP TABLE flags", "dark-mode' --"):
            with pytest.raises(NotFoundError):
                provider.fetch(provider.resolve("flags/" + key, {}))
        assert postgres.sql("SELECT count(*) FROM flags", database="appdb")[0][0] == 5

    def test_native_types_are_exact(self, postgres: PostgresServer, make: Any) -> None:
        """Decimals keep their digits, big ints stay exact, dates are RFC 3339, bytes base64."""
        provider = make(
            pg_source(postgres, name="prices", query="SELECT * FROM prices WHERE sku = :key")
        )
        value = provider.fetch(provider.resolve("prices/A-1", {}))
        assert b'"price":12345678901234.500000' in value.body
        assert b'"n":9007199254740993' in value.body
        (row,) = json.loads(value.body, parse_float=str)
        assert row["ratio"] == "0.1"
        assert row["at"] == "2024-05-01T10:30:00.250000Z"
        assert row["day"] == "2024-02-29"
        assert row["during"] == "P1DT2H3M4.5S"
        assert base64.b64decode(row["payload"]) == b"\x00\xff\x10"
        assert row["meta"] == {"k": [1, "2.50", None]}
        assert row["tags"] == ["x", "y"]
        assert row["id"] == "a8098c1a-f86e-11da-bd1a-00112444be1e"
        assert row["missing"] is None

    def test_more_rows_than_max_rows_is_refused(self, postgres: PostgresServer, make: Any) -> None:
        """A key matching more than max_rows rows is TooManyRows (not truncated)."""
        query = "SELECT setting, value FROM tenants WHERE tenant = :key ORDER BY setting"
        provider = make(pg_source(postgres, name="t", query=query, max_rows=2))
        with pytest.raises(TooManyRowsError, match="max_rows"):
            provider.fetch(provider.resolve("t/t1", {}))
        wide = make(pg_source(postgres, name="t", query=query, max_rows=3))
        assert [r["setting"] for r in get(wide, "t/t1")] == ["s1", "s4", "s7"]

    def test_query_runs_in_a_read_only_transaction(
        self, postgres: PostgresServer, make: Any
    ) -> None:
        """A SELECT that would write (nextval) fails: the transaction is read-only."""
        provider = make(
            pg_source(postgres, name="w", query="SELECT nextval('counter') WHERE :key = 'x'")
        )
        with pytest.raises(UpstreamError, match=r"25006|read-only") as caught:
            provider.fetch(provider.resolve("w/x", {}))
        assert not isinstance(caught.value, TransientError)

    def test_statement_timeout_cancels_a_slow_query(
        self, postgres: PostgresServer, make: Any
    ) -> None:
        """A query running past statement_timeout is cancelled: an upstream timeout (504)."""
        provider = make(
            pg_source(
                postgres,
                name="slow",
                query="SELECT pg_sleep(5), :key::text AS k",
                statement_timeout=0.3,
            )
        )
        with pytest.raises(UpstreamTimeoutError, match="statement_timeout"):
            provider.fetch(provider.resolve("slow/x", {}))
        assert provider.open_connections("slow") == 1  # the connection is still good

    def test_integer_keys_are_bound_as_integers(self, postgres: PostgresServer, make: Any) -> None:
        """key_type integer binds an int and canonicalises the name; a non-integer key is 400."""
        provider = make(
            pg_source(postgres, name="n", key_type="integer", query="SELECT :key * 2 AS twice")
        )
        item = provider.resolve("n/007", {})
        assert item.name == "n/7"
        assert json.loads(provider.fetch(item).body) == [{"twice": 14}]
        for bad in ("seven", "1_000", " 7", "7.0", "+7"):
            with pytest.raises(BadRequestError, match="integer"):
                provider.resolve("n/" + bad, {})

    def test_a_dead_kept_connection_is_replaced_once(
        self, postgres: PostgresServer, make: Any
    ) -> None:
        """A kept connection killed server-side (as after a freeze) is replaced within the fetch."""
        provider = make(pg_source(postgres))
        get(provider, "flags/beta")
        postgres.sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'cachelayer-rds'"
        )
        assert get(provider, "flags/beta")[0]["value"] == "off"
        assert provider.open_connections("flags") == 1
        assert backends(postgres) == 1

    @pytest.mark.parametrize("scheme", ["postgresql", "mysql"])
    def test_a_refused_connection_is_transient(self, make: Any, scheme: str) -> None:
        """Nothing listening on the port: DatabaseUnavailable, a transient error (both drivers)."""
        from rds_databases import free_port

        provider = make(
            RdsSource(
                name="gone",
                url=f"{scheme}://app@127.0.0.1:{free_port()}/appdb",
                query=FLAGS,
                password_secret=SECRET_NAME,
                connect_timeout=1,
            )
        )
        with pytest.raises(DatabaseUnavailableError, match="ConnectionRefusedError"):
            provider.fetch(provider.resolve("gone/x", {}))
        assert provider.open_connections("gone") == 0

    def test_a_wrong_password_is_not_transient(
        self, postgres: PostgresServer, make: Any, aws: str
    ) -> None:
        """Authentication failure is an UpstreamError naming the fix, not a transient error."""
        boto3.client("secretsmanager").create_secret(Name="wrong", SecretString="nope")
        provider = make(pg_source(postgres, password_secret="wrong"))
        with pytest.raises(UpstreamError, match="authentication failed") as caught:
            provider.fetch(provider.resolve("flags/beta", {}))
        assert not isinstance(caught.value, TransientError)
        assert APP_PASSWORD not in str(caught.value) and "nope" not in str(caught.value)

    def test_rds_json_secret_gives_its_password_field(
        self, postgres: PostgresServer, make: Any, aws: str
    ) -> None:
        """A secret in RDS's JSON form ({"username", "password", ...}) gives its password."""
        boto3.client("secretsmanager").create_secret(
            Name="rds-json", SecretString=json.dumps({"username": "app", "password": APP_PASSWORD})
        )
        provider = make(pg_source(postgres, password_secret="rds-json"))
        assert get(provider, "flags/beta")[0]["key"] == "beta"

    def test_a_binary_secret_is_read_over_the_lean_json_transport(
        self,
        postgres: PostgresServer,
        make: Any,
        provider_context: ProviderContext,
        aws: str,
        upstream_calls: UpstreamCalls,
    ) -> None:
        """Without the core's reads, GetSecretValue goes through ``context.json_client``
        (moto over HTTP), never a boto3 client; a SecretBinary arrives base64 and is decoded."""
        boto3.client("secretsmanager").create_secret(
            Name="binary", SecretBinary=APP_PASSWORD.encode("utf-8")
        )

        def no_boto3(*args: Any) -> Any:
            raise AssertionError(f"a boto3 client was asked for: {args}")

        context = attrs.evolve(provider_context, client=no_boto3, read=None)
        provider = make(pg_source(postgres, password_secret="binary"), context=context)
        assert get(provider, "flags/beta")[0]["key"] == "beta"
        assert upstream_calls.count("GetSecretValue") == 1

    def test_a_missing_password_secret_is_an_upstream_error(
        self, postgres: PostgresServer, make: Any
    ) -> None:
        """A missing password secret is a 502 naming it, never NotFound for the key."""
        provider = make(pg_source(postgres, password_secret="no-such-secret"))
        with pytest.raises(UpstreamError, match="no-such-secret") as caught:
            provider.fetch(provider.resolve("flags/beta", {}))
        assert not isinstance(caught.value, NotFoundError)

    def test_concurrent_fetches_share_the_pool(self, postgres: PostgresServer, make: Any) -> None:
        """Many threads fetching at once never open more than pool_size connections."""
        provider = make(pg_source(postgres, pool_size=2))
        errors: List[BaseException] = []

        def one(key: str) -> None:
            try:
                get(provider, "flags/" + key)
            except BaseException as exc:  # collected for the assertion below
                errors.append(exc)

        threads = [threading.Thread(target=one, args=(k,)) for k in ["beta", "dark-mode"] * 8]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert provider.open_connections("flags") <= 2
        assert backends(postgres) <= 2


def _ssl_of_our_connections(postgres: PostgresServer) -> Any:
    """The server's view of whether each of the provider's connections uses TLS."""
    return postgres.sql(
        "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
        "WHERE a.application_name = 'cachelayer-rds'"
    )


class TestTls:
    def test_require_encrypts_without_a_ca_bundle(
        self, postgres: PostgresServer, make: Any
    ) -> None:
        """sslmode=require encrypts even with no CA named (libpq's meaning)."""
        provider = make(pg_source(postgres, url=pg_url(postgres, "?sslmode=require")))
        assert get(provider, "flags/beta")[0]["value"] == "off"
        assert _ssl_of_our_connections(postgres) == [[True]]

    def test_verify_full_with_the_operator_ca_bundle(
        self, postgres: PostgresServer, make: Any
    ) -> None:
        """sslmode=verify-full with the named CA bundle connects over TLS (seen by the server)."""
        provider = make(
            pg_source(
                postgres,
                url=pg_url(postgres, "?sslmode=verify-full"),
                ca_bundle=str(postgres.tls.ca_file),
            )
        )
        assert get(provider, "flags/beta")[0]["value"] == "off"
        assert _ssl_of_our_connections(postgres) == [[True]]

    def test_a_certificate_from_another_ca_is_refused(
        self, postgres: PostgresServer, make: Any
    ) -> None:
        """verify-full against a CA that did not sign the server's certificate fails, not transient."""
        provider = make(
            pg_source(
                postgres,
                url=pg_url(postgres, "?sslmode=verify-full"),
                ca_bundle=str(postgres.tls.other_ca_file),
            )
        )
        with pytest.raises(UpstreamError, match="certificate failed verification") as caught:
            provider.fetch(provider.resolve("flags/beta", {}))
        assert not isinstance(caught.value, TransientError)

    def test_no_sslmode_means_no_tls(self, postgres: PostgresServer, make: Any) -> None:
        """Without sslmode the connection is plain (libpq's prefer is not guessed)."""
        provider = make(pg_source(postgres))
        get(provider, "flags/beta")
        assert _ssl_of_our_connections(postgres) == [[False]]


class TestMariadb:
    def test_tls_verify_identity_with_the_ca_bundle(
        self, mariadb: MariadbServer, make: Any
    ) -> None:
        """ssl-mode=VERIFY_IDENTITY with the named CA connects over TLS; another CA is refused."""
        query = (
            "SELECT VARIABLE_VALUE AS cipher FROM information_schema.SESSION_STATUS "
            "WHERE VARIABLE_NAME = 'Ssl_cipher' AND :key = 'x'"
        )
        url = my_url(mariadb) + "?ssl-mode=VERIFY_IDENTITY"
        provider = make(
            my_source(mariadb, name="tls", url=url, query=query, ca_bundle=str(mariadb.tls.ca_file))
        )
        (row,) = get(provider, "tls/x")
        assert row["cipher"]  # a TLS cipher is in use
        plain = make(my_source(mariadb, name="tls", query=query))
        assert get(plain, "tls/x") == [{"cipher": ""}]
        wrong = make(
            my_source(
                mariadb, name="tls", url=url, query=query, ca_bundle=str(mariadb.tls.other_ca_file)
            )
        )
        with pytest.raises(UpstreamError, match="certificate failed verification") as caught:
            wrong.fetch(wrong.resolve("tls/x", {}))
        assert not isinstance(caught.value, TransientError)

    def test_rows_and_types(self, mariadb: MariadbServer, make: Any) -> None:
        """MariaDB rows: exact decimals, RFC 3339-style datetimes, TIME as a duration, bytes base64."""
        provider = make(my_source(mariadb))
        assert get(provider, "flags/dark-mode") == [
            {"key": "dark-mode", "value": "on", "enabled": 1}
        ]
        prices = make(
            my_source(mariadb, name="prices", query="SELECT * FROM prices WHERE sku = :key")
        )
        value = prices.fetch(prices.resolve("prices/A-1", {}))
        assert b'"price":12345678901234.500000' in value.body
        assert b'"n":9007199254740993' in value.body
        (row,) = json.loads(value.body)
        assert row["at"] == "2024-05-01T10:30:00.250000"
        assert row["day"] == "2024-02-29"
        assert row["during"] == "P1DT2H3M4S"
        assert base64.b64decode(row["payload"]) == b"\x00\xff\x10"

    @pytest.mark.parametrize(
        "key, expected",
        [("' OR 1=1 -- ", "quoted"), (";", "semi"), ("ünïcødé-ключ", "yes"), ("back\\slash", "bs")],
    )
    def test_injection_attempts_match_only_their_own_row(
        self, mariadb: MariadbServer, make: Any, key: str, expected: str
    ) -> None:
        """Quotes, semicolons, backslashes and unicode in a key match only that exact key."""
        provider = make(my_source(mariadb))
        assert get(provider, "flags/" + key) == [{"key": key, "value": expected, "enabled": 1}]
        with pytest.raises(NotFoundError):
            provider.fetch(provider.resolve("flags/x' OR '1'='1", {}))

    def test_statement_timeout_and_read_only(self, mariadb: MariadbServer, make: Any) -> None:
        """The session's statement timeout cancels a slow query; the transaction is read-only."""
        slow = make(
            my_source(
                mariadb, name="slow", query="SELECT SLEEP(3) AS s, :key AS k", statement_timeout=0.3
            )
        )
        with pytest.raises(UpstreamTimeoutError, match="statement_timeout"):
            slow.fetch(slow.resolve("slow/x", {}))
        # bump() inserts a row: allowed to the user, refused by the read-only transaction.
        ro = make(my_source(mariadb, name="ro", query="SELECT bump() AS b, :key AS k"))
        with pytest.raises(UpstreamError, match=r"1792|READ ONLY") as caught:
            ro.fetch(ro.resolve("ro/x", {}))
        assert not isinstance(caught.value, TransientError)
        assert mariadb.sql("SELECT count(*) FROM counter", database="appdb") == [(0,)]

    def test_more_rows_than_max_rows_gives_up_the_connection(
        self, mariadb: MariadbServer, make: Any
    ) -> None:
        """Over max_rows is refused without reading the rest; the streaming connection is closed."""
        provider = make(
            my_source(
                mariadb, name="all", max_rows=2, query="SELECT `key` FROM flags WHERE :key = 'all'"
            )
        )
        with pytest.raises(TooManyRowsError):
            provider.fetch(provider.resolve("all/all", {}))
        assert provider.open_connections("all") == 0

    def test_a_dead_kept_connection_is_replaced_once(
        self, mariadb: MariadbServer, make: Any
    ) -> None:
        """A kept connection killed server-side is replaced within the fetch."""
        provider = make(my_source(mariadb))
        get(provider, "flags/beta")
        for (pid,) in mariadb.sql(
            "SELECT id FROM information_schema.processlist WHERE user = 'app'"
        ):
            mariadb.sql(f"KILL {int(pid)}")
        assert get(provider, "flags/beta")[0]["value"] == "off"
        assert provider.open_connections("flags") == 1


class TestResolve:
    def test_names_and_parameters_are_checked(self, make: Any) -> None:
        """Unknown sources are 404; a missing key or an extra parameter is 400."""
        provider = make(RdsSource(name="flags", url="postgresql://app@h/db", query=FLAGS))
        with pytest.raises(NotFoundError, match="sources: flags"):
            provider.resolve("other/x", {})
        with pytest.raises(BadRequestError, match="no key"):
            provider.resolve("flags", {})
        with pytest.raises(BadRequestError, match="no key"):
            provider.resolve("flags/", {})
        with pytest.raises(BadRequestError, match="only name="):
            Router({"rds": provider}).resolve("rds", {"name": "flags/x", "version": "1"})
        with pytest.raises(BadRequestError, match="longer"):
            provider.resolve("flags/" + "x" * 2000, {})
        assert provider.resolve("flags/a/b", {}).name == "flags/a/b"


class TestTooManyConnections:
    def test_postgres_out_of_connection_slots_is_transient(
        self, postgres: PostgresServer, make: Any
    ) -> None:
        """The server's "too many clients" (53300) is DatabaseUnavailable: transient."""
        import pg8000.exceptions
        import pg8000.native

        held: List[Any] = []
        try:
            while len(held) < 40:
                try:
                    held.append(
                        pg8000.native.Connection(
                            "app",
                            host="127.0.0.1",
                            port=postgres.port,
                            database="appdb",
                            password=APP_PASSWORD,
                            ssl_context=False,
                        )
                    )
                except pg8000.exceptions.DatabaseError as exc:
                    assert exc.args[0]["C"] == "53300"
                    break
            provider = make(pg_source(postgres))
            with pytest.raises(DatabaseUnavailableError, match="53300"):
                provider.fetch(provider.resolve("flags/beta", {}))
            assert provider.open_connections("flags") == 0
        finally:
            for conn in held:
                conn.close()

    def test_mariadb_out_of_connections_is_transient(
        self, mariadb: MariadbServer, make: Any
    ) -> None:
        """MariaDB's "Too many connections" (1040) is DatabaseUnavailable: transient."""
        import pymysql

        held: List[Any] = []
        try:
            while len(held) < 40:
                try:
                    held.append(
                        pymysql.connect(
                            host="127.0.0.1",
                            port=mariadb.port,
                            user="app",
                            password=APP_PASSWORD,
                            database="appdb",
                        )
                    )
                except pymysql.err.OperationalError as exc:
                    assert exc.args[0] == 1040
                    break
            provider = make(my_source(mariadb))
            with pytest.raises(DatabaseUnavailableError, match="1040"):
                provider.fetch(provider.resolve("flags/beta", {}))
        finally:
            for conn in held:
                conn.close()
