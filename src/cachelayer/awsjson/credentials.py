"""AWS credentials for the lean transport: the environment, then the container credentials endpoint."""

from __future__ import annotations

import datetime
import http.client
import json
import logging
import os
import threading
import time
import urllib.parse
from typing import Callable, Mapping, Optional, Protocol

import attrs

from cachelayer.errors import TransientError, UpstreamError

__all__ = [
    "ContainerCredentials",
    "CredentialSource",
    "Credentials",
    "credentials_from_environment",
    "default_credentials",
]

log = logging.getLogger("cachelayer.awsjson")

# ECS and SnapStart's fixed link-local address for a relative URI; EKS Pod Identity's.
CONTAINER_HOST = "169.254.170.2"
_ALLOWED_FULL_URI_HOSTS = frozenset({"169.254.170.2", "169.254.170.23", "fd00:ec2::23"})
# As botocore: refresh when less than 15 minutes are left; must refresh under 10.
ADVISORY_REFRESH_S = 15 * 60
MANDATORY_REFRESH_S = 10 * 60
CONTAINER_TIMEOUT_S = 2.0
CONTAINER_ATTEMPTS = 3


@attrs.frozen(repr=False)
class Credentials:
    """An access key, its secret, an optional session token and when they expire (epoch s)."""

    access_key: str
    secret_key: str
    token: Optional[str] = None
    expires_at: Optional[float] = None

    def __repr__(self) -> str:  # never show the secret or the token
        return f"Credentials(access_key={self.access_key!r}, expires_at={self.expires_at!r})"

    def remaining(self, now: float) -> float:
        """Seconds until expiry (infinite when they do not expire)."""
        return float("inf") if self.expires_at is None else self.expires_at - now


class CredentialSource(Protocol):
    """Something that hands out current credentials; thread-safe."""

    def get(self) -> Credentials:
        """The credentials to sign the next request with; raises UpstreamError if none."""


def credentials_from_environment(environ: Mapping[str, str]) -> Optional[Credentials]:
    """``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (+ ``AWS_SESSION_TOKEN``), or None.

    Raises UpstreamError when only one of the key pair is set (botocore's PartialCredentials).
    """
    key = environ.get("AWS_ACCESS_KEY_ID") or ""
    secret = environ.get("AWS_SECRET_ACCESS_KEY") or ""
    if not key and not secret:
        return None
    if not key or not secret:
        missing = "AWS_ACCESS_KEY_ID" if not key else "AWS_SECRET_ACCESS_KEY"
        raise UpstreamError(
            f"partial AWS credentials in the environment: {missing} is not set; set both "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or neither"
        )
    token = environ.get("AWS_SESSION_TOKEN") or environ.get("AWS_SECURITY_TOKEN") or None
    return Credentials(key, secret, token)


@attrs.frozen
class StaticCredentials:
    """Credentials that never change (the environment's, a test's)."""

    credentials: Credentials

    def get(self) -> Credentials:
        """The credentials."""
        return self.credentials


