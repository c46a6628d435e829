"""The Secrets Manager provider against moto over HTTP, through the counting proxy."""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from cachelayer import (
    BINARY,
    TEXT,
    BadRequestError,
    ConfigError,
    Duration,
    NotFoundError,
    SupportsFetchMany,
    ThrottlingError,
    TransientError,
    UpstreamError,
    Value,
)
from cachelayer.providers.secrets import (
    SecretGroup,
    SecretName,
    SecretsManagerProvider,
    SecretsSection,
)
from cachelayer.testing.proxy import Fault, UpstreamProxy
from provider_helpers import (
    REGION,
    assert_imports_without_boto3,
    configured,
    entry_point_provider,
    routed,
)


@pytest.fixture()
def sm(aws: str) -> Any:
    """A boto3 client straight to moto, to seed data without counting."""
    return boto3.client("secretsmanager", region_name=REGION, endpoint_url=aws)


def make_provider(config: Any = None, **factory: Any) -> SecretsManagerProvider:
    """A provider configured with ``config`` and a fresh client factory (one attempt, fast)."""
    return configured(SecretsManagerProvider, config, **factory)


class TestValues:
    def test_string_secret_is_text_with_response_metadata(
        self, proxy: UpstreamProxy, sm: Any
    ) -> None:
        """A string secret is served as UTF-8 text; metadata holds the other GetSecretValue
        fields, not the value a second time."""
        sm.create_secret(Name="prod/db", SecretString='{"user": "admin", "pw": "ü"}')
        provider = make_provider()
        value = provider.fetch(provider.resolve("prod/db", {}))
        assert value.body == '{"user": "admin", "pw": "ü"}'.encode()
        assert value.content_type == TEXT
        assert value.metadata["Name"] == "prod/db"
        assert value.metadata["VersionStages"] == ["AWSCURRENT"]
        assert {"ARN", "VersionId", "CreatedDate"} <= set(value.metadata)
        assert "SecretString" not in value.metadata  # the value is the body, held once
        assert "ResponseMetadata" not in value.metadata
        assert proxy.calls == {("secretsmanager", "GetSecretValue"): 1}

    def test_binary_secret_is_raw_bytes(self, proxy: UpstreamProxy, sm: Any) -> None:
        """A binary secret is served as its raw bytes with application/octet-stream."""
        sm.create_secret(Name="cert", SecretBinary=b"\x00\x01\xfe\xff")
        provider = make_provider()
        value = provider.fetch(provider.resolve("cert", {}))
        assert value.body == b"\x00\x01\xfe\xff"
        assert value.content_type == BINARY

    def test_arn_reads_the_secret(self, proxy: UpstreamProxy, sm: Any) -> None:
        """A secret can be named by its ARN."""
        arn = sm.create_secret(Name="by-arn", SecretString="x")["ARN"]
        provider = make_provider()
        assert provider.fetch(provider.resolve(arn, {})).body == b"x"


class TestVariants:
    def test_version_stage_and_id_select_versions(self, proxy: UpstreamProxy, sm: Any) -> None:
        """versionStage=AWSPREVIOUS and versionId=<id> read those versions under their own keys."""
        first = sm.create_secret(Name="rotating", SecretString="old")["VersionId"]
        sm.put_secret_value(SecretId="rotating", SecretString="new")
        provider = make_provider()
        current = provider.resolve("rotating", {})
        previous = provider.resolve("rotating", {"versionStage": "AWSPREVIOUS"})
        by_id = provider.resolve("rotating", {"versionId": first})
        assert provider.fetch(current).body == b"new"
        assert provider.fetch(previous).body == b"old"
        assert provider.fetch(by_id).body == b"old"
        assert len({current.key, previous.key, by_id.key}) == 3

    @pytest.mark.parametrize(
        ("params", "fragment"),
        [
            ({"versionId": "a", "versionStage": "b"}, "not both"),
            ({"versionStage": ""}, "1 to 256"),
            ({"version": "1"}, "allowed: name, versionId, versionStage"),
        ],
    )
    def test_bad_parameters_are_bad_requests(self, params: Any, fragment: str) -> None:
        """Conflicting, empty or unknown query parameters raise BadRequestError saying why
        (an undeclared one from the router, before the provider sees it)."""
        with pytest.raises(BadRequestError, match=fragment):
            routed(make_provider(), "x", params)


