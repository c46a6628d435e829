"""Plugin loading from entry points: discovery, broken plugins, clashes, allow- and block-lists.

Each test installs throw-away distributions the way pip would leave them (a ``*.dist-info``
directory with ``METADATA`` and ``entry_points.txt`` next to the plugin module) in a temporary
directory put on ``sys.path``, so ``importlib.metadata`` and pluggy see real entry points.
"""

from __future__ import annotations

import logging
import sys
import textwrap
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional

import pytest

from cachelayer.errors import ConfigError, PluginError
from cachelayer.plugins import collect_providers, discover, load_plugins, make_plugin_manager

GOOD_MODULE = """
import cachelayer
from cachelayer import Item, Value

class {cls}:
    name = {name!r}
    route = {route!r}
    services = ("s3",)
    config_schema = None

    @classmethod
    def from_config(cls, config, context):
        return cls()

    def declared(self):
        return []

    def resolve(self, name, params):
        return Item(route=self.route, name=name)

    def fetch(self, item):
        return Value(body=b"x")

@cachelayer.hookimpl
def cachelayer_providers():
    return [{cls}]
"""


class Site:
    """A temporary site directory on ``sys.path`` where tests install distributions."""

    def __init__(self, root: Path, tag: str) -> None:
        self.root = root
        self.tag = tag
        self.modules: List[str] = []

    def module_name(self, base: str) -> str:
        """A module name unique to this test, so no earlier import is reused."""
        return f"{base}_{self.tag}"

    def install(
        self,
        dist: str,
        entry_points: Dict[str, str],
        modules: Dict[str, str],
        version: str = "1.0",
        root: Optional[Path] = None,
    ) -> None:
        """Write ``modules`` and a dist-info for ``dist`` whose ``cachelayer`` group is ``entry_points``."""
        root = root or self.root
        for module, source in modules.items():
            (root / f"{module}.py").write_text(textwrap.dedent(source))
            self.modules.append(module)
        info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
        (info / "entry_points.txt").write_text(f"[cachelayer]\n{lines}")

    def good(self, dist: str, ep: str, name: str, route: Optional[str] = None) -> str:
        """Install a working provider plugin; return its module name."""
        module = self.module_name(f"plug_{ep}")
        cls = f"Provider_{ep}"
        source = GOOD_MODULE.format(cls=cls, name=name, route=route or name)
        self.install(dist, {ep: module}, {module: source})
        return module


