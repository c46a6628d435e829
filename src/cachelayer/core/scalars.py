"""Converting one YAML scalar to a setting's type: booleans, numbers, durations, sizes, ratios."""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Dict

from yaml.constructor import SafeConstructor
from yaml.nodes import Node, ScalarNode

from cachelayer.core.durations import DURATION_HINT, parse_bool, parse_duration
from cachelayer.core.schematypes import describe_type
from cachelayer.core.units import ByteSize, Ratio, parse_ratio, parse_size
from cachelayer.core.yamlload import TAG, describe_node, is_null, shorten
from cachelayer.provider import Duration

__all__ = ["INT_RE", "MAX_NUMBER", "UNSUPPORTED", "ScalarError", "to_bool", "to_scalar"]

_BOOL = TAG + "bool"
_INT = TAG + "int"
_FLOAT = TAG + "float"
_STR = TAG + "str"
INT_RE = re.compile(r"^[-+]?[0-9]+$")
# Python refuses to convert integers of over 4,300 digits: a hostile file must not crash us.
MAX_NUMBER = 100  # characters of a number (far beyond any setting's range)

UNSUPPORTED: Any = object()
"""What ``to_scalar`` returns for a type it does not know (a schema bug, not a config one)."""


class ScalarError(ValueError):
    """The node cannot be the type asked for; the message says what was expected and how to fix it."""


def to_bool(node: ScalarNode) -> bool:
    """A YAML boolean, or a Go spelling of one (``t``, ``0``); ValueError otherwise."""
    if node.tag == _BOOL:
        return bool(SafeConstructor().construct_yaml_bool(node))
    return parse_bool(str(node.value))


def _as_duration(node: ScalarNode, text: str, tp: type) -> Any:
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise ScalarError(str(exc)) from None
    if seconds < 0:
        raise ScalarError(f"must not be negative, got {text!r}; {DURATION_HINT}")
    return tp(seconds)


def _as_size(node: ScalarNode, text: str, tp: type) -> Any:
    try:
        return tp(parse_size(text))
    except ValueError as exc:
        raise ScalarError(str(exc)) from None


def _as_ratio(node: ScalarNode, text: str, tp: type) -> Any:
    try:
        return tp(parse_ratio(text))
    except ValueError as exc:
        raise ScalarError(str(exc)) from None


def _as_bool(node: ScalarNode, text: str, tp: type) -> Any:
    try:
        return to_bool(node)
    except ValueError:
        raise ScalarError(
            f"expected true or false, got {shorten(text)!r}; write true or false "
            "(also accepted: yes, no, on, off, 1, 0, t, f)"
        ) from None


def _as_int(node: ScalarNode, text: str, tp: type) -> Any:
    if node.tag == _INT:
        return tp(SafeConstructor().construct_yaml_int(node))
    if node.tag in (_STR, _FLOAT) and INT_RE.match(text):
        return tp(int(text))
    raise ScalarError(f"expected an integer, got {shorten(text)!r}; write digits only, e.g. 100")


def _as_float(node: ScalarNode, text: str, tp: type) -> Any:
    try:
        number: float
        if node.tag == _INT:
            number = float(SafeConstructor().construct_yaml_int(node))
        elif node.tag == _FLOAT:
            number = float(SafeConstructor().construct_yaml_float(node))
        elif node.tag == _STR:
            number = float(text)
        else:
            raise ValueError(text)
    except ValueError:
        raise ScalarError(
            f"expected a number, got {shorten(text)!r}; write e.g. 0.5 or 10"
        ) from None
    if not math.isfinite(number):
        raise ScalarError(f"expected a finite number, got {shorten(text)!r}")
    return tp(number)


def _as_str(node: ScalarNode, text: str, tp: type) -> Any:
    # The raw text, so '0123' stays '0123' and '1.50' keeps its digits.
    return tp(text)


# Most specific first: Duration is a float, ByteSize an int and bool an int too.
_CONVERTERS: Dict[type, Callable[[ScalarNode, str, type], Any]] = {
    Duration: _as_duration,
    ByteSize: _as_size,
    Ratio: _as_ratio,
    bool: _as_bool,
    int: _as_int,
    float: _as_float,
    str: _as_str,
}


def to_scalar(node: Node, tp: type) -> Any:
    """``node`` as a ``tp`` (a subclass of one of the supported scalar types), or
    ``UNSUPPORTED`` for another type. Raises ``ScalarError`` for a node that cannot be one."""
    what = describe_type(tp)
    if not isinstance(node, ScalarNode):
        raise ScalarError(f"expected {what}, got {describe_node(node)}")
    if is_null(node):
        raise ScalarError(f"needs a value: expected {what}; write a value or remove the key")
    text = str(node.value)
    if len(text) > MAX_NUMBER and not issubclass(tp, str):
        raise ScalarError(
            f"expected {what}, got a value of {len(text)} characters; no setting takes one "
            f"over {MAX_NUMBER}"
        )
    for base, convert in _CONVERTERS.items():
        if issubclass(tp, base):
            return convert(node, text, tp)
    return UNSUPPORTED
