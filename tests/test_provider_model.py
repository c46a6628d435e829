"""The provider model: provider types with static attributes, built ready by ``from_config``,
their query parameters enforced by the router, and the one typed caller of the hooks."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple, Type

import attrs
import pytest

import cachelayer
from cachelayer import BadRequestError, Item, PluginError, ProviderContext, Value
from cachelayer.core.app import Application
from cachelayer.hooks import PluginHooks
from cachelayer.plugins import collect_providers, make_plugin_manager
from cachelayer.providers.dynamodb import DynamoDbProvider, DynamoItem
from cachelayer.providers.secrets import SecretGroup, SecretsManagerProvider
from cachelayer.providers.ssm import ParameterGroup, ParameterStoreProvider


@attrs.frozen
class PaintProvider:
    """A third party's provider: ``GET /paint?name=<wall>[&colour=<c>]``, no AWS at all."""

    name: ClassVar[str] = "paint"
    route: ClassVar[str] = "paint"
    services: ClassVar[Tuple[str, ...]] = ()
    config_schema: ClassVar[Any] = None
    query_parameters: ClassVar[Tuple[str, ...]] = ("colour",)
    ttl_environment_variable: ClassVar[Optional[str]] = "PAINT_TTL"

    seen: List[Mapping[str, str]] = attrs.field(factory=list, eq=False)

    @classmethod
    def from_config(cls, config: Any, context: ProviderContext) -> PaintProvider:
        return cls()

    def declared(self) -> Sequence[Item]:
        return []

    def resolve(self, name: str, params: Mapping[str, str]) -> Item:
        self.seen.append(dict(params))
        return Item(self.route, name, variant=tuple(sorted(params.items())))

    def fetch(self, item: Item) -> Value:
        return Value(b"white")


class PlainProvider(PaintProvider):
    """The same, declaring no query parameter and no TTL variable (the defaults' meaning)."""

    name: ClassVar[str] = "plain"
    route: ClassVar[str] = "plain"
    query_parameters: ClassVar[Tuple[str, ...]] = ()
    ttl_environment_variable: ClassVar[Optional[str]] = None


class Contributes:
    """A plugin object contributing ``types`` (or raising ``error``) from its providers hook."""

    def __init__(self, *types: Any, error: Optional[Exception] = None) -> None:
        self.types = types
        self.error = error

    @cachelayer.hookimpl
    def cachelayer_providers(self) -> List[Any]:
        if self.error is not None:
            raise self.error
        return list(self.types)


def start(tmp_path: Path, pm: Any, env: Optional[Dict[str, str]] = None) -> Application:
    path = tmp_path / "config.yaml"
    path.write_text("cache:\n  ttl: 5m\n")
    environ = {"CACHE_EXTENSION_AUTH": "none", "CACHE_EXTENSION_PLUGINS": "none-installed"}
    environ.update(env or {})
    return Application.from_environment(
        environ, config_path=str(path), pm=pm, client_factory=lambda *a: None
    )


@pytest.fixture()
def app(tmp_path: Path) -> Any:
    pm = make_plugin_manager()
    pm.register(Contributes(PaintProvider, PlainProvider), name="paint")
    application = start(tmp_path, pm, {"PAINT_TTL": "42"})
    yield application
    application.close()


class TestQueryParameters:
    def test_router_refuses_a_parameter_the_provider_does_not_declare(self, app: Any) -> None:
        """An undeclared query parameter is a 400 naming it and the declared ones; the
        provider's resolve is never called."""
        with pytest.raises(BadRequestError) as info:
            app.router.resolve("paint", {"name": "hall", "size": "2", "colour": "red"})
        assert str(info.value) == (
            "unknown query parameter(s) 'size' for /paint; allowed: name, colour"
        )
        assert app.providers["paint"].seen == []

    def test_a_provider_declaring_none_takes_only_name(self, app: Any) -> None:
        """Without query_parameters, any parameter besides name is refused."""
        with pytest.raises(BadRequestError, match="'colour' for /plain; only name= is accepted"):
            app.router.resolve("plain", {"name": "hall", "colour": "red"})

    def test_resolve_gets_the_declared_parameters_without_name(self, app: Any) -> None:
        """params holds the other query parameters, not name (as the guide says)."""
        provider, item = app.router.resolve("paint", {"name": "hall", "colour": "red"})
        assert provider.seen == [{"colour": "red"}]
        assert item.variant == (("colour", "red"),)


class TestBornConfigured:
    def test_the_app_builds_one_provider_per_type(self, app: Any) -> None:
        """The registry holds the types; the app holds what their from_config built."""
        assert app.registry.by_name["paint"].provider_type is PaintProvider
        assert type(app.providers["paint"]) is PaintProvider
        assert app.router.provider("paint") is app.providers["paint"]

    @pytest.mark.parametrize(
        ("provider_type", "config"),
        [
            (ParameterStoreProvider, [ParameterGroup(names=["a"])]),
            (SecretsManagerProvider, [SecretGroup(names=["a"])]),
            (
                DynamoDbProvider,
                [DynamoItem(table="t", hashkey="k", hashkeytype="S", hashkeyvalue="1")],
            ),
        ],
    )
    def test_built_in_providers_are_frozen(self, provider_type: Any, config: Any) -> None:
        """from_config returns a ready provider that cannot be rebound afterwards."""
        provider = provider_type.from_config(config, ProviderContext(client=lambda *a: None))
        assert [item.name for item in provider.declared()] in (["a"], ["t-1"])
        field = attrs.fields(provider_type)[0].name
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            setattr(provider, field, None)

    def test_provider_declared_ttl_variable_sets_its_section(self, app: Any) -> None:
        """A third party's ttl_environment_variable works as SSM_PARAMETER_STORE_TTL does."""
        assert app.settings.ttl_for("paint") == 42.0
        assert app.settings.ttl_for("plain") == 300.0

    def test_query_parameters_given_as_one_string_are_a_broken_plugin(self) -> None:
        """``query_parameters = "colour"`` (not a tuple) is reported, not read letter by letter."""
        typo = type("Typo", (PlainProvider,), {"query_parameters": "colour"})
        pm = make_plugin_manager()
        pm.register(Contributes(typo), name="typo")
        broken = collect_providers(pm).broken_for("typo")
        assert broken is not None and "Typo.query_parameters must be a tuple" in broken.error

    def test_an_instance_instead_of_a_type_is_a_broken_plugin(self) -> None:
        """A plugin still returning instances is reported broken, saying to return classes."""
        pm = make_plugin_manager()
        pm.register(Contributes(PaintProvider()), name="old-style")
        registry = collect_providers(pm)
        assert registry.names() == []
        broken = registry.broken_for("old-style")
        assert broken is not None and "not a provider type" in broken.error
        assert "[PaintProvider]" in broken.error


