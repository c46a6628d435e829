"""The installed S3 provider served by a real `cachelayer serve` process, against moto."""

from __future__ import annotations

from typing import Any, Callable

import boto3
import pytest

CONFIG = """\
s3:
  - bucket: cachelayer-s3-served
    key: app/settings.json
    name: settings
  - bucket: cachelayer-s3-served
    key: big.bin
    max_size: 4
"""


@pytest.mark.slow
class TestServed:
    def test_object_is_served_cached_and_errors_are_precise(
        self, aws: str, cachelayer_server: Callable[..., Any]
    ) -> None:
        """GET /s3 serves the object with its content type, then from cache; too large is 502, undeclared 404."""
        s3 = boto3.client("s3")
        s3.create_bucket(
            Bucket="cachelayer-s3-served",
            CreateBucketConfiguration={"LocationConstraint": "us-west-2"},
        )
        s3.put_object(
            Bucket="cachelayer-s3-served",
            Key="app/settings.json",
            Body=b'{"x": 1}',
            ContentType="application/json",
        )
        s3.put_object(Bucket="cachelayer-s3-served", Key="big.bin", Body=b"12345")
        server = cachelayer_server(CONFIG)

        first = server.get("/s3?name=settings")
        assert first.status == 200, first.body
        assert first.body == b'{"x": 1}'
        assert first.headers["Content-Type"].startswith("application/json")
        assert first.headers["X-Cache"] == "miss"
        second = server.get("/s3?name=cachelayer-s3-served/app/settings.json")
        assert (second.status, second.headers["X-Cache"]) == (200, "hit")

        too_large = server.get("/s3?name=cachelayer-s3-served/big.bin")
        assert too_large.status == 502
        assert too_large.json()["error"] == "ObjectTooLarge"
        assert "max_size" in too_large.json()["message"]

        assert server.get("/s3?name=undeclared").status == 404
