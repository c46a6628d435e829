"""What a user reads: provider config errors with file and line, the CLI's help and reports,
the log style, the public face's dir(), and the small conveniences of the operations routes."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest

import cachelayer
from cachelayer.cli import build_parser, format_size
from cachelayer.cli import main as cli_main
from cachelayer.core.app import Application
from cachelayer.errors import ConfigError
from cachelayer.extension import extension_name
from cachelayer.logs import setup_logging
from cachelayer.plugins import make_plugin_manager


class PickyProvider:
    """Takes a list of mappings and rejects a city it does not know, as a third party might."""

    name = "weather"
    route = "weather"
    services = ()
    config_schema = List[Dict[str, str]]
    error: Exception = ValueError("set by each test")

    @classmethod
    def from_config(cls, config: Any, context: Any) -> PickyProvider:
        raise cls.error

    def declared(self) -> list:
        return []

    def resolve(self, name: str, params: Any) -> cachelayer.Item:
        return cachelayer.Item(route=self.route, name=name)

    def fetch(self, item: cachelayer.Item) -> cachelayer.Value:
        return cachelayer.Value(body=b"")


class Plugin:
    def __init__(self, error: Exception) -> None:
        # A subclass per test: the error is the type's, as from_config is a classmethod.
        self.provider = type("PickyProvider", (PickyProvider,), {"error": error})

    @cachelayer.hookimpl
    def cachelayer_providers(self) -> list:
        return [self.provider]


def start_with(tmp_path: Path, error: Exception) -> ConfigError:
    path = tmp_path / "config.yaml"
    path.write_text("cache:\n  ttl: 5m\nweather:\n  - city: Oslo\n  - city: Atlantis\n")
    pm = make_plugin_manager()
    pm.register(Plugin(error), name="weather")
    with pytest.raises(ConfigError) as info:
        Application.from_environment(
            {"CACHE_EXTENSION_AUTH": "none"},
            config_path=str(path),
            pm=pm,
            client_factory=lambda service, region=None: None,
        )
    return info.value


class TestProviderConfigErrors:
    def test_provider_config_error_carries_file_line_and_key(self, tmp_path: Path) -> None:
        """A provider's ConfigError naming a key inside its section points at that line."""
        exc = start_with(tmp_path, ConfigError("unknown city 'Atlantis'", key="1.city"))
        assert (exc.line, exc.key) == (5, "weather.1.city")
        assert str(exc).startswith(f"{tmp_path / 'config.yaml'}:5: weather.1.city: ")

    def test_bracketed_key_as_the_core_writes_them(self, tmp_path: Path) -> None:
        """A key written the core's way (``[1].city``) points at the same line."""
        exc = start_with(tmp_path, ConfigError("unknown city", key="[1].city"))
        assert (exc.line, exc.key) == (5, "weather[1].city")

    def test_provider_config_error_without_key_points_at_the_section(self, tmp_path: Path) -> None:
        """Without a key, the error points at the provider's section."""
        exc = start_with(tmp_path, ConfigError("needs an API key"))
        assert exc.line == 3 and exc.key == "weather"

    def test_provider_value_error_points_at_the_section(self, tmp_path: Path) -> None:
        """A ValueError from from_config() is a ConfigError at the section's line."""
        exc = start_with(tmp_path, ValueError("bad"))
        assert exc.line == 3 and "rejected its configuration: bad" in str(exc)


