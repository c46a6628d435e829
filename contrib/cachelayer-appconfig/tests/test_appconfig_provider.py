"""The AppConfig provider's session flow, error classification, thread safety and config.

moto (5.x) implements none of the AppConfig Data API (StartConfigurationSession,
GetLatestConfiguration), and this provider calls nothing else: the Data API takes application,
environment and profile names as well as IDs, so there is no control-plane lookup to run
against moto either. The Data API's answers are therefore injected with botocore's ``Stubber``
into a client built by cachelayer's real ``ClientFactory``: each request is still validated
against the service model, and an unexpected (e.g. too early) call fails the test.
"""

from __future__ import annotations

import io
import threading
from typing import Any, Dict, Iterator, List, Optional

import attrs
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber
from cachelayer_appconfig import AppConfigProfile, AppConfigProvider

import cachelayer
from cachelayer import ConfigError, NotFoundError, ProviderContext
from cachelayer.aws import ClientFactory
from cachelayer.plugins import discover
from cachelayer.testing.fixtures import UpstreamCalls

FLAGS = AppConfigProfile(application="shop", environment="prod", profile="flags", name="flags")
IDENTIFIERS = {
    "ApplicationIdentifier": "shop",
    "EnvironmentIdentifier": "prod",
    "ConfigurationProfileIdentifier": "flags",
}


@attrs.define
class FakeClock:
    """Monotonic seconds that move only when the test says so."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@attrs.define
class DataApi:
    """A stubbed appconfigdata client and helpers to queue its answers."""

    client: Any
    stubber: Stubber

    def start(self, token: str, expected: Optional[Dict[str, Any]] = None) -> None:
        self.stubber.add_response(
            "start_configuration_session",
            {"InitialConfigurationToken": token},
            expected if expected is not None else IDENTIFIERS,
        )

    def latest(
        self,
        token: str,
        next_token: str,
        body: bytes,
        *,
        interval: int = 60,
        content_type: str = "application/json",
        version: str = "1",
    ) -> None:
        response: Dict[str, Any] = {
            "NextPollConfigurationToken": next_token,
            "NextPollIntervalInSeconds": interval,
            "Configuration": StreamingBody(io.BytesIO(body), len(body)),
            "VersionLabel": version,
        }
        if content_type:
            response["ContentType"] = content_type
        self.stubber.add_response(
            "get_latest_configuration", response, {"ConfigurationToken": token}
        )

    def error(self, method: str, code: str, status: int) -> None:
        self.stubber.add_client_error(
            method,
            service_error_code=code,
            service_message=f"{code} (stubbed)",
            http_status_code=status,
        )


@pytest.fixture()
def upstream_calls() -> UpstreamCalls:
    return UpstreamCalls()


@pytest.fixture()
def data_api(upstream_calls: UpstreamCalls, monkeypatch: pytest.MonkeyPatch) -> Iterator[DataApi]:
    """An appconfigdata client from ClientFactory, stubbed; every queued answer must be used."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    client = ClientFactory(default_region="us-west-2")("appconfigdata")

    def count(model: Any, **_: Any) -> None:
        upstream_calls.record("appconfigdata", model.name)

    # The Stubber answers in before-call and stops that event there, so ClientFactory's own
    # on_call counter never runs; count at before-parameter-build, which every call emits.
    client.meta.events.register("before-parameter-build.appconfigdata", count)
    with Stubber(client) as stubber:
        yield DataApi(client, stubber)
        stubber.assert_no_pending_responses()


@pytest.fixture()
def clock() -> FakeClock:
    return FakeClock()


def configured(
    data_api: DataApi, clock: FakeClock, *profiles: AppConfigProfile
) -> AppConfigProvider:
    asked: List[Any] = []

    def client(service: str, region: Optional[str]) -> Any:
        asked.append((service, region))
        assert service == "appconfigdata"
        return data_api.client

    return AppConfigProvider.from_config(
        list(profiles or (FLAGS,)),
        ProviderContext(client=client, default_region="us-west-2"),
        clock=clock,
    )


