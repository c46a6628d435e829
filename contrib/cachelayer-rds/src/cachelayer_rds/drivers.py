"""Database connections (pg8000 for PostgreSQL, PyMySQL for MySQL/MariaDB) and their errors.

Each connection runs the source's query in a read-only transaction under a statement timeout
and returns at most ``max_rows + 1`` rows (the extra one tells the caller there were more).
Driver errors become cachelayer errors here, with a flag saying whether the connection died.
"""

from __future__ import annotations

import contextlib
import decimal
import json
import socket
import ssl
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Type, Union

from cachelayer import (
    BadRequestError,
    CachelayerError,
    TransientError,
    UpstreamError,
    UpstreamTimeoutError,
)
from cachelayer_rds.config import RdsSource

__all__ = [
    "APPLICATION_NAME",
    "DatabaseFailure",
    "DatabaseUnavailableError",
    "MysqlConnection",
    "PostgresConnection",
    "QueryFailedError",
    "open_connection",
    "ssl_context",
]

APPLICATION_NAME = "cachelayer-rds"
"""How the extension's connections name themselves to the server (pg_stat_activity)."""

Key = Union[str, int]
Rows = Tuple[List[str], List[Sequence[Any]]]


class DatabaseUnavailableError(TransientError):
    """The database could not be reached or took no more connections; worth retrying."""

    code = "DatabaseUnavailable"


class QueryFailedError(UpstreamError):
    """The database refused the query or the login; retrying will not help."""

    code = "QueryFailed"


class DatabaseFailure(Exception):
    """A classified failure: ``error`` to raise, ``dead`` if the connection is unusable now."""

    def __init__(self, error: CachelayerError, dead: bool) -> None:
        super().__init__(str(error))
        self.error = error
        self.dead = dead


