"""Parsing the config file's units: sizes in bytes (``64MiB``) and fractions (``20%``).

The types themselves are public, in ``cachelayer.units``; re-exported here."""

from __future__ import annotations

import re
from typing import Dict

from cachelayer.units import ByteSize, Ratio

__all__ = ["RATIO_HINT", "SIZE_HINT", "ByteSize", "Ratio", "parse_ratio", "parse_size"]


_SIZE_UNITS: Dict[str, int] = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([A-Za-z]*)\s*$")
SIZE_HINT = "write an integer number of bytes or a size like 64MiB, 512KB, 1GB"
RATIO_HINT = "write a fraction from 0 to 1 (0.2) or a percentage (20%)"


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_size(text: str) -> int:
    """Bytes from ``text`` (``1048576``, ``64MiB``, ``1.5GB``); ValueError says how to write it."""
    m = _SIZE_RE.match(text)
    unit = _SIZE_UNITS.get(m.group(2).lower()) if m else None
    if m is None or unit is None:
        raise ValueError(f"invalid size {_shorten(text)!r}; {SIZE_HINT}")
    number = m.group(1)
    if "." in number and unit == 1:
        raise ValueError(f"a number of bytes must be whole, got {text!r}; {SIZE_HINT}")
    return int(float(number) * unit) if "." in number else int(number) * unit


def parse_ratio(text: str) -> float:
    """A fraction from 0 to 1 from ``0.2`` or ``20%``; ValueError says how to write it."""
    t = text.strip()
    try:
        value = float(t[:-1]) / 100.0 if t.endswith("%") else float(t)
    except ValueError:
        raise ValueError(f"invalid fraction {_shorten(text)!r}; {RATIO_HINT}") from None
    if not (0.0 <= value <= 1.0):
        raise ValueError(f"must be between 0 and 1 (0% and 100%), got {text!r}; {RATIO_HINT}")
    return value