class Recorder:
    """A plugin implementing every hook, recording the calls."""

    def __init__(self) -> None:
        self.calls: List[Tuple[str, Any]] = []

    @cachelayer.hookimpl
    def cachelayer_providers(self) -> List[Type[PaintProvider]]:
        self.calls.append(("providers", None))
        return [PaintProvider]

    @cachelayer.hookimpl
    def cachelayer_shared_stores(self) -> List[Any]:
        self.calls.append(("shared_stores", None))
        return []

    @cachelayer.hookimpl
    def cachelayer_startup(self, providers: Mapping[str, Any]) -> None:
        self.calls.append(("startup", sorted(providers)))

    @cachelayer.hookimpl
    def cachelayer_invoke(self, event: Mapping[str, Any]) -> None:
        self.calls.append(("invoke", event["requestId"]))

    @cachelayer.hookimpl
    def cachelayer_shutdown(self, reason: str) -> None:
        self.calls.append(("shutdown", reason))


class Failing:
    """A plugin whose lifecycle hooks raise, or block (shutdown) until released."""

    def __init__(self) -> None:
        self.release = threading.Event()

    @cachelayer.hookimpl
    def cachelayer_startup(self, providers: Mapping[str, Any]) -> None:
        raise RuntimeError("startup broke")

    @cachelayer.hookimpl
    def cachelayer_shutdown(self, reason: str) -> None:
        self.release.wait(5)


class TestHookCaller:
    def test_each_hook_reaches_the_plugin_with_its_arguments(self, tmp_path: Path) -> None:
        """The app finds providers and announces startup, INVOKE and SHUTDOWN through the
        typed caller; shared_stores answers through it too."""
        pm = make_plugin_manager()
        recorder = Recorder()
        pm.register(recorder, name="recorder")
        application = start(tmp_path, pm)
        try:
            application.on_invoke({"requestId": "r-1"})
            application.on_shutdown("spindown", timeout=1.0)
        finally:
            application.close()
        answers = PluginHooks(pm).shared_stores()
        assert [(a.plugin_name, a.returned, a.error) for a in answers] == [("recorder", (), None)]
        assert recorder.calls == [
            ("providers", None),
            ("startup", ["paint"]),
            ("invoke", "r-1"),
            ("shutdown", "spindown"),
            ("shared_stores", None),
        ]

    def test_a_raising_hook_is_logged_and_the_others_still_run(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """One plugin's startup hook raising is logged with its name; the next one is called."""
        pm = make_plugin_manager()
        recorder = Recorder()
        pm.register(recorder, name="recorder")
        pm.register(Failing(), name="failing")
        with caplog.at_level(logging.ERROR, logger="cachelayer"):
            PluginHooks(pm).startup(providers={})
        assert "plugin 'failing': its cachelayer_startup hook raised" in caplog.text
        assert recorder.calls == [("startup", [])]

    def test_a_blocking_shutdown_hook_is_left_behind(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Shutdown waits at most its timeout for a blocking hook; the other hooks still ran."""
        pm = make_plugin_manager()
        recorder, failing = Recorder(), Failing()
        pm.register(recorder, name="recorder")
        pm.register(failing, name="failing")
        try:
            assert PluginHooks(pm).shutdown("timeout", timeout=0.2) is False
        finally:
            failing.release.set()
        assert "plugin 'failing': its cachelayer_shutdown hook did not return" in caplog.text
        assert recorder.calls == [("shutdown", "timeout")]


class TestBrokenPluginThroughTheHook:
    def test_a_raising_providers_hook_is_broken_for_its_section_only(self) -> None:
        """A plugin whose providers hook raises is reported by name; the others still load."""
        pm = make_plugin_manager()
        pm.register(Contributes(error=RuntimeError("no licence")), name="weather")
        pm.register(Contributes(PaintProvider), name="paint")
        registry = collect_providers(pm)
        assert registry.names() == ["paint"]
        broken = registry.broken_for("weather")
        assert broken is not None
        assert broken.error == "cachelayer_providers() raised RuntimeError: no licence"
        assert registry.broken_for("paint") is None

    def test_two_plugins_claiming_one_route_still_fail_naming_both(self) -> None:
        """Duplicate names found through the hook raise PluginError naming both types."""
        pm = make_plugin_manager()
        pm.register(Contributes(PaintProvider), name="one")
        pm.register(Contributes(PaintProvider), name="two")
        with pytest.raises(PluginError, match="two providers claim the name 'paint'") as info:
            collect_providers(pm)
        assert "(plugin 'one')" in str(info.value) and "(plugin 'two')" in str(info.value)
