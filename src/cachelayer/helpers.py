"""What every provider needs: the declared-name index, config validators, the query check.

Public (re-exported by ``cachelayer``): the built-in providers, the contrib packages and the
template use these, so a third-party provider gets the same messages as the built-in ones.
"""

from __future__ import annotations

import types
from typing import (
    Any,
    Callable,
    Generic,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    TypeVar,
)

import attrs

from cachelayer.errors import BadRequestError, ConfigError

__all__ = ["NameIndex", "Validator", "check_query_parameters", "not_empty", "positive"]

Validator = Callable[[Any, Any, Any], None]
"""An attrs field validator: ``(instance, attribute, value)``, raising ``ValueError``."""

T = TypeVar("T")


def not_empty(what: str = "", *, hint: str = "", optional: bool = False) -> Validator:
    """An attrs validator: the value is a string that is not blank.

    The message is ``<field> must be a non-empty <what>, got ''`` when ``what`` is given,
    else ``<field> must not be empty``; ``hint`` is appended (say how to fix it). With
    ``optional``, ``None`` passes (a field that may be left out).
    """

    def check(instance: Any, attribute: Any, value: Any) -> None:
        if value is None and optional:
            return
        if isinstance(value, str) and value.strip():
            return
        if what:
            message = f"{attribute.name} must be a non-empty {what}, got {value!r}{hint}"
        else:
            message = f"{attribute.name} must not be empty{hint}"
        # The attribute as second argument: the core points the error at the field's line.
        raise ValueError(message, attribute)

    return check


def positive(what: str = "number", *, hint: str = "") -> Validator:
    """An attrs validator: the value is absent (``None``) or a number above 0 (not a bool).

    The message is ``<field> must be a positive <what>, got 0`` plus ``hint``.
    """

    def check(instance: Any, attribute: Any, value: Any) -> None:
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(
                f"{attribute.name} must be a positive {what}, got {value!r}{hint}", attribute
            )

    return check


def check_query_parameters(route: str, params: Iterable[str], accepted: Sequence[str]) -> None:
    """Raise ``BadRequestError`` naming every query parameter other than ``name`` that is not in
    ``accepted`` (a provider's ``query_parameters``), and the ones that are.

    The router calls it for every request before the provider's ``resolve``: an ignored
    ``version=3`` would silently serve the wrong version.
    """
    unknown = sorted(k for k in params if k != "name" and k not in accepted)
    if not unknown:
        return
    names = ", ".join(map(repr, unknown))
    if accepted:
        raise BadRequestError(
            f"unknown query parameter(s) {names} for /{route}; allowed: name, {', '.join(accepted)}"
        )
    raise BadRequestError(
        f"unknown query parameter(s) {names} for /{route}; only name= is accepted"
    )


def declared_query_parameters(provider: Any) -> Tuple[str, ...]:
    """The query parameters ``provider`` (a type or an instance) takes besides ``name``, in the
    order its messages list them (a set's sorted); ``()`` when it declares none."""
    declared = getattr(provider, "query_parameters", ())
    if isinstance(declared, (set, frozenset)):
        return tuple(sorted(declared))
    return tuple(declared)


@attrs.frozen
class NameIndex(Generic[T]):
    """A section's declared entries, in config order, and by every name each answers to.

    An entry may answer to several names (an alias and a ``bucket/key`` path); build the
    index with ``NameIndex.build`` in ``from_config``, which refuses a name claimed by two
    entries with a ``ConfigError`` pointing at the second one's key.
    """

    entries: Tuple[T, ...] = ()
    by_name: Mapping[str, T] = attrs.field(factory=dict, converter=types.MappingProxyType)

    @classmethod
    def build(
        cls,
        entries: Optional[Iterable[T]],
        *,
        names: Callable[[T], Iterable[Tuple[str, Optional[str]]]],
        section: str,
        what: str = "entry",
        describe: Callable[[T], str] = repr,
    ) -> NameIndex[T]:
        """Index ``entries`` (the validated section; ``None`` when absent).

        ``names(entry)`` gives ``(field, name)`` pairs: the names ``entry`` answers to and the
        config field each comes from (a ``None`` name is skipped). A name another entry has
        already is an error naming ``<section>[<index>].<field>``; ``what`` says what an entry
        is (``"object"``) and ``describe(entry)`` shows the one that had it first.
        """
        listed: List[T] = []
        by_name: dict = {}
        for index, entry in enumerate(entries or ()):
            for field, name in names(entry):
                if name is None:
                    continue
                other = by_name.get(name)
                if other is not None and other is not entry:
                    raise ConfigError(
                        f"the name {name!r} is declared twice (already {describe(other)}); "
                        f"give each {what} a distinct name",
                        key=f"{section}[{index}].{field}",
                    )
                by_name[name] = entry
            listed.append(entry)
        return cls(tuple(listed), by_name)

    def get(self, name: str) -> Optional[T]:
        """The entry answering to ``name``, or ``None``."""
        return self.by_name.get(name)

    def names(self) -> List[str]:
        """Every name served, sorted (for "declared: ..." hints in messages)."""
        return sorted(self.by_name)

    def __len__(self) -> int:
        return len(self.entries)
