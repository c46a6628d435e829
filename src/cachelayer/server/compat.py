"""Drop-in routes of AWS's Parameters and Secrets Lambda Extension, and the OpenAPI document."""

from __future__ import annotations

import base64
import datetime
import functools
import json
import math
import re
from typing import Any, Dict, List, Mapping, Optional, Tuple

from cachelayer.core.cache import Lookup
from cachelayer.errors import BadRequestError, NotFoundError, RouteNotFoundError

__all__ = [
    "COMPAT_PATHS",
    "PARAMETERS_PATH",
    "SECRETS_PATH",
    "handle",
    "openapi_bytes",
    "render_date",
]

PARAMETERS_PATH = "/systemsmanager/parameters/get"
SECRETS_PATH = "/secretsmanager/get"
COMPAT_PATHS: Tuple[str, ...] = (PARAMETERS_PATH, SECRETS_PATH)
"""The paths AWS's extension answers; the protocol hands requests for them to ``handle``."""

Headers = List[Tuple[str, str]]

_PARAMETER_ARGS = ("name", "version", "label", "withDecryption", "refreshNow")
_SECRET_ARGS = ("secretId", "versionId", "versionStage", "refreshNow")
_REFERENCE_PREFIX = "/aws/reference/secretsmanager/"
# arn:<partition>:ssm:<region>:<account>:parameter/<name without its leading slash>
_PARAMETER_ARN = re.compile(
    r"^arn:(?P<partition>[a-z0-9-]+):ssm:(?P<region>[a-z0-9-]*):(?P<account>[0-9]*):parameter/(?P<rest>.+)$"
)
_DIGITS = re.compile(r"^[0-9]+$")


async def handle(app: Any, path: str, params: Mapping[str, str]) -> Tuple[int, Headers, bytes]:
    """Answer ``GET <path>?<params>`` for one of ``COMPAT_PATHS``.

    ``params`` are the URL-decoded query parameters. Returns ``(200, headers, body)`` with the
    JSON of SSM GetParameter or Secrets Manager GetSecretValue as AWS's extension renders it,
    and ``X-Cache``/``Age``/``Cache-Control`` like the native routes. Failures raise the
    CachelayerError tree (BadRequestError, NotFoundError, UpstreamError...), which the
    protocol renders as JSON errors. Values are read through ``app.cache``, so TTL, variants,
    stale-if-error and single-flight are those of ``/parameters`` and ``/secrets``.
    """
    if path == PARAMETERS_PATH:
        lookup = await _get_parameter(app, params)
        document: Dict[str, Any] = {
            "Parameter": parameter_document(lookup.value.metadata, lookup.value.body),
            "ResultMetadata": {},
        }
    elif path == SECRETS_PATH:
        lookup = await _get_secret(app, params)
        document = secret_document(
            lookup.value.metadata, lookup.value.body, lookup.value.content_type
        )
    else:
        raise RouteNotFoundError(
            f"no compatibility route {path!r}; known: {', '.join(COMPAT_PATHS)}"
        )
    body = json.dumps(document, separators=(",", ":")).encode("utf-8")
    return 200, _headers(lookup), body


def _headers(lookup: Lookup) -> Headers:
    # Whole seconds, never negative, as the native routes send them.
    age = max(0, int(lookup.age))
    remaining = max(0, int(lookup.remaining))
    return [
        ("Content-Type", "application/json"),
        ("X-Cache", lookup.state),
        ("Age", str(age)),
        ("Cache-Control", f"max-age={remaining}"),
    ]


async def _read(app: Any, route: str, params: Mapping[str, str], refresh: bool = False) -> Lookup:
    """Resolve through the router and read through the cache (``refresh``: fetch now)."""
    provider, item = app.router.resolve(route, params)
    lookup: Lookup = await app.cache.get(provider, item, refresh=refresh)
    return lookup


