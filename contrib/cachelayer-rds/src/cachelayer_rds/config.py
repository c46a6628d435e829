"""The ``rds:`` section: named sources, each a database URL, credentials and one checked query."""

from __future__ import annotations

import os
import re
from typing import Any, List, Literal, Optional, Tuple
from urllib.parse import parse_qsl, unquote, urlsplit

import attrs

from cachelayer import Duration, not_empty, positive
from cachelayer_rds.sql import Query, QueryError, parse_query

__all__ = [
    "DEFAULT_MAX_ROWS",
    "INTEGER_KEY",
    "MAX_KEY_LENGTH",
    "DatabaseUrl",
    "RdsSource",
    "parse_url",
]

DEFAULT_MAX_ROWS = 100
MAX_ROWS_LIMIT = 100_000
DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306}
_SCHEMES = {"postgresql": "postgresql", "postgres": "postgresql", "mysql": "mysql"}
# sslmode (libpq's spelling) and ssl-mode (MySQL's) mean the same four things here.
_SSL_MODES = {
    "disable": "disable",
    "disabled": "disable",
    "require": "require",
    "required": "require",
    "verify-ca": "verify-ca",
    "verify_ca": "verify-ca",
    "verify-full": "verify-full",
    "verify_identity": "verify-full",
}
MAX_KEY_LENGTH = 1024
"""Characters: a longer key is refused (400) rather than sent to the database and cached."""
INTEGER_KEY = re.compile(r"-?[0-9]+\Z")
"""What ``key_type: integer`` accepts: decimal digits, optionally negative; nothing else."""
_RDS_HOST = re.compile(r"\.([a-z]{2}(?:-[a-z]+)+-\d)\.rds\.amazonaws\.com(?:\.cn)?$")


@attrs.frozen
class DatabaseUrl:
    """A parsed ``postgresql://user@host:port/db?sslmode=...`` or ``mysql://...`` URL."""

    dialect: str  # "postgresql" | "mysql"
    user: str
    host: str
    port: int
    database: Optional[str]
    sslmode: str  # "disable" | "require" | "verify-ca" | "verify-full"
    sslrootcert: Optional[str] = None

    @property
    def region(self) -> Optional[str]:
        """The AWS region in an RDS endpoint's host name (``db.xyz.eu-west-1.rds.amazonaws.com``)."""
        found = _RDS_HOST.search(self.host)
        return found.group(1) if found else None


def parse_url(text: str) -> DatabaseUrl:
    """Parse and check a database URL; ``ValueError`` says what is wrong and how to fix it."""
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"url is not a valid URL ({exc})") from None
    dialect = _SCHEMES.get(parts.scheme.lower())
    if dialect is None:
        raise ValueError(
            f"url scheme {parts.scheme!r} is not supported; use postgresql://user@host:port/db "
            "or mysql://user@host:port/db"
        )
    if parts.password is not None:
        raise ValueError(
            "url holds a password; never put one in the config: name a Secrets Manager secret "
            "with password_secret, or set iam_auth: true"
        )
    if not parts.username:
        raise ValueError(f"url names no user; write {parts.scheme}://<user>@<host>/<database>")
    if not parts.hostname:
        raise ValueError(f"url names no host; write {parts.scheme}://<user>@<host>/<database>")
    path = unquote(parts.path.lstrip("/"))
    if "/" in path:
        raise ValueError(f"url path {parts.path!r} is not one database name")
    sslmode = "disable"
    sslrootcert = None
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key.lower() in ("sslmode", "ssl-mode", "ssl_mode"):
            mode = _SSL_MODES.get(value.lower())
            if mode is None:
                raise ValueError(
                    f"url {key}={value!r} is not supported; use disable, require, verify-ca or "
                    "verify-full (MySQL spellings DISABLED, REQUIRED, VERIFY_CA, VERIFY_IDENTITY "
                    "work too)"
                )
            sslmode = mode
        elif key.lower() in ("sslrootcert", "ssl-ca", "ssl_ca"):
            sslrootcert = value
        else:
            raise ValueError(
                f"url query parameter {key!r} is not supported; the URL takes sslmode= and "
                "sslrootcert= (set the other settings as keys of the source)"
            )
    return DatabaseUrl(
        dialect=dialect,
        user=unquote(parts.username),
        host=parts.hostname,
        port=port or DEFAULT_PORTS[dialect],
        database=path or None,
        sslmode=sslmode,
        sslrootcert=sslrootcert,
    )


_not_empty = not_empty()


def _check_name(instance: Any, attribute: Any, value: str) -> None:
    _not_empty(instance, attribute, value)
    if "/" in value or value != value.strip():
        raise ValueError(
            f"name {value!r} may not contain '/' or surrounding blanks: requests are "
            "/rds?name=<name>/<key>",
            attribute,
        )


def _check_url(instance: Any, attribute: Any, value: str) -> None:
    try:
        parse_url(value)
    except ValueError as exc:
        raise ValueError(str(exc), attribute) from None


