"""The example provider against moto over HTTP, with cachelayer's fixtures for provider authors."""

from __future__ import annotations

import boto3
import pytest
from cachelayer_example import ExampleItem, ExampleProvider

from cachelayer import ConfigError, NotFoundError, ProviderContext
from cachelayer.testing.fixtures import UpstreamCalls


class TestExampleProvider:
    def test_declared_parameter_is_fetched(
        self, aws: str, provider_context: ProviderContext, upstream_calls: UpstreamCalls
    ) -> None:
        """A declared parameter's value is fetched with one GetParameter call."""
        boto3.client("ssm").put_parameter(Name="/app/colour", Value="blue", Type="String")
        provider = ExampleProvider.from_config([ExampleItem(name="/app/colour")], provider_context)
        value = provider.fetch(provider.resolve("/app/colour", {}))
        assert value.body == b"blue"
        assert upstream_calls.count("GetParameter") == 1

    def test_missing_parameter_is_not_found(
        self, aws: str, provider_context: ProviderContext
    ) -> None:
        """A declared parameter that does not exist upstream raises NotFoundError."""
        provider = ExampleProvider.from_config([ExampleItem(name="/app/missing")], provider_context)
        with pytest.raises(NotFoundError):
            provider.fetch(provider.resolve("/app/missing", {}))

    def test_undeclared_name_is_not_found(self, provider_context: ProviderContext) -> None:
        """A name the config does not declare is refused before any AWS call."""
        provider = ExampleProvider.from_config([], provider_context)
        with pytest.raises(NotFoundError, match="not declared"):
            provider.resolve("/other", {})

    def test_a_name_declared_twice_is_a_config_error(
        self, provider_context: ProviderContext
    ) -> None:
        """Two entries with one name are refused at startup, pointing at the second one."""
        twice = [ExampleItem(name="/app/a"), ExampleItem(name="/app/a")]
        with pytest.raises(ConfigError, match="declared twice") as info:
            ExampleProvider.from_config(twice, provider_context)
        assert info.value.key == "example[1].name"
