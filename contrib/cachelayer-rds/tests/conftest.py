"""Session-wide PostgreSQL and MariaDB servers (started once) and their test schemas."""

from __future__ import annotations

import os
import shutil
import sys
from typing import Iterator

import pytest

# The suite runs with --import-mode=importlib from the repository root: make the helper module
# beside this file importable by the test modules.
sys.path.insert(0, os.path.dirname(__file__))

from rds_databases import (
    APP_PASSWORD,
    INSTALL_HINT,
    MariadbServer,
    PostgresServer,
    temp_directory,
)

PG_SCHEMA = [
    "CREATE TABLE flags (key text PRIMARY KEY, value text, enabled boolean)",
    """INSERT INTO flags VALUES ('dark-mode', 'on', true), ('beta', 'off', false),
       ('ünïcødé-ключ', 'yes', true), (''' OR 1=1 --', 'quoted', true), (';', 'semi', true)""",
    """CREATE TABLE prices (sku text, price numeric(20,6), ratio double precision, n bigint,
       at timestamptz, day date, during interval, payload bytea, meta jsonb, tags text[],
       id uuid, missing text)""",
    """INSERT INTO prices VALUES ('A-1', 12345678901234.500000, 0.1, 9007199254740993,
       '2024-05-01 12:30:00.25+02', '2024-02-29', '1 day 02:03:04.5', '\\x00ff10',
       '{"k": [1, 2.50, null]}', '{x,y}', 'a8098c1a-f86e-11da-bd1a-00112444be1e', NULL)""",
    "CREATE TABLE tenants (tenant text, setting text, value text)",
    "INSERT INTO tenants SELECT 't' || (g % 3), 's' || g, 'v' || g FROM generate_series(1, 9) g",
    "CREATE SEQUENCE counter",
]


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL for the session: database appdb owned by user app (password APP_PASSWORD)."""
    bindir = PostgresServer.find_bindir()
    if bindir is None:
        pytest.fail(
            f"PostgreSQL's binaries are not under /usr/lib/postgresql/*/bin; {INSTALL_HINT}"
        )
    directory = temp_directory("cachelayer-rds-pg-")
    tls_dir = os.path.join(directory, "tls")
    os.mkdir(tls_dir)
    server = PostgresServer(bindir, directory, tls_dir)
    try:
        server.init()
        server.start()
        server.sql(f"CREATE USER app PASSWORD '{APP_PASSWORD}'")
        server.sql("CREATE DATABASE appdb OWNER app")
        server.sql("CREATE EXTENSION pg_stat_statements", database="appdb")
        for statement in PG_SCHEMA:
            server.sql(statement, database="appdb")
        server.sql("GRANT SELECT ON ALL TABLES IN SCHEMA public TO app", database="appdb")
        server.sql("GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO app", database="appdb")
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


MY_SCHEMA = [
    """CREATE TABLE flags (`key` varchar(100) PRIMARY KEY, value text, enabled boolean)
       CHARACTER SET utf8mb4 COLLATE utf8mb4_bin""",
    """INSERT INTO flags VALUES ('dark-mode', 'on', true), ('beta', 'off', false),
       ('ünïcødé-ключ', 'yes', true), ('\\' OR 1=1 -- ', 'quoted', true), (';', 'semi', true),
       ('back\\\\slash', 'bs', true)""",
    """CREATE TABLE prices (sku varchar(20), price decimal(20,6), ratio double, n bigint,
       at datetime(3), day date, during time, payload varbinary(10))""",
    """INSERT INTO prices VALUES ('A-1', 12345678901234.500000, 0.1, 9007199254740993,
       '2024-05-01 10:30:00.250', '2024-02-29', '26:03:04', X'00ff10')""",
    "CREATE TABLE counter (n int AUTO_INCREMENT PRIMARY KEY)",
    """CREATE FUNCTION bump() RETURNS int MODIFIES SQL DATA
       BEGIN INSERT INTO counter VALUES (); RETURN 1; END""",
]


@pytest.fixture(scope="session")
def mariadb() -> Iterator[MariadbServer]:
    """One MariaDB for the session: database appdb, user app@127.0.0.1 with SELECT on it."""
    if MariadbServer.find_server() is None:
        pytest.fail(f"MariaDB's server (mariadbd) is not installed; {INSTALL_HINT}")
    directory = temp_directory("cachelayer-rds-my-")
    tls_dir = os.path.join(directory, "tls")
    os.mkdir(tls_dir)
    server = MariadbServer(directory, tls_dir)
    try:
        server.init()
        server.start()
        server.sql("CREATE DATABASE appdb CHARACTER SET utf8mb4")
        server.sql(f"CREATE USER 'app'@'127.0.0.1' IDENTIFIED BY '{APP_PASSWORD}'")
        server.sql("GRANT SELECT, INSERT, EXECUTE ON appdb.* TO 'app'@'127.0.0.1'")
        for statement in MY_SCHEMA:
            server.sql(statement, database="appdb")
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)
