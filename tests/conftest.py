"""Shared fixtures: a moto server on loopback and the AWS environment pointing at it."""

from __future__ import annotations

import os
from typing import Iterator

import pytest

from cachelayer.testing.moto import aws_environment, moto_server, patched_environ


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """One moto server for the session (tests use unique names, or reset it)."""
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture()
def aws(moto_endpoint: str) -> Iterator[str]:
    """A clean moto (reset before the test) with the process environment pointing at it."""
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST")).read()
    with patched_environ(aws_environment(moto_endpoint)):
        yield moto_endpoint


@pytest.fixture(autouse=True)
def _no_real_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """Never let a test reach a real AWS account or the developer's credentials."""
    for var in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
