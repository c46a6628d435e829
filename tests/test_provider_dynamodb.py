"""The DynamoDB provider against moto over HTTP: sample names, exact JSON types, batch reads."""

from __future__ import annotations

import base64
import json
from decimal import Decimal
from typing import Any, Dict, List, Optional

import boto3
import pytest

from cachelayer import (
    JSON,
    BadRequestError,
    ConfigError,
    Duration,
    Item,
    NotFoundError,
    ProviderContext,
    SupportsFetchMany,
    TransientError,
    UpstreamError,
    Value,
)
from cachelayer.providers.dynamodb import (
    DynamoDbProvider,
    DynamoDbSection,
    DynamoItem,
    item_to_json,
)
from cachelayer.testing.proxy import Fault, UpstreamProxy
from cachelayer.testing.sample import SAMPLE_TABLE, seed_sample
from provider_helpers import (
    REGION,
    assert_imports_without_boto3,
    configured,
    entry_point_provider,
    routed,
)

SAMPLE_ITEM = DynamoItem(
    table=SAMPLE_TABLE,
    hashkey="pKey",
    hashkeytype="S",
    hashkeyvalue="pKey1",
    sortkey="sKey",
    sortkeytype="S",
    sortkeyvalue="sKey1",
)


@pytest.fixture()
def ddb(aws: str) -> Any:
    """A boto3 client straight to moto, to seed data without counting."""
    return boto3.client("dynamodb", region_name=REGION, endpoint_url=aws)


def make_table(ddb: Any, name: str, hash_type: str = "S", sort_type: Optional[str] = None) -> None:
    """Create an on-demand table with key ``pk`` (and sort key ``sk``)."""
    schema = [{"AttributeName": "pk", "KeyType": "HASH"}]
    attrs_ = [{"AttributeName": "pk", "AttributeType": hash_type}]
    if sort_type:
        schema.append({"AttributeName": "sk", "KeyType": "RANGE"})
        attrs_.append({"AttributeName": "sk", "AttributeType": sort_type})
    ddb.create_table(
        TableName=name, KeySchema=schema, AttributeDefinitions=attrs_, BillingMode="PAY_PER_REQUEST"
    )


def make_provider(config: Any = None, **factory: Any) -> DynamoDbProvider:
    """A provider configured with ``config`` and a fresh client factory (one attempt, fast)."""
    return configured(DynamoDbProvider, config, **factory)


def hash_item(table: str, value: str, kind: str = "S", **kw: Any) -> DynamoItem:
    """A declared hash-only item of ``table`` with key attribute ``pk``."""
    return DynamoItem(table=table, hashkey="pk", hashkeytype=kind, hashkeyvalue=value, **kw)


class TestSample:
    def test_sample_item_is_json_with_native_types(self, proxy: UpstreamProxy, aws: str) -> None:
        """The sample's item is served by its sample name as JSON with exact numbers and types."""
        seed_sample(aws)
        provider = make_provider([SAMPLE_ITEM])
        item = provider.resolve("DynamoDbTable-pKey1-sKey1", {})
        value = provider.fetch(item)
        assert value.content_type == JSON
        text = value.body.decode()
        assert '"count":12345678901234567890.125' in text
        doc = json.loads(text, parse_float=Decimal)
        assert doc["count"] == Decimal("12345678901234567890.125")
        assert doc["enabled"] is True
        assert doc["nothing"] is None
        assert sorted(doc["tags"]) == ["a", "b"]
        assert doc["nested"] == {"n": 7, "l": ["x", Decimal("1.50")]}
        assert doc["pKey"] == "pKey1" and doc["data"] == "DynamoDB sample data"
        assert proxy.calls == {("dynamodb", "GetItem"): 1}


