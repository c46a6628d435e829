"""Reading the config file as YAML nodes that keep their lines, within issue 10's bounds."""

from __future__ import annotations

import re
from typing import Any, Optional, Union

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import Resolver

from cachelayer.errors import ConfigError

__all__ = [
    "MAX_DEPTH",
    "USE_LIBYAML",
    "compose",
    "describe_node",
    "empty_mapping",
    "find_key",
    "is_null",
    "line",
    "line_of",
    "load_yaml",
    "shorten",
]

TAG = "tag:yaml.org,2002:"
NULL = TAG + "null"
# Bounds that keep a hostile file from crashing the loader: deep nesting exhausts the
# recursion limit (numbers are bounded where they are converted, in ``structure``).
MAX_DEPTH = 64  # levels of nested mappings and lists
NOWHERE = "<no file>"  # the mark of the synthetic empty mapping, which has no line

USE_LIBYAML: bool = bool(getattr(yaml, "__with_libyaml__", False))
"""Parse with libyaml when PyYAML has it (tests turn it off to run the pure-Python loader)."""

# PyYAML's own check of every character (its Reader runs it on the whole text first): a text
# it would refuse goes straight to the pure-Python loader, whose error names the character.
_NON_PRINTABLE: re.Pattern[str] = yaml.reader.Reader.NON_PRINTABLE
# Texts PyYAML reads differently from libyaml: tabs (PyYAML refuses them in many places
# libyaml allows) and a byte-order mark (PyYAML counts it in the marks' index).
_PURE_ONLY = re.compile("[\t\ufeff]")


# --------------------------------------------------------------------------------------------
# The two loaders: libyaml's parser or PyYAML's, under the same bounded composer


class _TooDeep(yaml.MarkedYAMLError):
    """Nesting beyond ``MAX_DEPTH``."""


class _BoundedComposer(Composer):
    """PyYAML's composer with nesting bounded: it recurses once per level."""

    _depth = 0

    def compose_node(self, parent: Optional[Node], index: Any) -> Optional[Node]:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _TooDeep(problem_mark=self.peek_event().start_mark)  # type: ignore[attr-defined]  # the parser's
            node: Optional[Node] = super().compose_node(parent, index)
            return node
        finally:
            self._depth -= 1


class _BoundedLoader(_BoundedComposer, yaml.SafeLoader):
    """PyYAML's pure-Python SafeLoader, nesting bounded; it checks every character first."""


class _Unlike(Exception):
    """libyaml accepted what PyYAML's scanner refuses (or would read differently): PyYAML reads
    the file instead, so that nothing changes for the user."""


# PyYAML's extra rule for plain scalars in flow context: they end at ',', '?', '[', ']', '{',
# '}' and at ':' before one of those or the end; and one cannot start with '?' or ':'.
_FLOW_PLAIN = re.compile(r"[,?\[\]{}]|:(?:[,\[\]{}]|$)|^[?:]")


if USE_LIBYAML:
    from yaml._yaml import CParser

    class _LibyamlLoader(_BoundedComposer, CParser, SafeConstructor, Resolver):
        """libyaml's parser (C, several times faster) under the same bounded composer in
        Python; libyaml's own composer recurses in C without a bound, so it is not used.

        Where libyaml's scanner is more lenient than PyYAML's (plain scalars in flow context,
        tags), the composer raises ``_Unlike`` and PyYAML reads the text instead.
        """

        _flow = 0  # how many flow collections ([...] or {...}) enclose the node

        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            Composer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)

        def compose_scalar_node(self, anchor: Any) -> ScalarNode:
            event: Any = self.peek_event()  # a ScalarEvent: the composer checked
            if event.tag not in (None, "!"):
                raise _Unlike()
            if (
                self._flow
                and not event.style
                and (not event.value or _FLOW_PLAIN.search(event.value))
            ):
                raise _Unlike()  # (and an empty value in flow context: its mark differs)
            node: ScalarNode = super().compose_scalar_node(anchor)
            node.style = node.style or None  # libyaml says '' for plain, PyYAML None
            return node

        def compose_node(self, parent: Optional[Node], index: Any) -> Optional[Node]:
            node = super().compose_node(parent, index)
            if (
                isinstance(node, SequenceNode)
                and node.flow_style is False
                and isinstance(parent, MappingNode)
                and node.start_mark.column == parent.start_mark.column
            ):
                node.flow_style = None  # PyYAML's mark of a "- " list not indented under its key
            return node

        def compose_sequence_node(self, anchor: Any) -> SequenceNode:
            flow = self._enter(self.peek_event())
            try:
                node: SequenceNode = super().compose_sequence_node(anchor)
                return node
            finally:
                self._flow -= flow

        def compose_mapping_node(self, anchor: Any) -> MappingNode:
            flow = self._enter(self.peek_event())
            try:
                node: MappingNode = super().compose_mapping_node(anchor)
                return node
            finally:
                self._flow -= flow

        def _enter(self, event: Any) -> int:
            if event.tag not in (None, "!"):
                raise _Unlike()
            flow = 1 if event.flow_style else 0
            self._flow += flow
            return flow


class _BadEscape(ValueError):
    """An escape PyYAML's scanner turned into chr() without a check ("\\U99999999"), with the
    line it stopped at and the original error's text."""

    def __init__(self, message: str, at: int) -> None:
        super().__init__(message)
        self.line = at


def _compose_libyaml(text: str) -> Optional[Node]:
    loader = _LibyamlLoader(text)
    try:
        node: Optional[Node] = loader.get_single_node()
        return node
    finally:
        loader.dispose()


