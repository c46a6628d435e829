"""The example provider: serves declared SSM parameters (swap in your own service)."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import attrs

from cachelayer import (
    TEXT,
    BadRequestError,
    Duration,
    Item,
    NotFoundError,
    ProviderContext,
    UpstreamError,
    Value,
)
from cachelayer.aws import translate_errors


@attrs.frozen
class ExampleItem:
    """One entry of the ``example:`` section. The core validates the YAML against these fields."""

    name: str
    region: Optional[str] = None
    ttl: Optional[Duration] = None


@attrs.define
class ExampleProvider:
    """Serves the parameters declared in ``example:`` on ``GET /example?name=``."""

    name: str = "example"  # the config section
    route: str = "example"  # GET /example?name=...
    services: Tuple[str, ...] = ("ssm",)  # botocore service names you call
    config_schema: Any = List[ExampleItem]
    _context: Optional[ProviderContext] = None
    _items: Dict[str, ExampleItem] = attrs.Factory(dict)

    def configure(self, config: Optional[Sequence[ExampleItem]], context: ProviderContext) -> None:
        """Keep the validated section and the context. No network I/O here."""
        self._context = context
        self._items = {entry.name: entry for entry in config or ()}

    def declared(self) -> Sequence[Item]:
        """What init_startup prefetches."""
        return [self._item(entry) for entry in self._items.values()]

    def resolve(self, name: str, params: Mapping[str, str]) -> Item:
        """Turn ``?name=`` (and any other query parameter) into an Item, or refuse clearly."""
        extra = sorted(k for k in params if k != "name")
        if extra:
            raise BadRequestError(
                f"unknown query parameter(s) {', '.join(extra)}; only name= is accepted"
            )
        entry = self._items.get(name)
        if entry is None:
            raise NotFoundError(f"{name!r} is not declared in the example: section of the config")
        return self._item(entry)

    def fetch(self, item: Item) -> Value:
        """Blocking call to the service, in a worker thread. Never cache here: the core does."""
        if self._context is None:
            raise UpstreamError(
                "ExampleProvider.fetch called before configure(); the core configures providers at startup"
            )
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
