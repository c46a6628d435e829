"""What the SSM and Secrets Manager providers share: regional groups of named items, their TTLs.

Both sections read ``[{region, ttl, names: [a, {name: b, ttl: 1m}]}]`` or the mapping form
``{ttl, groups: [...]}``; a name's TTL is its own, else its group's, else the section's. The
providers keep their own config classes (their names and messages are part of their
contract) and use the validators, the declaration index and the plumbing here.
"""

from __future__ import annotations

from typing import (
    Any,
    Callable,
    Dict,
    Mapping,
    Optional,
    Protocol,
    Sequence,
    Tuple,
    Type,
    TypeVar,
    Union,
    runtime_checkable,
)

import attrs

from cachelayer import (
    CachelayerError,
    ConfigError,
    Item,
    Validator,
    Value,
    not_empty,
)

__all__ = [
    "Declaration",
    "Declarations",
    "check_region",
    "check_ttl",
    "fetch_or_error",
    "name_checks",
    "run_batches",
    "target_of",
]

T = TypeVar("T")


def check_ttl(instance: Any, attribute: Any, value: Any) -> None:
    """attrs validator: a TTL is absent or not negative."""
    if value is not None and value < 0:
        raise ValueError(f"{attribute.name} must not be negative (0 means no caching), got {value}")


def check_region(instance: Any, attribute: Any, value: Any) -> None:
    """attrs validator: a region is absent or a non-empty string."""
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise ValueError(f"region must be an AWS region such as us-west-2, got {value!r}")


def name_checks(what: str) -> Tuple[Validator, Validator]:
    """attrs validators for one name and for a group's ``names``; ``what`` says what a name is
    in messages (``"parameter name"``)."""
    check_name = not_empty(what)

    def check_names(instance: Any, attribute: Any, value: Any) -> None:
        if not value:
            raise ValueError(f"names must list at least one {what}")
        for entry in value:
            if isinstance(entry, str):
                check_name(instance, attribute, entry)

    return check_name, check_names


class NamedEntry(Protocol):
    """A name declared with its own TTL (``ParameterName``, ``SecretName``)."""

    @property
    def name(self) -> str: ...

    @property
    def ttl(self) -> Optional[float]: ...


class Group(Protocol):
    """Names of one region (``ParameterGroup``, ``SecretGroup``)."""

    @property
    def region(self) -> Optional[str]: ...

    @property
    def names(self) -> Sequence[Union[str, NamedEntry]]: ...

    @property
    def ttl(self) -> Optional[float]: ...


@runtime_checkable
class Section(Protocol):
    """The mapping form of a section (``ParametersSection``, ``SecretsSection``)."""

    @property
    def ttl(self) -> Optional[float]: ...

    @property
    def groups(self) -> Sequence[Group]: ...


def _first(*ttls: Optional[float]) -> Optional[float]:
    for ttl in ttls:
        if ttl is not None:
            return float(ttl)
    return None


@attrs.frozen
class Declaration:
    """Where a name is read (region None: the default one) and its TTL (None: not set here)."""

    region: Optional[str]
    ttl: Optional[float]


@attrs.frozen
class Declarations:
    """The declared names of a section, and what an undeclared name gets (default region,
    the section's TTL)."""

    by_name: Mapping[str, Declaration] = attrs.field(factory=dict)
    section_ttl: Optional[float] = None

    @classmethod
    def from_config(
        cls, config: Union[Sequence[Group], Section, None], *, section: str, noun: str
    ) -> Declarations:
        """Index ``config``, the ``section:`` section; a name declared twice with different
        settings is a ConfigError that calls it a ``noun``."""
        if config is None:
            groups: Sequence[Group] = []
            section_ttl: Optional[float] = None
        elif isinstance(config, Section):
            groups, section_ttl = config.groups, config.ttl
        else:
            groups, section_ttl = config, None
        by_name: Dict[str, Declaration] = {}
        for index, group in enumerate(groups):
            for entry in group.names:
                name = entry if isinstance(entry, str) else entry.name
                item_ttl = None if isinstance(entry, str) else entry.ttl
                decl = Declaration(group.region, _first(item_ttl, group.ttl, section_ttl))
                previous = by_name.get(name)
                if previous is not None and previous != decl:
                    raise ConfigError(
                        f"{noun} {name!r} is declared twice with different settings (region "
                        f"{previous.region or 'default'} ttl {previous.ttl} and region "
                        f"{decl.region or 'default'} ttl {decl.ttl}); declare it once",
                        key=f"{section}[{index}].names",
                    )
                by_name[name] = decl
        return cls(by_name, _first(section_ttl))

    @property
    def names(self) -> Sequence[str]:
        """The declared names, in the order the config gives them."""
        return list(self.by_name)

    def get(self, name: str) -> Declaration:
        """``name``'s declaration; an undeclared name reads the default region, section TTL."""
        return self.by_name.get(name) or Declaration(None, self.section_ttl)


BATCH_WORKERS = 4  # batch calls of one prefetch in flight at once (each call is 10-20 names)


def run_batches(call: Callable[[T], Mapping[Item, Any]], batches: Sequence[T]) -> Dict[Item, Any]:
    """``call(batch)`` for every batch, up to ``BATCH_WORKERS`` at once; the merged results.

    A prefetch of 100 names is 10 GetParameters calls: in flight together they cost about one
    round trip of init time instead of ten. ``call`` must not raise (it returns errors).
    """
    results: Dict[Item, Any] = {}
    if len(batches) <= 1:
        for batch in batches:
            results.update(call(batch))
        return results
    import contextvars
    from concurrent.futures import ThreadPoolExecutor

    workers = min(BATCH_WORKERS, len(batches))
    with ThreadPoolExecutor(workers, thread_name_prefix="cachelayer-batch") as pool:
        # Each batch runs in a copy of this context, so the core still counts its AWS calls
        # for the route being fetched.
        futures = [pool.submit(contextvars.copy_context().run, call, b) for b in batches]
        for future in futures:
            results.update(future.result())
    return results


def fetch_or_error(fetch: Callable[[Item], Value], item: Item) -> Union[Value, CachelayerError]:
    """``fetch(item)``, or the CachelayerError it raised: one item's result in a batch."""
    try:
        return fetch(item)
    except CachelayerError as exc:
        return exc


def target_of(item: Item, kind: Type[T], resolve: Callable[[str, Mapping[str, str]], Item]) -> T:
    """``item``'s target, which a provider's ``resolve`` made a ``kind``."""
    target = item.target
    if isinstance(target, kind):
        return target
    # An Item made elsewhere (e.g. rebuilt from a key): derive it again.
    derived: T = resolve(item.name, dict(item.variant)).target
    return derived
