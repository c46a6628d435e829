"""The AppConfig provider: one Data API session per configuration, polled no faster than asked."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple

import attrs

from cachelayer import (
    BINARY,
    Duration,
    Item,
    NameIndex,
    NotFoundError,
    ProviderContext,
    Value,
    not_empty,
)
from cachelayer.aws import translate_errors

__all__ = ["MIN_POLL_INTERVAL", "AppConfigProfile", "AppConfigProvider"]

MIN_POLL_INTERVAL = 15
"""Seconds: the smallest RequiredMinimumPollIntervalInSeconds AppConfig accepts."""

# AppConfig's default when a response does not say (the API documents 60 s).
_DEFAULT_POLL_INTERVAL = 60.0
_NOT_FOUND = ("ResourceNotFoundException",)


_not_empty = not_empty(hint=" (a name or an ID)")
_optional_not_empty = not_empty(optional=True, hint="; leave it out to use the path")


@attrs.frozen
class AppConfigProfile:
    """One declared configuration of the ``appconfig:`` section.

    ``application``, ``environment`` and ``profile`` are names or IDs (the Data API takes
    either). ``name`` is an optional alias; without it the configuration answers to
    ``<application>/<environment>/<profile>``.
    """

    application: str = attrs.field(validator=_not_empty)
    environment: str = attrs.field(validator=_not_empty)
    profile: str = attrs.field(validator=_not_empty)
    name: Optional[str] = attrs.field(default=None, validator=_optional_not_empty)
    region: Optional[str] = None
    ttl: Optional[Duration] = None

    @property
    def path(self) -> str:
        """``application/environment/profile``: the name it always answers to."""
        return f"{self.application}/{self.environment}/{self.profile}"

    @property
    def request_name(self) -> str:
        """The canonical name: the alias if there is one, else the path."""
        return self.name if self.name else self.path


@attrs.define
class _Session:
    """One configuration's AppConfig Data session. Guarded by ``lock``: tokens are single-use."""

    lock: threading.Lock = attrs.Factory(threading.Lock)
    token: Optional[str] = None
    next_poll_at: float = 0.0
    value: Optional[Value] = None