class TestNotFound:
    def test_missing_secret_is_not_found(self, proxy: UpstreamProxy) -> None:
        """A secret that does not exist raises NotFoundError naming it."""
        provider = make_provider()
        with pytest.raises(NotFoundError, match="nope"):
            provider.fetch(provider.resolve("nope", {}))

    def test_secret_marked_for_deletion_is_not_found(self, proxy: UpstreamProxy, sm: Any) -> None:
        """A secret scheduled for deletion (InvalidRequestException) is NotFoundError too."""
        sm.create_secret(Name="doomed", SecretString="x")
        sm.delete_secret(SecretId="doomed")
        provider = make_provider()
        with pytest.raises(NotFoundError):
            provider.fetch(provider.resolve("doomed", {}))

    def test_missing_version_stage_is_not_found(self, proxy: UpstreamProxy, sm: Any) -> None:
        """A stage no version carries raises NotFoundError."""
        sm.create_secret(Name="single", SecretString="x")
        provider = make_provider()
        with pytest.raises(NotFoundError):
            provider.fetch(provider.resolve("single", {"versionStage": "NOPE"}))


class TestConfig:
    def test_ttl_precedence_and_region(self) -> None:
        """TTL comes from the item, then the group, then the section; regions from the group."""
        provider = make_provider(
            SecretsSection(
                ttl=Duration(600),
                groups=[
                    SecretGroup(
                        region="eu-west-1",
                        ttl=Duration(60),
                        names=["g", SecretName(name="i", ttl=Duration(1))],
                    ),
                    SecretGroup(names=["s"]),
                ],
            )
        )
        assert {n: provider.resolve(n, {}).ttl for n in ("i", "g", "s", "x")} == {
            "i": 1.0,
            "g": 60.0,
            "s": 600.0,
            "x": 600.0,
        }
        assert provider.resolve("g", {}).target.region == "eu-west-1"
        assert [i.name for i in provider.declared()] == ["g", "i", "s"]

    def test_conflicting_declarations_are_a_config_error(self) -> None:
        """One secret declared with two TTLs is a ConfigError naming it."""
        with pytest.raises(ConfigError, match="'dup' is declared twice"):
            make_provider([SecretGroup(names=["dup"], ttl=Duration(1)), SecretGroup(names=["dup"])])

    def test_empty_group_is_rejected(self) -> None:
        """A group without names fails validation with a clear message."""
        with pytest.raises(ValueError, match="at least one secret"):
            SecretGroup(names=[])


