"""Structuring YAML nodes into typed values: attrs classes, containers, unions, literals, scalars."""

from __future__ import annotations

import collections.abc as cabc
import typing
from typing import Any, Dict, List, Literal, Optional, Tuple

import attrs
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from cachelayer.core.scalars import INT_RE, MAX_NUMBER, UNSUPPORTED, ScalarError, to_bool, to_scalar
from cachelayer.core.schematypes import (
    MAPPINGS,
    SEQUENCES,
    accepts_kind,
    describe_type,
    field_types,
    is_attrs,
    kind,
    union_args,
)
from cachelayer.core.yamlload import TAG, describe_node, is_null, line, shorten
from cachelayer.errors import ConfigError

__all__ = ["MAX_REPORTED_ERRORS", "Ctx", "Reported", "join", "mapping_items", "structure"]

MAX_REPORTED_ERRORS = 20
"""A file's errors are collected up to this many (one per list entry or section), then stop."""


class Reported(Exception):
    """A part of the file failed and its errors are collected: skip it, keep checking the rest."""


def join(path: str, key: str) -> str:
    """The dotted key path of ``key`` under ``path``."""
    return f"{path}.{key}" if path else key


@attrs.frozen
class Ctx:
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
        """A ConfigError at ``node``'s line, for ``path`` (default: here)."""
        return ConfigError(
            message,
            source=self.source,
            line=line(node) if node is not None else None,
            key=(self.path if path is None else path) or None,
        )

    def child(self, path: str) -> Ctx:
        """The context one key deeper, collecting into the same list."""
        return Ctx(self.source, path, self.errors)


# --------------------------------------------------------------------------------------------
# Mappings: merge keys and unique keys