class TestCommandLine:
    def test_bare_command_prints_help(self, capsys: pytest.CaptureFixture[str]) -> None:
        """`cachelayer` alone prints the help, commands included."""
        assert cli_main([]) == 2
        out = capsys.readouterr().out
        assert out.startswith("usage: cachelayer") and "check-config" in out and "layer" in out

    def test_every_subcommand_has_a_description(self) -> None:
        """Each subcommand's --help opens with a description, not only its usage line."""
        import argparse

        def walk(parser: argparse.ArgumentParser, path: str) -> List[tuple]:
            found = [(path, parser)]
            for action in parser._actions:
                if isinstance(action, argparse._SubParsersAction):
                    for name, child in action.choices.items():
                        found += walk(child, f"{path} {name}")
            return found

        parsers = walk(build_parser(), "cachelayer")
        assert len(parsers) >= 9
        missing = [path for path, p in parsers if not (p.description or "").strip()]
        assert not missing, f"no description: {missing}"

    def test_check_config_prints_sizes_in_config_units_and_regions(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """check-config writes 32MiB (not 33554432) and each item's region, the default's too."""
        path = tmp_path / "config.yaml"
        path.write_text(
            "cache:\n  max_bytes: 32MiB\nparameters:\n  - region: eu-west-1\n    names: [a]\n"
            "  - names: [b]\n"
        )
        monkeypatch.setenv("AWS_REGION", "us-east-2")
        assert cli_main(["check-config", str(path)]) == 0
        out = capsys.readouterr().out
        assert "max_bytes 32MiB" in out
        assert "a  ttl 1h0m0s  region eu-west-1" in out
        assert "b  ttl 1h0m0s  region us-east-2 (the default)" in out

    @pytest.mark.parametrize(
        ("size", "text"),
        [
            (64 * 1024**2, "64MiB"),
            (1_500_000, "1500KB"),
            (1536, "1536 bytes"),
            (2 * 1024**3, "2GiB"),
        ],
    )
    def test_sizes(self, size: int, text: str) -> None:
        """Sizes are written as the config accepts them."""
        assert format_size(size) == text

    @pytest.mark.parametrize("command", ["check-config", "serve"])
    def test_missing_config_path_is_named(self, tmp_path: Path, command: str) -> None:
        """check-config and serve name the path they were given when it does not exist."""
        missing = tmp_path / "nope" / "config.yaml"
        args = (
            [command, str(missing)]
            if command == "check-config"
            else [command, "--config", str(missing)]
        )
        done = subprocess.run(
            [sys.executable, "-m", "cachelayer", *args],
            capture_output=True,
            text=True,
            timeout=60,
            env={"CACHE_EXTENSION_AUTH": "none", "PATH": "/usr/bin:/bin"},
        )
        assert done.returncode == 2
        assert f"{missing}: config file not found" in done.stderr


class TestLogs:
    def test_aws_libraries_stay_quiet_at_info(self) -> None:
        """At INFO, botocore's chatter ("Found credentials...") is not logged; warnings are."""
        try:
            setup_logging("INFO")
            assert not logging.getLogger("botocore.credentials").isEnabledFor(logging.INFO)
            assert logging.getLogger("botocore").isEnabledFor(logging.WARNING)
            assert logging.getLogger().isEnabledFor(logging.INFO)
        finally:
            setup_logging("WARNING")

    def test_serve_startup_warnings_use_the_log_format(self, tmp_path: Path) -> None:
        """serve's first lines are in the house log style, and it announces itself once."""
        import os
        import signal
        import time

        from cachelayer.testing.moto import free_port

        path = tmp_path / "config.yaml"
        path.write_text("cache:\n  ttl: 5m\n")
        port = free_port()
        env = dict(os.environ, CACHE_EXTENSION_UNKNOWN_THING="1", CACHE_EXTENSION_AUTH="none")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cachelayer",
                "serve",
                "--config",
                str(path),
                "--port",
                str(port),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            deadline = time.monotonic() + 30
            import socket

            while time.monotonic() < deadline:
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        break
                time.sleep(0.05)
        finally:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=30)
        lines = [line for line in err.splitlines() if line.strip()]
        warning = next(line for line in lines if "CACHE_EXTENSION_UNKNOWN_THING" in line)
        assert warning.startswith("[cachelayer] WARNING ")
        assert all(line.startswith("[cachelayer] ") for line in lines), lines
        assert sum("127.0.0.1:" in line for line in lines + out.splitlines()) == 1


class TestPublicFace:
    def test_dir_shows_only_the_api(self) -> None:
        """dir(cachelayer) lists __all__, not typing helpers or the lazy loader."""
        assert dir(cachelayer) == sorted(cachelayer.__all__)
        assert "TYPE_CHECKING" not in dir(cachelayer) and "importlib" not in dir(cachelayer)


class TestExtensionName:
    def test_name_from_argv_then_environment_then_default(self) -> None:
        """--name wins; CACHE_EXTENSION_NAME names a launcher of one's own; else cachelayer."""
        env = {"CACHE_EXTENSION_NAME": "my-cache"}
        assert extension_name(["--name", "x"], env) == "x"
        assert extension_name([], env) == "my-cache"
        assert extension_name([], {}) == "cachelayer"