def _parse_expiration(value: object) -> Optional[float]:
    if not value:
        return None
    text = str(value).strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise UpstreamError(
            f"the container credentials endpoint returned an unreadable Expiration {value!r}"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when.timestamp()


def _check_full_uri(uri: str) -> urllib.parse.SplitResult:
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UpstreamError(
            f"AWS_CONTAINER_CREDENTIALS_FULL_URI must be an http(s) URL, got {uri!r}"
        )
    if parts.scheme == "https":
        return parts
    import ipaddress  # only for this rare check: not on every cold start

    host = parts.hostname
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback and host not in _ALLOWED_FULL_URI_HOSTS:
        # As botocore: plain HTTP only to loopback or the container agents' fixed addresses.
        raise UpstreamError(
            f"AWS_CONTAINER_CREDENTIALS_FULL_URI {uri!r}: plain http is only allowed to a "
            "loopback address or the container credentials agent (169.254.170.2/.23); use https"
        )
    return parts


@attrs.define
class ContainerCredentials:
    """Credentials from the container credentials endpoint (ECS, SnapStart, EKS Pod Identity).

    ``AWS_CONTAINER_CREDENTIALS_FULL_URI`` (with ``AWS_CONTAINER_AUTHORIZATION_TOKEN`` or
    ``AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`` as the ``Authorization`` header) or
    ``AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`` (on 169.254.170.2). Fetched on first use and
    again when less than 15 minutes are left; if a refresh fails while more than 10 minutes
    are left the current ones are kept.
    """

    url: str
    authorization: Optional[str] = attrs.field(default=None, repr=False)
    authorization_file: Optional[str] = None
    clock: Callable[[], float] = time.time
    _current: Optional[Credentials] = attrs.field(default=None, init=False)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> Optional[ContainerCredentials]:
        """The endpoint the environment names, or None."""
        relative = environ.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        full = environ.get("AWS_CONTAINER_CREDENTIALS_FULL_URI")
        if relative:
            url = (
                f"http://{CONTAINER_HOST}{relative if relative.startswith('/') else '/' + relative}"
            )
        elif full:
            _check_full_uri(full)
            url = full
        else:
            return None
        return cls(
            url,
            authorization=environ.get("AWS_CONTAINER_AUTHORIZATION_TOKEN") or None,
            authorization_file=environ.get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE") or None,
        )

    def get(self) -> Credentials:
        """Current credentials, refreshed first when they are close to expiry."""
        current = self._current
        now = self.clock()
        if current is not None and current.remaining(now) > ADVISORY_REFRESH_S:
            return current
        with self._lock:
            current = self._current
            if current is not None and current.remaining(now) > ADVISORY_REFRESH_S:
                return current
            try:
                fresh = self._fetch()
            except UpstreamError as exc:
                if current is not None and current.remaining(now) > MANDATORY_REFRESH_S:
                    log.warning(
                        "refreshing container credentials failed (%s); keeping the current ones",
                        exc,
                    )
                    return current
                raise
            self._current = fresh
            return fresh

    def _token(self) -> Optional[str]:
        if self.authorization_file:
            try:
                with open(self.authorization_file, encoding="utf-8") as f:
                    return f.read().strip()
            except OSError as exc:
                raise UpstreamError(
                    f"cannot read AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE "
                    f"{self.authorization_file!r}: {exc.strerror or exc}"
                ) from None
        return self.authorization

    def _fetch(self) -> Credentials:
        parts = urllib.parse.urlsplit(self.url)
        headers = {"Accept": "application/json"}
        token = self._token()
        if token:
            if "\r" in token or "\n" in token:
                raise UpstreamError("the container authorization token contains a line break")
            headers["Authorization"] = token
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        last: UpstreamError = TransientError("no attempt")
        for attempt in range(CONTAINER_ATTEMPTS):
            conn: http.client.HTTPConnection
            if parts.scheme == "https":
                from cachelayer.awsjson.http import tls_context

                conn = http.client.HTTPSConnection(
                    parts.hostname or "",
                    parts.port,
                    timeout=CONTAINER_TIMEOUT_S,
                    context=tls_context(),
                )
            else:
                conn = http.client.HTTPConnection(
                    parts.hostname or "", parts.port, timeout=CONTAINER_TIMEOUT_S
                )
            try:
                conn.request("GET", path, headers=headers)
                response = conn.getresponse()
                body = response.read()
            except (OSError, http.client.HTTPException) as exc:
                last = TransientError(
                    f"the container credentials endpoint {parts.hostname}:{parts.port or ''} "
                    f"is unreachable: {type(exc).__name__}: {exc}"
                )
                time.sleep(0.05 * (attempt + 1))
                continue
            finally:
                conn.close()
            if response.status >= 500:
                last = TransientError(
                    f"the container credentials endpoint answered HTTP {response.status}"
                )
                time.sleep(0.05 * (attempt + 1))
                continue
            if response.status != 200:
                raise UpstreamError(
                    f"the container credentials endpoint refused: HTTP {response.status} "
                    "(is AWS_CONTAINER_AUTHORIZATION_TOKEN right?)"
                )
            return _parse_container(body)
        raise last


def _parse_container(body: bytes) -> Credentials:
    try:
        data = json.loads(body)
        key, secret = data["AccessKeyId"], data["SecretAccessKey"]
    except (ValueError, KeyError, TypeError):
        raise UpstreamError(
            "the container credentials endpoint answered without AccessKeyId/SecretAccessKey"
        ) from None
    return Credentials(
        str(key), str(secret), data.get("Token") or None, _parse_expiration(data.get("Expiration"))
    )


@attrs.define
class BotocoreCredentials:
    """The last resort: botocore's own chain (profiles, SSO, instance metadata), imported only
    when neither the environment nor a container endpoint has credentials."""

    _session: object = attrs.field(default=None, init=False)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)

    def get(self) -> Credentials:
        """Frozen credentials from botocore's default chain."""
        with self._lock:
            try:
                import botocore.session
            except ImportError:
                raise UpstreamError(
                    "no AWS credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (Lambda sets "
                    "them from the execution role) or AWS_CONTAINER_CREDENTIALS_FULL_URI"
                ) from None
            if self._session is None:
                self._session = botocore.session.get_session()
            found = self._session.get_credentials()  # type: ignore[attr-defined]  # botocore Session
        if found is None:
            raise UpstreamError(
                "no AWS credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (Lambda sets "
                "them from the execution role), AWS_CONTAINER_CREDENTIALS_FULL_URI, or a profile"
            )
        frozen = found.get_frozen_credentials()
        return Credentials(frozen.access_key, frozen.secret_key, frozen.token)


def default_credentials(environ: Optional[Mapping[str, str]] = None) -> CredentialSource:
    """The environment's credentials, else the container endpoint's, else botocore's chain
    (profiles, SSO, EC2 instance metadata; only imported in that case)."""
    env = os.environ if environ is None else environ
    static = credentials_from_environment(env)
    if static is not None:
        return StaticCredentials(static)
    container = ContainerCredentials.from_environment(env)
    if container is not None:
        return container
    return BotocoreCredentials()