@pytest.fixture()
def site(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[Site]:
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    s = Site(root, tag=str(abs(hash(request.node.nodeid)) % 10**8))
    yield s
    for module in s.modules:
        sys.modules.pop(module, None)


class TestDiscovery:
    def test_entry_point_plugin_is_collected_with_its_distribution(self, site: Site) -> None:
        """A plugin's provider is indexed by name and route, with its distribution and version."""
        ep = site.module_name("alpha")
        site.good("cachelayer-alpha", ep, ep)
        _, registry = discover(allow=[ep])
        info = registry.by_name[ep]
        assert registry.by_route[ep] is info
        assert (info.plugin, info.distribution, info.version) == (ep, "cachelayer-alpha", "1.0")
        assert registry.names() == [ep]

    def test_same_distribution_twice_on_sys_path_loads_once(
        self, site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A distribution visible from two sys.path entries is one plugin, not a clash with itself."""
        ep = site.module_name("twice")
        site.good("cachelayer-twice", ep, ep)
        second = tmp_path / "site2"
        second.mkdir()
        site.install("cachelayer-twice", {ep: site.module_name(f"plug_{ep}")}, {}, root=second)
        monkeypatch.syspath_prepend(str(second))
        _, registry = discover(allow=[ep])
        assert registry.names() == [ep]

    def test_loading_scans_the_installed_distributions_once(
        self, site: Site, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Every plugin is loaded from one scan of the installed distributions, not one scan per
        entry point (the dev venv holds ~100 distributions; startup pays for each scan)."""
        from importlib import metadata

        from cachelayer import entrypoints, plugins

        names = [site.module_name(n) for n in ("scan_a", "scan_b", "scan_c")]
        for name in names:
            site.good(f"cachelayer-{name}", name, name)
        scans: List[str] = []
        real = entrypoints.entry_points

        def counting(group: str, path: Any = None) -> List[entrypoints.EntryPoint]:
            scans.append(group)
            return real(group, path)

        def importlib_scan(**kwargs: Any) -> Iterable[metadata.Distribution]:
            scans.append("importlib.metadata")
            return []

        monkeypatch.setattr(plugins, "entry_points", counting)
        # The venv's directories are plain: cachelayer.entrypoints reads them itself.
        monkeypatch.setattr(metadata, "distributions", importlib_scan)
        pm = make_plugin_manager()
        assert load_plugins(pm, allow=names) == []
        assert scans == ["cachelayer"]
        registry = collect_providers(pm)
        assert sorted(registry.names()) == sorted(names)
        assert {registry.by_name[n].distribution for n in names} == {
            f"cachelayer-{n}" for n in names
        }


class TestBrokenPlugin:
    def test_import_failure_is_reported_by_name_and_skipped(
        self, site: Site, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A plugin whose import raises is logged and returned as broken; the others still load."""
        good = site.module_name("good")
        site.good("cachelayer-good", good, good)
        bad = site.module_name("bad")
        site.install(
            "cachelayer-bad",
            {bad: site.module_name("plug_bad")},
            {site.module_name("plug_bad"): "raise ImportError('needs libfoo')\n"},
        )
        pm = make_plugin_manager()
        with caplog.at_level(logging.WARNING, logger="cachelayer.plugins"):
            broken = load_plugins(pm, allow=[good, bad])
        assert [(b.plugin, b.distribution) for b in broken] == [(bad, "cachelayer-bad")]
        assert "ImportError: needs libfoo" in broken[0].error
        assert bad in caplog.text and "cachelayer-bad" in caplog.text
        registry = collect_providers(pm, broken)
        assert registry.names() == [good]
        assert registry.broken_for(bad) is broken[0]
        assert registry.broken_for(good) is None

    def test_missing_module_is_broken_not_fatal(self, site: Site) -> None:
        """An entry point naming a module that does not exist is a broken plugin."""
        ep = site.module_name("ghost")
        site.install("cachelayer-ghost", {ep: "no_such_module_anywhere"}, {})
        _, registry = discover(allow=[ep])
        assert registry.names() == []
        assert registry.broken_for(ep) is not None
        assert "ModuleNotFoundError" in registry.broken_for(ep).error  # type: ignore[union-attr]

    def test_raising_providers_hook_is_broken(self, site: Site) -> None:
        """A plugin whose cachelayer_providers() raises is reported broken with the error."""
        ep = site.module_name("raiser")
        module = site.module_name("plug_raiser")
        site.install(
            "cachelayer-raiser",
            {ep: module},
            {
                module: """
                import cachelayer

                @cachelayer.hookimpl
                def cachelayer_providers():
                    raise RuntimeError("boom at startup")
            """
            },
        )
        _, registry = discover(allow=[ep])
        assert registry.names() == []
        error = registry.broken_for(ep).error  # type: ignore[union-attr]
        assert "cachelayer_providers() raised RuntimeError: boom at startup" in error

    def test_provider_lacking_attributes_is_broken(self, site: Site) -> None:
        """A provider without route and fetch is reported broken, naming what it lacks."""
        ep = site.module_name("partial")
        module = site.module_name("plug_partial")
        site.install(
            "cachelayer-partial",
            {ep: module},
            {
                module: """
                import cachelayer

                class Half:
                    name = "half"
                    services = ()
                    @classmethod
                    def from_config(cls, config, context):
                        return cls()
                    def declared(self):
                        return []
                    def resolve(self, name, params):
                        raise NotImplementedError

                @cachelayer.hookimpl
                def cachelayer_providers():
                    return [Half]
            """
            },
        )
        _, registry = discover(allow=[ep])
        assert "half" not in registry.by_name
        error = registry.broken_for(ep).error  # type: ignore[union-attr]
        assert "lacks route, fetch" in error


class TestClashes:
    def test_two_providers_with_one_name_fail_naming_both(self, site: Site) -> None:
        """Two distributions claiming one config section raise PluginError naming both and the fix."""
        one, two = site.module_name("one"), site.module_name("two")
        site.good("cachelayer-one", one, "shared", route=f"{one}-route")
        site.good("cachelayer-two", two, "shared", route=f"{two}-route")
        with pytest.raises(PluginError) as info:
            discover(allow=[one, two])
        message = str(info.value)
        assert "name 'shared'" in message
        assert "'cachelayer-one'" in message and "'cachelayer-two'" in message
        assert "CACHE_EXTENSION_DISABLE_PLUGINS" in message

    def test_two_providers_with_one_route_fail_naming_both(self, site: Site) -> None:
        """Two distributions claiming one route raise PluginError naming both."""
        one, two = site.module_name("r1"), site.module_name("r2")
        site.good("cachelayer-r1", one, one, route="same-route")
        site.good("cachelayer-r2", two, two, route="same-route")
        with pytest.raises(PluginError, match="route 'same-route'") as info:
            discover(allow=[one, two])
        assert "'cachelayer-r1'" in str(info.value) and "'cachelayer-r2'" in str(info.value)

    def test_blocking_one_of_two_clashing_plugins_resolves_the_clash(self, site: Site) -> None:
        """Disabling one of two clashing plugins leaves the other serving the name."""
        one, two = site.module_name("d1"), site.module_name("d2")
        site.good("cachelayer-d1", one, "dupe", route="dupe")
        site.good("cachelayer-d2", two, "dupe", route="dupe")
        _, registry = discover(allow=[one, two], deny=[two])
        assert registry.by_name["dupe"].distribution == "cachelayer-d1"


class TestAllowAndBlockLists:
    def test_allow_list_loads_only_the_named_plugins(self, site: Site) -> None:
        """With an allow-list, plugins not on it are blocked and never imported."""
        keep, drop = site.module_name("keep"), site.module_name("drop")
        site.good("cachelayer-keep", keep, keep)
        drop_module = site.good("cachelayer-drop", drop, drop)
        pm, registry = discover(allow=[keep])
        assert registry.names() == [keep]
        assert pm.is_blocked(drop)
        assert drop_module not in sys.modules

    def test_block_list_skips_the_named_plugins(self, site: Site) -> None:
        """A denied plugin is blocked and not imported; the others load."""
        keep, drop = site.module_name("bkeep"), site.module_name("bdrop")
        site.good("cachelayer-bkeep", keep, keep)
        drop_module = site.good("cachelayer-bdrop", drop, drop)
        pm, registry = discover(allow=[keep, drop], deny=[drop])
        assert registry.names() == [keep]
        assert pm.is_blocked(drop)
        assert drop_module not in sys.modules

    def test_denied_broken_plugin_is_not_reported(self, site: Site) -> None:
        """Blocking a broken plugin keeps it from being imported, so it is not reported as broken."""
        bad = site.module_name("deniedbad")
        module = site.module_name("plug_deniedbad")
        site.install("cachelayer-deniedbad", {bad: module}, {module: "raise ImportError('x')\n"})
        _, registry = discover(allow=[bad], deny=[bad])
        assert registry.broken == []


class TestBrokenPluginAtStartup:
    """What the application does with a broken plugin, depending on whether the config uses it."""

    @staticmethod
    def _start(site: Site, tmp_path: Path, config: str, allow: List[str]) -> object:
        from cachelayer.core.app import Application

        path = tmp_path / "config.yaml"
        path.write_text(config)
        env = {"CACHE_EXTENSION_PLUGINS": ",".join(allow), "CACHE_EXTENSION_AUTH": "none"}

        def no_clients(service: str, region: Optional[str] = None) -> object:
            raise AssertionError("startup makes no AWS calls")

        return Application.from_environment(env, config_path=str(path), client_factory=no_clients)

    def test_config_using_a_broken_plugin_fails_naming_it_and_its_error(
        self, site: Site, tmp_path: Path
    ) -> None:
        """A section owned by a plugin that failed to import is a startup error with the cause."""
        bad = site.module_name("usedbad")
        module = site.module_name("plug_usedbad")
        site.install(
            "cachelayer-usedbad", {bad: module}, {module: "raise ImportError('needs libfoo')\n"}
        )
        with pytest.raises((ConfigError, PluginError)) as info:
            self._start(site, tmp_path, f"{bad}:\n  - x: 1\n", [bad])
        message = str(info.value)
        assert bad in message
        assert "needs libfoo" in message
        assert "cachelayer-usedbad" in message

    def test_config_not_using_a_broken_plugin_starts(self, site: Site, tmp_path: Path) -> None:
        """A broken plugin whose section the config does not use does not stop startup."""
        good = site.module_name("startgood")
        site.good("cachelayer-startgood", good, good)
        bad = site.module_name("unusedbad")
        module = site.module_name("plug_unusedbad")
        site.install("cachelayer-unusedbad", {bad: module}, {module: "raise ImportError('x')\n"})
        app = self._start(site, tmp_path, "cache:\n  ttl: 5m\n", [good, bad])
        registry = app.registry  # type: ignore[attr-defined]
        assert registry.names() == [good]
        assert registry.broken_for(bad) is not None
