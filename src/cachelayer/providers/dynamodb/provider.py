"""DynamoDbProvider: DynamoDB items as JSON on ``/dynamodb``, by the sample's item names."""

from __future__ import annotations

import base64
import time
from decimal import Decimal
from typing import Any, Callable, ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import attrs

from cachelayer import (
    JSON,
    BadRequestError,
    CachelayerError,
    ConfigError,
    Item,
    JsonClient,
    NotFoundError,
    ProviderContext,
    TransientError,
    Value,
)
from cachelayer.providers._named import target_of
from cachelayer.providers.dynamodb.config import (
    DynamoDbConfig,
    DynamoDbSection,
    DynamoItem,
    check_key_value,
)
from cachelayer.providers.dynamodb.encoding import item_to_json

__all__ = ["DynamoDbProvider", "DynamoTarget"]

NOT_FOUND_CODES = ("ResourceNotFoundException",)
BATCH_SIZE = 100  # BatchGetItem accepts at most 100 keys
UNPROCESSED_ROUNDS = 4  # BatchGetItem calls per chunk before giving the rest up as transient
BACKOFF = 0.05  # seconds before the first retry of unprocessed keys; doubles each round
MAX_LISTED = 10  # declared names shown in a "not declared" error

KeyPart = Tuple[str, str, str]  # (attribute name, type S/N/B, value as configured)
CanonicalKey = Tuple[Tuple[str, Any], ...]


@attrs.frozen
class DynamoTarget:
    """Where one item lives: region (None: default), table, and its key parts."""

    region: Optional[str]
    table: str
    key: Tuple[KeyPart, ...]

    def wire_key(self) -> Dict[str, Dict[str, Any]]:
        """The key as the low-level client takes it (binary decoded from base64)."""
        return {attr: {kind: _wire(kind, value)} for attr, kind, value in self.key}

    def canonical(self) -> CanonicalKey:
        """The key in a form equal to the one computed from DynamoDB's answer."""
        return tuple((attr, _canonical(kind, _wire(kind, value))) for attr, kind, value in self.key)


def _wire(kind: str, value: str) -> Any:
    return base64.b64decode(value) if kind == "B" else value


def _canonical(kind: str, data: Any) -> Any:
    # DynamoDB normalises numbers ("1.50" is stored as 1.5): compare them as decimals.
    if kind == "N":
        return ("N", Decimal(data))
    if kind == "B":
        return ("B", base64.b64decode(data) if isinstance(data, str) else bytes(data))
    return (kind, data)


def _canonical_of(
    key_attrs: Sequence[str], attributes: Mapping[str, Any]
) -> Optional[CanonicalKey]:
    parts = []
    for attr in key_attrs:
        value = attributes.get(attr)
        if not value or len(value) != 1:
            return None
        ((kind, data),) = value.items()
        parts.append((attr, _canonical(kind, data)))
    return tuple(parts)


def _value(table: str, attributes: Mapping[str, Any]) -> Value:
    return Value(
        body=item_to_json(attributes).encode("utf-8"),
        content_type=JSON,
        metadata={"TableName": table},  # the item is the body: kept once
    )


