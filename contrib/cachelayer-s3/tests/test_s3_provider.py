"""The S3 provider against moto over HTTP: fetch, conditional refresh, size limits, errors."""

from __future__ import annotations

from typing import Any, List

import attrs
import boto3
import pytest
from cachelayer_s3 import DEFAULT_MAX_SIZE, ObjectTooLargeError, S3Object, S3Provider

import cachelayer
from cachelayer import BINARY, ConfigError, NameIndex, NotFoundError, ProviderContext
from cachelayer.aws import ClientFactory
from cachelayer.plugins import discover
from cachelayer.testing.fixtures import UpstreamCalls

BUCKET = "cachelayer-s3-tests"


@pytest.fixture()
def s3(aws: str) -> Any:
    """A boto3 S3 client on moto, with the test bucket created."""
    client = boto3.client("s3")
    client.create_bucket(
        Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "us-west-2"}
    )
    return client


def configured(context: ProviderContext, *objects: S3Object) -> S3Provider:
    return S3Provider.from_config(list(objects), context)


class TestFetch:
    def test_serves_body_and_content_type_of_object(
        self, s3: Any, provider_context: ProviderContext
    ) -> None:
        """An object's bytes are served with the ContentType it was stored with."""
        s3.put_object(
            Bucket=BUCKET, Key="app/settings.json", Body=b'{"a": 1}', ContentType="application/json"
        )
        provider = configured(provider_context, S3Object(bucket=BUCKET, key="app/settings.json"))
        value = provider.fetch(provider.resolve(f"{BUCKET}/app/settings.json", {}))
        assert value.body == b'{"a": 1}'
        assert value.content_type == "application/json"
        assert value.etag is not None and value.metadata["ETag"] == value.etag

    def test_s3_default_content_type_is_served_as_octet_stream(
        self, s3: Any, provider_context: ProviderContext
    ) -> None:
        """An object stored without ContentType (S3 says binary/octet-stream) is application/octet-stream."""
        s3.put_object(Bucket=BUCKET, Key="blob", Body=bytes(range(256)))
        provider = configured(provider_context, S3Object(bucket=BUCKET, key="blob"))
        value = provider.fetch(provider.resolve(f"{BUCKET}/blob", {}))
        assert value.body == bytes(range(256))
        assert value.content_type == BINARY

    def test_alias_and_path_name_the_same_cache_item(
        self, s3: Any, provider_context: ProviderContext
    ) -> None:
        """An object with an alias answers to both names, as one cache key (the alias)."""
        provider = configured(provider_context, S3Object(bucket=BUCKET, key="k", name="settings"))
        by_alias = provider.resolve("settings", {"name": "settings"})
        by_path = provider.resolve(f"{BUCKET}/k", {"name": f"{BUCKET}/k"})
        assert by_alias == by_path
        assert by_alias.key == ("s3", "settings", ())

    def test_declared_items_carry_their_ttl(self, provider_context: ProviderContext) -> None:
        """declared() lists every object once, with its own ttl in seconds."""
        provider = configured(
            provider_context,
            S3Object(bucket=BUCKET, key="a", ttl=cachelayer.Duration(300.0)),
            S3Object(bucket=BUCKET, key="b", name="bee"),
        )
        items = provider.declared()
        assert [(i.name, i.ttl) for i in items] == [(f"{BUCKET}/a", 300.0), ("bee", None)]

    def test_object_in_another_region_is_fetched_from_that_region(
        self, aws: str, upstream_calls: UpstreamCalls
    ) -> None:
        """The declared region selects the client: the context is asked for ("s3", region)."""
        asked: List[Any] = []
        factory = ClientFactory.from_environment(on_call=upstream_calls.record)

        def client(service: str, region: Any) -> Any:
            asked.append((service, region))
            return factory(service, region)

        boto3.client("s3", region_name="eu-west-1").create_bucket(
            Bucket="cachelayer-eu", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
        )
        boto3.client("s3", region_name="eu-west-1").put_object(
            Bucket="cachelayer-eu", Key="k", Body=b"eu"
        )
        provider = configured(
            ProviderContext(client=client),
            S3Object(bucket="cachelayer-eu", key="k", region="eu-west-1"),
        )
        assert provider.fetch(provider.resolve("cachelayer-eu/k", {})).body == b"eu"
        assert asked == [("s3", "eu-west-1")]