class TestInvalidateRoute:
    def test_route_with_or_without_slash(self, aws: str, tmp_path: Path) -> None:
        """POST /-/invalidate?route=/parameters works as ?route=parameters does."""
        import boto3

        from cachelayer.testing.live import live_server

        boto3.client("ssm").put_parameter(Name="p", Value="v", Type="String")
        with live_server(aws, tmp_path) as live:
            live.get("/parameters?name=p")
            for route in ("/parameters", "parameters"):
                live.get("/parameters?name=p")
                reply = live.get(f"/-/invalidate?route={route}", method="POST")
                assert (reply.status, reply.json()) == (200, {"invalidated": 1}), route


class TestUpstreamFailureLog:
    def test_failed_call_is_one_warning_per_backoff_period_with_key_and_code(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A key with no cached value whose upstream call keeps failing is logged as one
        warning naming the key and AWS's error code; reads inside the backoff (2 to 4 s for a
        first throttle) make no call and log nothing; past it, one call and one warning."""
        import asyncio

        from cachelayer import ThrottlingError
        from cachelayer.core.cache import Cache, CachePolicy
        from cachelayer.testing.live import ManualClock

        class Throttled:
            name = route = "kv"
            calls = 0

            def fetch(self, item: cachelayer.Item) -> cachelayer.Value:
                self.calls += 1
                raise ThrottlingError(
                    "kv GetThing for 'orders/42' failed: ThrottlingException: Rate exceeded"
                )

        clock = ManualClock()
        cache = Cache(CachePolicy(ttl_for=lambda route: 60.0), clock=clock)
        provider = Throttled()
        item = cachelayer.Item(route="kv", name="orders/42")

        async def reads(n: int) -> None:
            for _ in range(n):
                with pytest.raises(ThrottlingError):
                    await cache.get(provider, item)  # type: ignore[arg-type]

        try:
            with caplog.at_level(logging.WARNING, logger="cachelayer.cache"):
                asyncio.run(reads(5))
                first = [r.getMessage() for r in caplog.records]
                clock.advance(4.5)
                asyncio.run(reads(3))
            warnings = [r.getMessage() for r in caplog.records]
        finally:
            cache.close()
        assert provider.calls == 2
        assert len(first) == 1
        assert "'orders/42'" in first[0] and "ThrottlingException" in first[0]
        assert len(warnings) == 2  # the backoff passed: one more, then quiet again


class TestEveryError:
    BAD = (
        "cache:\n  ttl: 5x\n"
        "parameters:\n  - region: us-west-2\n    names: [a]\n  - regoin: us-west-2\n"
        "    names: [b]\n  - names: 3\n"
        "secrets:\n  - names: [s]\n"
        "nosuchsection:\n  - x: 1\n"
    )

    def test_check_config_reports_every_error_in_the_file(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """One error per failing section or list entry, each with its line, then a count."""
        path = tmp_path / "config.yaml"
        path.write_text(self.BAD)
        assert cli_main(["check-config", str(path)]) == 2
        lines = capsys.readouterr().err.splitlines()
        assert [line.split(": ")[1].rsplit(":", 1)[1] for line in lines[:4]] == [
            "2",
            "6",
            "8",
            "11",
        ]
        assert "cache.ttl" in lines[0] and "parameters[1].regoin" in lines[1]
        assert "parameters[2].names" in lines[2] and "unknown section 'nosuchsection'" in lines[3]
        assert lines[4] == f"cachelayer: 4 errors in {path}"

    def test_the_first_error_is_raised_with_the_others_attached(self, tmp_path: Path) -> None:
        """Startup raises the first error (as before); the rest ride along in ``more``."""
        path = tmp_path / "config.yaml"
        path.write_text(self.BAD)
        with pytest.raises(ConfigError) as info:
            Application.from_environment(
                {"CACHE_EXTENSION_AUTH": "none"},
                config_path=str(path),
                client_factory=lambda service, region=None: None,
            )
        assert info.value.line == 2 and [e.line for e in info.value.more] == [6, 8, 11]

    def test_errors_are_bounded(self, tmp_path: Path) -> None:
        """A file with hundreds of bad entries reports MAX_REPORTED_ERRORS of them."""
        from cachelayer.core.config import MAX_REPORTED_ERRORS

        path = tmp_path / "config.yaml"
        path.write_text("parameters:\n" + "  - nme: x\n" * 300)
        with pytest.raises(ConfigError) as info:
            Application.from_environment(
                {"CACHE_EXTENSION_AUTH": "none"},
                config_path=str(path),
                client_factory=lambda service, region=None: None,
            )
        assert 1 + len(info.value.more) == MAX_REPORTED_ERRORS
