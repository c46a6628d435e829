"""The way to ready: a read during the startup prefetch joins it; built-in providers never load boto3."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any, Dict

import pytest

from cachelayer.core.app import Application
from cachelayer.testing.moto import aws_environment, free_port
from cachelayer.testing.proxy import Fault, UpstreamProxy
from cachelayer.testing.sample import (
    SAMPLE_CONFIG_YAML,
    SAMPLE_PARAMETER,
    SAMPLE_PARAMETER_VALUE,
    seed_sample,
)
from lambda_fixtures import HANDLERS_DIR


def _app(proxy: UpstreamProxy, tmp_path: Path, text: str = SAMPLE_CONFIG_YAML) -> Application:
    config = tmp_path / "config.yaml"
    config.write_text(text)
    return Application.from_environment(aws_environment(proxy.url), config_path=str(config))


class TestPrefetchJoin:
    def test_read_during_prefetch_joins_the_batch(
        self, proxy: UpstreamProxy, aws: str, tmp_path: Path
    ) -> None:
        """A read of a declared parameter while GetParameters is in flight waits for that
        batch: no GetParameter of its own, and it gets the batch's value."""
        seed_sample(aws)
        # Only a plain parameter: a Secrets Manager reference is fetched with GetParameter.
        app = _app(proxy, tmp_path, f"parameters:\n  - names: [{SAMPLE_PARAMETER}]\n")
        proxy.inject(Fault.hold(), operation="GetParameters", times=1)
        provider = app.providers["parameters"]
        item = provider.resolve(SAMPLE_PARAMETER, {})

        async def scenario() -> Any:
            prefetch = asyncio.ensure_future(app.prefetch())
            try:  # the batch is held by the proxy until the read has joined it
                await asyncio.to_thread(proxy.wait_in_flight, 1, "GetParameters")
                reading = asyncio.ensure_future(app.cache.get(provider, item))
                for _ in range(3):
                    await asyncio.sleep(0)
                assert not reading.done()
            finally:
                proxy.release()
            lookup = await reading
            report = await prefetch
            return lookup, report

        try:
            proxy.reset_counts()
            lookup, report = asyncio.run(scenario())
        finally:
            app.close()
        assert lookup.value.body == SAMPLE_PARAMETER_VALUE.encode()
        assert report.failed == 0
        assert proxy.count("GetParameter") == 0
        assert proxy.count("GetParameters") == 1

    def test_failed_batch_item_fails_its_waiter_and_is_fetched_again_later(
        self, proxy: UpstreamProxy, aws: str, tmp_path: Path
    ) -> None:
        """A waiter on an item the prefetch could not fetch gets that error; the next read
        fetches it on demand."""
        seed_sample(aws)
        app = _app(proxy, tmp_path)
        proxy.inject(Fault.delay(0.3), operation="GetItem", times=1)
        proxy.inject(Fault.server_error(), operation="BatchGetItem")
        provider = app.providers["dynamodb"]
        (item,) = provider.declared()

        async def scenario() -> Any:
            prefetch = asyncio.ensure_future(app.prefetch())
            await asyncio.sleep(0.1)
            with pytest.raises(Exception) as first:
                await app.cache.get(provider, item)
            await prefetch
            proxy.clear()
            second = await app.cache.get(provider, item)
            return first.value, second

        try:
            error, second = asyncio.run(scenario())
        finally:
            app.close()
        assert type(error).__name__ in ("TransientError", "UpstreamTimeoutError")
        assert json.loads(second.value.body)["pKey"] == "pKey1"


_RECORDING_LAUNCHER = """#!/bin/sh
exec "{python}" -c '
import json, sys
import cachelayer.core.lifecycle as lifecycle
original = lifecycle.ExtensionsClient.next_event
def next_event(self):
    event = original(self)
    if str(event.get("eventType", "")).upper() == "SHUTDOWN":
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("boto3", "botocore", "s3transfer"))
        with open("{out}", "w") as f:
            json.dump(loaded, f)
    return event
lifecycle.ExtensionsClient.next_event = next_event
from cachelayer.extension import main
sys.exit(main(sys.argv[1:]))
' --name "$(basename "$0")"
"""


@pytest.mark.slow
class TestNoBoto3:
    def test_built_in_routes_and_compat_routes_never_load_boto3(
        self, aws: str, tmp_path: Path
    ) -> None:
        """With only the built-in providers, the extension serves /parameters, /secrets,
        /dynamodb and both AWS-compatible routes, and boto3/botocore were never imported."""
        from cachelayer.local import LocalLambda

        seed_sample(aws)
        config = tmp_path / "config.yaml"
        config.write_text(
            SAMPLE_CONFIG_YAML + "secrets:\n  - region: us-west-2\n    names: [secret_info]\n"
        )
        env: Dict[str, str] = aws_environment(aws)
        env.update(
            CACHE_EXTENSION_CONFIG=str(config),
            CACHE_EXTENSION_PORT=str(free_port()),
            CACHE_EXTENSION_INIT_STARTUP="true",
            CACHE_EXTENSION_PLUGINS="parameters,secrets,dynamodb",
        )
        out = tmp_path / "modules.json"
        extensions = tmp_path / "extensions"
        extensions.mkdir()
        launcher = extensions / "cachelayer"
        launcher.write_text(_RECORDING_LAUNCHER.format(python=sys.executable, out=out))
        launcher.chmod(0o755)
        paths = [
            f"/parameters?name={SAMPLE_PARAMETER}",
            "/parameters?name=undeclared-so-a-miss",
            "/secrets?name=secret_info",
            "/dynamodb?name=DynamoDbTable-pKey1-sKey1",
            f"/systemsmanager/parameters/get?name={SAMPLE_PARAMETER}",
            "/secretsmanager/get?secretId=secret_info",
        ]
        with LocalLambda(
            extensions_dir=extensions,
            handler="app.handler",
            handler_dir=HANDLERS_DIR,
            env=env,
            log_dir=tmp_path / "logs",
        ) as fn:
            assert fn.init_reports[0].ok, fn.log("cachelayer")
            result = fn.invoke({"op": "get_many", "paths": paths})
            assert result.ok, result.error
            report = fn.shutdown()
            log = fn.log("cachelayer")
        assert [r["status"] for r in result.response] == [200, 404, 200, 200, 200, 200], log
        assert report.exit_codes["cachelayer"] == 0
        assert json.loads(out.read_text()) == []


class TestBatchedPrefetchCounting:
    def test_every_batch_call_is_counted_for_its_route(
        self, proxy: UpstreamProxy, aws: str, tmp_path: Path
    ) -> None:
        """25 declared parameters are 3 GetParameters calls run at once, and the route's
        upstream_calls counts all 3 (the calls made from the batch threads included)."""
        import boto3

        ssm = boto3.client("ssm", region_name="us-west-2", endpoint_url=aws)
        names = [f"/count/p{i:02d}" for i in range(25)]
        for name in names:
            ssm.put_parameter(Name=name, Value="v", Type="String")
        app = _app(
            proxy, tmp_path, "parameters:\n  - names:\n" + "".join(f"      - {n}\n" for n in names)
        )
        try:
            proxy.reset_counts()
            report = asyncio.run(app.prefetch())
            stats = app.stats()["parameters"]
        finally:
            app.close()
        assert report.fetched == 25
        assert proxy.count("GetParameters") == 3
        assert stats["upstream_calls"] == 3
