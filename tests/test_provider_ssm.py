"""The SSM Parameter Store provider against moto over HTTP, through the counting proxy."""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from cachelayer import (
    TEXT,
    BadRequestError,
    ConfigError,
    Duration,
    Item,
    NotFoundError,
    SupportsFetchMany,
    ThrottlingError,
    TransientError,
    UpstreamError,
    UpstreamTimeoutError,
    Value,
)
from cachelayer.providers.ssm import (
    ParameterGroup,
    ParameterName,
    ParametersSection,
    ParameterStoreProvider,
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
def ssm(aws: str) -> Any:
    """A boto3 client straight to moto, to seed data without counting."""
    return boto3.client("ssm", region_name=REGION, endpoint_url=aws)


def make_provider(config: Any = None, **factory: Any) -> ParameterStoreProvider:
    """A provider configured with ``config`` and a fresh client factory (one attempt, fast)."""
    return configured(ParameterStoreProvider, config, **factory)


class TestValues:
    def test_string_parameter_is_utf8_text_with_ssm_metadata(
        self, proxy: UpstreamProxy, ssm: Any
    ) -> None:
        """A String parameter is served as UTF-8 text with the SSM Parameter fields as metadata."""
        ssm.put_parameter(Name="/app/greeting", Value="héllo wörld", Type="String")
        provider = make_provider()
        value = provider.fetch(provider.resolve("/app/greeting", {}))
        assert value.body == "héllo wörld".encode()
        assert value.content_type == TEXT
        assert value.metadata["Name"] == "/app/greeting"
        assert value.metadata["Type"] == "String"
        assert value.metadata["Version"] == 1
        assert value.metadata["ARN"].endswith("parameter/app/greeting")
        assert "LastModifiedDate" in value.metadata
        assert proxy.count("GetParameter", "ssm") == 1

    def test_secure_string_is_decrypted_by_default(self, proxy: UpstreamProxy, ssm: Any) -> None:
        """A SecureString is decrypted unless withDecryption=false asks for the ciphertext."""
        ssm.put_parameter(Name="db-password", Value="s3cret", Type="SecureString")
        provider = make_provider()
        plain = provider.fetch(provider.resolve("db-password", {}))
        assert plain.body == b"s3cret"
        raw_item = provider.resolve("db-password", {"withDecryption": "false"})
        assert provider.fetch(raw_item).body != b"s3cret"

    def test_secretsmanager_reference_reads_the_secret(
        self, proxy: UpstreamProxy, aws: str
    ) -> None:
        """A /aws/reference/secretsmanager/ name returns the secret's value through SSM."""
        boto3.client("secretsmanager", region_name=REGION, endpoint_url=aws).create_secret(
            Name="secret_info", SecretString="MySecret"
        )
        provider = make_provider()
        value = provider.fetch(provider.resolve("/aws/reference/secretsmanager/secret_info", {}))
        assert value.body == b"MySecret"

    def test_value_repr_never_shows_the_value(self, proxy: UpstreamProxy, ssm: Any) -> None:
        """The fetched Value's repr carries a size, never the secret."""
        ssm.put_parameter(Name="hidden", Value="do-not-log-me", Type="SecureString")
        provider = make_provider()
        assert "do-not-log-me" not in repr(provider.fetch(provider.resolve("hidden", {})))


class TestVariants:
    def test_version_and_label_select_older_values(self, proxy: UpstreamProxy, ssm: Any) -> None:
        """version=N and label=L read that version of the parameter, each under its own key."""
        ssm.put_parameter(Name="flag", Value="one", Type="String")
        ssm.put_parameter(Name="flag", Value="two", Type="String", Overwrite=True)
        ssm.label_parameter_version(Name="flag", ParameterVersion=1, Labels=["stable"])
        provider = make_provider()
        latest = provider.resolve("flag", {})
        v1 = provider.resolve("flag", {"version": "1"})
        stable = provider.resolve("flag", {"label": "stable"})
        assert provider.fetch(latest).body == b"two"
        assert provider.fetch(v1).body == b"one"
        assert provider.fetch(stable).body == b"one"
        assert len({latest.key, v1.key, stable.key}) == 3
        assert v1.variant == (("version", "1"),)

    def test_explicit_decryption_true_is_the_default_key(self) -> None:
        """withDecryption=true (any case) and no flag at all are the same cache key."""
        provider = make_provider()
        assert (
            provider.resolve("x", {"withDecryption": "TRUE"}).key == provider.resolve("x", {}).key
        )
        assert provider.resolve("x", {"name": "x"}).key == provider.resolve("x", {}).key

    @pytest.mark.parametrize(
        ("params", "fragment"),
        [
            ({"version": "1", "label": "a"}, "not both"),
            ({"version": "0"}, "positive integer"),
            ({"version": "abc"}, "positive integer"),
            ({"label": ""}, "label"),
            ({"withDecryption": "maybe"}, "true or false"),
            ({"versionId": "1"}, "allowed: name, version, label, withDecryption"),
        ],
    )
    def test_bad_parameters_are_bad_requests(self, params: Any, fragment: str) -> None:
        """Conflicting, malformed or unknown query parameters raise BadRequestError saying why
        (an undeclared one from the router, before the provider sees it)."""
        provider = make_provider()
        with pytest.raises(BadRequestError, match=fragment):
            routed(provider, "x", params)

    def test_reference_cannot_be_read_encrypted(self) -> None:
        """A Secrets Manager reference with withDecryption=false is refused as a bad request."""
        provider = make_provider()
        with pytest.raises(BadRequestError, match="always decrypted"):
            provider.resolve("/aws/reference/secretsmanager/x", {"withDecryption": "false"})


class TestNotFound:
    def test_missing_parameter_is_not_found(self, proxy: UpstreamProxy) -> None:
        """A parameter that does not exist raises NotFoundError naming it."""
        provider = make_provider()
        with pytest.raises(NotFoundError, match="nope") as info:
            provider.fetch(provider.resolve("nope", {}))
        assert info.value.__cause__ is not None

    def test_missing_version_is_not_found(self, proxy: UpstreamProxy, ssm: Any) -> None:
        """A version that does not exist raises NotFoundError."""
        ssm.put_parameter(Name="one-version", Value="v", Type="String")
        provider = make_provider()
        with pytest.raises(NotFoundError):
            provider.fetch(provider.resolve("one-version", {"version": "7"}))


class TestConfig:
    def test_sample_list_form_declares_names(self) -> None:
        """The sample's list of groups declares its names with the group's region."""
        provider = make_provider(
            [
                ParameterGroup(
                    region="us-west-2",
                    names=[
                        "CacheExtensions_Parameter1",
                        "/aws/reference/secretsmanager/secret_info",
                    ],
                )
            ]
        )
        items = provider.declared()
        assert [i.name for i in items] == [
            "CacheExtensions_Parameter1",
            "/aws/reference/secretsmanager/secret_info",
        ]
        assert all(i.ttl is None and i.target.region == "us-west-2" for i in items)

    def test_ttl_precedence_is_item_then_group_then_section(self) -> None:
        """Item TTL beats the group's, which beats the section's; undeclared get the section's."""
        provider = make_provider(
            ParametersSection(
                ttl=Duration(900),
                groups=[
                    ParameterGroup(
                        names=["g", ParameterName(name="i", ttl=Duration(5))], ttl=Duration(60)
                    ),
                    ParameterGroup(names=["s"]),
                ],
            )
        )
        ttl = {n: provider.resolve(n, {}).ttl for n in ("i", "g", "s", "undeclared")}
        assert ttl == {"i": 5.0, "g": 60.0, "s": 900.0, "undeclared": 900.0}
        assert provider.resolve("i", {"version": "2"}).ttl == 5.0

    def test_group_region_is_used(self, proxy: UpstreamProxy, aws: str) -> None:
        """A name declared in another region is read there; undeclared names use the default."""
        boto3.client("ssm", region_name="eu-west-1", endpoint_url=aws).put_parameter(
            Name="eu-only", Value="bonjour", Type="String"
        )
        provider = make_provider([ParameterGroup(region="eu-west-1", names=["eu-only"])])
        assert provider.fetch(provider.resolve("eu-only", {})).body == b"bonjour"
        plain = make_provider()
        with pytest.raises(NotFoundError):
            plain.fetch(plain.resolve("eu-only", {}))

    def test_conflicting_declarations_are_a_config_error(self) -> None:
        """One name declared in two regions is a ConfigError naming it."""
        with pytest.raises(ConfigError, match="'dup' is declared twice"):
            make_provider(
                [ParameterGroup(region="us-east-1", names=["dup"]), ParameterGroup(names=["dup"])]
            )

    @pytest.mark.parametrize(
        ("build", "fragment"),
        [
            (lambda: ParameterGroup(names=[]), "at least one"),
            (lambda: ParameterGroup(names=[""]), "non-empty"),
            (lambda: ParameterGroup(names=["a"], ttl=Duration(-1)), "negative"),
            (lambda: ParameterName(name="a", ttl=Duration(-1)), "negative"),
            (lambda: ParameterGroup(names=["a"], region=""), "region"),
        ],
    )
    def test_schema_rejects_bad_values(self, build: Any, fragment: str) -> None:
        """The schema's validators raise ValueError with a message saying what is wrong."""
        with pytest.raises(ValueError, match=fragment):
            build()


class TestFetchMany:
    def test_25_parameters_take_3_get_parameters_calls(
        self, proxy: UpstreamProxy, ssm: Any
    ) -> None:
        """Twenty-five names are fetched with three GetParameters calls (10 + 10 + 5)."""
        names = [f"/batch/p{i:02d}" for i in range(25)]
        for n in names:
            ssm.put_parameter(Name=n, Value=f"value of {n}", Type="SecureString")
        provider = make_provider([ParameterGroup(names=names)])
        assert isinstance(provider, SupportsFetchMany)
        results = provider.fetch_many(provider.declared())
        assert {i.name: r.body for i, r in results.items() if isinstance(r, Value)} == {
            n: f"value of {n}".encode() for n in names
        }
        assert proxy.calls == {("ssm", "GetParameters"): 3}

    def test_missing_and_versioned_items(self, proxy: UpstreamProxy, ssm: Any) -> None:
        """Missing names are NotFoundError; versions and labels of one name each get their value."""
        ssm.put_parameter(Name="a", Value="a1", Type="String")
        ssm.put_parameter(Name="a", Value="a2", Type="String", Overwrite=True)
        ssm.label_parameter_version(Name="a", ParameterVersion=1, Labels=["stable"])
        ssm.put_parameter(Name="b", Value="b1", Type="String")
        provider = make_provider()
        latest, v1, stable, b, missing = (
            provider.resolve("a", {}),
            provider.resolve("a", {"version": "1"}),
            provider.resolve("a", {"label": "stable"}),
            provider.resolve("b", {}),
            provider.resolve("missing", {}),
        )
        results = provider.fetch_many([latest, v1, stable, b, missing])
        bodies = {i: r.body for i, r in results.items() if isinstance(r, Value)}
        assert bodies == {latest: b"a2", v1: b"a1", stable: b"a1", b: b"b1"}
        assert isinstance(results[missing], NotFoundError)
        # Three selectors of "a" cannot share one call (answers are matched by name).
        assert proxy.calls == {("ssm", "GetParameters"): 3}

    def test_decryption_flags_and_references_are_split(
        self, proxy: UpstreamProxy, aws: str, ssm: Any
    ) -> None:
        """Items differing in decryption go in separate calls; references are fetched alone."""
        ssm.put_parameter(Name="enc", Value="plain", Type="SecureString")
        boto3.client("secretsmanager", region_name=REGION, endpoint_url=aws).create_secret(
            Name="ref", SecretString="via-ssm"
        )
        provider = make_provider()
        items = [
            provider.resolve("enc", {}),
            provider.resolve("enc", {"withDecryption": "false"}),
            provider.resolve("/aws/reference/secretsmanager/ref", {}),
            provider.resolve("/aws/reference/secretsmanager/absent", {}),
        ]
        results = provider.fetch_many(items)
        assert results[items[0]].body == b"plain"  # type: ignore[union-attr]
        assert results[items[1]].body != b"plain"  # type: ignore[union-attr]
        assert results[items[2]].body == b"via-ssm"  # type: ignore[union-attr]
        assert isinstance(results[items[3]], NotFoundError)
        assert proxy.calls == {("ssm", "GetParameters"): 2, ("ssm", "GetParameter"): 2}

    def test_a_throttled_batch_fails_each_item_transiently(
        self, proxy: UpstreamProxy, ssm: Any
    ) -> None:
        """A throttled GetParameters call yields a TransientError for every item in it."""
        provider = make_provider()
        items = [provider.resolve(f"t{i}", {}) for i in range(3)]
        proxy.inject(Fault.throttle(), operation="GetParameters")
        results = provider.fetch_many(items)
        assert all(isinstance(r, TransientError) for r in results.values())
        assert len(results) == 3


class TestErrors:
    @pytest.mark.parametrize(
        ("fault", "error", "exact"),
        [
            (Fault.throttle(), ThrottlingError, True),
            (Fault.server_error(503, "ServiceUnavailable"), TransientError, True),
            (Fault.reset(), TransientError, True),
            (
                Fault.aws_error("AccessDeniedException", message="not authorized"),
                UpstreamError,
                True,
            ),
        ],
    )
    def test_faults_are_classified(
        self, proxy: UpstreamProxy, fault: Fault, error: type, exact: bool
    ) -> None:
        """Throttling, 5xx and resets are transient; AccessDenied is a plain upstream error."""
        provider = make_provider()
        proxy.inject(fault, operation="GetParameter")
        with pytest.raises(UpstreamError) as info:
            provider.fetch(provider.resolve("anything", {}))
        assert type(info.value) is error

    def test_slow_upstream_is_a_timeout(self, proxy: UpstreamProxy, ssm: Any) -> None:
        """An answer slower than the read timeout raises UpstreamTimeoutError."""
        ssm.put_parameter(Name="slow", Value="v", Type="String")
        provider = make_provider(read_timeout=0.3)
        proxy.inject(Fault.delay(0.6), operation="GetParameter")
        with pytest.raises(UpstreamTimeoutError):
            provider.fetch(provider.resolve("slow", {}))

    def test_one_retry_absorbs_one_throttle(self, proxy: UpstreamProxy, ssm: Any) -> None:
        """With the default two attempts, a single throttled answer is retried and succeeds."""
        ssm.put_parameter(Name="retry-me", Value="ok", Type="String")
        provider = make_provider(max_attempts=2)
        proxy.inject(Fault.throttle(), operation="GetParameter", times=1)
        assert provider.fetch(provider.resolve("retry-me", {})).body == b"ok"
        assert proxy.count("GetParameter") == 2


class TestPlugin:
    def test_entry_point_provides_the_parameters_route(self) -> None:
        """The `ssm` entry point registers ParameterStoreProvider on route `parameters`."""
        provider = entry_point_provider("ssm", "parameters")
        assert provider is ParameterStoreProvider
        assert provider.services == ("ssm",)

    def test_import_does_not_load_boto3(self) -> None:
        """Importing the provider module imports neither boto3 nor botocore."""
        assert_imports_without_boto3("cachelayer.providers.ssm")

    def test_item_built_elsewhere_is_still_fetchable(self, proxy: UpstreamProxy, ssm: Any) -> None:
        """An Item rebuilt from its key (no target) is resolved again when fetched."""
        ssm.put_parameter(Name="rebuilt", Value="v", Type="String")
        provider = make_provider()
        assert provider.fetch(Item(route="parameters", name="rebuilt")).body == b"v"
