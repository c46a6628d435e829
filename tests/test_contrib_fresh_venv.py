"""An outsider's install: a new virtual environment, ``pip install <core> ./contrib/cachelayer-s3``,
an ``s3:`` section, and ``/s3`` is served with hits, TTL and stale-if-error like the built-ins."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import boto3
import pytest

from cachelayer.testing.clock import FileClock
from cachelayer.testing.proxy import Fault, UpstreamProxy

ROOT = Path(__file__).resolve().parents[1]

CONFIG = """\
cache:
  stale_if_error: 1h
s3:
  - bucket: fresh-venv-bucket
    key: app/settings.json
    name: settings
    ttl: 1s
parameters:
  - names: [fresh/param]
    ttl: 1s
"""


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A new venv with only the core and the S3 provider, installed by pip from their folders."""
    venv = tmp_path_factory.mktemp("fresh") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    done = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            str(ROOT),
            str(ROOT / "contrib" / "cachelayer-s3"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    yield venv


def _reads(server: Any, path: str, n: int) -> list:
    return [server.get(path) for _ in range(n)]


@pytest.mark.slow
class TestOutsidersInstall:
    def test_s3_is_served_like_the_builtins(
        self,
        fresh_venv: Path,
        aws: str,
        cachelayer_server: Callable[..., Any],
        monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path,
    ) -> None:
        """In a fresh venv, /s3 and /parameters behave alike: miss then hit, refetch after TTL,
        and stale when AWS fails, with no line of the core changed for S3."""
        s3 = boto3.client("s3")
        s3.create_bucket(
            Bucket="fresh-venv-bucket",
            CreateBucketConfiguration={"LocationConstraint": "us-west-2"},
        )
        s3.put_object(
            Bucket="fresh-venv-bucket",
            Key="app/settings.json",
            Body=b'{"v": 1}',
            ContentType="application/json",
        )
        boto3.client("ssm").put_parameter(Name="fresh/param", Value="v1", Type="String")

        listed = subprocess.run(
            [str(fresh_venv / "bin" / "cachelayer"), "providers"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "/s3" in listed and "cachelayer-s3" in listed

        with UpstreamProxy(aws) as proxy:
            clock = FileClock(tmp_path / "clock")
            server = cachelayer_server(
                CONFIG,
                env={"AWS_ENDPOINT_URL": proxy.url},
                python=str(fresh_venv / "bin" / "python"),
                clock=clock,
            )
            for path, first_body in (
                ("/s3?name=settings", b'{"v": 1}'),
                ("/parameters?name=fresh/param", b"v1"),
            ):
                miss, hit = _reads(server, path, 2)
                assert (miss.status, miss.headers["X-Cache"], miss.body) == (
                    200,
                    "miss",
                    first_body,
                )
                assert (hit.status, hit.headers["X-Cache"]) == (200, "hit")
                assert hit.headers["Cache-Control"] == "max-age=1"
            clock.advance(1.2)  # both TTLs are over: AWS fails now
            proxy.inject(Fault.server_error(503, "ServiceUnavailable"))
            for path, first_body in (
                ("/s3?name=settings", b'{"v": 1}'),
                ("/parameters?name=fresh/param", b"v1"),
            ):
                stale = server.get(path)
                assert (stale.status, stale.headers["X-Cache"], stale.body) == (
                    200,
                    "stale",
                    first_body,
                )
            deadline = time.monotonic() + 10  # the failing refreshes may outlast stale_wait
            while True:
                stats = server.get("/-/stats").json()
                if all(stats[r]["upstream_errors"] for r in ("s3", "parameters")):
                    break
                assert time.monotonic() < deadline, stats
                time.sleep(0.1)
            proxy.clear()
        for route in ("s3", "parameters"):
            assert stats[route]["hits"] == 1 and stats[route]["misses"] == 1
            assert stats[route]["stale"] == 1 and stats[route]["upstream_errors"] == 1