class TestTypes:
    def test_every_type_round_trips(self, proxy: UpstreamProxy, ddb: Any) -> None:
        """Strings, numbers (exact), booleans, null, binary, sets, lists and maps map to JSON."""
        make_table(ddb, "types")
        ddb.put_item(
            TableName="types",
            Item={
                "pk": {"S": "k"},
                "big": {"N": "12345678901234567890.125"},
                "neg": {"N": "-0.000000000000000000001"},
                "int": {"N": "42"},
                "t": {"BOOL": True},
                "f": {"BOOL": False},
                "z": {"NULL": True},
                "bin": {"B": b"\x00\xffhi"},
                "ss": {"SS": ["x", "y"]},
                "ns": {"NS": ["1", "99999999999999999999.5"]},
                "bs": {"BS": [b"\x01", b"\x02"]},
                "list": {"L": [{"S": "é"}, {"N": "3"}, {"M": {"deep": {"BOOL": False}}}]},
                "map": {"M": {"a": {"L": []}, "b": {"M": {}}}},
            },
        )
        provider = make_provider([hash_item("types", "k")])
        body = provider.fetch(provider.resolve("types-k", {})).body.decode()
        doc = json.loads(body, parse_float=Decimal, parse_int=Decimal)
        assert doc["big"] == Decimal("12345678901234567890.125")
        assert doc["neg"] == Decimal("-1E-21")
        assert doc["int"] == 42
        assert (doc["t"], doc["f"], doc["z"]) == (True, False, None)
        assert base64.b64decode(doc["bin"]) == b"\x00\xffhi"
        assert sorted(doc["ss"]) == ["x", "y"]
        assert sorted(doc["ns"]) == [1, Decimal("99999999999999999999.5")]
        assert sorted(base64.b64decode(b) for b in doc["bs"]) == [b"\x01", b"\x02"]
        assert doc["list"] == ["é", 3, {"deep": False}]
        assert doc["map"] == {"a": [], "b": {}}

    @pytest.mark.parametrize(
        ("digits", "expected"),
        [("1.50", "1.50"), (".5", "0.5"), ("+7", "7"), ("1e2", "1e2"), ("007", "7"), ("-0", "-0")],
    )
    def test_numbers_are_written_as_valid_json_without_float(
        self, digits: str, expected: str
    ) -> None:
        """Numbers keep their digits; forms JSON does not allow are rewritten exactly."""
        assert item_to_json({"n": {"N": digits}}) == '{"n":' + expected + "}"

    def test_non_numbers_are_refused(self) -> None:
        """A number that is not one (NaN) is an upstream error, not invalid JSON."""
        with pytest.raises(UpstreamError, match="NaN"):
            item_to_json({"n": {"N": "NaN"}})


class TestNames:
    def test_hash_only_table_serves_any_hash_value(self, proxy: UpstreamProxy, ddb: Any) -> None:
        """For a declared hash-only table, `<table>-<value>` is served even when undeclared."""
        make_table(ddb, "users")
        make_table(ddb, "users-archive")
        ddb.put_item(TableName="users", Item={"pk": {"S": "bob-smith"}, "age": {"N": "40"}})
        ddb.put_item(TableName="users-archive", Item={"pk": {"S": "old"}, "age": {"N": "99"}})
        provider = make_provider(
            DynamoDbSection(
                ttl=Duration(30),
                items=[
                    hash_item("users", "alice"),
                    hash_item("users-archive", "x", ttl=Duration(5)),
                ],
            )
        )
        bob = provider.resolve("users-bob-smith", {})
        assert bob.ttl == 30.0
        assert json.loads(provider.fetch(bob).body) == {"pk": "bob-smith", "age": 40}
        archived = provider.resolve("users-archive-old", {})
        assert archived.target.table == "users-archive"
        assert json.loads(provider.fetch(archived).body)["age"] == 99
        assert provider.resolve("users-archive-x", {}).ttl == 5.0

    def test_numeric_and_binary_keys(self, proxy: UpstreamProxy, ddb: Any) -> None:
        """N and B hash keys are sent typed (B decoded from base64) and found."""
        make_table(ddb, "nums", hash_type="N", sort_type="B")
        ddb.put_item(
            TableName="nums", Item={"pk": {"N": "7"}, "sk": {"B": b"\x01\x02"}, "v": {"S": "ok"}}
        )
        declared = DynamoItem(
            table="nums",
            hashkey="pk",
            hashkeytype="N",
            hashkeyvalue="7",
            sortkey="sk",
            sortkeytype="B",
            sortkeyvalue=base64.b64encode(b"\x01\x02").decode(),
        )
        provider = make_provider([declared])
        value = provider.fetch(provider.resolve(declared.item_name, {}))
        assert json.loads(value.body)["v"] == "ok"

    def test_undeclared_name_is_not_found_with_the_declared_ones(self) -> None:
        """An unknown name is NotFoundError listing at most ten declared names."""
        provider = make_provider(
            [
                hash_item("t", f"v{i:02d}", sortkey="s", sortkeytype="S", sortkeyvalue="x")
                for i in range(15)
            ]
        )
        with pytest.raises(NotFoundError) as info:
            provider.resolve("nope-1", {})
        message = str(info.value)
        assert "'t-v00-x'" in message and "'t-v09-x'" in message and "'t-v10-x'" not in message
        assert "and 5 more" in message

    def test_bad_requests(self) -> None:
        """Extra parameters (refused by the router: the provider declares none) and malformed
        numeric hash values are bad requests."""
        provider = make_provider([hash_item("n", "1", kind="N")])
        with pytest.raises(
            BadRequestError, match="'version' for /dynamodb; only name= is accepted"
        ):
            routed(provider, "n-1", {"version": "2"})
        with pytest.raises(BadRequestError, match="must be a number"):
            provider.resolve("n-abc", {})

    def test_duplicate_names_are_a_config_error(self) -> None:
        """Two entries that are served under one name are a ConfigError."""
        with pytest.raises(ConfigError, match="'a-b-c'"):
            make_provider([hash_item("a", "b-c"), hash_item("a-b", "c")])


