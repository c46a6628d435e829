"""Configuration: the YAML file checked against typed schemas, plus the environment, as Settings."""

from __future__ import annotations

import collections.abc as cabc
import difflib
import math
import os.path
import re
import types
import typing
from typing import Any, Dict, List, Literal, Mapping, Optional, Tuple, Union

import attrs
import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from cachelayer.core.durations import DURATION_HINT, format_duration, parse_bool, parse_duration
from cachelayer.core.metrics import DEFAULT_NAMESPACE, check_namespace
from cachelayer.errors import ConfigError, PluginError
from cachelayer.provider import Duration
from cachelayer.shared.settings import ENV as SHARED_ENV
from cachelayer.shared.settings import SharedConfig, SharedSettings, resolve_shared
from cachelayer.units import ByteSize, Ratio

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "KNOWN_ENV",
    "ByteSize",
    "CacheSettings",
    "Ratio",
    "Settings",
    "describe",
    "load_settings",
    "load_yaml",
    "plugin_filters",
    "structure",
]

# LAMBDA_TASK_ROOT is not passed to extensions, so the function's directory is hard-coded.
DEFAULT_CONFIG_PATH = "/var/task/config.yaml"
DEFAULT_PORT = 4000
DEFAULT_TTL = 3600.0
MiB = 1024 * 1024

KNOWN_ENV: Tuple[str, ...] = (
    "CACHE_EXTENSION_TTL",
    "CACHE_EXTENSION_INIT_STARTUP",
    "CACHE_EXTENSION_CONFIG",
    "CACHE_EXTENSION_PORT",
    "CACHE_EXTENSION_AUTH",
    "CACHE_EXTENSION_LOG_LEVEL",
    "CACHE_EXTENSION_PLUGINS",
    "CACHE_EXTENSION_DISABLE_PLUGINS",
    "CACHE_EXTENSION_METRICS",
    "CACHE_EXTENSION_METRICS_NAMESPACE",
    *SHARED_ENV,
    # Read by the layer's launcher, not by Python; known so they draw no warning.
    "CACHE_EXTENSION_PYTHON",
    "CACHE_EXTENSION_NAME",
)
"""Every ``CACHE_EXTENSION_*`` variable the extension reads; any other one draws a warning."""

_PREFIX = "CACHE_EXTENSION_"


_TAG = "tag:yaml.org,2002:"
_NULL = _TAG + "null"
_BOOL = _TAG + "bool"
_INT = _TAG + "int"
_FLOAT = _TAG + "float"
_STR = _TAG + "str"

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
_SIZE_HINT = "write an integer number of bytes or a size like 64MiB, 512KB, 1GB"
_RATIO_HINT = "write a fraction from 0 to 1 (0.2) or a percentage (20%)"
_INT_RE = re.compile(r"^[-+]?[0-9]+$")
# Bounds that keep a hostile file from crashing the loader: Python refuses to convert integers
# of over 4,300 digits, and deep nesting exhausts the recursion limit.
_MAX_NUMBER = 100  # characters of a number (far beyond any setting's range)
MAX_DEPTH = 64  # levels of nested mappings and lists

_UnionType: Any = getattr(types, "UnionType", None)  # X | Y on Python 3.10+
_SEQUENCES = (list, tuple, set, frozenset, cabc.Sequence, cabc.MutableSequence, cabc.Set)
_MAPPINGS = (dict, cabc.Mapping, cabc.MutableMapping)
_NOWHERE = "<no file>"  # the mark of the synthetic empty mapping, which has no line


# --------------------------------------------------------------------------------------------
# Reading YAML


class _TooDeep(yaml.MarkedYAMLError):
    """Nesting beyond ``MAX_DEPTH``."""


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader with nesting bounded: its composer recurses once per level."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Optional[Node], index: Any) -> Optional[Node]:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _TooDeep(problem_mark=self.peek_event().start_mark)
            node: Optional[Node] = super().compose_node(parent, index)
            return node
        finally:
            self._depth -= 1


def _empty_mapping() -> MappingNode:
    mark = yaml.Mark(_NOWHERE, 0, 0, 0, None, None)  # type: ignore[arg-type]  # PyYAML allows None buffer/pointer
    return MappingNode("tag:yaml.org,2002:map", [], start_mark=mark, end_mark=mark)