class TestSessionFlow:
    def test_first_fetch_starts_a_session_and_returns_the_configuration(
        self, data_api: DataApi, clock: FakeClock
    ) -> None:
        """The first fetch calls StartConfigurationSession with the names, then GetLatestConfiguration."""
        data_api.start("t0")
        data_api.latest("t0", "t1", b'{"dark_mode": {"enabled": true}}', version="7")
        provider = configured(data_api, clock)
        value = provider.fetch(provider.resolve("flags", {}))
        assert value.body == b'{"dark_mode": {"enabled": true}}'
        assert value.content_type == "application/json"
        assert value.metadata == {"VersionLabel": "7"}

    def test_no_upstream_call_before_the_poll_interval(
        self, data_api: DataApi, clock: FakeClock, upstream_calls: UpstreamCalls
    ) -> None:
        """Within NextPollIntervalInSeconds a fetch returns the previous value without calling AppConfig."""
        data_api.start("t0")
        data_api.latest("t0", "t1", b"v1", interval=30)
        provider = configured(data_api, clock)
        item = provider.resolve("flags", {})
        first = provider.fetch(item)
        clock.now += 29.9
        assert provider.fetch(item) is first
        assert upstream_calls.count() == 2  # the Start and the first Get only

    def test_next_poll_uses_the_token_of_the_previous_answer(
        self, data_api: DataApi, clock: FakeClock
    ) -> None:
        """After the interval, GetLatestConfiguration is called with NextPollConfigurationToken."""
        data_api.start("t0")
        data_api.latest("t0", "t1", b"v1", interval=30)
        data_api.latest("t1", "t2", b"v2", interval=30, version="2")
        data_api.latest("t2", "t3", b"v3", interval=30, version="3")
        provider = configured(data_api, clock)
        item = provider.resolve("flags", {})
        assert provider.fetch(item).body == b"v1"
        clock.now += 30
        assert provider.fetch(item).body == b"v2"
        clock.now += 30
        assert provider.fetch(item).metadata == {"VersionLabel": "3"}

    def test_empty_configuration_means_unchanged(self, data_api: DataApi, clock: FakeClock) -> None:
        """An empty Configuration after the first answer keeps (and returns) the previous value."""
        data_api.start("t0")
        data_api.latest("t0", "t1", b"v1", interval=15)
        data_api.latest("t1", "t2", b"", interval=15, content_type="")
        provider = configured(data_api, clock)
        item = provider.resolve("flags", {})
        first = provider.fetch(item)
        clock.now += 15
        assert provider.refresh(item, first) is first

    def test_first_answer_of_a_session_is_taken_even_when_empty(
        self, data_api: DataApi, clock: FakeClock
    ) -> None:
        """An empty configuration on a new session is the configuration itself (empty), served as such."""
        data_api.start("t0")
        data_api.latest("t0", "t1", b"", content_type="text/plain")
        provider = configured(data_api, clock)
        value = provider.fetch(provider.resolve("flags", {}))
        assert (value.body, value.content_type) == (b"", "text/plain")

    def test_ttl_is_asked_as_the_minimum_poll_interval(
        self, data_api: DataApi, clock: FakeClock
    ) -> None:
        """A declared ttl becomes RequiredMinimumPollIntervalInSeconds, raised to AppConfig's minimum of 15 s."""
        fast = attrs.evolve(FLAGS, ttl=cachelayer.Duration(5.0))
        data_api.start("t0", {**IDENTIFIERS, "RequiredMinimumPollIntervalInSeconds": 15})
        data_api.latest("t0", "t1", b"v1")
        provider = configured(data_api, clock, fast)
        item = provider.resolve("flags", {})
        assert item.ttl == 5.0
        provider.fetch(item)

    def test_expired_token_starts_a_new_session(self, data_api: DataApi, clock: FakeClock) -> None:
        """BadRequestException on a session's later poll (token expired) is answered by one new session."""
        data_api.start("t0")
        data_api.latest("t0", "t1", b"v1")
        data_api.error("get_latest_configuration", "BadRequestException", 400)
        data_api.start("n0")
        data_api.latest("n0", "n1", b"v2")
        provider = configured(data_api, clock)
        item = provider.resolve("flags", {})
        provider.fetch(item)
        clock.now += 24 * 3600
        assert provider.fetch(item).body == b"v2"


