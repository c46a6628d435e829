"""The example provider: serves declared SSM parameters (swap in your own service)."""

from __future__ import annotations

from typing import Any, ClassVar, List, Mapping, Optional, Sequence, Tuple

import attrs

from cachelayer import (
    TEXT,
    Duration,
    Item,
    NameIndex,
    NotFoundError,
    ProviderContext,
    Value,
    not_empty,
)
from cachelayer.aws import translate_errors


@attrs.frozen
class ExampleItem:
    """One entry of the ``example:`` section. The core validates the YAML against these fields."""

    name: str = attrs.field(validator=not_empty("parameter name"))
    region: Optional[str] = None
    ttl: Optional[Duration] = None


@attrs.frozen
class ExampleProvider:
    """Serves the parameters declared in ``example:`` on ``GET /example?name=``.

    The class says what the core needs before any config is read; ``from_config`` builds a
    ready, frozen provider from the validated section.
    """

    name: ClassVar[str] = "example"  # the config section
    route: ClassVar[str] = "example"  # GET /example?name=...
    services: ClassVar[Tuple[str, ...]] = ("ssm",)  # botocore service names you call
    config_schema: ClassVar[Any] = List[ExampleItem]
    query_parameters: ClassVar[Tuple[str, ...]] = ()  # besides name=; others are refused (400)
    ttl_environment_variable: ClassVar[Optional[str]] = None  # e.g. "EXAMPLE_TTL" (seconds)

    _context: ProviderContext
    _items: NameIndex[ExampleItem] = attrs.Factory(NameIndex)

    @classmethod
    def from_config(
        cls, config: Optional[Sequence[ExampleItem]], context: ProviderContext
    ) -> ExampleProvider:
        """Index the validated section (``None`` when absent). No network I/O here."""
        items = NameIndex.build(
            config, names=lambda entry: (("name", entry.name),), section="example", what="entry"
        )
        return cls(context, items)

    def declared(self) -> Sequence[Item]:
        """What init_startup prefetches."""
        return [self._item(entry) for entry in self._items.entries]

    def resolve(self, name: str, params: Mapping[str, str]) -> Item:
        """Turn ``?name=`` into an Item, or refuse clearly (the router already refused any
        query parameter not in ``query_parameters``)."""
        entry = self._items.get(name)
        if entry is None:
            raise NotFoundError(f"{name!r} is not declared in the example: section of the config")
        return self._item(entry)

    def fetch(self, item: Item) -> Value:
        """Blocking call to the service, in a worker thread. Never cache here: the core does."""
        entry: ExampleItem = item.target
        client = self._context.client("ssm", entry.region)
        with translate_errors(
            ("ParameterNotFound",),
            service="ssm",
            operation="GetParameter",
            what=f"parameter {entry.name!r}",
        ):
            response = client.get_parameter(Name=entry.name, WithDecryption=True)
        parameter = response["Parameter"]
        return Value(
            body=parameter["Value"].encode("utf-8"),
            content_type=TEXT,
            metadata={"Version": parameter.get("Version")},
        )

    def _item(self, entry: ExampleItem) -> Item:
        ttl = float(entry.ttl) if entry.ttl is not None else None
        return Item(route=self.route, name=entry.name, ttl=ttl, target=entry)