class TestConditionalRefresh:
    def test_unchanged_object_returns_previous_value_itself(
        self, s3: Any, provider_context: ProviderContext, upstream_calls: UpstreamCalls
    ) -> None:
        """refresh() of an unchanged object makes one conditional GetObject and returns `previous` (a 304)."""
        s3.put_object(Bucket=BUCKET, Key="k", Body=b"v1")
        provider = configured(provider_context, S3Object(bucket=BUCKET, key="k"))
        item = provider.resolve(f"{BUCKET}/k", {})
        first = provider.fetch(item)
        assert provider.refresh(item, first) is first
        assert upstream_calls.count("GetObject") == 2

    def test_changed_object_returns_new_value(
        self, s3: Any, provider_context: ProviderContext
    ) -> None:
        """refresh() after the object changed returns the new body and etag."""
        s3.put_object(Bucket=BUCKET, Key="k", Body=b"v1")
        provider = configured(provider_context, S3Object(bucket=BUCKET, key="k"))
        item = provider.resolve(f"{BUCKET}/k", {})
        first = provider.fetch(item)
        s3.put_object(Bucket=BUCKET, Key="k", Body=b"v2", ContentType="text/plain")
        second = provider.refresh(item, first)
        assert second is not first
        assert (second.body, second.content_type) == (b"v2", "text/plain")
        assert second.etag != first.etag

    def test_previous_value_without_etag_is_fetched_in_full(
        self, s3: Any, provider_context: ProviderContext
    ) -> None:
        """A previous value with no etag cannot be revalidated, so refresh() fetches the object."""
        s3.put_object(Bucket=BUCKET, Key="k", Body=b"v1")
        provider = configured(provider_context, S3Object(bucket=BUCKET, key="k"))
        item = provider.resolve(f"{BUCKET}/k", {})
        previous = cachelayer.Value(body=b"old")
        assert provider.refresh(item, previous).body == b"v1"

    def test_deleted_object_is_not_found_on_refresh(
        self, s3: Any, provider_context: ProviderContext
    ) -> None:
        """A conditional refresh of a deleted object raises NotFoundError, not the previous value."""
        s3.put_object(Bucket=BUCKET, Key="k", Body=b"v1")
        provider = configured(provider_context, S3Object(bucket=BUCKET, key="k"))
        item = provider.resolve(f"{BUCKET}/k", {})
        first = provider.fetch(item)
        s3.delete_object(Bucket=BUCKET, Key="k")
        with pytest.raises(NotFoundError):
            provider.refresh(item, first)


class TestSizeLimit:
    def test_object_over_default_limit_is_refused_with_clear_error(
        self, s3: Any, provider_context: ProviderContext
    ) -> None:
        """An object over 1 MiB raises ObjectTooLargeError naming the object, its size and the fix."""
        s3.put_object(Bucket=BUCKET, Key="big", Body=b"x" * (DEFAULT_MAX_SIZE + 1))
        provider = configured(provider_context, S3Object(bucket=BUCKET, key="big"))
        with pytest.raises(ObjectTooLargeError) as info:
            provider.fetch(provider.resolve(f"{BUCKET}/big", {}))
        message = str(info.value)
        assert f"s3://{BUCKET}/big" in message
        assert f"{DEFAULT_MAX_SIZE + 1} bytes" in message and "max_size" in message
        assert info.value.code == "ObjectTooLarge"
        assert isinstance(info.value, cachelayer.UpstreamError)
        assert not isinstance(info.value, cachelayer.TransientError)

    def test_configured_limit_applies_and_is_inclusive(
        self, s3: Any, provider_context: ProviderContext
    ) -> None:
        """max_size is per object: exactly max_size bytes pass, one more byte is refused."""
        s3.put_object(Bucket=BUCKET, Key="ten", Body=b"0123456789")
        s3.put_object(Bucket=BUCKET, Key="eleven", Body=b"0123456789a")
        provider = configured(
            provider_context,
            S3Object(bucket=BUCKET, key="ten", max_size=10),
            S3Object(bucket=BUCKET, key="eleven", max_size=10),
        )
        assert provider.fetch(provider.resolve(f"{BUCKET}/ten", {})).body == b"0123456789"
        with pytest.raises(ObjectTooLargeError):
            provider.fetch(provider.resolve(f"{BUCKET}/eleven", {}))

    def test_raised_limit_admits_a_large_object(
        self, s3: Any, provider_context: ProviderContext
    ) -> None:
        """An object over 1 MiB is served when its declaration raises max_size."""
        body = b"y" * (DEFAULT_MAX_SIZE + 10)
        s3.put_object(Bucket=BUCKET, Key="big", Body=body)
        provider = configured(
            provider_context, S3Object(bucket=BUCKET, key="big", max_size=2 * DEFAULT_MAX_SIZE)
        )
        assert provider.fetch(provider.resolve(f"{BUCKET}/big", {})).body == body


