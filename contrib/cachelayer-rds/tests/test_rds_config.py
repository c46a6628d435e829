"""The rds: section and its query: refused at startup, with file and line, when unsafe or wrong."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest
from cachelayer_rds.config import parse_url
from cachelayer_rds.iam import IamTokens, db_auth_token
from cachelayer_rds.sql import QueryError, parse_query

from cachelayer import ConfigError
from cachelayer.awsjson import Credentials
from cachelayer.awsjson.credentials import StaticCredentials
from cachelayer.core.app import Application

ISSUE_EXAMPLE = """\
rds:
  - name: flags
    url: postgresql://app@127.0.0.1:5432/appdb   # or mysql://...; ?sslmode=require for TLS
    password_secret: app-db-password             # a Secrets Manager secret; or iam_auth: true
    query: "SELECT key, value, enabled FROM flags WHERE key = :key"
    ttl: 1m
    max_rows: 100
    statement_timeout: 2s
"""


def load(tmp_path: Path, text: str) -> Application:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    env: Dict[str, str] = {"AWS_REGION": "us-west-2", "CACHE_EXTENSION_PLUGINS": "rds,secrets"}
    return Application.from_environment(env, config_path=str(path), client_factory=lambda *a: None)


def config_error(tmp_path: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    return caught.value


class TestIssueExample:
    def test_the_documented_example_loads_as_written(self, tmp_path: Path) -> None:
        """The issue's YAML example is accepted unchanged, and makes no connection."""
        app = load(tmp_path, ISSUE_EXAMPLE)
        try:
            provider = app.providers["rds"]
            item = provider.resolve("flags/dark-mode", {})
            assert item.ttl == 60.0
            source, key = item.target
            assert (source.max_rows, float(source.statement_timeout), key) == (
                100,
                2.0,
                "dark-mode",
            )
            assert source.database.port == 5432 and source.sslmode == "disable"
            assert provider.open_connections("flags") == 0
        finally:
            app.close()


class TestRefusedQueries:
    @pytest.mark.parametrize(
        "query, message",
        [
            ("DELETE FROM flags WHERE key = :key", "starts with DELETE"),
            ("SELECT 1 WHERE :key = 'a'; DROP TABLE flags", "more than one statement"),
            (
                "WITH d AS (DELETE FROM flags RETURNING *) SELECT * FROM d WHERE key = :key",
                "DELETE",
            ),
            ("SELECT * INTO backup FROM flags WHERE key = :key", "INTO"),
            ("SELECT * FROM flags WHERE key = :key FOR UPDATE", "UPDATE"),
            ("SELECT * FROM flags", "no :key"),
            ("SELECT * FROM flags WHERE key = :name", "unknown parameter :name"),
        ],
    )
    def test_unsafe_query_is_a_config_error_with_file_and_line(
        self, tmp_path: Path, query: str, message: str
    ) -> None:
        """A mutating, multi-statement or unparameterised query stops startup at its line."""
        text = ISSUE_EXAMPLE.replace(
            '"SELECT key, value, enabled FROM flags WHERE key = :key"',
            repr(query).replace("'", '"')
            if "'" not in query
            else "'" + query.replace("'", "''") + "'",
        )
        error = config_error(tmp_path, text)
        assert f"{tmp_path / 'config.yaml'}:5:" in str(error)
        assert "query" in str(error) and message in str(error)

    def test_a_password_in_the_url_is_refused(self, tmp_path: Path) -> None:
        """A password in the URL is refused at its line, pointing at password_secret."""
        error = config_error(
            tmp_path, ISSUE_EXAMPLE.replace("postgresql://app@", "postgresql://app:pw@")
        )
        assert ":3:" in str(error) and "password_secret" in str(error)
        assert "pw@" not in str(error)

    def test_two_sources_with_one_name_are_refused(self, tmp_path: Path) -> None:
        """Duplicate source names are a ConfigError naming the second one."""
        second = ISSUE_EXAMPLE.split("\n", 1)[1]
        error = config_error(tmp_path, ISSUE_EXAMPLE + second)
        assert "declared twice" in str(error) and "rds[1].name" in str(error)

    def test_unknown_key_is_refused(self, tmp_path: Path) -> None:
        """A misspelt key is refused at its line with a suggestion (the core's schema check)."""
        error = config_error(tmp_path, ISSUE_EXAMPLE.replace("max_rows:", "max_row:"))
        assert ":7:" in str(error) and "max_rows" in str(error)

    def test_prefetch_keys_are_declared_and_checked(self, tmp_path: Path) -> None:
        """keys are the items init_startup prefetches; a non-integer one with key_type integer is refused."""
        app = load(tmp_path, ISSUE_EXAMPLE + "    keys: [dark-mode, beta]\n")
        try:
            names = [i.name for i in app.providers["rds"].declared()]
            assert names == ["flags/dark-mode", "flags/beta"]
        finally:
            app.close()
        error = config_error(
            tmp_path, ISSUE_EXAMPLE + "    key_type: integer\n    keys: ['1', x]\n"
        )
        assert ":10:" in str(error) and "not an integer" in str(error)

    def test_both_password_and_iam_is_refused(self, tmp_path: Path) -> None:
        """password_secret and iam_auth together are refused."""
        error = config_error(tmp_path, ISSUE_EXAMPLE + "    iam_auth: true\n")
        assert "not both" in str(error)