class TestFetchMany:
    def test_45_secrets_take_3_batch_calls(self, proxy: UpstreamProxy, sm: Any) -> None:
        """Forty-five current secrets are fetched with three BatchGetSecretValue calls (20+20+5)."""
        names = [f"batch/s{i:02d}" for i in range(44)]
        for n in names:
            sm.create_secret(Name=n, SecretString=f"value of {n}")
        sm.create_secret(Name="batch/bin", SecretBinary=b"\x00raw")
        provider = make_provider([SecretGroup(names=[*names, "batch/bin"])])
        assert isinstance(provider, SupportsFetchMany)
        results = provider.fetch_many(provider.declared())
        bodies = {i.name: r.body for i, r in results.items() if isinstance(r, Value)}
        assert bodies == {**{n: f"value of {n}".encode() for n in names}, "batch/bin": b"\x00raw"}
        assert [r.content_type for i, r in results.items() if i.name == "batch/bin"] == [BINARY]
        assert proxy.calls == {("secretsmanager", "BatchGetSecretValue"): 3}

    def test_per_item_errors_and_versions(self, proxy: UpstreamProxy, sm: Any) -> None:
        """Missing and deleted ids map to NotFoundError; versioned items are fetched one by one."""
        arn = sm.create_secret(Name="ok", SecretString="fine")["ARN"]
        sm.create_secret(Name="deleted", SecretString="x")
        sm.delete_secret(SecretId="deleted")
        sm.put_secret_value(SecretId="ok", SecretString="finer")
        provider = make_provider()
        ok, by_arn, missing, deleted, previous = (
            provider.resolve("ok", {}),
            provider.resolve(arn, {}),
            provider.resolve("missing", {}),
            provider.resolve("deleted", {}),
            provider.resolve("ok", {"versionStage": "AWSPREVIOUS"}),
        )
        results = provider.fetch_many([ok, by_arn, missing, deleted, previous])
        assert results[ok].body == b"finer"  # type: ignore[union-attr]
        assert results[by_arn].body == b"finer"  # type: ignore[union-attr]
        assert results[previous].body == b"fine"  # type: ignore[union-attr]
        assert isinstance(results[missing], NotFoundError)
        assert isinstance(results[deleted], NotFoundError)
        assert proxy.calls == {
            ("secretsmanager", "BatchGetSecretValue"): 1,
            ("secretsmanager", "GetSecretValue"): 1,
        }

    def test_denied_batch_api_falls_back_to_single_reads(
        self, proxy: UpstreamProxy, sm: Any
    ) -> None:
        """If BatchGetSecretValue is denied, each secret is read with GetSecretValue instead."""
        sm.create_secret(Name="a", SecretString="A")
        sm.create_secret(Name="b", SecretString="B")
        proxy.inject(Fault.aws_error("AccessDeniedException"), operation="BatchGetSecretValue")
        provider = make_provider()
        items = [provider.resolve("a", {}), provider.resolve("b", {})]
        results = provider.fetch_many(items)
        assert [results[i].body for i in items] == [b"A", b"B"]  # type: ignore[union-attr]
        assert proxy.count("GetSecretValue") == 2

    def test_throttled_batch_is_transient_for_each_item(self, proxy: UpstreamProxy) -> None:
        """A throttled batch call gives every item a TransientError (no fallback storm)."""
        proxy.inject(Fault.throttle(), operation="BatchGetSecretValue")
        provider = make_provider()
        results = provider.fetch_many([provider.resolve(n, {}) for n in ("a", "b")])
        assert len(results) == 2 and all(isinstance(r, TransientError) for r in results.values())
        assert proxy.count("GetSecretValue") == 0


class TestErrors:
    @pytest.mark.parametrize(
        ("fault", "error"),
        [
            (Fault.throttle(), ThrottlingError),
            (Fault.server_error(), TransientError),
            (Fault.aws_error("AccessDeniedException"), UpstreamError),
            (Fault.aws_error("DecryptionFailure"), UpstreamError),
        ],
    )
    def test_faults_are_classified(self, proxy: UpstreamProxy, fault: Fault, error: type) -> None:
        """Throttling and 5xx are transient; AccessDenied and DecryptionFailure are not."""
        proxy.inject(fault, operation="GetSecretValue")
        provider = make_provider()
        with pytest.raises(UpstreamError) as info:
            provider.fetch(provider.resolve("x", {}))
        assert type(info.value) is error


class TestPlugin:
    def test_entry_point_provides_the_secrets_route(self) -> None:
        """The `secrets` entry point registers SecretsManagerProvider on route `secrets`."""
        provider = entry_point_provider("secrets", "secrets")
        assert provider is SecretsManagerProvider
        assert provider.services == ("secretsmanager",)

    def test_import_does_not_load_boto3(self) -> None:
        """Importing the provider module imports neither boto3 nor botocore."""
        assert_imports_without_boto3("cachelayer.providers.secrets")