class TestSchema:
    @pytest.mark.parametrize(
        ("kw", "fragment"),
        [
            ({"sortkey": "sk"}, "needs both sortkeytype"),
            ({"sortkey": "sk", "sortkeytype": "S"}, "needs both sortkeytype"),
            ({"sortkeyvalue": "x"}, "without sortkey"),
            ({"hashkeytype": "N", "hashkeyvalue": "12a"}, "must be a number"),
            ({"hashkeytype": "B", "hashkeyvalue": "not base64!"}, "base64"),
            ({"hashkeytype": "X"}, "S, N or B"),
            ({"hashkeyvalue": ""}, "must not be empty"),
            ({"table": ""}, "table must be a non-empty"),
            ({"ttl": Duration(-1)}, "negative"),
        ],
    )
    def test_inconsistent_items_are_rejected(self, kw: Dict[str, Any], fragment: str) -> None:
        """Validators raise ValueError saying which key is wrong and how."""
        base: Dict[str, Any] = {
            "table": "t",
            "hashkey": "pk",
            "hashkeytype": "S",
            "hashkeyvalue": "v",
        }
        base.update(kw)
        with pytest.raises(ValueError, match=fragment):
            DynamoItem(**base)


class TestNotFound:
    def test_missing_item_and_missing_table(self, proxy: UpstreamProxy, ddb: Any) -> None:
        """A missing item and a missing table are both NotFoundError."""
        make_table(ddb, "present")
        provider = make_provider([hash_item("present", "ghost"), hash_item("absent", "x")])
        with pytest.raises(NotFoundError, match="present-ghost"):
            provider.fetch(provider.resolve("present-ghost", {}))
        with pytest.raises(NotFoundError):
            provider.fetch(provider.resolve("absent-x", {}))


class TestFetchMany:
    def test_250_items_take_3_batch_calls(self, proxy: UpstreamProxy, ddb: Any) -> None:
        """250 keys of one table are read with three BatchGetItem calls; missing ones NotFound."""
        make_table(ddb, "bulk", hash_type="N")
        for i in range(0, 250, 25):
            ddb.batch_write_item(
                RequestItems={
                    "bulk": [
                        {"PutRequest": {"Item": {"pk": {"N": str(j)}, "v": {"N": f"{j}.5"}}}}
                        for j in range(i, i + 25)
                        if j % 50 != 49  # leave some keys missing
                    ]
                }
            )
        provider = make_provider([hash_item("bulk", "0", kind="N")])
        items = [provider.resolve(f"bulk-{i}", {}) for i in range(250)]
        assert isinstance(provider, SupportsFetchMany)
        results = provider.fetch_many(items)
        assert proxy.calls == {("dynamodb", "BatchGetItem"): 3}
        for i, item in enumerate(items):
            if i % 50 == 49:
                assert isinstance(results[item], NotFoundError)
            else:
                assert results[item].body == f'{{"pk":{i},"v":{i}.5}}'.encode()  # type: ignore[union-attr]

    def test_tables_are_batched_separately(self, proxy: UpstreamProxy, aws: str, ddb: Any) -> None:
        """Items of two tables take one call each; a missing table fails only its own items."""
        seed_sample(aws)
        make_table(ddb, "other")
        ddb.put_item(TableName="other", Item={"pk": {"S": "1"}})
        provider = make_provider([SAMPLE_ITEM, hash_item("other", "1"), hash_item("gone", "1")])
        results = provider.fetch_many(provider.declared())
        by_name = {i.name: r for i, r in results.items()}
        assert json.loads(by_name["DynamoDbTable-pKey1-sKey1"].body)["enabled"] is True  # type: ignore[union-attr]
        assert json.loads(by_name["other-1"].body) == {"pk": "1"}  # type: ignore[union-attr]
        assert isinstance(by_name["gone-1"], NotFoundError)
        assert proxy.calls == {("dynamodb", "BatchGetItem"): 3}

    def test_throttled_batch_is_transient(self, proxy: UpstreamProxy, ddb: Any) -> None:
        """ProvisionedThroughputExceeded on BatchGetItem makes every item of the call transient."""
        make_table(ddb, "hot")
        proxy.inject(
            Fault.throttle("ProvisionedThroughputExceededException"), operation="BatchGetItem"
        )
        provider = make_provider([hash_item("hot", "a"), hash_item("hot", "b")])
        results = provider.fetch_many(provider.declared())
        assert len(results) == 2 and all(isinstance(r, TransientError) for r in results.values())