def _compose_pure(text: str) -> Optional[Node]:
    loader = _BoundedLoader(text)  # checks every character first
    try:
        node: Optional[Node] = loader.get_single_node()
        return node
    except (ValueError, OverflowError) as exc:
        raise _BadEscape(str(exc), loader.get_mark().line + 1) from None
    finally:
        loader.dispose()


def compose(text: str) -> Optional[Node]:
    """The single YAML document in ``text`` as nodes (None when there is none), nesting bounded
    to ``MAX_DEPTH``.

    With libyaml the text is parsed in C; if libyaml fails, or the text holds a character
    PyYAML refuses, the pure-Python loader parses it instead, so that every error (and its
    line) reads exactly as PyYAML's: raises PyYAML's errors, ``_TooDeep``, or ``_BadEscape``
    (a ValueError) for an escape beyond Unicode.
    """
    if (
        USE_LIBYAML
        and text.endswith("\n")  # else marks at the end differ: libyaml adds a line break
        and _NON_PRINTABLE.search(text) is None
        and _PURE_ONLY.search(text) is None
    ):
        try:
            return _compose_libyaml(text)
        except (yaml.YAMLError, ValueError, OverflowError, _Unlike):
            pass  # parsed again below, for PyYAML's own message (or its own reading)
    return _compose_pure(text)


# --------------------------------------------------------------------------------------------
# Nodes: where they are and how messages name them


def line(node: Node) -> Optional[int]:
    """The 1-based line a node starts on, or None for the synthetic empty mapping."""
    mark = getattr(node, "start_mark", None)
    if mark is None or mark.name == NOWHERE:
        return None
    return int(mark.line) + 1


def is_null(node: Node) -> bool:
    """Whether the node is YAML's null (an empty value, ``~`` or ``null``)."""
    return isinstance(node, ScalarNode) and node.tag == NULL


def shorten(text: str, limit: int = 60) -> str:
    """``text`` cut to ``limit`` characters for a message."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_node(node: Node) -> str:
    """What a node holds, as a message says it ("a mapping", "'abc'")."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    if is_null(node):
        return "nothing (an empty value or null)"
    return repr(shorten(str(node.value)))


def find_key(node: MappingNode, key: str) -> Optional[Node]:
    """The value node of ``key`` in a mapping, or None."""
    for knode, vnode in node.value:
        if isinstance(knode, ScalarNode) and knode.value == key:
            return vnode
    return None


def empty_mapping() -> MappingNode:
    """The mapping an empty or absent file stands for (its mark has no line)."""
    mark = yaml.Mark(NOWHERE, 0, 0, 0, None, None)  # type: ignore[arg-type]  # PyYAML allows None buffer/pointer
    return MappingNode("tag:yaml.org,2002:map", [], start_mark=mark, end_mark=mark)


# --------------------------------------------------------------------------------------------
# The file


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
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


def _escape_error(path: str, exc: _BadEscape) -> ConfigError:
    return ConfigError(
        f"invalid escape or character at line {exc.line} ({exc}); fix the escape sequence "
        "in the double-quoted string (\\uXXXX or \\UXXXXXXXX up to 10FFFF)",
        source=path,
        line=exc.line,
    )


def _yaml_error(text: str, path: str, exc: yaml.YAMLError) -> ConfigError:
    if isinstance(exc, _TooDeep):
        at = exc.problem_mark.line + 1 if exc.problem_mark is not None else None
        return ConfigError(
            f"nested more than {MAX_DEPTH} levels deep; no setting needs that many, so the "
            "file is probably malformed (unbalanced [ or {, or a run of '- ')",
            source=path,
            line=at,
        )
    if isinstance(exc, yaml.reader.ReaderError):
        at = text.count("\n", 0, exc.position) + 1
        char = exc.character
        shown = f"U+{char:04X}" if isinstance(char, int) else repr(char)
        return ConfigError(
            f"character {shown} at line {at} is not allowed in YAML; remove it, or write it "
            "as an escape (\\x01) inside a double-quoted string",
            source=path,
            line=at,
        )
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        what = " ".join(p for p in (exc.context, exc.problem) if p)
        if mark is not None:
            return ConfigError(
                f"YAML syntax error at line {mark.line + 1}, column {mark.column + 1}: {what}; "
                "fix the syntax (indent with spaces, quote values containing ': ' or '#')",
                source=path,
                line=mark.line + 1,
            )
        return ConfigError(f"YAML syntax error: {what}", source=path)
    return ConfigError(f"YAML error: {exc}", source=path)


def load_yaml(path: str) -> Node:
    """Read ``path`` as YAML nodes (SafeLoader), keeping each node's line for error messages.

    An empty file is an empty mapping. Raises ``ConfigError`` for a missing or unreadable file,
    a syntax error (with line and column) and a top level that is not a mapping.
    """
    text = _read_text(path)
    node: Union[Node, None]
    try:
        node = compose(text)
    except _BadEscape as exc:
        raise _escape_error(path, exc) from None
    except yaml.YAMLError as exc:
        raise _yaml_error(text, path, exc) from None
    if node is None:
        return empty_mapping()
    if not isinstance(node, MappingNode):
        raise ConfigError(
            f"the top level must be a mapping of sections (e.g. 'parameters:'), "
            f"got {describe_node(node)}",
            source=path,
            line=line(node),
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
    at = None
    for part in re.findall(r"[^.\[\]]+", key):
        child: Optional[Node] = None
        if isinstance(node, MappingNode):
            for knode, vnode in node.value:
                if isinstance(knode, ScalarNode) and knode.value == part:
                    at, child = line(knode), vnode
                    break
        elif isinstance(node, SequenceNode) and part.isdigit() and int(part) < len(node.value):
            child = node.value[int(part)]
            at = line(child)
        if child is None:
            break
        node = child
    return at