def load_yaml(path: str) -> Node:
    """Read ``path`` as YAML nodes (SafeLoader), keeping each node's line for error messages.

    An empty file is an empty mapping. Raises ``ConfigError`` for a missing or unreadable file,
    a syntax error (with line and column) and a top level that is not a mapping.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError(
            "config file not found; create it, or give the right path (--config, or "
            "CACHE_EXTENSION_CONFIG in Lambda)",
            source=path,
        ) from None
    except IsADirectoryError:
        raise ConfigError(
            "config path is a directory, not a file; point CACHE_EXTENSION_CONFIG at a YAML file",
            source=path,
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file is not valid UTF-8 ({exc.reason} at byte {exc.start}); save it as UTF-8",
            source=path,
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"cannot read config file: {exc.strerror or exc}; check its permissions",
            source=path,
        ) from None
    loader: Optional[_BoundedLoader] = None
    try:
        loader = _BoundedLoader(text)  # checks every character first
        node = loader.get_single_node()
    except (ValueError, OverflowError) as exc:
        # PyYAML's scanner turns an escape such as "\U99999999" into chr() without a check.
        at = loader.get_mark().line + 1 if loader is not None else 1
        raise ConfigError(
            f"invalid escape or character at line {at} ({exc}); fix the escape sequence "
            "in the double-quoted string (\\uXXXX or \\UXXXXXXXX up to 10FFFF)",
            source=path,
            line=at,
        ) from None
    except _TooDeep as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark is not None else None
        raise ConfigError(
            f"nested more than {MAX_DEPTH} levels deep; no setting needs that many, so the "
            "file is probably malformed (unbalanced [ or {, or a run of '- ')",
            source=path,
            line=line,
        ) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        char = exc.character
        shown = f"U+{char:04X}" if isinstance(char, int) else repr(char)
        raise ConfigError(
            f"character {shown} at line {line} is not allowed in YAML; remove it, or write it "
            "as an escape (\\x01) inside a double-quoted string",
            source=path,
            line=line,
        ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = " ".join(p for p in (exc.context, exc.problem) if p)
        if mark is not None:
            raise ConfigError(
                f"YAML syntax error at line {mark.line + 1}, column {mark.column + 1}: {what}; "
                "fix the syntax (indent with spaces, quote values containing ': ' or '#')",
                source=path,
                line=mark.line + 1,
            ) from None
        raise ConfigError(f"YAML syntax error: {what}", source=path) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"YAML error: {exc}", source=path) from None
    finally:
        if loader is not None:
            loader.dispose()
    if node is None:
        return _empty_mapping()
    if not isinstance(node, MappingNode):
        raise ConfigError(
            f"the top level must be a mapping of sections (e.g. 'parameters:'), "
            f"got {_describe_node(node)}",
            source=path,
            line=_line(node),
        )
    return node


def line_of(path: str, key: str) -> Optional[int]:
    """The line of the deepest node the dotted ``key`` (``weather.0.city`` or
    ``weather[0].city``) reaches in the YAML file at ``path``, or None; for errors raised after
    structuring (a provider's own)."""
    try:
        node: Node = load_yaml(path)
    except ConfigError:
        return None
    line = None
    for part in re.findall(r"[^.\[\]]+", key):
        child: Optional[Node] = None
        if isinstance(node, MappingNode):
            for knode, vnode in node.value:
                if isinstance(knode, ScalarNode) and knode.value == part:
                    line, child = _line(knode), vnode
                    break
        elif isinstance(node, SequenceNode) and part.isdigit() and int(part) < len(node.value):
            child = node.value[int(part)]
            line = _line(child)
        if child is None:
            break
        node = child
    return line


# --------------------------------------------------------------------------------------------
# Structuring YAML nodes into typed values


def _line(node: Node) -> Optional[int]:
    mark = getattr(node, "start_mark", None)
    if mark is None or mark.name == _NOWHERE:
        return None
    return int(mark.line) + 1


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _NULL


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe_node(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    if _is_null(node):
        return "nothing (an empty value or null)"
    return repr(_shorten(str(node.value)))


def _kind(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "mapping"
    if isinstance(node, SequenceNode):
        return "sequence"
    return "scalar"


def _is_attrs(tp: Any) -> bool:
    return isinstance(tp, type) and attrs.has(tp)


def _union_args(tp: Any) -> Optional[Tuple[Any, ...]]:
    origin = typing.get_origin(tp)
    if origin is Union or (_UnionType is not None and isinstance(tp, _UnionType)):
        return typing.get_args(tp)
    return None


def _describe_type(tp: Any) -> str:
    if tp is Any or tp is object:
        return "any value"
    if tp is type(None):
        return "nothing (null)"
    if isinstance(tp, type):
        if issubclass(tp, Duration):
            return "a duration like 30s, 5m or 1h30m"
        if issubclass(tp, ByteSize):
            return "a size like 1048576, 64MiB or 512KB"
        if issubclass(tp, Ratio):
            return "a fraction like 0.2 or a percentage like 20%"
        if issubclass(tp, bool):
            return "true or false"
        if issubclass(tp, int):
            return "an integer"
        if issubclass(tp, float):
            return "a number"
        if issubclass(tp, str):
            return "a string"
        if _is_attrs(tp):
            return "a mapping"
    args = _union_args(tp)
    if args is not None:
        return " or ".join(_describe_type(a) for a in args)
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in _SEQUENCES:
        return "a list"
    if origin in _MAPPINGS:
        return "a mapping"
    return getattr(tp, "__name__", repr(tp))


def _accepts_kind(tp: Any) -> Tuple[str, ...]:
    """Which node kinds a type can be built from: used to pick a member of a Union."""
    if tp is Any or tp is object:
        return ("scalar", "sequence", "mapping")
    if _is_attrs(tp):
        return ("mapping",)
    origin = typing.get_origin(tp)
    if origin is not None:
        if origin in _SEQUENCES:
            return ("sequence",)
        if origin in _MAPPINGS:
            return ("mapping",)
        if origin is Literal:
            return ("scalar",)
        args = _union_args(tp)
        if args is not None:
            return tuple({k for a in args for k in _accepts_kind(a)})
    if tp in (list, tuple, set, frozenset):
        return ("sequence",)
    if tp is dict:
        return ("mapping",)
    return ("scalar",)


_hints_cache: Dict[type, Dict[str, Any]] = {}


def _field_types(cls: type) -> Dict[str, Any]:
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


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


MAX_REPORTED_ERRORS = 20
"""A file's errors are collected up to this many (one per list entry or section), then stop."""


class _Reported(Exception):
    """A part of the file failed and its errors are collected: skip it, keep checking the rest."""


@attrs.frozen
class _Ctx:
    """Where we are: the file (for messages), the dotted key path, and where errors are
    collected (None: the first error is raised)."""

    source: str
    path: str
    errors: Optional[List[ConfigError]] = attrs.field(default=None, eq=False)

    def collect(self, exc: ConfigError) -> bool:
        """Keep ``exc`` and go on checking, or False to raise it (not collecting, or full)."""
        if self.errors is None or len(self.errors) >= MAX_REPORTED_ERRORS - 1:
            return False
        self.errors.append(exc)
        return True

    def error(self, node: Optional[Node], message: str, path: Optional[str] = None) -> ConfigError:
        return ConfigError(
            message,
            source=self.source,
            line=_line(node) if node is not None else None,
            key=(self.path if path is None else path) or None,
        )

    def child(self, path: str) -> _Ctx:
        return _Ctx(self.source, path, self.errors)


def _flatten(node: MappingNode, ctx: _Ctx) -> None:
    """Apply YAML merge keys (``<<: *base``) in place: explicit keys win, then earlier merges."""
    if not any(k.tag == _TAG + "merge" for k, _ in node.value):
        return
    merged: List[Tuple[Node, Node]] = []
    explicit: List[Tuple[Node, Node]] = []
    for knode, vnode in node.value:
        if knode.tag != _TAG + "merge":
            explicit.append((knode, vnode))
            continue
        sources = vnode.value if isinstance(vnode, SequenceNode) else [vnode]
        for source in sources:
            if not isinstance(source, MappingNode):
                raise ctx.error(
                    source,
                    f"'<<' merges mappings, got {_describe_node(source)}; write '<<: *anchor' "
                    "where the anchor names a mapping",
                )
            _flatten(source, ctx)
            merged.extend(source.value)
    taken = {k.value for k, _ in explicit if isinstance(k, ScalarNode)}
    result: List[Tuple[Node, Node]] = []
    for knode, vnode in merged:
        if isinstance(knode, ScalarNode) and knode.value in taken:
            continue
        taken.add(knode.value)
        result.append((knode, vnode))
    node.value = result + explicit


def _flatten_all(node: Node, ctx: _Ctx, seen: set) -> None:
    if id(node) in seen:  # aliases may make the graph recursive
        return
    seen.add(id(node))
    if isinstance(node, MappingNode):
        _flatten(node, ctx)
        for knode, vnode in node.value:
            _flatten_all(knode, ctx, seen)
            _flatten_all(vnode, ctx, seen)
    elif isinstance(node, SequenceNode):
        for item in node.value:
            _flatten_all(item, ctx, seen)


def _mapping_items(node: MappingNode, ctx: _Ctx) -> List[Tuple[str, Node, Node]]:
    """The (key text, key node, value node) of a mapping; keys must be unique scalars."""
    _flatten(node, ctx)
    seen: Dict[str, Node] = {}
    items: List[Tuple[str, Node, Node]] = []
    for knode, vnode in node.value:
        if not isinstance(knode, ScalarNode) or _is_null(knode):
            raise ctx.error(
                knode,
                f"a key must be a plain name, got {_describe_node(knode)}; write 'name: value'",
            )
        key = str(knode.value)
        if len(key) > _MAX_NUMBER:
            raise ctx.error(
                knode,
                f"a key of {len(key)} characters ({_shorten(key)!r}); keys are setting and "
                f"section names, none over {_MAX_NUMBER} characters",
            )
        if key in seen:
            raise ctx.error(
                knode,
                f"duplicate key {key!r} (first at line {_line(seen[key])}); keep only one",
                _join(ctx.path, key),
            )
        seen[key] = knode
        items.append((key, knode, vnode))
    return items


def _check_tag(node: Node, ctx: _Ctx) -> None:
    tag = node.tag or ""
    if not tag.startswith(_TAG):
        raise ctx.error(node, f"unsupported YAML tag {tag!r}; remove it")


def structure(node: Node, tp: Any, *, source: str, path: str) -> Any:
    """Validate a YAML node against ``tp`` and convert it, recursively.

    Supported: attrs classes (mappings; a field's YAML name is ``metadata={"yaml": name}`` or
    its name), ``List``/``Sequence``/``Tuple``/``Dict``/``Mapping``, ``Union``/``Optional``
    (chosen by the node's kind), ``Literal``, ``str`` (raw text), ``int``, ``float``, ``bool``
    (YAML and Go spellings), ``Duration``, ``ByteSize``, ``Ratio``, ``Any``.
    Raises ``ConfigError`` naming ``source``, the line and the dotted key path.
    """
    return _structure(node, tp, _Ctx(source, path))


def _structure(node: Node, tp: Any, ctx: _Ctx) -> Any:
    _check_tag(node, ctx)
    if tp is Any or tp is object:
        _flatten_all(node, ctx, set())  # the YAML spec's merge order, not PyYAML's
        return SafeConstructor().construct_document(node)
    if tp is type(None):
        if _is_null(node):
            return None
        raise ctx.error(node, f"takes no value, got {_describe_node(node)}; remove it")
    args = _union_args(tp)
    if args is not None:
        return _structure_union(node, tp, args, ctx)
    origin = typing.get_origin(tp)
    if origin is Literal:
        return _structure_literal(node, typing.get_args(tp), ctx)
    if _is_attrs(tp):
        return _structure_attrs(node, tp, ctx)
    if origin is not None or tp in (list, tuple, dict, set, frozenset):
        return _structure_generic(node, tp, origin or tp, ctx)
    if isinstance(tp, type):
        return _structure_scalar(node, tp, ctx)
    raise TypeError(f"config schema type {tp!r} at {ctx.path or '(top)'} is not supported")


def _structure_union(node: Node, tp: Any, args: Tuple[Any, ...], ctx: _Ctx) -> Any:
    if _is_null(node) and type(None) in args:
        return None
    kind = _kind(node)
    members = [a for a in args if a is not type(None)]
    candidates = [a for a in members if kind in _accepts_kind(a)]
    if not candidates and len(members) == 1:
        # Optional[X]: X's own error is the most helpful one.
        return _structure(node, members[0], ctx)
    if not candidates:
        raise ctx.error(
            node,
            f"expected {_describe_type(tp)}, got {_describe_node(node)}",
        )
    if len(candidates) == 1:
        return _structure(node, candidates[0], ctx)
    errors: List[ConfigError] = []
    for candidate in candidates:
        try:
            # Each candidate's first error only: collecting would report a failed guess.
            return _structure(node, candidate, _Ctx(ctx.source, ctx.path))
        except ConfigError as exc:
            errors.append(exc)
    raise ctx.error(
        node,
        f"expected {_describe_type(tp)}, got {_describe_node(node)} ("
        + "; ".join(e.message for e in errors)
        + ")",
    )


def _structure_literal(node: Node, options: Tuple[Any, ...], ctx: _Ctx) -> Any:
    if isinstance(node, ScalarNode) and not _is_null(node):
        text = str(node.value)
        for option in options:
            if isinstance(option, bool):
                try:
                    if _to_bool(node) is option:
                        return option
                except ValueError:
                    pass
            elif isinstance(option, int):
                if len(text) <= _MAX_NUMBER and _INT_RE.match(text) and int(text) == option:
                    return option
            elif isinstance(option, str) and text == option:
                return option
        allowed = ", ".join(repr(o) for o in options)
        hint = ""
        for option in options:
            if isinstance(option, str) and option.lower() == text.lower():
                hint = f"; did you mean {option!r}? (values are case-sensitive)"
                break
        else:
            close = difflib.get_close_matches(text, [str(o) for o in options], n=1)
            if close:
                hint = f"; did you mean {close[0]!r}?"
        raise ctx.error(node, f"must be one of {allowed}, got {_shorten(text)!r}{hint}")
    raise ctx.error(
        node, f"must be one of {', '.join(repr(o) for o in options)}, got {_describe_node(node)}"
    )


def _yaml_name(field: Any) -> str:
    return str(field.metadata.get("yaml", field.name))


def _structure_attrs(node: Node, cls: type, ctx: _Ctx) -> Any:
    fields = [f for f in attrs.fields(cls) if f.init]
    by_yaml = {_yaml_name(f): f for f in fields}
    allowed = ", ".join(by_yaml) or "(none)"
    if not isinstance(node, MappingNode):
        raise ctx.error(node, f"expected a mapping with keys {allowed}, got {_describe_node(node)}")
    hints = _field_types(cls)
    kwargs: Dict[str, Any] = {}
    key_nodes: Dict[str, Node] = {}
    for key, knode, vnode in _mapping_items(node, ctx):
        field = by_yaml.get(key)
        if field is None:
            close = difflib.get_close_matches(key, list(by_yaml), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ctx.error(
                knode,
                f"unknown key {key!r}; {hint}allowed keys: {allowed}",
                _join(ctx.path, key),
            )
        child = ctx.child(_join(ctx.path, key))
        value = _structure(vnode, hints.get(field.name, field.type), child)
        kwargs[getattr(field, "alias", None) or field.name.lstrip("_")] = value
        key_nodes[field.name] = vnode
    missing = [
        _yaml_name(f) for f in fields if f.default is attrs.NOTHING and f.name not in key_nodes
    ]
    if missing:
        keys = ", ".join(repr(m) for m in missing)
        raise ctx.error(
            node,
            f"missing required key{'s' if len(missing) > 1 else ''} {keys}; "
            f"add {' and '.join(f'{m}: <value>' for m in missing)}",
        )
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        if exc.source is not None:
            raise
        raise ctx.error(node, exc.message, _join(ctx.path, exc.key) if exc.key else None) from None
    except (ValueError, TypeError) as exc:
        # attrs validators pass the failing Attribute among the exception's args: use its line.
        attribute = next((a for a in exc.args if isinstance(a, attrs.Attribute)), None)
        message = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
        if attribute is not None and attribute.name in key_nodes:
            where = key_nodes[attribute.name]
            path = _join(ctx.path, _yaml_name(attribute))
        else:
            where, path = node, ctx.path
        raise ctx.error(where, f"invalid value: {message}; fix this setting", path) from None


def _structure_generic(node: Node, tp: Any, origin: Any, ctx: _Ctx) -> Any:
    args = typing.get_args(tp)
    if origin in _MAPPINGS:
        key_tp, value_tp = args if args else (str, Any)
        if not isinstance(node, MappingNode):
            raise ctx.error(
                node, f"expected a mapping ('key: value' lines), got {_describe_node(node)}"
            )
        out: Dict[Any, Any] = {}
        for key, knode, vnode in _mapping_items(node, ctx):
            child = ctx.child(_join(ctx.path, key))
            k = _structure(knode, key_tp, child)
            out[k] = _structure(vnode, value_tp, child)
        return out
    if origin in _SEQUENCES:
        if not isinstance(node, SequenceNode):
            raise ctx.error(
                node,
                f"expected a list, got {_describe_node(node)}; write each entry on its own line "
                "starting with '- '",
            )
        items = node.value
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(items) != len(args):
                raise ctx.error(
                    node, f"expected a list of exactly {len(args)} entries, got {len(items)}"
                )
            return tuple(
                _structure(n, a, ctx.child(f"{ctx.path}[{i}]"))
                for i, (n, a) in enumerate(zip(items, args))
            )
        item_tp = args[0] if args else Any
        values = []
        reported = False
        for i, n in enumerate(items):
            try:
                values.append(_structure(n, item_tp, ctx.child(f"{ctx.path}[{i}]")))
            except _Reported:
                reported = True
            except ConfigError as exc:
                if not ctx.collect(exc):
                    raise
                reported = True
        if reported:  # an entry is missing: building on the rest would report nonsense
            raise _Reported()
        if origin is tuple:
            return tuple(values)
        if origin in (set, frozenset, cabc.Set):
            return frozenset(values) if origin is not set else set(values)
        return values
    raise TypeError(f"config schema type {tp!r} at {ctx.path or '(top)'} is not supported")


def _to_bool(node: ScalarNode) -> bool:
    if node.tag == _BOOL:
        return bool(SafeConstructor().construct_yaml_bool(node))
    return parse_bool(str(node.value))


def _structure_scalar(node: Node, tp: type, ctx: _Ctx) -> Any:
    what = _describe_type(tp)
    if not isinstance(node, ScalarNode):
        raise ctx.error(node, f"expected {what}, got {_describe_node(node)}")
    if _is_null(node):
        raise ctx.error(node, f"needs a value: expected {what}; write a value or remove the key")
    text = str(node.value)
    if len(text) > _MAX_NUMBER and not issubclass(tp, str):
        raise ctx.error(
            node,
            f"expected {what}, got a value of {len(text)} characters; no setting takes one "
            f"over {_MAX_NUMBER}",
        )
    if issubclass(tp, Duration):
        return _to_duration(node, text, ctx, tp)
    if issubclass(tp, ByteSize):
        return tp(_to_size(node, text, ctx))
    if issubclass(tp, Ratio):
        return tp(_to_ratio(node, text, ctx))
    if issubclass(tp, bool):
        try:
            return _to_bool(node)
        except ValueError:
            raise ctx.error(
                node,
                f"expected true or false, got {_shorten(text)!r}; write true or false "
                "(also accepted: yes, no, on, off, 1, 0, t, f)",
            ) from None
    if issubclass(tp, int):
        if node.tag == _INT:
            value = SafeConstructor().construct_yaml_int(node)
            return tp(value)
        if node.tag in (_STR, _FLOAT) and _INT_RE.match(text):
            return tp(int(text))
        raise ctx.error(
            node, f"expected an integer, got {_shorten(text)!r}; write digits only, e.g. 100"
        )
    if issubclass(tp, float):
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
            raise ctx.error(
                node, f"expected a number, got {_shorten(text)!r}; write e.g. 0.5 or 10"
            ) from None
        if not math.isfinite(number):
            raise ctx.error(node, f"expected a finite number, got {_shorten(text)!r}")
        return tp(number)
    if issubclass(tp, str):
        # The raw text, so '0123' stays '0123' and '1.50' keeps its digits.
        return tp(text)
    raise TypeError(f"config schema type {tp!r} at {ctx.path or '(top)'} is not supported")


def _to_duration(node: Node, text: str, ctx: _Ctx, tp: type = Duration) -> Any:
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise ctx.error(node, str(exc)) from None
    if seconds < 0:
        raise ctx.error(node, f"must not be negative, got {text!r}; {DURATION_HINT}")
    return tp(seconds)


def _to_size(node: Node, text: str, ctx: _Ctx) -> int:
    m = _SIZE_RE.match(text)
    unit = _SIZE_UNITS.get(m.group(2).lower()) if m else None
    if m is None or unit is None:
        raise ctx.error(node, f"invalid size {_shorten(text)!r}; {_SIZE_HINT}")
    number = m.group(1)
    if "." in number and unit == 1:
        raise ctx.error(node, f"a number of bytes must be whole, got {text!r}; {_SIZE_HINT}")
    return int(float(number) * unit) if "." in number else int(number) * unit


def _to_ratio(node: Node, text: str, ctx: _Ctx) -> float:
    t = text.strip()
    try:
        value = float(t[:-1]) / 100.0 if t.endswith("%") else float(t)
    except ValueError:
        raise ctx.error(node, f"invalid fraction {_shorten(text)!r}; {_RATIO_HINT}") from None
    if not (0.0 <= value <= 1.0):
        raise ctx.error(node, f"must be between 0 and 1 (0% and 100%), got {text!r}; {_RATIO_HINT}")
    return value


# --------------------------------------------------------------------------------------------
# The cache: section and the resolved settings


def _positive(instance: Any, attribute: Any, value: Any) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be greater than 0, got {value}", attribute)


def _not_negative(instance: Any, attribute: Any, value: Any) -> None:
    if value is not None and value < 0:
        raise ValueError(f"{attribute.name} must not be negative, got {value}", attribute)


def _fraction(instance: Any, attribute: Any, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{attribute.name} must be between 0 and 1, got {value}", attribute)


def _namespace(instance: Any, attribute: Any, value: str) -> None:
    problem = check_namespace(value)
    if problem is not None:
        raise ValueError(f"invalid namespace {value!r}: {problem}", attribute)


@attrs.frozen
class CacheSettings:
    """The ``cache:`` section: global cache settings (durations and fractions in seconds/0..1).

    ``stale_wait`` bounds how long a read of an expired key waits for its refresh before the
    stale value is served (the refresh goes on); ``upstream_timeout`` how long any read waits
    for upstream before it gets 504. ``max_entries`` 0 means "no caching"; only ``PARAMETERS_SECRETS_EXTENSION_CACHE_SIZE=0`` or
    ``PARAMETERS_SECRETS_EXTENSION_CACHE_ENABLED=false`` can set it (the file must say >= 1).
    """

    ttl: Optional[Duration] = attrs.field(default=None, validator=_not_negative)
    max_entries: int = attrs.field(default=1000, validator=_not_negative)
    max_bytes: ByteSize = attrs.field(default=ByteSize(64 * MiB), validator=_positive)
    negative_ttl: Duration = attrs.field(default=Duration(30.0), validator=_not_negative)
    stale_if_error: Duration = attrs.field(default=Duration(3600.0), validator=_not_negative)
    refresh_ahead: Ratio = attrs.field(default=Ratio(0.2), validator=_fraction)
    init_startup: Optional[bool] = None
    metrics: Literal["off", "emf"] = "off"
    metrics_namespace: str = attrs.field(default=DEFAULT_NAMESPACE, validator=_namespace)
    shared: Optional[SharedSettings] = None
    # How long a read of an expired key waits for its refresh before it is answered with the
    # stale value (the refresh goes on), and how long any read waits for upstream (then 504).
    stale_wait: Duration = attrs.field(default=Duration(0.25), validator=_not_negative)
    upstream_timeout: Duration = attrs.field(default=Duration(5.0), validator=_positive)


@attrs.frozen
class Settings:
    """Everything resolved from the config file, the environment and the command line."""

    config_path: str
    config_loaded: bool
    port: int = DEFAULT_PORT
    auth: str = "token"
    token: Optional[str] = attrs.field(default=None, repr=False)  # a credential: never printed
    log_level: str = "INFO"
    default_ttl: float = DEFAULT_TTL
    init_startup: bool = False
    cache: CacheSettings = attrs.Factory(CacheSettings)
    sections: Mapping[str, Any] = attrs.Factory(dict)
    env_ttl: Mapping[str, float] = attrs.Factory(dict)
    warnings: Tuple[str, ...] = ()
    shared: Optional[SharedConfig] = None

    def ttl_for(self, section: str) -> float:
        """The TTL (seconds) for a provider section when nothing more specific sets one."""
        return self.env_ttl.get(section, self.default_ttl)


def _split_list(name: str, value: str) -> Tuple[str, ...]:
    names = tuple(v.strip() for v in value.split(","))
    names = tuple(n for n in names if n)
    for n in names:
        if not re.match(r"^[A-Za-z0-9_.\-]+$", n):
            raise ConfigError(
                f"invalid plugin name {n!r}; write plugin (entry point) names separated by commas, "
                "e.g. parameters,secrets",
                source=name,
            )
    return names


def plugin_filters(environ: Mapping[str, str]) -> Tuple[Optional[Tuple[str, ...]], Tuple[str, ...]]:
    """``(allow, deny)`` plugin names from ``CACHE_EXTENSION_PLUGINS`` / ``_DISABLE_PLUGINS``.

    ``allow`` is None when the variable is unset (load every plugin). Needed before discovery,
    hence separate from ``load_settings``.
    """
    allow: Optional[Tuple[str, ...]] = None
    raw = environ.get("CACHE_EXTENSION_PLUGINS")
    if raw is not None:
        allow = _split_list("CACHE_EXTENSION_PLUGINS", raw)
        if not allow:
            raise ConfigError(
                "is empty, which would load no provider at all; unset it to load every "
                "installed plugin, or list the ones to load, e.g. parameters,secrets",
                source="CACHE_EXTENSION_PLUGINS",
            )
    deny = _split_list(
        "CACHE_EXTENSION_DISABLE_PLUGINS", environ.get("CACHE_EXTENSION_DISABLE_PLUGINS", "")
    )
    return allow, deny


def _env_port(name: str, raw: str) -> int:
    text = raw.strip()
    if len(text) > 5 or not _INT_RE.match(text) or not 1 <= int(text) <= 65535:
        raise ConfigError(
            f"invalid port {_shorten(raw)!r}; write a number from 1 to 65535, e.g. 4000",
            source=name,
        )
    return int(text)


def _env_whole(name: str, raw: str, what: str, unit: str, example: int) -> int:
    """A whole number, 0 or more, from the AWS extension's variables (TTLs, cache size)."""
    text = raw.strip()
    if len(text) > 18 or not _INT_RE.match(text) or int(text) < 0:
        raise ConfigError(
            f"invalid {what} {_shorten(raw)!r}; write a whole number of {unit}, 0 or more "
            f"(0 disables caching), e.g. {example}",
            source=name,
        )
    return int(text)


def _env_choice(name: str, raw: str, choices: Mapping[str, str]) -> str:
    value = choices.get(raw.strip().upper())
    if value is None:
        raise ConfigError(
            f"invalid value {_shorten(raw)!r}; write one of {', '.join(choices)} (any case)",
            source=name,
        )
    return value


def _env_warnings(environ: Mapping[str, str]) -> List[str]:
    warnings = []
    # Compare what follows the prefix, which all names share and would make any match.
    suffixes = [k[len(_PREFIX) :] for k in KNOWN_ENV]
    for name in sorted(environ):
        if name.startswith(_PREFIX) and name not in KNOWN_ENV:
            close = difflib.get_close_matches(name[len(_PREFIX) :], suffixes, n=1, cutoff=0.7)
            hint = f"; did you mean {_PREFIX}{close[0]}?" if close else ""
            warnings.append(
                f"unknown environment variable {name} is not used by cachelayer{hint} "
                f"(known: {', '.join(KNOWN_ENV)})"
            )
    if "PARAMETERS_SECRETS_EXTENSION_MAX_CONNECTIONS" in environ:
        warnings.append(
            "PARAMETERS_SECRETS_EXTENSION_MAX_CONNECTIONS has no equivalent in cachelayer and is "
            "not used; cachelayer shares one connection pool per AWS client"
        )
    return warnings


def _find_key(node: MappingNode, key: str) -> Optional[Node]:
    for knode, vnode in node.value:
        if isinstance(knode, ScalarNode) and knode.value == key:
            return vnode
    return None


def _structure_every_section(
    root: MappingNode,
    source: str,
    schemas: Mapping[str, Any],
    broken: Mapping[str, str],
    disabled: Mapping[str, str],
) -> Tuple[Optional[CacheSettings], bool, Dict[str, Any]]:
    """``_structure_sections`` section by section, so that every section is checked even when
    one fails: the errors are raised together (the first, the others in its ``more``), up to
    MAX_REPORTED_ERRORS, one per failing list entry or section."""
    errors: List[ConfigError] = []
    cache: Optional[CacheSettings] = None
    sets_max = False
    sections: Dict[str, Any] = {}
    for _, knode, vnode in _mapping_items(root, _Ctx(source, "")):
        one = MappingNode(root.tag, [(knode, vnode)], root.start_mark, root.end_mark)
        try:
            got, got_max, got_sections = _structure_sections(
                one, source, schemas, broken, disabled, errors
            )
        except _Reported:
            continue
        except ConfigError as exc:
            errors.append(exc)
            if len(errors) >= MAX_REPORTED_ERRORS:
                break
            continue
        cache = got if got is not None else cache
        sets_max = sets_max or got_max
        sections.update(got_sections)
    if errors:
        errors[0].more = tuple(errors[1:])
        raise errors[0]
    return cache, sets_max, sections


def _structure_sections(
    root: MappingNode,
    source: str,
    schemas: Mapping[str, Any],
    broken: Mapping[str, str],
    disabled: Mapping[str, str] = {},
    errors: Optional[List[ConfigError]] = None,
) -> Tuple[Optional[CacheSettings], bool, Dict[str, Any]]:
    """``(cache, whether cache.max_entries is written in the file, provider sections)``;
    errors in list entries are collected into ``errors`` when it is given."""
    ctx = _Ctx(source, "", errors)
    cache: Optional[CacheSettings] = None
    sets_max = False
    sections: Dict[str, Any] = {}
    installed = ", ".join(sorted(schemas)) or "(none)"
    for key, knode, vnode in _mapping_items(root, ctx):
        if key == "cache":
            cache = _structure(vnode, CacheSettings, ctx.child("cache"))
            assert isinstance(vnode, MappingNode)  # _structure_attrs checked it
            mx = _find_key(vnode, "max_entries")
            sets_max = mx is not None
            if mx is not None and cache.max_entries == 0:
                raise ctx.error(
                    mx,
                    "max_entries must be at least 1; to disable caching set a ttl of 0s instead",
                    "cache.max_entries",
                )
            continue
        if key in broken and key not in schemas:
            raise ctx.error(
                knode,
                f"section {key!r} belongs to plugin {key!r}, which failed to load: {broken[key]}; "
                "fix or reinstall that plugin, or remove the section",
                key,
            )
        if key in disabled and key not in schemas:
            raise ctx.error(
                knode,
                f"section {key!r} belongs to plugin {key!r}, which is installed but not loaded: "
                f"{disabled[key]}; remove it from CACHE_EXTENSION_DISABLE_PLUGINS or add it to "
                "CACHE_EXTENSION_PLUGINS, or remove the section",
                key,
            )
        if key not in schemas:
            close = difflib.get_close_matches(key, [*schemas, "cache"], n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            # ConfigError's prefix already says "<file>:<line>: <key>: ".
            raise ctx.error(
                knode,
                f"unknown section {key!r}; {hint}installed providers: {installed}; "
                "is the provider package installed?",
                key,
            )
        schema = schemas[key]
        if schema is None:
            if not _is_null(vnode):
                raise ctx.error(
                    vnode,
                    f"provider {key!r} takes no configuration; remove the section's contents",
                    key,
                )
            sections[key] = None
            continue
        if _is_null(vnode) and _union_args(schema) is None:
            raise ctx.error(
                vnode,
                f"section {key!r} is empty; add its settings ({_describe_type(schema)}) "
                "or remove it",
                key,
            )
        sections[key] = _structure(vnode, schema, ctx.child(key))
    return cache, sets_max, sections


def load_settings(
    environ: Mapping[str, str],
    schemas: Mapping[str, Any],
    *,
    config_path: Optional[str] = None,
    port: Optional[int] = None,
    broken: Mapping[str, str] = {},
    disabled: Mapping[str, str] = {},
    ttl_variables: Mapping[str, str] = {},
) -> Settings:
    """Resolve the settings from the environment, the config file and the command line.

    ``schemas`` maps each installed provider's section to its ``config_schema``; ``broken``
    maps a section to the load error of a broken plugin of that name, ``disabled`` a section
    to why its installed plugin was filtered out, ``ttl_variables`` each provider-declared TTL
    variable (``SSM_PARAMETER_STORE_TTL``) to its section. Raises ``ConfigError``
    (naming the file and line, or the variable) for anything invalid.
    """
    if "cache" in schemas:
        raise PluginError(
            "a provider is named 'cache', which is the core's own config section; rename it"
        )
    warnings = _env_warnings(environ)

    # The file.
    explicit = config_path is not None or "CACHE_EXTENSION_CONFIG" in environ
    path = config_path if config_path is not None else environ.get("CACHE_EXTENSION_CONFIG")
    if path is not None and not path.strip():
        raise ConfigError(
            "is empty; unset it to use /var/task/config.yaml, or give the config file's path",
            source="CACHE_EXTENSION_CONFIG" if config_path is None else "--config",
        )
    path = path if path is not None else DEFAULT_CONFIG_PATH
    if not explicit and not os.path.exists(path):
        loaded = False
        root: MappingNode = _empty_mapping()
        warnings.append(
            f"no config file at {path}: nothing is declared, items are fetched on demand; "
            "ship a config.yaml with the function or set CACHE_EXTENSION_CONFIG"
        )
    else:
        node = load_yaml(path)
        assert isinstance(node, MappingNode)
        root = node
        loaded = True
    try:
        cache, config_sets_max, sections = _structure_every_section(
            root, path, schemas, broken, disabled
        )
    except (ValueError, RecursionError, OverflowError) as exc:
        # A backstop: every case known is reported above with its line; a file must never
        # crash the extension (inside Lambda that would skip /extension/init/error).
        raise ConfigError(
            f"cannot be read ({type(exc).__name__}: {_shorten(str(exc), 200)}); check the "
            "file against the README's configuration reference",
            source=path,
        ) from None
    cache = cache if cache is not None else CacheSettings()
    cache_node = _find_key(root, "cache")
    shared_line = None
    if isinstance(cache_node, MappingNode):  # where ``shared:`` is written, for its errors
        for knode, _ in cache_node.value:
            if isinstance(knode, ScalarNode) and knode.value == "shared":
                shared_line = _line(knode)
    shared = resolve_shared(environ, cache.shared, source=path, line=shared_line)

    # The environment.
    default_ttl = float(cache.ttl) if cache.ttl is not None else DEFAULT_TTL
    raw = environ.get("CACHE_EXTENSION_TTL")
    if raw is not None:
        try:
            default_ttl = parse_duration(raw)
        except ValueError as exc:
            raise ConfigError(str(exc), source="CACHE_EXTENSION_TTL") from None
        if default_ttl < 0:
            raise ConfigError(
                f"must not be negative, got {raw!r}; {DURATION_HINT}", source="CACHE_EXTENSION_TTL"
            )

    init_startup = bool(cache.init_startup)  # None (not set) is false
    raw = environ.get("CACHE_EXTENSION_INIT_STARTUP")
    if raw is not None:
        try:
            init_startup = parse_bool(raw)
        except ValueError as exc:
            raise ConfigError(str(exc), source="CACHE_EXTENSION_INIT_STARTUP") from None

    resolved_port = DEFAULT_PORT
    if port is not None:
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ConfigError(
                f"invalid port {port!r}; give a number from 1 to 65535", source="--port"
            )
        resolved_port = port
    elif "CACHE_EXTENSION_PORT" in environ:
        resolved_port = _env_port("CACHE_EXTENSION_PORT", environ["CACHE_EXTENSION_PORT"])
    elif "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT" in environ:
        resolved_port = _env_port(
            "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT",
            environ["PARAMETERS_SECRETS_EXTENSION_HTTP_PORT"],
        )

    auth = "token"
    if "CACHE_EXTENSION_AUTH" in environ:
        auth = _env_choice(
            "CACHE_EXTENSION_AUTH",
            environ["CACHE_EXTENSION_AUTH"],
            {"TOKEN": "token", "NONE": "none"},
        )
    token = environ.get("AWS_SESSION_TOKEN") or None
    if auth == "token" and token is None:
        warnings.append(
            "auth is 'token' but AWS_SESSION_TOKEN is not set, so every request will be refused; "
            "set CACHE_EXTENSION_AUTH=none to serve without authentication (local use only)"
        )

    log_level = "INFO"
    if "CACHE_EXTENSION_LOG_LEVEL" in environ:
        log_level = _env_choice(
            "CACHE_EXTENSION_LOG_LEVEL",
            environ["CACHE_EXTENSION_LOG_LEVEL"],
            {
                "DEBUG": "DEBUG",
                "INFO": "INFO",
                "WARNING": "WARNING",
                "WARN": "WARNING",
                "ERROR": "ERROR",
            },
        )
    elif "PARAMETERS_SECRETS_EXTENSION_LOG_LEVEL" in environ:
        # AWS's NONE means "no logs"; CRITICAL is the closest level logging understands.
        log_level = _env_choice(
            "PARAMETERS_SECRETS_EXTENSION_LOG_LEVEL",
            environ["PARAMETERS_SECRETS_EXTENSION_LOG_LEVEL"],
            {
                "DEBUG": "DEBUG",
                "INFO": "INFO",
                "WARN": "WARNING",
                "ERROR": "ERROR",
                "NONE": "CRITICAL",
            },
        )

    env_ttl: Dict[str, float] = {}
    for name, section in ttl_variables.items():
        if name in environ:
            env_ttl[section] = float(_env_whole(name, environ[name], "TTL", "seconds", 300))

    if "PARAMETERS_SECRETS_EXTENSION_CACHE_SIZE" in environ:
        size = _env_whole(
            "PARAMETERS_SECRETS_EXTENSION_CACHE_SIZE",
            environ["PARAMETERS_SECRETS_EXTENSION_CACHE_SIZE"],
            "cache size",
            "entries",
            1000,
        )
        if config_sets_max:
            warnings.append(
                f"PARAMETERS_SECRETS_EXTENSION_CACHE_SIZE={size} is overridden by "
                f"cache.max_entries={cache.max_entries} in {path}"
            )
        else:
            cache = attrs.evolve(cache, max_entries=size)
    if "CACHE_EXTENSION_METRICS" in environ:
        metrics = _env_choice(
            "CACHE_EXTENSION_METRICS",
            environ["CACHE_EXTENSION_METRICS"],
            {"EMF": "emf", "OFF": "off"},
        )
        cache = attrs.evolve(cache, metrics="emf" if metrics == "emf" else "off")
    if "CACHE_EXTENSION_METRICS_NAMESPACE" in environ:
        namespace = environ["CACHE_EXTENSION_METRICS_NAMESPACE"]
        problem = check_namespace(namespace)
        if problem is not None:
            raise ConfigError(
                f"invalid namespace {_shorten(namespace)!r}: {problem}",
                source="CACHE_EXTENSION_METRICS_NAMESPACE",
            )
        cache = attrs.evolve(cache, metrics_namespace=namespace)
    if "PARAMETERS_SECRETS_EXTENSION_CACHE_ENABLED" in environ:
        raw = environ["PARAMETERS_SECRETS_EXTENSION_CACHE_ENABLED"]
        try:
            enabled = parse_bool(raw.strip().lower())
        except ValueError:
            raise ConfigError(
                f"invalid value {_shorten(raw)!r}; write true or false",
                source="PARAMETERS_SECRETS_EXTENSION_CACHE_ENABLED",
            ) from None
        if not enabled:
            cache = attrs.evolve(cache, max_entries=0)

    return Settings(
        config_path=path,
        config_loaded=loaded,
        port=resolved_port,
        auth=auth,
        token=token,
        log_level=log_level,
        default_ttl=default_ttl,
        init_startup=init_startup,
        cache=cache,
        sections=sections,
        env_ttl=env_ttl,
        warnings=tuple(warnings),
        shared=shared,
    )


def describe(settings: Settings) -> str:
    """A one-line summary of the effective settings for the startup log (never the token)."""
    return (
        f"config={settings.config_path}{'' if settings.config_loaded else ' (absent)'} "
        f"port={settings.port} auth={settings.auth} ttl={format_duration(settings.default_ttl)} "
        f"init_startup={str(settings.init_startup).lower()} "
        f"sections={','.join(sorted(settings.sections)) or '-'}"
    )