class TestQueryScanner:
    def test_literals_comments_and_casts_are_not_parameters(self) -> None:
        """':key' in a string, a comment or a dollar quote is text; ::casts are not parameters."""
        query = parse_query(
            "SELECT ':key', $$ :key; $$, x::int /* :key; */ FROM t -- :key;\nWHERE k = :key;",
            dialect="postgresql",
        )
        assert query.uses == 1
        assert query.joined("$1").endswith("WHERE k = $1")

    def test_key_may_be_used_twice(self) -> None:
        """Every :key is the same bound value."""
        assert parse_query("SELECT :key AS a WHERE :key = 'x'", dialect="mysql").uses == 2

    def test_mysql_executable_comments_are_refused(self) -> None:
        """MySQL runs /*! ... */ as SQL: refused."""
        with pytest.raises(QueryError, match="executable comment"):
            parse_query("SELECT 1 /*! , (DELETE) */ WHERE :key = 1", dialect="mysql")

    def test_mysql_double_dash_needs_a_blank_to_be_a_comment(self) -> None:
        """In MySQL, 1--1 is arithmetic: the ; after it is still seen as a second statement."""
        with pytest.raises(QueryError, match="more than one statement"):
            parse_query("SELECT 1--1 WHERE :key = 1; DROP TABLE t", dialect="mysql")

    def test_unclosed_quote_is_refused(self) -> None:
        """An unclosed literal is refused rather than guessed at."""
        with pytest.raises(QueryError, match="never closed"):
            parse_query("SELECT 'abc WHERE k = :key", dialect="postgresql")


class TestUrls:
    def test_sslmode_spellings_and_rds_region(self) -> None:
        """libpq and MySQL sslmode spellings agree; an RDS host name gives its region."""
        url = parse_url("mysql://u@db.abc.eu-west-1.rds.amazonaws.com/app?ssl-mode=VERIFY_IDENTITY")
        assert (url.port, url.sslmode, url.region) == (3306, "verify-full", "eu-west-1")
        assert parse_url("postgres://u@h:6432/d?sslmode=require").sslmode == "require"
        with pytest.raises(ValueError, match="prefer"):
            parse_url("postgresql://u@h/d?sslmode=prefer")
        with pytest.raises(ValueError, match="not supported"):
            parse_url("postgresql://u@h/d?connect_timeout=3")