def _check_query(instance: Any, attribute: Any, value: str) -> None:
    try:
        dialect = parse_url(instance.url).dialect
        parse_query(value, dialect=dialect)
    except QueryError as exc:
        raise ValueError(f"query refused: {exc}", attribute) from None


def _positive_rows(instance: Any, attribute: Any, value: int) -> None:
    if isinstance(value, bool) or not 1 <= value <= MAX_ROWS_LIMIT:
        raise ValueError(f"max_rows must be from 1 to {MAX_ROWS_LIMIT}, got {value!r}", attribute)


_positive_duration = positive("duration such as 2s")


def _pool(instance: Any, attribute: Any, value: int) -> None:
    if isinstance(value, bool) or not 1 <= value <= 16:
        raise ValueError(f"pool_size must be from 1 to 16, got {value!r}", attribute)


def _file(instance: Any, attribute: Any, value: Optional[str]) -> None:
    if value is not None and not os.path.isfile(value):
        raise ValueError(
            f"ca_bundle {value!r} is not a file; name the CA bundle shipped with the function "
            "(RDS publishes one: global-bundle.pem)",
            attribute,
        )


def _keys(instance: Any, attribute: Any, value: List[str]) -> None:
    for key in value:
        if not key or len(key) > MAX_KEY_LENGTH or "\x00" in key:
            raise ValueError(
                f"keys holds {key[:40]!r}: a key is 1 to {MAX_KEY_LENGTH} characters, no NUL",
                attribute,
            )


@attrs.frozen
class RdsSource:
    """One named source of the ``rds:`` section: read as ``GET /rds?name=<name>/<key>``.

    ``password_secret`` names a Secrets Manager secret read through the core's ``/secrets``
    route (plain text, or the JSON RDS stores with a ``password`` field); ``iam_auth`` uses an
    RDS IAM token instead. ``keys`` are prefetched when ``init_startup`` is on.
    """

    name: str = attrs.field(validator=_check_name)
    url: str = attrs.field(validator=_check_url)
    query: str = attrs.field(validator=_check_query)
    password_secret: Optional[str] = None
    iam_auth: bool = False
    region: Optional[str] = None
    ttl: Optional[Duration] = None
    max_rows: int = attrs.field(default=DEFAULT_MAX_ROWS, validator=_positive_rows)
    statement_timeout: Duration = attrs.field(default=Duration(5.0), validator=_positive_duration)
    connect_timeout: Duration = attrs.field(default=Duration(5.0), validator=_positive_duration)
    ca_bundle: Optional[str] = attrs.field(default=None, validator=_file)
    key_type: Literal["text", "integer"] = "text"
    pool_size: int = attrs.field(default=2, validator=_pool)
    keys: List[str] = attrs.field(factory=list, validator=_keys)
    database: DatabaseUrl = attrs.field(init=False, repr=False, eq=False)
    parsed_query: Query = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        database = parse_url(self.url)
        object.__setattr__(self, "database", database)
        object.__setattr__(self, "parsed_query", parse_query(self.query, dialect=database.dialect))
        if self.password_secret is not None and not self.password_secret.strip():
            raise ValueError("password_secret must not be empty; name a Secrets Manager secret")
        if self.password_secret is not None and self.iam_auth:
            raise ValueError(
                "give either password_secret or iam_auth: true, not both",
                attrs.fields(RdsSource).iam_auth,
            )
        if self.key_type == "integer":
            for key in self.keys:
                if not INTEGER_KEY.match(key):
                    raise ValueError(
                        f"keys holds {key!r}, which is not an integer (key_type: integer)",
                        attrs.fields(RdsSource).keys,
                    )
        if self.iam_auth and self.signing_region is None:
            raise ValueError(
                "iam_auth needs a region: set region: (the host is not an RDS endpoint name)",
                attrs.fields(RdsSource).iam_auth,
            )

    @property
    def sslmode(self) -> str:
        """The TLS mode: the URL's, except that IAM authentication always uses TLS."""
        mode = self.database.sslmode
        return "require" if mode == "disable" and self.iam_auth else mode

    @property
    def ca_file(self) -> Optional[str]:
        """The CA bundle to verify the server against (``ca_bundle``, else ``sslrootcert``)."""
        return self.ca_bundle or self.database.sslrootcert

    @property
    def signing_region(self) -> Optional[str]:
        """The region an IAM token is signed for: ``region``, else the RDS host's, else env."""
        return (
            self.region
            or self.database.region
            or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")
        )

    @property
    def deadline(self) -> float:
        """Seconds a fetch may take in all: connecting (twice, if a dead connection is
        replaced) and running the query."""
        return 2 * float(self.connect_timeout) + float(self.statement_timeout)

    def describe(self) -> Tuple[str, str, int, Optional[str]]:
        """(dialect, host, port, database) for messages; never a credential."""
        db = self.database
        return db.dialect, db.host, db.port, db.database