class _UnprocessingClient:
    """Stands in for DynamoDB because moto never answers with UnprocessedKeys; it answers the
    first ``stingy`` calls with all but one key unprocessed, like a throttled table."""

    def __init__(self, stingy: int) -> None:
        self.stingy = stingy
        self.requests: List[int] = []

    def call(self, operation: str, params: Dict[str, Any], **_: Any) -> Dict[str, Any]:
        assert operation == "BatchGetItem"
        ((table, request),) = params["RequestItems"].items()
        keys = request["Keys"]
        self.requests.append(len(keys))
        if len(self.requests) <= self.stingy:
            served, rest = keys[:1], keys[1:]
        else:
            served, rest = keys, []
        answer: Dict[str, Any] = {"Responses": {table: [dict(k, v={"N": "1"}) for k in served]}}
        if rest:
            answer["UnprocessedKeys"] = {table: {"Keys": rest}}
        return answer


class TestUnprocessedKeys:
    def _provider(self, client: _UnprocessingClient, sleeps: List[float]) -> DynamoDbProvider:
        return DynamoDbProvider.from_config(
            [hash_item("t", "0")],
            ProviderContext(client=lambda s, r: None, json_client=lambda s, r: client),
            sleep=sleeps.append,
        )

    def test_unprocessed_keys_are_retried_with_backoff(self) -> None:
        """Keys left unprocessed are asked for again, after growing pauses, until all are read."""
        client, sleeps = _UnprocessingClient(stingy=2), []
        provider = self._provider(client, sleeps)
        items = [provider.resolve(f"t-{i}", {}) for i in range(4)]
        results = provider.fetch_many(items)
        assert all(isinstance(r, Value) for r in results.values())
        assert client.requests == [4, 3, 2]
        assert sleeps == [0.05, 0.1]

    def test_keys_still_unprocessed_are_transient(self) -> None:
        """Keys still unprocessed after the last round get a TransientError."""
        client, sleeps = _UnprocessingClient(stingy=99), []
        provider = self._provider(client, sleeps)
        items = [provider.resolve(f"t-{i}", {}) for i in range(6)]
        results = provider.fetch_many(items)
        assert client.requests == [6, 5, 4, 3]
        assert sum(isinstance(r, Value) for r in results.values()) == 4
        assert sum(isinstance(r, TransientError) for r in results.values()) == 2


class TestPlugin:
    def test_entry_point_provides_the_dynamodb_route(self) -> None:
        """The `dynamodb` entry point registers DynamoDbProvider on route `dynamodb`."""
        provider = entry_point_provider("dynamodb", "dynamodb")
        assert provider is DynamoDbProvider
        assert provider.services == ("dynamodb",)

    def test_import_does_not_load_boto3(self) -> None:
        """Importing the provider module imports neither boto3 nor botocore."""
        assert_imports_without_boto3("cachelayer.providers.dynamodb")

    def test_item_built_elsewhere_is_still_fetchable(self, proxy: UpstreamProxy, aws: str) -> None:
        """An Item rebuilt from its key (no target) is resolved again when fetched."""
        seed_sample(aws)
        provider = make_provider([SAMPLE_ITEM])
        value = provider.fetch(Item(route="dynamodb", name="DynamoDbTable-pKey1-sKey1"))
        assert json.loads(value.body)["pKey"] == "pKey1"
