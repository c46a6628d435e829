"""Plugin names: the built-ins' entry points are their sections, the filters take section names
and the old names, an unknown name is a warning, a filtered-out section says so."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Dict, Optional

import pytest

from cachelayer.cli import main as cli_main
from cachelayer.core.app import Application
from cachelayer.errors import ConfigError
from cachelayer.plugins import discover, filter_warnings

BUILT_INS = {"parameters", "secrets", "dynamodb"}


def no_clients(service: str, region: Optional[str] = None) -> object:
    raise AssertionError("startup makes no AWS calls")


def start(tmp_path: Path, config: str, env: Dict[str, str]) -> Application:
    path = tmp_path / "config.yaml"
    path.write_text(config)
    return Application.from_environment(
        {"CACHE_EXTENSION_AUTH": "none", **env}, config_path=str(path), client_factory=no_clients
    )


class TestEntryPointNames:
    def test_built_in_entry_points_are_named_after_their_sections(self) -> None:
        """The core's distribution registers parameters, secrets and dynamodb, as the provider
        guide tells authors to name theirs."""
        dist = metadata.distribution("cachelayer")
        names = {ep.name for ep in dist.entry_points if ep.group == "cachelayer"}
        assert names == BUILT_INS
        _, registry = discover(allow=sorted(BUILT_INS))
        for name, info in registry.by_name.items():
            assert info.plugin == name


class TestFilters:
    @pytest.mark.parametrize("allow", [["parameters"], ["ssm"]])
    def test_allow_list_takes_the_section_or_the_old_name(self, allow: list) -> None:
        """CACHE_EXTENSION_PLUGINS=parameters and the old =ssm load the same provider."""
        _, registry = discover(allow=allow)
        assert registry.names() == ["parameters"]

    @pytest.mark.parametrize("deny", [["parameters"], ["ssm"]])
    def test_deny_list_takes_the_section_or_the_old_name(self, deny: list) -> None:
        """CACHE_EXTENSION_DISABLE_PLUGINS=parameters and =ssm both keep SSM out."""
        _, registry = discover(allow=sorted(BUILT_INS), deny=deny)
        assert registry.names() == ["dynamodb", "secrets"]

    def test_unknown_name_is_a_warning_naming_it_and_the_installed(self) -> None:
        """A name no installed plugin has is a warning (a typo would otherwise load nothing)."""
        warnings = filter_warnings(["parameters", "paramters"], ["ssm", "nothing"])
        assert len(warnings) == 2
        assert "CACHE_EXTENSION_PLUGINS names 'paramters'" in warnings[0]
        assert "CACHE_EXTENSION_DISABLE_PLUGINS names 'nothing'" in warnings[1]
        assert "parameters" in warnings[0].split("installed:")[1]

    def test_unknown_name_reaches_the_settings_warnings(self, tmp_path: Path) -> None:
        """The application logs (and check-config prints) the unknown-name warning."""
        app = start(tmp_path, "cache:\n  ttl: 5m\n", {"CACHE_EXTENSION_PLUGINS": "secrets,secrest"})
        try:
            assert any("'secrest'" in w for w in app.settings.warnings)
            assert app.registry.names() == ["secrets"]
        finally:
            app.close()

    def test_check_config_prints_the_warning(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`cachelayer check-config` shows the unknown plugin name."""
        path = tmp_path / "config.yaml"
        path.write_text("cache:\n  ttl: 5m\n")
        monkeypatch.setenv("CACHE_EXTENSION_PLUGINS", "dynamodb,dynamo")
        assert cli_main(["check-config", str(path)]) == 0
        assert "'dynamo', which is not an installed plugin" in capsys.readouterr().out


class TestFilteredOutSection:
    @pytest.mark.parametrize(
        "env",
        [
            {"CACHE_EXTENSION_DISABLE_PLUGINS": "parameters"},
            {"CACHE_EXTENSION_PLUGINS": "secrets"},
        ],
    )
    def test_section_of_a_filtered_out_plugin_says_so(
        self, tmp_path: Path, env: Dict[str, str]
    ) -> None:
        """A section whose provider is installed but filtered out is an error saying that, and
        naming the filter, not "is the provider package installed?"."""
        with pytest.raises(ConfigError) as info:
            start(tmp_path, "parameters:\n  - names: [a]\n", env)
        message = str(info.value)
        assert "installed but not loaded" in message
        assert next(iter(env)) in message
        assert "is the provider package installed" not in message
        assert "config.yaml:1" in message