class TestErrors:
    def test_missing_key_is_not_found(self, s3: Any, provider_context: ProviderContext) -> None:
        """NoSuchKey becomes NotFoundError naming the object."""
        provider = configured(provider_context, S3Object(bucket=BUCKET, key="absent"))
        with pytest.raises(NotFoundError, match=f"s3://{BUCKET}/absent"):
            provider.fetch(provider.resolve(f"{BUCKET}/absent", {}))

    def test_missing_bucket_is_not_found(self, aws: str, provider_context: ProviderContext) -> None:
        """NoSuchBucket becomes NotFoundError."""
        provider = configured(provider_context, S3Object(bucket="no-such-bucket-here", key="k"))
        with pytest.raises(NotFoundError, match="NoSuchBucket"):
            provider.fetch(provider.resolve("no-such-bucket-here/k", {}))

    def test_undeclared_name_is_not_found_with_a_hint(
        self, provider_context: ProviderContext
    ) -> None:
        """A name that is neither an alias nor a declared bucket/key is NotFoundError telling how to declare it."""
        provider = configured(provider_context, S3Object(bucket=BUCKET, key="k"))
        with pytest.raises(NotFoundError, match="declare it in the s3: section"):
            provider.resolve(f"{BUCKET}/other", {})

    def test_unknown_query_parameter_is_bad_request(
        self, provider_context: ProviderContext
    ) -> None:
        """A query parameter other than name is a BadRequestError naming it, from the core's
        router (the provider declares no query_parameters), before the provider sees it."""
        from cachelayer.core.router import Router

        router = Router({"s3": configured(provider_context, S3Object(bucket=BUCKET, key="k"))})
        with pytest.raises(cachelayer.BadRequestError, match="version"):
            router.resolve("s3", {"name": f"{BUCKET}/k", "version": "2"})

    def test_unreachable_endpoint_is_transient(
        self, aws: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A refused connection is a TransientError, so the core may serve stale."""
        from cachelayer.testing.moto import free_port

        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
        factory = ClientFactory.from_environment(max_attempts=1, connect_timeout=1)
        provider = configured(ProviderContext(client=factory), S3Object(bucket=BUCKET, key="k"))
        with pytest.raises(cachelayer.TransientError):
            provider.fetch(provider.resolve(f"{BUCKET}/k", {}))


class TestConfig:
    def test_duplicate_alias_is_a_config_error_naming_both(
        self, provider_context: ProviderContext
    ) -> None:
        """Two objects with one alias are a ConfigError at the second one's key."""
        with pytest.raises(ConfigError) as info:
            configured(
                provider_context,
                S3Object(bucket=BUCKET, key="a", name="x"),
                S3Object(bucket=BUCKET, key="b", name="x"),
            )
        assert info.value.key == "s3[1].name"
        assert f"s3://{BUCKET}/a" in str(info.value)

    def test_alias_shadowing_another_objects_path_is_a_config_error(
        self, provider_context: ProviderContext
    ) -> None:
        """An alias equal to another object's bucket/key would make a name ambiguous: ConfigError."""
        with pytest.raises(ConfigError, match="declared twice"):
            configured(
                provider_context,
                S3Object(bucket=BUCKET, key="a"),
                S3Object(bucket=BUCKET, key="b", name=f"{BUCKET}/a"),
            )

    @pytest.mark.parametrize(
        ("fields", "message"),
        [
            ({"bucket": "", "key": "k"}, "bucket must not be empty"),
            ({"bucket": "b", "key": " "}, "key must not be empty"),
            ({"bucket": "b", "key": "k", "max_size": 0}, "max_size must be a positive number"),
            ({"bucket": "b", "key": "k", "name": " "}, "name must not be empty"),
        ],
    )
    def test_invalid_declaration_is_refused(self, fields: Any, message: str) -> None:
        """An empty bucket, key or alias, or a non-positive max_size, fails validation naming the field."""
        with pytest.raises(ValueError, match=message):
            S3Object(**fields)

    def test_built_provider_is_frozen(self, provider_context: ProviderContext) -> None:
        """from_config returns a ready provider whose declarations cannot be changed after."""
        provider = configured(provider_context, S3Object(bucket=BUCKET, key="k", name="a"))
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            provider._objects = NameIndex()  # type: ignore[misc]
        with pytest.raises(TypeError):
            provider._objects.by_name["b"] = S3Object(bucket=BUCKET, key="b")  # type: ignore[index]
        assert provider.resolve("a", {}).name == "a"

    def test_max_size_takes_a_unit(self, tmp_path: Any) -> None:
        """max_size is a ByteSize: `2MiB` in the config is 2,097,152 bytes."""
        from cachelayer.core.config import load_settings

        path = tmp_path / "config.yaml"
        path.write_text("s3:\n  - bucket: b\n    key: k\n    max_size: 2MiB\n")
        settings = load_settings(
            {"CACHE_EXTENSION_AUTH": "none"},
            {"s3": S3Provider.config_schema},
            config_path=str(path),
        )
        (obj,) = settings.sections["s3"]
        assert obj.max_size == 2 * 1024 * 1024 and obj.limit == 2 * 1024 * 1024


class TestPlugin:
    def test_installed_package_is_discovered_by_entry_point(self) -> None:
        """The installed distribution's `s3` entry point yields the provider, with its route and services."""
        _, registry = discover()
        info = registry.by_name["s3"]
        assert info.distribution == "cachelayer-s3"
        assert info.provider_type is S3Provider
        assert info.provider_type.route == "s3"
        assert registry.by_route["s3"] is info
        assert tuple(info.provider_type.services) == ("s3",)
        assert hasattr(info.provider_type, "refresh")