class TestErrors:
    def test_unknown_configuration_is_not_found(self, data_api: DataApi, clock: FakeClock) -> None:
        """ResourceNotFoundException from StartConfigurationSession is NotFoundError naming the configuration."""
        data_api.error("start_configuration_session", "ResourceNotFoundException", 404)
        provider = configured(data_api, clock)
        with pytest.raises(NotFoundError, match="shop/prod/flags"):
            provider.fetch(provider.resolve("flags", {}))

    def test_throttling_is_transient_and_the_next_fetch_starts_afresh(
        self, data_api: DataApi, clock: FakeClock
    ) -> None:
        """A throttled poll raises TransientError; the possibly spent token is dropped for a new session."""
        data_api.start("t0")
        data_api.latest("t0", "t1", b"v1")
        data_api.error("get_latest_configuration", "ThrottlingException", 429)
        data_api.start("n0")
        data_api.latest("n0", "n1", b"v1")
        provider = configured(data_api, clock)
        item = provider.resolve("flags", {})
        provider.fetch(item)
        clock.now += 60
        with pytest.raises(cachelayer.TransientError):
            provider.fetch(item)
        assert provider.fetch(item).body == b"v1"

    def test_bad_request_on_a_new_session_is_an_upstream_error(
        self, data_api: DataApi, clock: FakeClock
    ) -> None:
        """BadRequestException on a fresh session is not retried: an UpstreamError, not transient."""
        data_api.error("start_configuration_session", "BadRequestException", 400)
        provider = configured(data_api, clock)
        with pytest.raises(cachelayer.UpstreamError) as info:
            provider.fetch(provider.resolve("flags", {}))
        assert not isinstance(info.value, cachelayer.TransientError)


class TestConcurrency:
    def test_concurrent_fetches_share_one_session_and_one_poll(
        self, data_api: DataApi, clock: FakeClock, upstream_calls: UpstreamCalls
    ) -> None:
        """Eight threads fetching one configuration cause one Start and one Get; all see the value."""
        data_api.start("t0")
        data_api.latest("t0", "t1", b"v1")
        provider = configured(data_api, clock)
        item = provider.resolve("flags", {})
        results: List[Any] = []
        barrier = threading.Barrier(8)

        def worker() -> None:
            barrier.wait()
            results.append(provider.fetch(item))

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert len(results) == 8 and all(r is results[0] for r in results)
        assert upstream_calls.count() == 2


class TestConfig:
    def test_path_and_alias_name_one_item(self, data_api: DataApi, clock: FakeClock) -> None:
        """A configuration answers to its alias and to application/environment/profile, as one key."""
        provider = configured(data_api, clock)
        assert provider.resolve("shop/prod/flags", {}) == provider.resolve("flags", {})

    def test_undeclared_name_is_not_found(self, data_api: DataApi, clock: FakeClock) -> None:
        """An undeclared name is NotFoundError telling how to declare it."""
        provider = configured(data_api, clock)
        with pytest.raises(NotFoundError, match="appconfig: section"):
            provider.resolve("shop/prod/other", {})

    def test_unknown_parameter_is_bad_request(self, data_api: DataApi, clock: FakeClock) -> None:
        """A query parameter other than name is BadRequestError, from the core's router (the
        provider declares no query_parameters), before the provider sees the request."""
        from cachelayer.core.router import Router

        router = Router({"appconfig": configured(data_api, clock)})
        with pytest.raises(cachelayer.BadRequestError, match="label"):
            router.resolve("appconfig", {"name": "flags", "label": "x"})

    def test_duplicate_alias_is_a_config_error(self, data_api: DataApi, clock: FakeClock) -> None:
        """Two configurations with one alias are a ConfigError at the second's key."""
        other = AppConfigProfile(application="a", environment="e", profile="p", name="flags")
        with pytest.raises(ConfigError) as info:
            configured(data_api, clock, FLAGS, other)
        assert info.value.key == "appconfig[1].name"

    def test_empty_identifier_is_refused(self) -> None:
        """An empty application, environment or profile fails validation naming the field."""
        with pytest.raises(ValueError, match="environment must not be empty"):
            AppConfigProfile(application="a", environment="", profile="p")

    def test_empty_alias_is_refused(self) -> None:
        """An alias that is empty fails validation instead of answering to the empty name."""
        with pytest.raises(ValueError, match="name must not be empty"):
            AppConfigProfile(application="a", environment="e", profile="p", name="")


class TestPlugin:
    def test_installed_package_is_discovered_by_entry_point(self) -> None:
        """The installed distribution's `appconfig` entry point yields the provider and its services."""
        _, registry = discover()
        info = registry.by_route["appconfig"]
        assert info.distribution == "cachelayer-appconfig"
        assert info.provider_type.name == "appconfig"
        assert tuple(info.provider_type.services) == ("appconfigdata",)