def _refresh_now(params: Mapping[str, str]) -> bool:
    """AWS's extension's ``refreshNow``: ``true`` fetches the key from upstream now."""
    raw = params.get("refreshNow")
    if raw is None:
        return False
    value = raw.strip().lower()
    if value not in ("true", "false"):
        raise BadRequestError(f"refreshNow must be true or false, got {raw[:40]!r}")
    return value == "true"


def _check_args(params: Mapping[str, str], allowed: Tuple[str, ...], path: str) -> None:
    unknown = sorted(k for k in params if k not in allowed)
    if unknown:
        raise BadRequestError(
            f"unknown query parameter(s) {', '.join(map(repr, unknown))} for {path}; "
            f"allowed: {', '.join(allowed)}"
        )


def _required(params: Mapping[str, str], key: str, path: str) -> str:
    value = params.get(key)
    if value is None:
        raise BadRequestError(f"missing query parameter {key!r}: use GET {path}?{key}=<{key}>")
    if not value.strip():
        raise BadRequestError(f"empty query parameter {key!r}: use GET {path}?{key}=<{key}>")
    return value


# -- SSM GetParameter ---------------------------------------------------------------------


def split_parameter_arn(name: str) -> Optional[Tuple[str, str, str]]:
    """``(region, account, name)`` of an SSM parameter ARN, or None if ``name`` is not one.

    The ARN drops the name's leading slash; hierarchical names (those with a ``/``) always
    start with one in SSM, so it is put back exactly when the rest holds a ``/``.
    """
    match = _PARAMETER_ARN.match(name)
    if match is None:
        return None
    rest = match.group("rest")
    plain = f"/{rest}" if "/" in rest else rest
    return match.group("region"), match.group("account"), plain


def _split_selector(name: str) -> Tuple[str, Optional[str]]:
    """``(name, selector)``: SSM names cannot hold ``:``, so a trailing ``:3`` or ``:label``
    (after the name, or after an ARN's ``parameter/...``) is GetParameter's selector."""
    match = _PARAMETER_ARN.match(name)
    tail = match.group("rest") if match else name
    if ":" not in tail:
        return name, None
    base, _, selector = name.rpartition(":")
    return base, selector


async def _get_parameter(app: Any, params: Mapping[str, str]) -> Lookup:
    _check_args(params, _PARAMETER_ARGS, PARAMETERS_PATH)
    refresh = _refresh_now(params)
    raw_name = _required(params, "name", PARAMETERS_PATH)
    name, selector = _split_selector(raw_name)
    native: Dict[str, str] = {}
    if selector is not None:
        if "version" in params or "label" in params:
            raise BadRequestError(
                f"the name {raw_name!r} already selects ':{selector}'; drop the 'version' or "
                "'label' query parameter, or the selector from the name"
            )
        native["version" if _DIGITS.match(selector) else "label"] = selector
    for key in ("version", "label"):
        if key in params:
            native[key] = params[key]
    # AWS's extension, like GetParameter, returns SecureStrings encrypted unless asked to
    # decrypt. References to Secrets Manager only exist decrypted, so they default to true.
    decrypt = params.get("withDecryption")
    if decrypt is None:
        decrypt = "true" if name.startswith(_REFERENCE_PREFIX) else "false"
    native["withDecryption"] = decrypt

    arn = split_parameter_arn(name)
    if arn is None:
        return await _read(app, "parameters", {"name": name, **native}, refresh)
    # Read by plain name so an ARN and a name share one cache entry; the ARN in the answer
    # tells whether that was the same parameter (same region and account). If it was not (a
    # parameter shared from another account, or another region), ask SSM with the full ARN.
    region, account, plain = arn
    try:
        lookup = await _read(app, "parameters", {"name": plain, **native}, refresh)
    except NotFoundError:
        lookup = None
    if lookup is not None and _same_parameter(
        lookup.value.metadata.get("ARN"), region, account, plain
    ):
        return lookup
    return await _read(app, "parameters", {"name": name, **native}, refresh)


