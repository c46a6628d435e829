"""refreshNow=true on the AWS-compatible routes: a forced refresh of one key, single-flight."""

from __future__ import annotations

import concurrent.futures
import urllib.parse
from pathlib import Path
from typing import Iterator

import boto3
import pytest

from cachelayer.providers.secrets.compat import SECRETS_PATH
from cachelayer.providers.ssm.compat import PARAMETERS_PATH
from cachelayer.testing.live import Live, Requests, live_server, release_once_joined
from cachelayer.testing.proxy import Fault, UpstreamProxy

P = PARAMETERS_PATH
S = SECRETS_PATH


def q(path: str, **params: str) -> str:
    return f"{path}?{urllib.parse.urlencode(params)}"


@pytest.fixture()
def upstream(aws: str) -> Iterator[UpstreamProxy]:
    with UpstreamProxy(aws) as proxy:
        yield proxy


@pytest.fixture()
def live(upstream: UpstreamProxy, tmp_path: Path) -> Iterator[Live]:
    with live_server(
        upstream.url, tmp_path, extra_env={"AWS_ENDPOINT_URL": upstream.url}
    ) as running:
        yield running


class TestRefreshNow:
    def test_parameter_refresh_now_fetches_the_new_value(
        self, aws: str, live: Live, upstream: UpstreamProxy
    ) -> None:
        """A cached parameter changed upstream is served cached until refreshNow=true fetches
        it again; the next plain read is a hit of the new value."""
        ssm = boto3.client("ssm", endpoint_url=aws)
        ssm.put_parameter(Name="/app/colour", Value="blue", Type="String")
        assert live.get(q(P, name="/app/colour")).json()["Parameter"]["Value"] == "blue"
        ssm.put_parameter(Name="/app/colour", Value="green", Type="String", Overwrite=True)
        cached = live.get(q(P, name="/app/colour"))
        assert (cached.x_cache, cached.json()["Parameter"]["Value"]) == ("hit", "blue")
        before = upstream.count("GetParameter")
        fresh = live.get(q(P, name="/app/colour", refreshNow="true"))
        assert (fresh.x_cache, fresh.json()["Parameter"]["Value"]) == ("miss", "green")
        assert upstream.count("GetParameter") == before + 1
        after = live.get(q(P, name="/app/colour"))
        assert (after.x_cache, after.json()["Parameter"]["Value"]) == ("hit", "green")
        # false is the ordinary read.
        assert live.get(q(P, name="/app/colour", refreshNow="false")).x_cache == "hit"

    def test_secret_refresh_now_fetches_the_new_value(self, aws: str, live: Live) -> None:
        """The same on /secretsmanager/get."""
        sm = boto3.client("secretsmanager", endpoint_url=aws)
        sm.create_secret(Name="db", SecretString="one")
        assert live.get(q(S, secretId="db")).json()["SecretString"] == "one"
        sm.put_secret_value(SecretId="db", SecretString="two")
        assert live.get(q(S, secretId="db")).json()["SecretString"] == "one"
        assert live.get(q(S, secretId="db", refreshNow="TRUE")).json()["SecretString"] == "two"

    def test_concurrent_refreshes_make_one_upstream_call(
        self, aws: str, live: Live, upstream: UpstreamProxy
    ) -> None:
        """Many simultaneous refreshNow=true requests for one key share one upstream call."""
        sm = boto3.client("secretsmanager", endpoint_url=aws)
        sm.create_secret(Name="shared", SecretString="v1")
        live.get(q(S, secretId="shared"))
        upstream.reset_counts()
        upstream.inject(Fault.hold(), operation="GetSecretValue")
        requests = Requests()
        paths = [q(S, secretId="shared", refreshNow="true")] * 12
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            reading = pool.submit(live.get_many, paths, connections=12, sent=requests.sent)
            try:
                release_once_joined(upstream, "GetSecretValue", live.loop, requests, 12)
            finally:
                upstream.release()
            replies = reading.result(30)
        assert {r.status for r in replies} == {200}
        assert upstream.count("GetSecretValue") == 1

    @pytest.mark.parametrize(
        "path", [q(P, name="x", refreshNow="yes"), q(S, secretId="x", refreshNow="1")]
    )
    def test_bad_value_is_400(self, live: Live, path: str) -> None:
        """refreshNow takes true or false; anything else is a 400 naming it."""
        reply = live.get(path)
        assert reply.status == 400 and "refreshNow" in reply.json()["message"]
