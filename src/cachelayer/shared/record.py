"""What a shared entry holds (a value or a "not found", with its wall-clock times), as bytes."""

from __future__ import annotations

import base64
import datetime
import decimal
import json
import struct
from typing import Any, Optional

import attrs

from cachelayer.provider import Value

__all__ = ["SharedRecord", "decode_record", "encode_record"]

_HEADER = struct.Struct(">I")


@attrs.frozen
class SharedRecord:
    """One shared entry. ``value`` None means "not found upstream" with ``message``.

    Times are wall-clock (``time.time()``): environments on different hosts share them.
    """

    value: Optional[Value]
    fetched_at: float
    expires_at: float
    message: str = ""

    def remaining(self, now: float) -> float:
        """Seconds of freshness left at ``now`` (negative once expired)."""
        return self.expires_at - now


def _tag(obj: Any) -> Any:
    """JSON-ready form of provider metadata, types tagged so they come back the same."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, dict):
        out = {str(k): _tag(v) for k, v in obj.items()}
        return {"$t": "map", "v": out} if "$t" in out else out
    if isinstance(obj, (list, tuple)):
        return [_tag(v) for v in obj]
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return {"$t": "bytes", "v": base64.b64encode(bytes(obj)).decode("ascii")}
    if isinstance(obj, datetime.datetime):
        return {"$t": "datetime", "v": obj.isoformat()}
    if isinstance(obj, decimal.Decimal):
        return {"$t": "decimal", "v": str(obj)}
    if isinstance(obj, (set, frozenset)):
        return {"$t": "set", "v": [_tag(v) for v in obj]}
    raise TypeError(f"cannot share metadata of type {type(obj).__name__}")


def _untag(obj: Any) -> Any:
    if isinstance(obj, list):
        return [_untag(v) for v in obj]
    if not isinstance(obj, dict):
        return obj
    kind = obj.get("$t")
    if kind is None:
        return {k: _untag(v) for k, v in obj.items()}
    v = obj["v"]
    if kind == "map":
        return {k: _untag(x) for k, x in v.items()}
    if kind == "bytes":
        return base64.b64decode(v)
    if kind == "datetime":
        return datetime.datetime.fromisoformat(v)
    if kind == "decimal":
        return decimal.Decimal(v)
    if kind == "set":
        return {_untag(x) for x in v}
    raise ValueError(f"unknown tag {kind!r}")


def encode_record(record: SharedRecord) -> bytes:
    """The plaintext of ``record``: a length-prefixed JSON header, then the body. Raises
    TypeError when the metadata holds a type that cannot be shared."""
    value = record.value
    header: dict[str, Any] = {"f": record.fetched_at, "e": record.expires_at}
    body = b""
    if value is None:
        header["n"] = record.message
    else:
        header["ct"] = value.content_type
        header["m"] = _tag(dict(value.metadata))
        if value.etag is not None:
            header["et"] = value.etag
        body = value.body
    head = json.dumps(header, separators=(",", ":"), allow_nan=False).encode("utf-8")
    return _HEADER.pack(len(head)) + head + body


def decode_record(data: bytes) -> SharedRecord:
    """The record ``encode_record`` wrote; ValueError if ``data`` is not one."""
    if len(data) < _HEADER.size:
        raise ValueError("record too short")
    (size,) = _HEADER.unpack_from(data)
    if size > len(data) - _HEADER.size:
        raise ValueError("record header overruns the data")
    header = json.loads(data[_HEADER.size : _HEADER.size + size])
    if not isinstance(header, dict):
        raise ValueError("record header is not an object")
    body = data[_HEADER.size + size :]
    fetched, expires = float(header["f"]), float(header["e"])
    if "n" in header:
        return SharedRecord(None, fetched, expires, str(header["n"]))
    metadata = _untag(header.get("m") or {})
    value = Value(body, str(header["ct"]), metadata, header.get("et"))
    return SharedRecord(value, fetched, expires)
