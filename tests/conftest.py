"""Shared fixtures of the core's tests (moto_endpoint, aws, ... come from cachelayer.testing.fixtures)."""

from __future__ import annotations

import os
from typing import Any, Iterator

import boto3
import pytest

from cachelayer.testing.proxy import UpstreamProxy


@pytest.fixture(autouse=True)
def _no_real_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """Never let a test reach a real AWS account or the developer's credentials."""
    for var in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)


@pytest.fixture()
def proxy(aws: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[UpstreamProxy]:
    """A counting, fault-injecting proxy in front of a clean moto, with AWS_ENDPOINT_URL
    pointing at it (so ``ClientFactory`` clients go through it)."""
    with UpstreamProxy(aws) as p:
        monkeypatch.setenv("AWS_ENDPOINT_URL", p.url)
        yield p


@pytest.fixture()
def ssm(aws: str) -> Any:
    """An SSM client straight to moto (us-west-2, not through any proxy): seeding is never
    counted as an upstream call."""
    return boto3.client("ssm", endpoint_url=aws, region_name="us-west-2")