def _flatten(node: MappingNode, ctx: Ctx) -> None:
    """Apply YAML merge keys (``<<: *base``) in place: explicit keys win, then earlier merges."""
    if not any(k.tag == TAG + "merge" for k, _ in node.value):
        return
    merged: List[Tuple[Node, Node]] = []
    explicit: List[Tuple[Node, Node]] = []
    for knode, vnode in node.value:
        if knode.tag != TAG + "merge":
            explicit.append((knode, vnode))
            continue
        sources = vnode.value if isinstance(vnode, SequenceNode) else [vnode]
        for source in sources:
            if not isinstance(source, MappingNode):
                raise ctx.error(
                    source,
                    f"'<<' merges mappings, got {describe_node(source)}; write '<<: *anchor' "
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


def _flatten_all(node: Node, ctx: Ctx, seen: set) -> None:
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


def mapping_items(node: MappingNode, ctx: Ctx) -> List[Tuple[str, Node, Node]]:
    """The (key text, key node, value node) of a mapping; keys must be unique scalars."""
    _flatten(node, ctx)
    seen: Dict[str, Node] = {}
    items: List[Tuple[str, Node, Node]] = []
    for knode, vnode in node.value:
        if not isinstance(knode, ScalarNode) or is_null(knode):
            raise ctx.error(
                knode,
                f"a key must be a plain name, got {describe_node(knode)}; write 'name: value'",
            )
        key = str(knode.value)
        if len(key) > MAX_NUMBER:
            raise ctx.error(
                knode,
                f"a key of {len(key)} characters ({shorten(key)!r}); keys are setting and "
                f"section names, none over {MAX_NUMBER} characters",
            )
        if key in seen:
            raise ctx.error(
                knode,
                f"duplicate key {key!r} (first at line {line(seen[key])}); keep only one",
                join(ctx.path, key),
            )
        seen[key] = knode
        items.append((key, knode, vnode))
    return items


# --------------------------------------------------------------------------------------------
# Structuring, by the schema type's shape


def structure(node: Node, tp: Any, *, source: str, path: str) -> Any:
    """Validate a YAML node against ``tp`` and convert it, recursively.

    Supported: attrs classes (mappings; a field's YAML name is ``metadata={"yaml": name}`` or
    its name), ``List``/``Sequence``/``Tuple``/``Dict``/``Mapping``, ``Union``/``Optional``
    (chosen by the node's kind), ``Literal``, ``str`` (raw text), ``int``, ``float``, ``bool``
    (YAML and Go spellings), ``Duration``, ``ByteSize``, ``Ratio``, ``Any``.
    Raises ``ConfigError`` naming ``source``, the line and the dotted key path.
    """
    return structure_in(node, tp, Ctx(source, path))


def _unsupported(tp: Any, ctx: Ctx) -> TypeError:
    return TypeError(f"config schema type {tp!r} at {ctx.path or '(top)'} is not supported")


def structure_in(node: Node, tp: Any, ctx: Ctx) -> Any:
    """``structure`` within ``ctx`` (its file, key path and collected errors)."""
    tag = node.tag or ""
    if not tag.startswith(TAG):
        raise ctx.error(node, f"unsupported YAML tag {tag!r}; remove it")
    if tp is Any or tp is object:
        _flatten_all(node, ctx, set())  # the YAML spec's merge order, not PyYAML's
        return SafeConstructor().construct_document(node)
    if tp is type(None):
        if is_null(node):
            return None
        raise ctx.error(node, f"takes no value, got {describe_node(node)}; remove it")
    args = union_args(tp)
    if args is not None:
        return _structure_union(node, tp, args, ctx)
    origin = typing.get_origin(tp)
    if origin is Literal:
        return _structure_literal(node, typing.get_args(tp), ctx)
    if is_attrs(tp):
        return _structure_attrs(node, tp, ctx)
    if origin in MAPPINGS or tp is dict:
        return _structure_mapping(node, tp, ctx)
    if origin in SEQUENCES or tp in (list, tuple, set, frozenset):
        return _structure_sequence(node, tp, origin or tp, ctx)
    if origin is None and isinstance(tp, type):
        try:
            value = to_scalar(node, tp)
        except ScalarError as exc:
            raise ctx.error(node, str(exc)) from None
        if value is not UNSUPPORTED:
            return value
    raise _unsupported(tp, ctx)


def _structure_union(node: Node, tp: Any, args: Tuple[Any, ...], ctx: Ctx) -> Any:
    if is_null(node) and type(None) in args:
        return None
    node_kind = kind(node)
    members = [a for a in args if a is not type(None)]
    candidates = [a for a in members if node_kind in accepts_kind(a)]
    if not candidates and len(members) == 1:
        # Optional[X]: X's own error is the most helpful one.
        return structure_in(node, members[0], ctx)
    if not candidates:
        raise ctx.error(
            node,
            f"expected {describe_type(tp)}, got {describe_node(node)}",
        )
    if len(candidates) == 1:
        return structure_in(node, candidates[0], ctx)
    errors: List[ConfigError] = []
    for candidate in candidates:
        try:
            # Each candidate's first error only: collecting would report a failed guess.
            return structure_in(node, candidate, Ctx(ctx.source, ctx.path))
        except ConfigError as exc:
            errors.append(exc)
    raise ctx.error(
        node,
        f"expected {describe_type(tp)}, got {describe_node(node)} ("
        + "; ".join(e.message for e in errors)
        + ")",
    )


def _literal_match(node: ScalarNode, text: str, option: Any) -> bool:
    if isinstance(option, bool):
        try:
            return to_bool(node) is option
        except ValueError:
            return False
    if isinstance(option, int):
        return len(text) <= MAX_NUMBER and bool(INT_RE.match(text)) and int(text) == option
    return isinstance(option, str) and text == option


def _literal_hint(text: str, options: Tuple[Any, ...]) -> str:
    for option in options:
        if isinstance(option, str) and option.lower() == text.lower():
            return f"; did you mean {option!r}? (values are case-sensitive)"
    import difflib  # only for a mistake: not on every startup's way

    close = difflib.get_close_matches(text, [str(o) for o in options], n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _structure_literal(node: Node, options: Tuple[Any, ...], ctx: Ctx) -> Any:
    if isinstance(node, ScalarNode) and not is_null(node):
        text = str(node.value)
        for option in options:
            if _literal_match(node, text, option):
                return option
        allowed = ", ".join(repr(o) for o in options)
        hint = _literal_hint(text, options)
        raise ctx.error(node, f"must be one of {allowed}, got {shorten(text)!r}{hint}")
    raise ctx.error(
        node, f"must be one of {', '.join(repr(o) for o in options)}, got {describe_node(node)}"
    )


def _yaml_name(field: Any) -> str:
    return str(field.metadata.get("yaml", field.name))


def _attrs_arguments(
    node: MappingNode, cls: type, by_yaml: Dict[str, Any], ctx: Ctx
) -> Tuple[Dict[str, Any], Dict[str, Node]]:
    """The constructor's keyword arguments from the mapping, and each field's value node."""
    allowed = ", ".join(by_yaml) or "(none)"
    hints = field_types(cls)
    kwargs: Dict[str, Any] = {}
    key_nodes: Dict[str, Node] = {}
    for key, knode, vnode in mapping_items(node, ctx):
        field = by_yaml.get(key)
        if field is None:
            import difflib  # only for a mistake: not on every startup's way

            close = difflib.get_close_matches(key, list(by_yaml), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ctx.error(
                knode,
                f"unknown key {key!r}; {hint}allowed keys: {allowed}",
                join(ctx.path, key),
            )
        child = ctx.child(join(ctx.path, key))
        value = structure_in(vnode, hints.get(field.name, field.type), child)
        kwargs[getattr(field, "alias", None) or field.name.lstrip("_")] = value
        key_nodes[field.name] = vnode
    return kwargs, key_nodes


def _check_required(node: Node, fields: List[Any], key_nodes: Dict[str, Node], ctx: Ctx) -> None:
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


def _structure_attrs(node: Node, cls: type, ctx: Ctx) -> Any:
    fields = [f for f in attrs.fields(cls) if f.init]
    by_yaml = {_yaml_name(f): f for f in fields}
    if not isinstance(node, MappingNode):
        allowed = ", ".join(by_yaml) or "(none)"
        raise ctx.error(node, f"expected a mapping with keys {allowed}, got {describe_node(node)}")
    kwargs, key_nodes = _attrs_arguments(node, cls, by_yaml, ctx)
    _check_required(node, fields, key_nodes, ctx)
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        if exc.source is not None:
            raise
        raise ctx.error(node, exc.message, join(ctx.path, exc.key) if exc.key else None) from None
    except (ValueError, TypeError) as exc:
        # attrs validators pass the failing Attribute among the exception's args: use its line.
        attribute = next((a for a in exc.args if isinstance(a, attrs.Attribute)), None)
        message = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
        if attribute is not None and attribute.name in key_nodes:
            where = key_nodes[attribute.name]
            path = join(ctx.path, _yaml_name(attribute))
        else:
            where, path = node, ctx.path
        raise ctx.error(where, f"invalid value: {message}; fix this setting", path) from None


def _structure_mapping(node: Node, tp: Any, ctx: Ctx) -> Dict[Any, Any]:
    args = typing.get_args(tp)
    key_tp, value_tp = args if args else (str, Any)
    if not isinstance(node, MappingNode):
        raise ctx.error(node, f"expected a mapping ('key: value' lines), got {describe_node(node)}")
    out: Dict[Any, Any] = {}
    for key, knode, vnode in mapping_items(node, ctx):
        child = ctx.child(join(ctx.path, key))
        k = structure_in(knode, key_tp, child)
        out[k] = structure_in(vnode, value_tp, child)
    return out


def _structure_sequence(node: Node, tp: Any, origin: Any, ctx: Ctx) -> Any:
    args = typing.get_args(tp)
    if not isinstance(node, SequenceNode):
        raise ctx.error(
            node,
            f"expected a list, got {describe_node(node)}; write each entry on its own line "
            "starting with '- '",
        )
    items = node.value
    if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        if len(items) != len(args):
            raise ctx.error(
                node, f"expected a list of exactly {len(args)} entries, got {len(items)}"
            )
        return tuple(
            structure_in(n, a, ctx.child(f"{ctx.path}[{i}]"))
            for i, (n, a) in enumerate(zip(items, args))
        )
    values = _structure_entries(items, args[0] if args else Any, ctx)
    if origin is tuple:
        return tuple(values)
    if origin in (set, frozenset, cabc.Set):
        return frozenset(values) if origin is not set else set(values)
    return values


def _structure_entries(items: List[Node], item_tp: Any, ctx: Ctx) -> List[Any]:
    """Each list entry structured; a failing entry's errors are collected when ``ctx`` does."""
    values = []
    reported = False
    for i, n in enumerate(items):
        try:
            values.append(structure_in(n, item_tp, ctx.child(f"{ctx.path}[{i}]")))
        except Reported:
            reported = True
        except ConfigError as exc:
            if not ctx.collect(exc):
                raise
            reported = True
    if reported:  # an entry is missing: building on the rest would report nonsense
        raise Reported()
    return values
