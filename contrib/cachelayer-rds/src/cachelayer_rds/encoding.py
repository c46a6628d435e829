"""Rows as JSON with native types: exact numbers, RFC 3339 dates, base64 bytes."""

from __future__ import annotations

import base64
import datetime
import decimal
import json
import math
import uuid
from typing import Any, List, Sequence

__all__ = ["encode_rows", "iso_duration"]


def encode_rows(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> bytes:
    """A JSON array with one object per row, keys in column order.

    Written by hand rather than with ``json.dumps(default=...)`` because a Decimal must become a
    JSON number with exactly its digits (``12.50`` stays ``12.50``), which ``default`` cannot do.
    """
    names = [json.dumps(str(c), ensure_ascii=False) for c in columns]
    out: List[str] = ["["]
    for r, row in enumerate(rows):
        if r:
            out.append(",")
        out.append("{")
        for i, (name, value) in enumerate(zip(names, row)):
            if i:
                out.append(",")
            out.append(name)
            out.append(":")
            _encode(value, out)
        out.append("}")
    out.append("]")
    return "".join(out).encode("utf-8")


def _encode(value: Any, out: List[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(str(int(value)))
    elif isinstance(value, float):
        # NaN and infinities have no JSON number: spell them as strings, like PostgreSQL does.
        out.append(repr(value) if math.isfinite(value) else json.dumps(str(value)))
    elif isinstance(value, decimal.Decimal):
        out.append(str(value) if value.is_finite() else json.dumps(str(value)))
    elif isinstance(value, str):
        out.append(json.dumps(value, ensure_ascii=False))
    elif isinstance(value, (bytes, bytearray, memoryview)):
        out.append('"' + base64.b64encode(bytes(value)).decode("ascii") + '"')
    elif isinstance(value, datetime.datetime):
        out.append('"' + _rfc3339(value) + '"')
    elif isinstance(value, (datetime.date, datetime.time)):
        out.append('"' + value.isoformat() + '"')
    elif isinstance(value, datetime.timedelta):
        out.append('"' + iso_duration(value) + '"')
    elif isinstance(value, dict):
        out.append("{")
        for i, (k, v) in enumerate(value.items()):
            if i:
                out.append(",")
            out.append(json.dumps(str(k), ensure_ascii=False))
            out.append(":")
            _encode(v, out)
        out.append("}")
    elif isinstance(value, (list, tuple, set, frozenset)):
        out.append("[")
        for i, v in enumerate(sorted(value) if isinstance(value, (set, frozenset)) else value):
            if i:
                out.append(",")
            _encode(v, out)
        out.append("]")
    elif isinstance(value, uuid.UUID):
        out.append('"' + str(value) + '"')
    else:  # network addresses, ranges, driver-specific types: their text form
        out.append(json.dumps(str(value), ensure_ascii=False))


def _rfc3339(value: datetime.datetime) -> str:
    """``2024-05-01T12:00:00Z``, or with the value's own offset; a naive value has none."""
    text = value.isoformat()
    if value.tzinfo is not None and value.utcoffset() == datetime.timedelta(0):
        text = text[: -len("+00:00")] + "Z"
    return text


def iso_duration(value: datetime.timedelta) -> str:
    """An ISO 8601 duration: ``P1DT2H3M4.5S``, ``-PT30S``, ``PT0S``."""
    sign = "-" if value < datetime.timedelta(0) else ""
    value = abs(value)
    days = value.days
    seconds = value.seconds
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    text = "P" + (f"{days}D" if days else "")
    clock = ""
    if hours:
        clock += f"{hours}H"
    if minutes:
        clock += f"{minutes}M"
    if seconds or value.microseconds or not (days or hours or minutes):
        frac = f".{value.microseconds:06d}".rstrip("0") if value.microseconds else ""
        clock += f"{seconds}{frac}S"
    if clock:
        text += "T" + clock
    return sign + text