class TestIamToken:
    def test_token_equals_botocore_generate_db_auth_token(self, monkeypatch: Any) -> None:
        """The stdlib presign is byte for byte botocore's generate_db_auth_token, with and without a session token."""
        import boto3
        import botocore.auth

        moment = datetime.datetime(2026, 3, 14, 15, 9, 26)
        monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: moment)
        for token in (None, "FwoGZXIvYXdzE+/session=token"):
            client = boto3.client(
                "rds",
                region_name="eu-west-1",
                aws_access_key_id="AKIDEXAMPLE",
                aws_secret_access_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                aws_session_token=token,
            )
            expected = client.generate_db_auth_token(
                DBHostname="db.abc.eu-west-1.rds.amazonaws.com", Port=5432, DBUsername="app user"
            )
            mine = db_auth_token(
                "db.abc.eu-west-1.rds.amazonaws.com",
                5432,
                "app user",
                "eu-west-1",
                Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token),
                moment,
            )
            assert mine == expected
            assert "X-Amz-Expires=900" in mine

    def test_tokens_are_reused_then_refreshed_before_expiry(self) -> None:
        """A token is reused for ten minutes and made anew after, well before its 15."""
        now = [datetime.datetime(2026, 1, 1, 0, 0, 0)]
        tokens = IamTokens(
            credentials=StaticCredentials(Credentials("AK", "SK")), clock=lambda: now[0]
        )
        first = tokens.token("h", 5432, "u", "us-east-1")
        now[0] += datetime.timedelta(minutes=9)
        assert tokens.token("h", 5432, "u", "us-east-1") == first
        now[0] += datetime.timedelta(minutes=2)
        renewed = tokens.token("h", 5432, "u", "us-east-1")
        assert renewed != first and "X-Amz-Date=20260101T001100Z" in renewed

    def test_default_credentials_come_from_the_container_endpoint_with_its_token(
        self, monkeypatch: Any
    ) -> None:
        """No keys in the environment: the token is signed with the container endpoint's
        credentials (fetched with its authorization token, cachelayer.awsjson's source)."""
        import http.server
        import json
        import threading

        seen: List[Optional[str]] = []

        class Endpoint(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append(self.headers.get("Authorization"))
                body = json.dumps(
                    {
                        "AccessKeyId": "ASIACONTAINER",
                        "SecretAccessKey": "container-secret",
                        "Token": "container-session",
                        "Expiration": "2999-01-01T00:00:00Z",
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        server = http.server.HTTPServer(("127.0.0.1", 0), Endpoint)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
                monkeypatch.delenv(name, raising=False)
            monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", raising=False)
            monkeypatch.setenv(
                "AWS_CONTAINER_CREDENTIALS_FULL_URI", f"http://127.0.0.1:{server.server_port}/c"
            )
            monkeypatch.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", "agent-token")
            moment = datetime.datetime(2026, 5, 1, 12, 0, 0)
            tokens = IamTokens(clock=lambda: moment)
            made = tokens.token("h", 5432, "u", "eu-west-1")
            again = tokens.token("h2", 5432, "u", "eu-west-1")
        finally:
            server.shutdown()
            server.server_close()
        expected = Credentials("ASIACONTAINER", "container-secret", "container-session")
        assert made == db_auth_token("h", 5432, "u", "eu-west-1", expected, moment)
        assert "X-Amz-Security-Token=container-session" in again
        assert seen == ["agent-token"]  # fetched once, then kept until close to expiry


class TestIamConnection:
    def test_connections_use_a_fresh_token_as_password_over_tls(self) -> None:
        """With iam_auth the password is the current token for the URL's host, port and user,
        and TLS is on. Stubbed opener: no local server can validate an RDS IAM token."""
        from cachelayer_rds import RdsProvider, RdsSource

        from cachelayer import ProviderContext

        seen: List[Tuple[str, Optional[str]]] = []

        class Recorded:
            usable = True

            def query(self, key: Any) -> Any:
                return ["k"], [[key]]

            def close(self) -> None:
                self.usable = False

        def opener(source: RdsSource, password: Optional[str]) -> Any:
            seen.append((source.sslmode, password))
            return Recorded()

        moment = datetime.datetime(2026, 5, 1, 12, 0, 0)
        creds = Credentials("AKID", "SECRET", "SESSION")
        host = "db.abc.eu-west-1.rds.amazonaws.com"
        provider = RdsProvider.from_config(
            [
                RdsSource(
                    name="iam",
                    url=f"postgresql://app@{host}/appdb",
                    iam_auth=True,
                    query="SELECT :key AS k",
                )
            ],
            ProviderContext(client=lambda *a: None),
            opener=opener,
            tokens=IamTokens(credentials=StaticCredentials(creds), clock=lambda: moment),
        )
        assert provider.fetch(provider.resolve("iam/x", {})).body == b'[{"k":"x"}]'
        assert seen == [("require", db_auth_token(host, 5432, "app", "eu-west-1", creds, moment))]


class TestEncoding:
    def test_special_values(self) -> None:
        """NaN and infinities become strings; negative durations and time zones are kept."""
        import decimal

        from cachelayer_rds.encoding import encode_rows

        tz = datetime.timezone(datetime.timedelta(hours=-3, minutes=-30))
        body = encode_rows(
            ["a", "b", "c", "d", "e", "f"],
            [
                [
                    float("nan"),
                    decimal.Decimal("-0.000"),
                    decimal.Decimal("Infinity"),
                    datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=tz),
                    -datetime.timedelta(seconds=30),
                    datetime.time(1, 2, 3),
                ]
            ],
        )
        assert body == (
            b'[{"a":"nan","b":-0.000,"c":"Infinity","d":"2024-01-02T03:04:05-03:30",'
            b'"e":"-PT30S","f":"01:02:03"}]'
        )