@attrs.frozen
class DynamoDbProvider:
    """Serves DynamoDB items: ``GET /dynamodb?name=<table>-<hashkeyvalue>[-<sortkeyvalue>]``.

    Declared items are served by name; for a declared table without a sort key,
    ``<table>-<any hash value>`` is served too. Bodies are JSON with native types and exact
    numbers. ``sleep`` is the pause between BatchGetItem rounds (tests pass a fake).
    """

    name: ClassVar[str] = "dynamodb"
    route: ClassVar[str] = "dynamodb"
    services: ClassVar[Tuple[str, ...]] = ("dynamodb",)
    config_schema: ClassVar[Any] = DynamoDbConfig
    query_parameters: ClassVar[Tuple[str, ...]] = ()
    ttl_environment_variable: ClassVar[Optional[str]] = None

    _context: ProviderContext
    _declared: Mapping[str, Item] = attrs.Factory(dict)
    # Longest table name first, so resolve's prefix match prefers "orders-archive" to "orders".
    _hash_only_tables: Mapping[str, DynamoItem] = attrs.Factory(dict)
    _section_ttl: Optional[float] = None
    sleep: Callable[[float], None] = time.sleep

    @classmethod
    def from_config(
        cls,
        config: Optional[DynamoDbConfig],
        context: ProviderContext,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> DynamoDbProvider:
        """Index the declared items by their sample-style names."""
        if config is None:
            entries, raw_ttl = [], None
        elif isinstance(config, DynamoDbSection):
            entries, raw_ttl = list(config.items), config.ttl
        else:
            entries, raw_ttl = list(config), None
        section_ttl = None if raw_ttl is None else float(raw_ttl)
        declared: Dict[str, Item] = {}
        hash_only: Dict[str, DynamoItem] = {}
        for index, entry in enumerate(entries):
            name = entry.item_name
            if name in declared:
                raise ConfigError(
                    f"two entries are served as {name!r} (table, hash and sort key values joined "
                    "with '-'); remove one of them",
                    key=f"dynamodb[{index}]",
                )
            key: List[KeyPart] = [(entry.hashkey, entry.hashkeytype, entry.hashkeyvalue)]
            if entry.sortkey is not None:
                assert entry.sortkeytype is not None and entry.sortkeyvalue is not None  # validated
                key.append((entry.sortkey, entry.sortkeytype, entry.sortkeyvalue))
            else:
                hash_only.setdefault(entry.table, entry)
            ttl = entry.ttl if entry.ttl is not None else section_ttl
            declared[name] = Item(
                route=cls.route,
                name=name,
                ttl=None if ttl is None else float(ttl),
                target=DynamoTarget(entry.region, entry.table, tuple(key)),
            )
        tables = {table: hash_only[table] for table in sorted(hash_only, key=len, reverse=True)}
        return cls(context, declared, tables, section_ttl, sleep)

    def declared(self) -> Sequence[Item]:
        """Every declared item."""
        return list(self._declared.values())

    def resolve(self, name: str, params: Mapping[str, str]) -> Item:
        """A declared name, or ``<table>-<hash value>`` of a declared hash-only table."""
        item = self._declared.get(name)
        if item is not None:
            return item
        # Longest table first (from_config's order): tables may contain '-' ("orders-archive").
        for table, entry in self._hash_only_tables.items():
            if name.startswith(table + "-") and len(name) > len(table) + 1:
                value = name[len(table) + 1 :]
                try:
                    check_key_value(
                        entry.hashkeytype, value, f"hash key {entry.hashkey!r} of table {table!r}"
                    )
                except ValueError as exc:
                    raise BadRequestError(str(exc)) from None
                return Item(
                    route=self.route,
                    name=name,
                    ttl=self._section_ttl,
                    target=DynamoTarget(
                        entry.region, table, ((entry.hashkey, entry.hashkeytype, value),)
                    ),
                )
        raise NotFoundError(self._undeclared_message(name))

    def _undeclared_message(self, name: str) -> str:
        names = sorted(self._declared)
        if not names:
            return (
                f"no DynamoDB item is declared as {name!r}: the dynamodb: config section declares "
                "none; add the item (table, hashkey, hashkeytype, hashkeyvalue) there"
            )
        shown = ", ".join(repr(n) for n in names[:MAX_LISTED])
        more = f" and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else ""
        tables = ", ".join(repr(t) for t in sorted(self._hash_only_tables))
        hint = f"; any '<table>-<hash key value>' of {tables} is served too" if tables else ""
        return (
            f"no DynamoDB item is declared as {name!r}; declared: {shown}{more}{hint}. "
            "Names are <table>-<hashkeyvalue>[-<sortkeyvalue>] of items in the dynamodb: section"
        )

    def fetch(self, item: Item) -> Value:
        """GetItem (eventually consistent) for one item."""
        target = self._target(item)
        client = self._client(target.region)
        response = client.call(
            "GetItem",
            {"TableName": target.table, "Key": target.wire_key(), "ConsistentRead": False},
            not_found=NOT_FOUND_CODES,
            what=f"item {item.name!r} of table {target.table!r}",
        )
        attributes = response.get("Item")
        if attributes is None:
            raise NotFoundError(f"dynamodb: table {target.table!r} has no item {item.name!r}")
        return _value(target.table, attributes)

    def fetch_many(self, items: Sequence[Item]) -> Dict[Item, Union[Value, CachelayerError]]:
        """BatchGetItem by 100 keys per region and table, retrying UnprocessedKeys.

        One table per call so that a missing table (which fails the whole call) only fails
        its own items.
        """
        groups: Dict[Tuple[Optional[str], str], Dict[CanonicalKey, List[Item]]] = {}
        for item in items:
            target = self._target(item)
            region = target.region or self._default_region()
            keys = groups.setdefault((region, target.table), {})
            # Two names for one key ("t-1.5", "t-1.50") share one request key: no duplicates.
            keys.setdefault(target.canonical(), []).append(item)
        results: Dict[Item, Union[Value, CachelayerError]] = {}
        for (region, table), keys in groups.items():
            canon = list(keys)
            for start in range(0, len(canon), BATCH_SIZE):
                chunk = {k: keys[k] for k in canon[start : start + BATCH_SIZE]}
                results.update(self._batch_get(region, table, chunk))
        return results

    def _batch_get(
        self, region: Optional[str], table: str, chunk: Mapping[CanonicalKey, List[Item]]
    ) -> Dict[Item, Union[Value, CachelayerError]]:
        first = next(iter(chunk.values()))[0]
        key_attrs = [attr for attr, _, _ in self._target(first).key]
        pending: Dict[CanonicalKey, Dict[str, Any]] = {
            canonical: self._target(selected[0]).wire_key() for canonical, selected in chunk.items()
        }
        found: Dict[CanonicalKey, Value] = {}
        outcome: Dict[Item, Union[Value, CachelayerError]] = {}
        try:
            client = self._client(region)
            for round_ in range(UNPROCESSED_ROUNDS):
                if round_:
                    self.sleep(BACKOFF * 2 ** (round_ - 1))
                response = client.call(
                    "BatchGetItem",
                    {
                        "RequestItems": {
                            table: {"Keys": list(pending.values()), "ConsistentRead": False}
                        }
                    },
                    not_found=NOT_FOUND_CODES,
                    what=f"{len(pending)} items of table {table!r}",
                )
                for attributes in response.get("Responses", {}).get(table, []):
                    canonical = _canonical_of(key_attrs, attributes)
                    if canonical is not None and canonical in pending:
                        found[canonical] = _value(table, attributes)
                unprocessed = response.get("UnprocessedKeys", {}).get(table, {}).get("Keys", [])
                remaining = {_canonical_of(key_attrs, key) for key in unprocessed}
                pending = {k: v for k, v in pending.items() if k in remaining and k not in found}
                if not pending:
                    break
        except CachelayerError as exc:
            for canonical, selected in chunk.items():
                for item in selected:
                    outcome[item] = found.get(canonical) or exc
            return outcome
        for canonical, selected in chunk.items():
            result: Union[Value, CachelayerError]
            if canonical in found:
                result = found[canonical]
            elif canonical in pending:
                result = TransientError(
                    f"dynamodb BatchGetItem left item {selected[0].name!r} of table {table!r} "
                    f"unprocessed after {UNPROCESSED_ROUNDS} calls (throughput exceeded); "
                    "will retry"
                )
            else:
                result = NotFoundError(
                    f"dynamodb: table {table!r} has no item {selected[0].name!r}"
                )
            for item in selected:
                outcome[item] = result
        return outcome

    def _target(self, item: Item) -> DynamoTarget:
        return target_of(item, DynamoTarget, self.resolve)

    def _default_region(self) -> Optional[str]:
        return self._context.default_region

    def _client(self, region: Optional[str]) -> JsonClient:
        client: JsonClient = self._context.json_client("dynamodb", region)
        return client