def ssl_context(source: RdsSource) -> Optional[ssl.SSLContext]:
    """The TLS context the URL's sslmode asks for (libpq's meanings), or None for no TLS.

    ``require`` encrypts without checking the certificate, unless a CA bundle is named (then,
    as libpq does, the chain is verified); ``verify-ca`` checks the chain; ``verify-full`` the
    chain and the host name.
    """
    mode, cafile = source.sslmode, source.ca_file
    if mode == "disable":
        return None
    context = ssl.create_default_context(cafile=cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if mode == "verify-full":
        return context
    context.check_hostname = False
    if mode == "require" and cafile is None:
        context.verify_mode = ssl.CERT_NONE
    return context


def _where(source: RdsSource) -> str:
    dialect, host, port, database = source.describe()
    return f"rds source {source.name!r} ({dialect} {host}:{port}/{database or ''})"


def _transport_failure(exc: BaseException, source: RdsSource) -> Optional[DatabaseFailure]:
    """Classify a socket-level cause anywhere in ``exc``'s chain; None if there is none."""
    seen = 0
    cause: Optional[BaseException] = exc
    while cause is not None and seen < 8:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return DatabaseFailure(
                UpstreamError(
                    f"{_where(source)}: the server's TLS certificate failed verification "
                    f"({cause.verify_message}); name the CA bundle that signed it with ca_bundle: "
                    "(RDS publishes global-bundle.pem), or check the host name in the url"
                ),
                dead=True,
            )
        if isinstance(cause, ssl.SSLError):
            return DatabaseFailure(
                UpstreamError(f"{_where(source)}: TLS failed ({cause.reason or cause})"),
                dead=True,
            )
        if isinstance(cause, (socket.timeout, TimeoutError)):
            return DatabaseFailure(
                UpstreamTimeoutError(f"{_where(source)}: the database did not answer in time"),
                dead=True,
            )
        if isinstance(cause, OSError):
            return DatabaseFailure(
                DatabaseUnavailableError(
                    f"{_where(source)}: connection failed ({type(cause).__name__}: "
                    f"{cause.strerror or cause})"
                ),
                dead=True,
            )
        cause = cause.__cause__ or cause.__context__
        seen += 1
    return None


def _statement_timeout(source: RdsSource) -> DatabaseFailure:
    """The server cancelled the query at ``statement_timeout`` (the connection stays)."""
    return DatabaseFailure(
        UpstreamTimeoutError(
            f"{_where(source)}: the query ran past statement_timeout "
            f"({float(source.statement_timeout):g}s) and was cancelled"
        ),
        dead=False,
    )


def _auth_failure(source: RdsSource, code: Any, message: str, grant: str) -> DatabaseFailure:
    """The server refused the login: which checks to make (``grant``: the IAM one)."""
    return DatabaseFailure(
        QueryFailedError(
            f"{_where(source)}: authentication failed ({code}: {message}); check the "
            f"user, the password secret or the IAM grant ({grant})"
        ),
        dead=True,
    )


def _uncoded_failure(
    exc: BaseException, source: RdsSource, lost: Type[BaseException], detail: str
) -> DatabaseFailure:
    """A failure without the database's error code: a socket-level cause, the connection
    lost (the driver's ``lost`` exception; ``detail`` follows the message), or anything else
    (the connection is given up)."""
    found = _transport_failure(exc, source)
    if found is not None:
        return found
    if isinstance(exc, lost):
        return DatabaseFailure(
            DatabaseUnavailableError(f"{_where(source)}: connection lost{detail}"), dead=True
        )
    return DatabaseFailure(
        QueryFailedError(f"{_where(source)}: {type(exc).__name__}: {exc}"), dead=True
    )


# -- PostgreSQL ----------------------------------------------------------------------------

# SQLSTATE classes and codes (https://www.postgresql.org/docs/current/errcodes-appendix.html).
_PG_TRANSIENT = {"40001", "40P01", "55P03", "57P01", "57P02", "57P03", "53300", "53000"}
_PG_DEAD = {"57P01", "57P02", "57P03"}
_PG_BAD_KEY = {"22P02", "22003", "22007", "22008", "22021", "22001"}


def _pg_failure(exc: BaseException, source: RdsSource) -> DatabaseFailure:
    import pg8000.exceptions

    if (
        isinstance(exc, pg8000.exceptions.DatabaseError)
        and exc.args
        and isinstance(exc.args[0], dict)
    ):
        fields: Dict[str, str] = exc.args[0]
        code, message = fields.get("C", ""), fields.get("M", "")
        text = f"{_where(source)}: PostgreSQL error {code}: {message}"
        if code == "57014":
            return _statement_timeout(source)
        if code in _PG_TRANSIENT or code.startswith("08"):
            return DatabaseFailure(
                DatabaseUnavailableError(text),
                dead=code in _PG_DEAD or code.startswith("08") or code.startswith("53"),
            )
        if code in _PG_BAD_KEY:
            return DatabaseFailure(
                BadRequestError(f"the key does not fit the query's parameter: {message}"),
                dead=False,
            )
        if code.startswith("28"):
            return _auth_failure(source, code, message, "rds_iam role")
        return DatabaseFailure(QueryFailedError(text), dead=False)
    return _uncoded_failure(exc, source, pg8000.exceptions.InterfaceError, f" ({exc})")


_PG_JSON, _PG_JSONB = 114, 3802


def _exact_json(text: str) -> Any:
    return json.loads(text, parse_float=decimal.Decimal)


class PostgresConnection:
    """One pg8000 connection. The key is a server-side bound parameter (``$1``)."""

    _CURSOR = "cachelayer_rows"

    def __init__(self, source: RdsSource, password: Optional[str]) -> None:
        import pg8000.native

        self._source = source
        db = source.database
        try:
            self._conn = pg8000.native.Connection(
                user=db.user,
                host=db.host,
                port=db.port,
                database=db.database,
                password=password,
                ssl_context=ssl_context(source) or False,
                timeout=float(source.connect_timeout),
                application_name=APPLICATION_NAME,
                startup_params={"TimeZone": "UTC"},
            )
        except Exception as exc:
            raise _pg_failure(exc, source) from exc
        # pg8000 takes one timeout for connecting and for every read after; connect with
        # connect_timeout, then let reads wait for the statement timeout too (no public setter).
        raw = getattr(self._conn, "_usock", None)
        if isinstance(raw, socket.socket):
            raw.settimeout(float(source.connect_timeout) + float(source.statement_timeout))
        for oid in (_PG_JSON, _PG_JSONB):  # exact numbers inside json too, as in columns
            self._conn.register_in_adapter(oid, _exact_json)
        timeout_ms = max(1, int(float(source.statement_timeout) * 1000))
        self._begin = f"START TRANSACTION READ ONLY; SET LOCAL statement_timeout = {timeout_ms}"
        self._declare = f"DECLARE {self._CURSOR} NO SCROLL CURSOR FOR " + (
            source.parsed_query.joined("$1")
        )
        self._fetch = f"FETCH FORWARD {source.max_rows + 1} FROM {self._CURSOR}"
        self.usable = True

    def query(self, key: Key) -> Rows:
        """Run the query for ``key``; raise ``DatabaseFailure``."""
        conn = self._conn
        try:
            conn.run(self._begin)  # simple protocol: both statements in one round trip
            try:
                conn.execute_unnamed(self._declare, vals=(key,))
                rows = conn.run(self._fetch)
                columns = [c["name"] for c in (conn.columns or ())]
            finally:
                conn.run("ROLLBACK")
        except Exception as exc:
            failure = _pg_failure(exc, self._source)
            self.usable = not failure.dead
            raise failure from exc
        return columns, list(rows or ())

    def close(self) -> None:
        """Close quietly (the server may already be gone)."""
        self.usable = False
        with contextlib.suppress(Exception):  # closing a dead connection fails; nothing to do
            self._conn.close()


# -- MySQL / MariaDB -------------------------------------------------------------------------

_MY_TRANSIENT = {1040, 1203, 1205, 1213, 1226, 2002, 2003, 2005, 2006, 2013, 1927, 4031, 1053}
_MY_DEAD = {2002, 2003, 2005, 2006, 2013, 1927, 4031, 1053, 1040, 1203, 1226}
_MY_SOCKET = {2003, 2006, 2013}  # can't connect, gone away, lost connection
_MY_TIMEOUT = {3024, 1969}  # MySQL max_execution_time, MariaDB max_statement_time
_MY_AUTH = {1044, 1045, 1698, 1251, 2059}
_MY_BAD_KEY = {1292, 1366, 1267}


def _my_failure(exc: BaseException, source: RdsSource) -> DatabaseFailure:
    import pymysql

    if isinstance(exc, pymysql.err.MySQLError) and len(exc.args) >= 2:
        code, message = exc.args[0], str(exc.args[1])
        if code in _MY_SOCKET:
            # PyMySQL wraps socket and TLS errors (a failed certificate check too) in these
            # codes; the original, in the exception's context, says which it was.
            found = _transport_failure(exc, source)
            if found is not None:
                return found
        text = f"{_where(source)}: MySQL error {code}: {message}"
        if code in _MY_TIMEOUT:
            return _statement_timeout(source)
        if code in (2013, 2003) and "timed out" in message:
            return DatabaseFailure(
                UpstreamTimeoutError(f"{_where(source)}: the database did not answer in time"),
                dead=True,
            )
        if code in _MY_TRANSIENT:
            return DatabaseFailure(DatabaseUnavailableError(text), dead=code in _MY_DEAD)
        if code in _MY_AUTH:
            return _auth_failure(source, code, message, "AWSAuthenticationPlugin")
        if code in _MY_BAD_KEY:
            return DatabaseFailure(
                BadRequestError(f"the key does not fit the query's parameter: {message}"),
                dead=False,
            )
        if code == 0 or isinstance(exc, pymysql.err.InterfaceError):
            return DatabaseFailure(
                DatabaseUnavailableError(f"{_where(source)}: connection lost"), dead=True
            )
        return DatabaseFailure(QueryFailedError(text), dead=False)
    return _uncoded_failure(exc, source, pymysql.err.InterfaceError, "")


def _mysql_literal(key: Key) -> str:
    """The key as SQL that no key can escape from: digits, or a utf8mb4 hex literal.

    PyMySQL has no server-side prepared statements (its "parameters" are escaped into the
    text); a hex literal carries the key as [0-9a-f] only, whatever the SQL mode or charset.
    The introducer makes it a coercible string, so the column's collation decides comparisons.
    """
    if isinstance(key, int):
        return str(int(key))
    return "_utf8mb4 X'" + key.encode("utf-8").hex() + "'"


class MysqlConnection:
    """One PyMySQL connection (MySQL or MariaDB), streaming rows so ``max_rows`` bounds memory."""

    def __init__(self, source: RdsSource, password: Optional[str]) -> None:
        import pymysql
        import pymysql.cursors

        self._source = source
        db = source.database
        io_timeout = float(source.connect_timeout) + float(source.statement_timeout)
        try:
            self._conn = pymysql.connect(
                host=db.host,
                port=db.port,
                user=db.user,
                password=password or "",
                database=db.database,
                charset="utf8mb4",
                autocommit=True,
                connect_timeout=float(source.connect_timeout),
                read_timeout=io_timeout,
                write_timeout=io_timeout,
                ssl=ssl_context(source),
                # PyMySQL would otherwise try TLS unverified when the server offers it
                # (MySQL's PREFERRED): no sslmode means no TLS, as for PostgreSQL.
                ssl_disabled=source.sslmode == "disable",
                program_name=APPLICATION_NAME,
                cursorclass=pymysql.cursors.SSCursor,
            )
            mariadb = "mariadb" in self._conn.get_server_info().lower()
            seconds = float(source.statement_timeout)
            limit = (
                f"max_statement_time = {seconds:.3f}"
                if mariadb
                else f"max_execution_time = {max(1, int(seconds * 1000))}"
            )
            with self._conn.cursor() as cursor:
                cursor.execute(f"SET SESSION time_zone = '+00:00', SESSION {limit}")
        except Exception as exc:
            raise _my_failure(exc, source) from exc
        self._limit = source.max_rows + 1
        self.usable = True

    def query(self, key: Key) -> Rows:
        """Run the query for ``key``; raise ``DatabaseFailure``."""
        sql = self._source.parsed_query.joined(_mysql_literal(key))
        conn = self._conn
        try:
            with conn.cursor() as cursor:
                cursor.execute("START TRANSACTION READ ONLY")
            try:
                cursor = conn.cursor()
                cursor.execute(sql)
                columns = [d[0] for d in cursor.description or ()]
                rows = list(cursor.fetchmany(self._limit))
                if len(rows) >= self._limit:
                    # Rows left unread: reading them to reuse the connection could be unbounded,
                    # so this connection is given up instead.
                    self.usable = False
                    return columns, rows
                cursor.close()
            finally:
                if self.usable:
                    conn.rollback()
        except Exception as exc:
            failure = _my_failure(exc, self._source)
            self.usable = self.usable and not failure.dead
            raise failure from exc
        return columns, rows

    def close(self) -> None:
        """Close quietly (the server may already be gone)."""
        self.usable = False
        with contextlib.suppress(Exception):  # closing a dead connection fails; nothing to do
            self._conn.close()


Connection = Union[PostgresConnection, MysqlConnection]
_DRIVERS: Dict[str, Type[Any]] = {"postgresql": PostgresConnection, "mysql": MysqlConnection}


def open_connection(source: RdsSource, password: Optional[str]) -> Connection:
    """A new connection for ``source``; raises ``DatabaseFailure``."""
    driver: Callable[[RdsSource, Optional[str]], Connection] = _DRIVERS[source.database.dialect]
    return driver(source, password)
