"""AWS Signature Version 4 with the standard library (hmac, hashlib): what botocore's SigV4Auth does."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import posixpath
import urllib.parse
from typing import Dict, List, Mapping, Optional, Tuple

__all__ = [
    "ALGORITHM",
    "canonical_query",
    "canonical_request",
    "canonical_uri",
    "sign",
    "signing_key",
    "string_to_sign",
]

ALGORITHM = "AWS4-HMAC-SHA256"
# Headers a proxy or the HTTP stack may change in flight: botocore never signs them.
UNSIGNED_HEADERS = frozenset({"expect", "transfer-encoding", "user-agent", "x-amzn-trace-id"})
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

# Derived keys change once a day per (secret, region, service): keep the last few.
_KEY_CACHE: Dict[Tuple[str, str, str, str], bytes] = {}
_KEY_CACHE_MAX = 16


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()


def signing_key(secret_key: str, date: str, region: str, service: str) -> bytes:
    """The SigV4 signing key for ``date`` (``YYYYMMDD``), ``region`` and ``service``."""
    cache_key = (secret_key, date, region, service)
    key = _KEY_CACHE.get(cache_key)
    if key is None:
        key = _hmac(("AWS4" + secret_key).encode("utf-8"), date)
        for part in (region, service, "aws4_request"):
            key = _hmac(key, part)
        if len(_KEY_CACHE) >= _KEY_CACHE_MAX:
            _KEY_CACHE.clear()
        _KEY_CACHE[cache_key] = key
    return key


def canonical_uri(path: str) -> str:
    """The canonical URI of a request path as sent on the wire (already percent-encoded).

    As botocore does for every service but S3: dot segments resolved, a trailing slash kept,
    and the path percent-encoded once more (so ``%2F`` inside a name signs as ``%252F``).
    """
    if not path:
        return "/"
    normalized = posixpath.normpath(path)
    if path.endswith("/") and normalized != "/":
        normalized += "/"
    return urllib.parse.quote(normalized, safe="/~")


def canonical_query(query: str) -> str:
    """The canonical query string of a raw (wire) query: pairs sorted, each part re-encoded."""
    if not query:
        return ""
    pairs: List[Tuple[str, str]] = []
    for part in query.split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        pairs.append(
            (
                urllib.parse.quote(urllib.parse.unquote(key), safe="-_.~"),
                urllib.parse.quote(urllib.parse.unquote(value), safe="-_.~"),
            )
        )
    pairs.sort()
    return "&".join(f"{k}={v}" for k, v in pairs)


def _canonical_headers(headers: Mapping[str, str]) -> Tuple[str, str]:
    merged: Dict[str, List[str]] = {}
    for name, value in headers.items():
        lname = name.lower().strip()
        if lname in UNSIGNED_HEADERS or lname == "authorization":
            continue
        merged.setdefault(lname, []).append(" ".join(str(value).split()))
    names = sorted(merged)
    lines = "".join(f"{n}:{','.join(merged[n])}\n" for n in names)
    return lines, ";".join(names)


def canonical_request(
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    payload_hash: str,
) -> Tuple[str, str]:
    """``(canonical request, signed header names)`` for a request; ``headers`` include Host."""
    lines, signed = _canonical_headers(headers)
    text = "\n".join(
        (method.upper(), canonical_uri(path), canonical_query(query), lines, signed, payload_hash)
    )
    return text, signed


def string_to_sign(amz_date: str, scope: str, canonical: str) -> str:
    """The string to sign: algorithm, timestamp, credential scope, hash of the canonical request."""
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    return f"{ALGORITHM}\n{amz_date}\n{scope}\n{digest}"


def sign(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    access_key: str,
    secret_key: str,
    region: str,
    service: str,
    session_token: Optional[str] = None,
    now: Optional[datetime.datetime] = None,
) -> Dict[str, str]:
    """Sign a request; return the headers to send: ``headers`` plus Host (if absent),
    ``X-Amz-Date``, ``X-Amz-Security-Token`` (with a session token) and ``Authorization``.

    ``url`` is the wire URL (path and query already percent-encoded); ``now`` (UTC) defaults
    to the current time. The result equals botocore's ``SigV4Auth`` for the same inputs.
    """
    when = now or datetime.datetime.now(datetime.timezone.utc)
    if when.tzinfo is not None:
        when = when.astimezone(datetime.timezone.utc)
    amz_date = when.strftime("%Y%m%dT%H%M%SZ")
    date = amz_date[:8]
    parts = urllib.parse.urlsplit(url)
    out: Dict[str, str] = {}
    for name, value in headers.items():
        if name.lower() not in ("authorization", "x-amz-date", "x-amz-security-token"):
            out[name] = value
    if not any(name.lower() == "host" for name in out):
        out["Host"] = _host_header(parts)
    out["X-Amz-Date"] = amz_date
    if session_token:
        out["X-Amz-Security-Token"] = session_token
    payload_hash = hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256
    canonical, signed = canonical_request(method, parts.path, parts.query, out, payload_hash)
    scope = f"{date}/{region}/{service}/aws4_request"
    signature = hmac.new(
        signing_key(secret_key, date, region, service),
        string_to_sign(amz_date, scope, canonical).encode("utf-8"),
        hashlib.sha256,
    ).hexdigest()
    out["Authorization"] = (
        f"{ALGORITHM} Credential={access_key}/{scope}, SignedHeaders={signed}, "
        f"Signature={signature}"
    )
    return out


def _host_header(parts: urllib.parse.SplitResult) -> str:
    # The default port is left out, as botocore and every HTTP client do.
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    if port is None or (parts.scheme, port) in (("https", 443), ("http", 80)):
        return host
    return f"{host}:{port}"
