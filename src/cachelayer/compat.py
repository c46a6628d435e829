"""AWS-compatible routes: a provider's optional capability to answer an AWS extension's own path.

AWS's Parameters and Secrets Lambda Extension answers native paths (``GET
/<service>/...?<its query>``) with the service's own JSON. A provider that can stand in for such
a service declares it as a class attribute::

    class NotesProvider:
        aws_compat: ClassVar[AwsCompatRoute] = AwsCompatRoute(
            path="/notesservice/get",
            query=("noteId", "refreshNow"),
            to_request=note_request,  # query -> CompatRequest([CompatRead(name, params)])
            render=get_note_result,  # Value -> the service's own JSON document
        )

The built-in providers declare theirs in ``cachelayer/providers/*/compat.py``.

The server then answers ``GET <path>``: it rejects query parameters not in ``query``, asks
``to_request`` which reads to make (each one ``GET /<the provider's route>?name=&...`` through the
cache, with its TTL, single-flight and stale-if-error), and sends ``render(value)`` as JSON with
the native routes' ``X-Cache`` / ``Age`` / ``Cache-Control``. A provider without ``aws_compat``
answers no native path.
"""

from __future__ import annotations

import datetime
import math
from typing import Any, Callable, Iterable, Mapping, Optional, Tuple

import attrs

from cachelayer.errors import BadRequestError
from cachelayer.provider import Value

__all__ = [
    "AwsCompatRoute",
    "CompatRead",
    "CompatRequest",
    "refresh_now",
    "render_date",
    "required",
]


def _frozen_params(params: Mapping[str, str]) -> Mapping[str, str]:
    return dict(params)


@attrs.frozen
class CompatRead:
    """One read of the provider's own route: ``GET /<route>?name=<name>&<params>``.

    ``accept``, when set, judges the value read: if it refuses it (or the read answers
    NotFoundError) and another read follows, the server makes that one instead. The last read's
    answer, or its error, is always the response.
    """

    name: str
    params: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_params)
    accept: Optional[Callable[[Value], bool]] = attrs.field(default=None, eq=False)


def _reads(reads: Any) -> Tuple[CompatRead, ...]:
    out = tuple(reads)
    if not out:
        raise ValueError("a CompatRequest needs at least one CompatRead")
    return out


@attrs.frozen
class CompatRequest:
    """What one native request asks for: the reads to try in order; ``refresh`` fetches now."""

    reads: Tuple[CompatRead, ...] = attrs.field(converter=_reads)
    refresh: bool = False


def _names(names: Iterable[str]) -> Tuple[str, ...]:
    return tuple(names)


def _check_path(_: Any, attribute: Any, path: str) -> None:
    if not path.startswith("/") or path.startswith("/-/") or "?" in path:
        raise ValueError(
            f"AwsCompatRoute path {path!r} must be a URL path starting with '/', without a "
            "query, and outside the server's own /-/ operations"
        )


@attrs.frozen
class AwsCompatRoute:
    """An AWS-native path a provider answers, declared as its class attribute ``aws_compat``.

    Attributes:
        path: the native path, e.g. ``/notesservice/get``.
        query: the query parameters it accepts; the server answers 400 for any other.
        to_request: turns the (URL-decoded, declared-only) query parameters into the reads to
            make; raises BadRequestError for a bad or missing one.
        render: the service's own JSON document for a value the reads returned.
    """

    path: str = attrs.field(validator=_check_path)
    query: Tuple[str, ...] = attrs.field(converter=_names)
    to_request: Callable[[Mapping[str, str]], CompatRequest] = attrs.field(eq=False)
    render: Callable[[Value], Mapping[str, Any]] = attrs.field(eq=False)


# -- helpers for the mappers and renderers -------------------------------------------------


def required(params: Mapping[str, str], key: str, path: str) -> str:
    """The query parameter ``key``; BadRequestError saying how to send it when missing or empty."""
    value = params.get(key)
    if value is None:
        raise BadRequestError(f"missing query parameter {key!r}: use GET {path}?{key}=<{key}>")
    if not value.strip():
        raise BadRequestError(f"empty query parameter {key!r}: use GET {path}?{key}=<{key}>")
    return value


def refresh_now(params: Mapping[str, str]) -> bool:
    """AWS's extension's ``refreshNow``: ``true`` fetches the key from upstream now."""
    raw = params.get("refreshNow")
    if raw is None:
        return False
    value = raw.strip().lower()
    if value not in ("true", "false"):
        raise BadRequestError(f"refreshNow must be true or false, got {raw[:40]!r}")
    return value == "true"


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
