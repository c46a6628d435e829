"""CloudWatch Embedded Metric Format: per-route deltas emitted on INVOKE (at most once a minute)
and at SHUTDOWN, checked against the format's rules; and the counters behind them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Type

import jsonschema
import pytest

import cachelayer
from cachelayer import Item, NotFoundError, ThrottlingError, Value
from cachelayer.core.app import Application
from cachelayer.core.cache import ENTRY_OVERHEAD
from cachelayer.core.metrics import COUNTERS, GAUGES, EmfMetrics
from cachelayer.errors import ConfigError
from cachelayer.plugins import make_plugin_manager

SECRET = "s3cr3t-value-never-logged"
SECRET_NAME = "private-name-never-logged"

# CloudWatch's units (MetricDatum.Unit), which the EMF specification refers to.
UNITS = [
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
]

# The structure the "Specification: Embedded metric format" (Amazon CloudWatch User Guide)
# lays down: the _aws metadata object, its Timestamp and CloudWatchMetrics directives, each
# with a Namespace, DimensionSets of at most 30 references and at most 100 MetricDefinitions.
EMF_SCHEMA: Dict[str, Any] = {
    "type": "object",
    "required": ["_aws"],
    "properties": {
        "_aws": {
            "type": "object",
            "required": ["Timestamp", "CloudWatchMetrics"],
            "properties": {
                "Timestamp": {"type": "integer", "minimum": 0},
                "CloudWatchMetrics": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["Namespace", "Dimensions", "Metrics"],
                        "additionalProperties": False,
                        "properties": {
                            "Namespace": {"type": "string", "minLength": 1, "maxLength": 1024},
                            "Dimensions": {
                                "type": "array",
                                "items": {
                                    "type": "array",
                                    "minItems": 1,
                                    "maxItems": 30,
                                    "items": {"type": "string", "minLength": 1, "maxLength": 250},
                                },
                            },
                            "Metrics": {
                                "type": "array",
                                "maxItems": 100,
                                "items": {
                                    "type": "object",
                                    "required": ["Name"],
                                    "additionalProperties": False,
                                    "properties": {
                                        "Name": {
                                            "type": "string",
                                            "minLength": 1,
                                            "maxLength": 1024,
                                        },
                                        "Unit": {"enum": UNITS},
                                        "StorageResolution": {"enum": [1, 60]},
                                    },
                                },
                            },
                        },
                    },
                },
            },
        }
    },
}


def check_emf(line: str) -> Dict[str, Any]:
    """Parse one log line as an EMF document and check it against the specification: the
    schema above, and every reference resolving to a root member of the right type."""
    document = json.loads(line)
    jsonschema.validate(document, EMF_SCHEMA)
    for directive in document["_aws"]["CloudWatchMetrics"]:
        for dimension_set in directive["Dimensions"]:
            for name in dimension_set:
                value = document.get(name)
                assert isinstance(value, str), f"dimension {name!r} has no string member"
                assert 1 <= len(value) <= 1024 and value.strip()
        names = [m["Name"] for m in directive["Metrics"]]
        assert len(names) == len(set(names)), "a metric is defined twice"
        for name in names:
            value = document.get(name)
            assert isinstance(value, (int, float)) and not isinstance(value, bool), name
    return dict(document)


class KeyValueProvider:
    """A provider that calls no AWS service: an in-memory store standing in for an HTTP API."""

    name = "kv"
    route = "kv"
    services = ()
    config_schema = None

    def __init__(self) -> None:
        self.calls = 0

    @classmethod
    def from_config(cls, config: Any, context: Any) -> KeyValueProvider:
        return cls()

    def declared(self) -> List[Item]:
        return []

    def resolve(self, name: str, params: Any) -> Item:
        return Item(route=self.route, name=name, ttl=300.0)

    def fetch(self, item: Item) -> Value:
        self.calls += 1
        if item.name == "missing":
            raise NotFoundError("no such key")
        if item.name == "busy":
            raise ThrottlingError("kv: slow down")
        return Value(body=SECRET.encode())


class Plugin:
    @cachelayer.hookimpl
    def cachelayer_providers(self) -> List[Type[KeyValueProvider]]:
        return [KeyValueProvider]


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_app(
    tmp_path: Path,
    config: str = "cache:\n  metrics: emf\n",
    env: Optional[Dict[str, str]] = None,
    clock: Optional[Clock] = None,
) -> tuple:
    path = tmp_path / "config.yaml"
    path.write_text(config)
    pm = make_plugin_manager()
    pm.register(Plugin(), name="kv")
    lines: List[str] = []
    environ = {"CACHE_EXTENSION_AUTH": "none", "AWS_LAMBDA_FUNCTION_NAME": "orders-api"}
    environ.update(env or {})
    app = Application.from_environment(
        environ,
        config_path=str(path),
        pm=pm,
        client_factory=lambda service, region=None: None,
        metrics_write=lines.append,
        wall_clock=clock or Clock(),
    )
    return app, app.providers["kv"], lines


async def read(app: Application, name: str, times: int = 1) -> None:
    provider, item = app.router.resolve("kv", {"name": name})
    for _ in range(times):
        with contextlib.suppress(cachelayer.CachelayerError):
            await app.cache.get(provider, item)


def by_route(lines: List[str]) -> Dict[str, Dict[str, Any]]:
    docs = [check_emf(line) for line in lines]
    return {d["Route"]: d for d in docs}


class TestEmission:
    def test_invoke_emits_at_most_once_a_minute_and_shutdown_emits_the_rest(
        self, tmp_path: Path
    ) -> None:
        """No line on an INVOKE within a minute of the last emission; one per busy route after
        it; SHUTDOWN emits whatever changed since, however soon."""
        clock = Clock()
        app, _, lines = make_app(tmp_path, clock=clock)
        try:
            asyncio.run(read(app, "a", times=3))  # 1 miss, 2 hits
            clock.now += 30
            app.on_invoke({"eventType": "INVOKE"})
            assert lines == []
            clock.now += 31
            app.on_invoke({"eventType": "INVOKE"})
            assert list(by_route(lines)) == ["kv"]
            first = by_route(lines)["kv"]
            assert (first["Hits"], first["Misses"], first["UpstreamCalls"]) == (2, 1, 1)
            assert first["_aws"]["Timestamp"] == int(clock.now * 1000)
            lines.clear()
            asyncio.run(read(app, "a"))
            clock.now += 5
            app.on_invoke({"eventType": "INVOKE"})
            assert lines == []
            app.on_shutdown("spindown")
            last = by_route(lines)["kv"]
            # Deltas: only the hit since the last emission.
            assert (last["Hits"], last["Misses"], last["UpstreamCalls"]) == (1, 0, 0)
            # Bytes: the value, its name and the entry's fixed overhead (what max_bytes counts).
            held = ENTRY_OVERHEAD + sys.getsizeof("a") + sys.getsizeof(()) + len(SECRET) + 33
            assert (last["Entries"], last["Bytes"]) == (1, held + sys.getsizeof({}))
        finally:
            app.close()

    def test_every_counter_and_the_dimensions(self, tmp_path: Path) -> None:
        """Each of hits, misses, stale serves, negative hits, upstream calls and errors,
        throttles, evictions, entries and bytes is a metric, with FunctionName and Route."""
        app, _, lines = make_app(
            tmp_path, config="cache:\n  metrics: emf\n  metrics_namespace: Shop/Cache\n"
        )
        try:
            asyncio.run(read(app, "missing", times=2))  # a miss, then a negative hit
            asyncio.run(read(app, "busy"))  # a throttled upstream error
            app.on_shutdown("spindown")
            doc = by_route(lines)["kv"]
            directive = doc["_aws"]["CloudWatchMetrics"][0]
            assert directive["Namespace"] == "Shop/Cache"
            assert directive["Dimensions"] == [["FunctionName", "Route"]]
            assert doc["FunctionName"] == "orders-api"
            units = {m["Name"]: m["Unit"] for m in directive["Metrics"]}
            assert set(units) == {m for _, m in COUNTERS} | {m for _, m, _ in GAUGES}
            assert units["Bytes"] == "Bytes" and units["Hits"] == "Count"
            assert doc["NegativeHits"] == 1
            assert doc["UpstreamErrors"] == 1 and doc["Throttles"] == 1
            assert doc["UpstreamCalls"] == 2
            assert doc["Entries"] == 2  # the remembered "not found" and the remembered throttle
        finally:
            app.close()

    def test_no_value_or_name_in_the_metrics(self, tmp_path: Path) -> None:
        """The lines hold counts, the route and the function name: never a key or a value."""
        app, _, lines = make_app(tmp_path)
        try:
            asyncio.run(read(app, SECRET_NAME, times=2))
            app.on_shutdown("spindown")
            assert lines
            text = "\n".join(lines)
            assert SECRET not in text and SECRET_NAME not in text
        finally:
            app.close()

    def test_idle_routes_write_nothing(self, tmp_path: Path) -> None:
        """A route with no traffic and no entries draws no line (the built-ins stay quiet)."""
        app, _, lines = make_app(tmp_path)
        try:
            app.on_shutdown("spindown")
            assert lines == []
        finally:
            app.close()

    def test_off_by_default(self, tmp_path: Path) -> None:
        """Without ``cache: metrics: emf`` nothing is emitted."""
        app, _, lines = make_app(tmp_path, config="cache:\n  ttl: 5m\n")
        try:
            asyncio.run(read(app, "a"))
            app.on_shutdown("spindown")
            assert app.metrics is None and lines == []
        finally:
            app.close()

    def test_environment_turns_it_on_and_names_the_namespace(self, tmp_path: Path) -> None:
        """CACHE_EXTENSION_METRICS=emf and _METRICS_NAMESPACE override the file."""
        app, _, lines = make_app(
            tmp_path,
            config="cache:\n  ttl: 5m\n",
            env={"CACHE_EXTENSION_METRICS": "EMF", "CACHE_EXTENSION_METRICS_NAMESPACE": "Team A"},
        )
        try:
            asyncio.run(read(app, "a"))
            app.on_shutdown("spindown")
            assert by_route(lines)["kv"]["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "Team A"
        finally:
            app.close()

    def test_without_a_function_name_the_dimension_is_local(self) -> None:
        """Outside Lambda (``serve``) the FunctionName dimension is ``local``, never empty."""
        lines: List[str] = []
        metrics = EmfMetrics(write=lines.append, clock=Clock())
        metrics.on_shutdown({"r": {"hits": 1}})
        assert check_emf(lines[0])["FunctionName"] == "local"


class TestConfiguration:
    @pytest.mark.parametrize("namespace", ["AWS/Lambda", "", "a" * 256, "bad\u00e9"])
    def test_bad_namespace_is_refused_with_the_file_and_line(
        self, tmp_path: Path, namespace: str
    ) -> None:
        """A namespace CloudWatch would reject is a ConfigError naming the file and key."""
        config = f"cache:\n  metrics: emf\n  metrics_namespace: {json.dumps(namespace)}\n"
        with pytest.raises(ConfigError) as info:
            make_app(tmp_path, config=config)
        assert "metrics_namespace" in str(info.value) and "config.yaml:3" in str(info.value)

    def test_bad_environment_value_is_refused(self, tmp_path: Path) -> None:
        """CACHE_EXTENSION_METRICS accepts emf or off and names itself otherwise."""
        with pytest.raises(ConfigError, match="CACHE_EXTENSION_METRICS"):
            make_app(tmp_path, env={"CACHE_EXTENSION_METRICS": "prometheus"})
        with pytest.raises(ConfigError, match="CACHE_EXTENSION_METRICS_NAMESPACE"):
            make_app(tmp_path, env={"CACHE_EXTENSION_METRICS_NAMESPACE": "AWS/X"})

    def test_unknown_metrics_format_in_the_file(self, tmp_path: Path) -> None:
        """``metrics:`` takes emf or off."""
        with pytest.raises(ConfigError, match="emf"):
            make_app(tmp_path, config="cache:\n  metrics: statsd\n")


class TestUpstreamCounters:
    def test_a_provider_without_aws_clients_counts_its_calls_and_errors(
        self, tmp_path: Path
    ) -> None:
        """upstream_calls and upstream_errors count a provider's fetches whatever it calls."""
        app, provider, _ = make_app(tmp_path)
        try:
            asyncio.run(read(app, "a", times=2))
            asyncio.run(read(app, "busy"))
            stats = app.stats()["kv"]
            assert provider.calls == 2
            assert stats["upstream_calls"] == 2
            assert stats["upstream_errors"] == 1
            assert stats["throttles"] == 1
        finally:
            app.close()
