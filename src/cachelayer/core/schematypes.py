"""What the config schemas' types are: which YAML node kinds each accepts, how messages name it."""

from __future__ import annotations

import collections.abc as cabc
import types
import typing
from typing import Any, Dict, Literal, Optional, Tuple, Union

import attrs
from yaml.nodes import MappingNode, Node, SequenceNode

from cachelayer.core.units import ByteSize, Ratio
from cachelayer.provider import Duration

__all__ = [
    "MAPPINGS",
    "SEQUENCES",
    "accepts_kind",
    "describe_type",
    "field_types",
    "is_attrs",
    "kind",
    "union_args",
]

_UnionType: Any = getattr(types, "UnionType", None)  # X | Y on Python 3.10+
SEQUENCES = (list, tuple, set, frozenset, cabc.Sequence, cabc.MutableSequence, cabc.Set)
MAPPINGS = (dict, cabc.Mapping, cabc.MutableMapping)


def kind(node: Node) -> str:
    """``mapping``, ``sequence`` or ``scalar``: what a Union member must accept."""
    if isinstance(node, MappingNode):
        return "mapping"
    if isinstance(node, SequenceNode):
        return "sequence"
    return "scalar"


def is_attrs(tp: Any) -> bool:
    """Whether ``tp`` is an attrs class (structured from a mapping)."""
    return isinstance(tp, type) and attrs.has(tp)


def union_args(tp: Any) -> Optional[Tuple[Any, ...]]:
    """The members of ``Union[...]`` / ``Optional[...]`` / ``X | Y``, or None for another type."""
    origin = typing.get_origin(tp)
    if origin is Union or (_UnionType is not None and isinstance(tp, _UnionType)):
        return typing.get_args(tp)
    return None


_SCALAR_WORDS: Tuple[Tuple[type, str], ...] = (
    (Duration, "a duration like 30s, 5m or 1h30m"),
    (ByteSize, "a size like 1048576, 64MiB or 512KB"),
    (Ratio, "a fraction like 0.2 or a percentage like 20%"),
    (bool, "true or false"),
    (int, "an integer"),
    (float, "a number"),
    (str, "a string"),
)


def describe_type(tp: Any) -> str:
    """What a value of ``tp`` is, as a message says it ("a duration like 30s, 5m or 1h30m")."""
    if tp is Any or tp is object:
        return "any value"
    if tp is type(None):
        return "nothing (null)"
    if isinstance(tp, type):
        for base, words in _SCALAR_WORDS:  # most specific first: bool before int
            if issubclass(tp, base):
                return words
        if is_attrs(tp):
            return "a mapping"
    args = union_args(tp)
    if args is not None:
        return " or ".join(describe_type(a) for a in args)
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in SEQUENCES:
        return "a list"
    if origin in MAPPINGS:
        return "a mapping"
    return getattr(tp, "__name__", repr(tp))


def accepts_kind(tp: Any) -> Tuple[str, ...]:
    """Which node kinds a type can be built from: used to pick a member of a Union."""
    if tp is Any or tp is object:
        return ("scalar", "sequence", "mapping")
    if is_attrs(tp):
        return ("mapping",)
    origin = typing.get_origin(tp)
    if origin is not None:
        if origin in SEQUENCES:
            return ("sequence",)
        if origin in MAPPINGS:
            return ("mapping",)
        if origin is Literal:
            return ("scalar",)
        args = union_args(tp)
        if args is not None:
            return tuple({k for a in args for k in accepts_kind(a)})
    if tp in (list, tuple, set, frozenset):
        return ("sequence",)
    if tp is dict:
        return ("mapping",)
    return ("scalar",)


_hints_cache: Dict[type, Dict[str, Any]] = {}


def field_types(cls: type) -> Dict[str, Any]:
    """The fields' types of an attrs class with string annotations resolved."""
    hints = _hints_cache.get(cls)
    if hints is None:
        try:
            hints = typing.get_type_hints(cls)
        except NameError as exc:
            # A schema bug, not a config one: say which class so its author can fix it.
            raise TypeError(
                "cannot resolve the annotations of config schema "
                f"{cls.__module__}.{cls.__qualname__}: "
                f"{exc}; define the types it names at module level"
            ) from exc
        _hints_cache[cls] = hints
    return hints
