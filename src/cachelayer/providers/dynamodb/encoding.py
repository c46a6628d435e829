"""DynamoDB attribute values (low-level wire form) to JSON with native types and exact numbers."""

from __future__ import annotations

import base64
import json
import re
from decimal import Decimal, InvalidOperation
from typing import Any, List, Mapping

from cachelayer import UpstreamError

__all__ = ["item_to_json", "json_number"]

# JSON's number grammar; DynamoDB's normalised digits always match it, moto's may not.
_JSON_NUMBER = re.compile(r"^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?$")


def json_number(digits: str) -> str:
    """``digits`` as a JSON number without losing precision (never through float)."""
    if _JSON_NUMBER.match(digits):
        return digits
    try:
        number = Decimal(digits)
    except InvalidOperation:
        number = Decimal("NaN")
    if not number.is_finite():
        raise UpstreamError(f"dynamodb returned a number that is not one: {digits!r}")
    return str(number)  # Decimal's str is exact and JSON-valid ("0.5", "1E+2")


def _b64(data: Any) -> str:
    if isinstance(data, str):  # already base64 (a client that does not decode B)
        return data
    return base64.b64encode(bytes(data)).decode("ascii")


def _encode(value: Mapping[str, Any], out: List[str]) -> None:
    if len(value) != 1:
        raise UpstreamError(f"dynamodb attribute value with {len(value)} type tags")
    ((tag, data),) = value.items()
    if tag == "S":
        out.append(json.dumps(data, ensure_ascii=False))
    elif tag == "N":
        out.append(json_number(data))
    elif tag == "BOOL":
        out.append("true" if data else "false")
    elif tag == "NULL":
        out.append("null")
    elif tag == "B":
        out.append(json.dumps(_b64(data)))
    elif tag == "SS":
        out.append(json.dumps(list(data), ensure_ascii=False, separators=(",", ":")))
    elif tag == "NS":
        out.append("[" + ",".join(json_number(n) for n in data) + "]")
    elif tag == "BS":
        out.append(json.dumps([_b64(b) for b in data], separators=(",", ":")))
    elif tag == "L":
        out.append("[")
        for index, element in enumerate(data):
            if index:
                out.append(",")
            _encode(element, out)
        out.append("]")
    elif tag == "M":
        _encode_map(data, out)
    else:
        raise UpstreamError(f"dynamodb attribute type {tag!r} is not supported")


def _encode_map(attributes: Mapping[str, Any], out: List[str]) -> None:
    out.append("{")
    # Sorted so a refreshed, unchanged item renders to the same bytes.
    for index, key in enumerate(sorted(attributes)):
        if index:
            out.append(",")
        out.append(json.dumps(key, ensure_ascii=False))
        out.append(":")
        _encode(attributes[key], out)
    out.append("}")


def item_to_json(item: Mapping[str, Any]) -> str:
    """A whole item (``{"attr": {"S": "x"}, ...}``) as a JSON object with native types.

    Numbers keep DynamoDB's exact digits, binary becomes base64, sets become arrays.
    """
    out: List[str] = []
    _encode_map(item, out)
    return "".join(out)