def _same_parameter(found_arn: Any, region: str, account: str, plain: str) -> bool:
    if not isinstance(found_arn, str):
        return False
    found = split_parameter_arn(found_arn)
    return found is not None and found == (region, account, plain)


def parameter_document(metadata: Mapping[str, Any], body: Optional[bytes] = None) -> Dict[str, Any]:
    """The ``Parameter`` object as AWS's extension returns it: every field of the SDK's
    Parameter shape, absent ones as null, dates as RFC 3339 UTC strings. ``Value`` is the
    ``body`` (the value is stored once), else the metadata's own ``Value``."""
    value = body.decode("utf-8", "replace") if body is not None else metadata.get("Value")
    return {
        "ARN": metadata.get("ARN"),
        "DataType": metadata.get("DataType"),
        "LastModifiedDate": render_date(metadata.get("LastModifiedDate")),
        "Name": metadata.get("Name"),
        "Selector": metadata.get("Selector"),
        "SourceResult": metadata.get("SourceResult"),
        "Type": metadata.get("Type"),
        "Value": value,
        "Version": metadata.get("Version"),
    }


# -- Secrets Manager GetSecretValue -----------------------------------------------------------


async def _get_secret(app: Any, params: Mapping[str, str]) -> Lookup:
    _check_args(params, _SECRET_ARGS, SECRETS_PATH)
    refresh = _refresh_now(params)
    secret_id = _required(params, "secretId", SECRETS_PATH)
    # Secrets Manager takes names, full ARNs and partial ARNs as SecretId: pass them as is.
    native = {"name": secret_id}
    for key in ("versionId", "versionStage"):
        if key in params:
            native[key] = params[key]
    return await _read(app, "secrets", native, refresh)


def secret_document(
    metadata: Mapping[str, Any], body: Optional[bytes] = None, content_type: str = ""
) -> Dict[str, Any]:
    """GetSecretValue's answer as AWS's extension returns it: both value fields present (one
    null), ``SecretBinary`` base64, dates as RFC 3339 UTC strings, an empty ResultMetadata.
    The value is the ``body`` (text for ``SecretString``, else ``SecretBinary``; it is stored
    once), else the metadata's own fields."""
    text = metadata.get("SecretString")
    binary = metadata.get("SecretBinary")
    if body is not None:
        if content_type.startswith("text/"):
            text, binary = body.decode("utf-8", "replace"), None
        else:
            text, binary = None, body
    if isinstance(binary, (bytes, bytearray, memoryview)):
        binary = base64.b64encode(bytes(binary)).decode("ascii")
    stages = metadata.get("VersionStages")
    return {
        "ARN": metadata.get("ARN"),
        "CreatedDate": render_date(metadata.get("CreatedDate")),
        "Name": metadata.get("Name"),
        "SecretBinary": binary,
        "SecretString": text,
        "VersionId": metadata.get("VersionId"),
        "VersionStages": list(stages) if stages is not None else None,
        "ResultMetadata": {},
    }


# -- dates ----------------------------------------------------------------------------------


def render_date(value: Any) -> Optional[str]:
    """A timestamp as AWS's extension writes it: RFC 3339 in UTC with ``Z`` and the fraction
    of a second without trailing zeros (``2022-11-16T08:22:40.362Z``), as Go's time.Time
    marshals. Accepts a datetime (boto3's), epoch seconds, or an already formatted string."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            return None
        value = datetime.datetime.fromtimestamp(value, tz=datetime.timezone.utc)
    if not isinstance(value, datetime.datetime):
        return str(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.timezone.utc)  # botocore gives aware dates
    value = value.astimezone(datetime.timezone.utc)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}".rstrip("0")
    return text + "Z"


# -- the OpenAPI document ---------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def openapi_bytes() -> bytes:
    """The OpenAPI 3.1 document of the whole HTTP surface (package data), for
    ``GET /-/openapi.json``."""
    import importlib.resources  # ~10 ms of imports (tempfile, zipfile...): not on the way to ready

    return importlib.resources.files("cachelayer").joinpath("openapi.json").read_bytes()
