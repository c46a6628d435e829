"""What the built-in providers' tests share: a configured provider, its entry point, its imports."""

from __future__ import annotations

import subprocess
import sys
from typing import Any, Mapping, Protocol, Type, TypeVar

from cachelayer import Item, Provider, ProviderContext
from cachelayer.aws import ClientFactory
from cachelayer.awsjson import JsonClientFactory
from cachelayer.plugins import collect_providers, load_plugins, make_plugin_manager

REGION = "us-west-2"


class Buildable(Protocol):
    @classmethod
    def from_config(cls, config: Any, context: ProviderContext) -> Any: ...


P = TypeVar("P", bound=Buildable)


def context(**factory: Any) -> ProviderContext:
    """A context with fresh client factories (one attempt, fast), reading the environment as
    it is now; ``factory`` goes to both ``JsonClientFactory`` (what the built-in providers use)
    and the boto3 ``ClientFactory``."""
    factory.setdefault("max_attempts", 1)
    return ProviderContext(
        client=ClientFactory(default_region=REGION, **factory),
        default_region=REGION,
        json_client=JsonClientFactory.from_environment(default_region=REGION, **factory),
    )


def configured(provider_type: Type[P], config: Any = None, **factory: Any) -> P:
    """A ``provider_type`` built from ``config`` with ``context(**factory)``."""
    provider: P = provider_type.from_config(config, context(**factory))
    return provider


def entry_point_provider(plugin: str, route: str) -> Type[Provider]:
    """The provider type on ``route`` once the ``plugin`` entry point is loaded as the core
    loads it; fails if the plugin is broken."""
    pm = make_plugin_manager()
    broken = load_plugins(pm, allow=[plugin])
    assert broken == []
    return collect_providers(pm, broken).by_route[route].provider_type


def routed(provider: Provider, name: str, params: Mapping[str, str]) -> Item:
    """``provider``'s Item for a request ``GET /<route>?name=<name>&<params>``, through the
    core's router (which refuses the query parameters the provider does not declare)."""
    from cachelayer.core.router import Router

    return Router({provider.route: provider}).resolve(provider.route, {"name": name, **params})[1]


def assert_imports_without_boto3(module: str) -> None:
    """Importing ``module`` in a fresh interpreter imports neither boto3 nor botocore."""
    code = (
        f"import sys, {module}\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
