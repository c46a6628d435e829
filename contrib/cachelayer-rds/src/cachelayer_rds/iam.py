"""RDS IAM authentication tokens: a SigV4-presigned ``rds-db:connect`` URL, signed with the core's lean SigV4.

The credentials come from ``cachelayer.awsjson`` (the environment Lambda sets, else the container
credentials endpoint with its authorization token, refreshed before expiry), and the key
derivation and canonical request are the core's ``cachelayer.awsjson.sigv4``: no botocore at run
time. The token is the presign botocore's ``generate_db_auth_token`` makes, which the tests
check byte for byte.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import threading
from typing import Callable, Dict, Optional, Tuple
from urllib.parse import quote

import attrs

from cachelayer.awsjson import Credentials, CredentialSource, default_credentials
from cachelayer.awsjson.sigv4 import (
    ALGORITHM,
    EMPTY_SHA256,
    canonical_request,
    signing_key,
    string_to_sign,
)

__all__ = ["TOKEN_LIFETIME", "Credentials", "IamTokens", "db_auth_token"]

TOKEN_LIFETIME = 900
"""Seconds a token is valid (RDS accepts 15 minutes); it is only checked when connecting."""

REFRESH_AFTER = 600
"""A token is made anew once this old, leaving five minutes' margin to connect with it."""

SERVICE = "rds-db"


def _encode(value: str) -> str:
    return quote(value, safe="-_.~")


def db_auth_token(
    host: str,
    port: int,
    user: str,
    region: str,
    credentials: Credentials,
    now: datetime.datetime,
) -> str:
    """The token: ``host:port/?Action=connect&DBUser=...&X-Amz-...&X-Amz-Signature=...``.

    ``now`` is UTC (naive or aware). The layout is botocore's, so the token equals
    ``generate_db_auth_token`` for the same inputs and time.
    """
    if now.tzinfo is not None:
        now = now.astimezone(datetime.timezone.utc)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    day = stamp[:8]
    scope = f"{day}/{region}/{SERVICE}/aws4_request"
    netloc = f"{host}:{port}"
    params = [
        ("Action", "connect"),
        ("DBUser", user),
        ("X-Amz-Algorithm", ALGORITHM),
        ("X-Amz-Credential", f"{credentials.access_key}/{scope}"),
        ("X-Amz-Date", stamp),
        ("X-Amz-Expires", str(TOKEN_LIFETIME)),
        ("X-Amz-SignedHeaders", "host"),
    ]
    if credentials.token is not None:
        params.append(("X-Amz-Security-Token", credentials.token))
    query = "&".join(f"{_encode(k)}={_encode(v)}" for k, v in params)
    # The payload hash is that of the empty body (only S3 presigns with UNSIGNED-PAYLOAD).
    canonical, _signed = canonical_request("GET", "/", query, {"host": netloc}, EMPTY_SHA256)
    signature = hmac.new(
        signing_key(credentials.secret_key, day, region, SERVICE),
        string_to_sign(stamp, scope, canonical).encode("utf-8"),
        hashlib.sha256,
    ).hexdigest()
    return f"{netloc}/?{query}&X-Amz-Signature={signature}"


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


@attrs.define
class IamTokens:
    """Tokens per (host, port, user, region), made anew before they expire. Thread-safe.

    ``credentials`` defaults to ``cachelayer.awsjson.default_credentials()``, chosen on the
    first token (the environment's keys, else the container endpoint's, refreshed by it).
    """

    credentials: Optional[CredentialSource] = None
    clock: Callable[[], datetime.datetime] = _utc_now
    _tokens: Dict[Tuple[str, int, str, str], Tuple[datetime.datetime, str]] = attrs.Factory(dict)
    _lock: threading.Lock = attrs.Factory(threading.Lock)

    def _source(self) -> CredentialSource:
        with self._lock:
            if self.credentials is None:
                self.credentials = default_credentials()
            return self.credentials

    def token(self, host: str, port: int, user: str, region: str) -> str:
        """A token valid for at least five more minutes."""
        key = (host, port, user, region)
        now = self.clock()
        with self._lock:
            held = self._tokens.get(key)
            if held is not None and (now - held[0]).total_seconds() < REFRESH_AFTER:
                return held[1]
        token = db_auth_token(host, port, user, region, self._source().get(), now)
        with self._lock:
            self._tokens[key] = (now, token)
        return token
