"""RDS IAM authentication tokens: a SigV4-presigned ``rds-db:connect`` URL, made with stdlib only.

Kept small and private to this package on purpose: the core is gaining a lean SigV4 signer of
its own, and this one should fold into it then (the token is the same presign botocore's
``generate_db_auth_token`` makes, which the tests check byte for byte).
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import os
import threading
from typing import Callable, Dict, Mapping, Optional, Tuple
from urllib.parse import quote

import attrs

from cachelayer import UpstreamError

__all__ = ["TOKEN_LIFETIME", "AwsCredentials", "IamTokens", "db_auth_token"]

TOKEN_LIFETIME = 900
"""Seconds a token is valid (RDS accepts 15 minutes); it is only checked when connecting."""

REFRESH_AFTER = 600
"""A token is made anew once this old, leaving five minutes' margin to connect with it."""


@attrs.frozen
class AwsCredentials:
    """An access key, its secret and (for temporary credentials) the session token."""

    access_key: str
    secret_key: str = attrs.field(repr=False)
    token: Optional[str] = attrs.field(default=None, repr=False)


_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def _encode(value: str) -> str:
    return quote(value, safe="-_.~")


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def db_auth_token(
    host: str,
    port: int,
    user: str,
    region: str,
    credentials: AwsCredentials,
    now: datetime.datetime,
) -> str:
    """The token: ``host:port/?Action=connect&DBUser=...&X-Amz-...&X-Amz-Signature=...``.

    ``now`` is UTC (naive or aware). The layout is botocore's, so the token equals
    ``generate_db_auth_token`` for the same inputs and time.
    """
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    day = stamp[:8]
    scope = f"{day}/{region}/rds-db/aws4_request"
    netloc = f"{host}:{port}"
    operation = [("Action", "connect"), ("DBUser", user)]
    auth = [
        ("X-Amz-Algorithm", "AWS4-HMAC-SHA256"),
        ("X-Amz-Credential", f"{credentials.access_key}/{scope}"),
        ("X-Amz-Date", stamp),
        ("X-Amz-Expires", str(TOKEN_LIFETIME)),
        ("X-Amz-SignedHeaders", "host"),
    ]
    if credentials.token is not None:
        auth.append(("X-Amz-Security-Token", credentials.token))
    params = operation + auth
    canonical_query = "&".join(f"{_encode(k)}={_encode(v)}" for k, v in sorted(params))
    # The payload hash is that of the empty body (only S3 presigns with UNSIGNED-PAYLOAD).
    canonical_request = "\n".join(
        ("GET", "/", canonical_query, f"host:{netloc}", "", "host", _EMPTY_SHA256)
    )
    to_sign = "\n".join(
        (
            "AWS4-HMAC-SHA256",
            stamp,
            scope,
            hashlib.sha256(canonical_request.encode("utf-8")).hexdigest(),
        )
    )
    key = _hmac(("AWS4" + credentials.secret_key).encode("utf-8"), day)
    for part in (region, "rds-db", "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    query = "&".join(f"{_encode(k)}={_encode(v)}" for k, v in params)
    return f"{netloc}/?{query}&X-Amz-Signature={signature}"


def environment_credentials(environ: Mapping[str, str]) -> Optional[AwsCredentials]:
    """The credentials Lambda gives every extension in its environment, if set."""
    key, secret = environ.get("AWS_ACCESS_KEY_ID"), environ.get("AWS_SECRET_ACCESS_KEY")
    if not key or not secret:
        return None
    return AwsCredentials(key, secret, environ.get("AWS_SESSION_TOKEN") or None)


def default_credentials() -> AwsCredentials:
    """Environment credentials, else botocore's chain (profiles, container endpoint...)."""
    found = environment_credentials(os.environ)
    if found is not None:
        return found
    try:
        import botocore.session
    except ImportError:
        found = None
    else:
        resolved = botocore.session.get_session().get_credentials()
        if resolved is not None:
            frozen = resolved.get_frozen_credentials()
            found = AwsCredentials(frozen.access_key, frozen.secret_key, frozen.token)
    if found is None:
        raise UpstreamError(
            "no AWS credentials for the RDS IAM token: set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (Lambda sets them from the function's role)"
        )
    return found


@attrs.define
class IamTokens:
    """Tokens per (host, port, user, region), made anew before they expire. Thread-safe."""

    credentials: Callable[[], AwsCredentials] = default_credentials
    clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.timezone.utc)
    _tokens: Dict[Tuple[str, int, str, str], Tuple[datetime.datetime, str]] = attrs.Factory(dict)
    _lock: threading.Lock = attrs.Factory(threading.Lock)

    def token(self, host: str, port: int, user: str, region: str) -> str:
        """A token valid for at least five more minutes."""
        key = (host, port, user, region)
        now = self.clock()
        with self._lock:
            held = self._tokens.get(key)
            if held is not None and (now - held[0]).total_seconds() < REFRESH_AFTER:
                return held[1]
        token = db_auth_token(host, port, user, region, self.credentials(), now)
        with self._lock:
            self._tokens[key] = (now, token)
        return token
