"""What the built-in providers' tests share: a configured provider, its entry point, its imports."""

from __future__ import annotations

import subprocess
import sys
from typing import Any, Protocol, TypeVar

from cachelayer import Provider, ProviderContext
from cachelayer.aws import ClientFactory
from cachelayer.awsjson import JsonClientFactory
from cachelayer.plugins import collect_providers, load_plugins, make_plugin_manager

REGION = "us-west-2"


class Configurable(Protocol):
    def configure(self, config: Any, context: ProviderContext) -> None: ...


P = TypeVar("P", bound=Configurable)


def configured(provider: P, config: Any = None, **factory: Any) -> P:
    """``provider`` configured with ``config`` and fresh client factories (one attempt, fast),
    reading the environment as it is now; ``factory`` goes to both ``JsonClientFactory`` (what
    the built-in providers use) and the boto3 ``ClientFactory``."""
    factory.setdefault("max_attempts", 1)
    provider.configure(
        config,
        ProviderContext(
            client=ClientFactory(default_region=REGION, **factory),
            default_region=REGION,
            json_client=JsonClientFactory.from_environment(default_region=REGION, **factory),
        ),
    )
    return provider


def entry_point_provider(plugin: str, route: str) -> Provider:
    """The provider on ``route`` once the ``plugin`` entry point is loaded as the core loads it;
    fails if the plugin is broken."""
    pm = make_plugin_manager()
    broken = load_plugins(pm, allow=[plugin])
    assert broken == []
    return collect_providers(pm, broken).by_route[route].provider


def assert_imports_without_boto3(module: str) -> None:
    """Importing ``module`` in a fresh interpreter imports neither boto3 nor botocore."""
    code = (
        f"import sys, {module}\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