@attrs.frozen
class AppConfigProvider:
    """Serves the configurations declared in the ``appconfig:`` section on ``GET /appconfig?name=``.

    ``clock`` is monotonic seconds (swap it in tests: ``from_config(..., clock=...)``). The
    provider is frozen; what changes is each configuration's Data API session, kept in
    ``_sessions`` under its own lock.
    """

    name: ClassVar[str] = "appconfig"
    route: ClassVar[str] = "appconfig"
    # Only the Data API is called: it accepts names as well as IDs, so no control-plane
    # ("appconfig") lookups are needed, and the layer keeps one botocore model, not two.
    services: ClassVar[Tuple[str, ...]] = ("appconfigdata",)
    config_schema: ClassVar[Any] = List[AppConfigProfile]
    query_parameters: ClassVar[Tuple[str, ...]] = ()  # name= only
    ttl_environment_variable: ClassVar[Optional[str]] = None

    _context: ProviderContext
    _profiles: NameIndex[AppConfigProfile] = attrs.Factory(NameIndex)
    clock: Callable[[], float] = time.monotonic
    _sessions: Dict[str, _Session] = attrs.Factory(dict)
    _sessions_lock: threading.Lock = attrs.Factory(threading.Lock)

    @classmethod
    def from_config(
        cls,
        config: Optional[Sequence[AppConfigProfile]],
        context: ProviderContext,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> AppConfigProvider:
        """Index the declared configurations by alias and by path; reject ambiguous names."""
        profiles = NameIndex.build(
            config,
            names=lambda p: (("name", p.name), ("profile", p.path)),
            section="appconfig",
            what="configuration",
            describe=lambda p: p.path,
        )
        return cls(context, profiles, clock)

    def declared(self) -> Sequence[Item]:
        """One item per declared configuration, for init-startup prefetch."""
        return [self._item(p) for p in self._profiles.entries]

    def resolve(self, name: str, params: Mapping[str, str]) -> Item:
        """``name`` is an alias or ``application/environment/profile``; declared ones only."""
        profile = self._profiles.get(name)
        if profile is None:
            raise NotFoundError(
                f"no AppConfig configuration named {name!r} is declared; declare it in the "
                "appconfig: section of the config "
                "(application, environment, profile, optional name)"
            )
        return self._item(profile)

    def fetch(self, item: Item) -> Value:
        """The latest configuration; the last one while AppConfig's poll interval runs.

        Thread-safe: calls for one configuration are serialised on its session, because each
        poll token may be used once only.
        """
        profile: AppConfigProfile = item.target
        session = self._session(profile)
        with session.lock:
            if session.value is not None and self.clock() < session.next_poll_at:
                return session.value
            client = self._context.client("appconfigdata", profile.region)
            try:
                return self._poll(client, profile, session)
            except Exception:
                # A failed call may or may not have consumed the token: start afresh next time.
                session.token = None
                raise

    def refresh(self, item: Item, previous: Value) -> Value:
        """As ``fetch``: the session holds ``previous`` and returns it when unchanged."""
        return self.fetch(item)

    def _poll(self, client: Any, profile: AppConfigProfile, session: _Session) -> Value:
        from botocore.exceptions import ClientError

        what = f"configuration {profile.path}"
        fresh = session.token is None
        if fresh:
            session.token = self._start(client, profile)
        with translate_errors(
            _NOT_FOUND, service="appconfigdata", operation="GetLatestConfiguration", what=what
        ):
            try:
                response = client.get_latest_configuration(ConfigurationToken=session.token)
            except ClientError as exc:
                # Tokens expire after 24 h (a long-frozen Lambda environment): AppConfig
                # answers BadRequestException; one new session fixes it.
                if fresh or exc.response.get("Error", {}).get("Code") != "BadRequestException":
                    raise
                fresh = True
                session.token = self._start(client, profile)
                response = client.get_latest_configuration(ConfigurationToken=session.token)
            stream = response["Configuration"]
            try:
                body = stream.read()
            finally:
                stream.close()
        session.token = response["NextPollConfigurationToken"]
        interval = response.get("NextPollIntervalInSeconds")
        session.next_poll_at = self.clock() + (
            float(interval) if interval is not None else _DEFAULT_POLL_INTERVAL
        )
        # Within a session an empty Configuration means "unchanged since the last call"; the
        # first answer of a session is always the whole configuration, even if that is empty.
        if fresh or body or session.value is None:
            metadata = (
                {"VersionLabel": response["VersionLabel"]} if response.get("VersionLabel") else {}
            )
            session.value = Value(
                body=body, content_type=response.get("ContentType") or BINARY, metadata=metadata
            )
        return session.value

    def _start(self, client: Any, profile: AppConfigProfile) -> str:
        kwargs: Dict[str, Any] = {
            "ApplicationIdentifier": profile.application,
            "EnvironmentIdentifier": profile.environment,
            "ConfigurationProfileIdentifier": profile.profile,
        }
        if profile.ttl is not None:
            # Ask AppConfig to let us poll as often as the TTL says (within its bounds).
            kwargs["RequiredMinimumPollIntervalInSeconds"] = max(
                MIN_POLL_INTERVAL, int(profile.ttl)
            )
        with translate_errors(
            _NOT_FOUND,
            service="appconfigdata",
            operation="StartConfigurationSession",
            what=f"configuration {profile.path}",
        ):
            response = client.start_configuration_session(**kwargs)
        return str(response["InitialConfigurationToken"])

    def _session(self, profile: AppConfigProfile) -> _Session:
        key = profile.request_name
        with self._sessions_lock:
            session = self._sessions.get(key)
            if session is None:
                session = self._sessions[key] = _Session()
            return session

    def _item(self, profile: AppConfigProfile) -> Item:
        return Item(
            route=self.route,
            name=profile.request_name,
            ttl=float(profile.ttl) if profile.ttl is not None else None,
            target=profile,
        )
