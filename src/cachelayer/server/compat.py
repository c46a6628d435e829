"""AWS-native paths: dispatch to the providers that declare them (``aws_compat``), render JSON."""

from __future__ import annotations

import json
from typing import Any, Dict, List, Mapping, Optional, Tuple

from cachelayer.compat import AwsCompatRoute, CompatRead
from cachelayer.errors import BadRequestError, NotFoundError, PluginError
from cachelayer.server.application import CacheLookup, ServedApplication, route_providers

__all__ = ["CompatRoutes", "Headers"]

Headers = List[Tuple[str, str]]


def aws_compat_of(provider: Any) -> Optional[AwsCompatRoute]:
    """The provider's AWS-compatible route, declared on its type as ``aws_compat``, or None."""
    declared = getattr(type(provider), "aws_compat", None)
    if declared is None:
        return None
    if not isinstance(declared, AwsCompatRoute):
        raise PluginError(
            f"provider {getattr(provider, 'name', type(provider).__name__)!r}: aws_compat must be "
            f"a cachelayer.AwsCompatRoute, got {type(declared).__name__}"
        )
    return declared


class CompatRoutes:
    """The AWS-native paths the installed providers answer: ``path -> (route, AwsCompatRoute)``."""

    __slots__ = ("_by_path",)

    def __init__(self, by_path: Mapping[str, Tuple[str, AwsCompatRoute]]) -> None:
        self._by_path: Dict[str, Tuple[str, AwsCompatRoute]] = dict(by_path)

    @classmethod
    def of(cls, app: ServedApplication) -> CompatRoutes:
        """Collect the ``aws_compat`` declarations of ``app``'s providers.

        Raises PluginError when two providers declare one path, or a path is a provider's route.
        """
        routes = app.router.routes
        by_path: Dict[str, Tuple[str, AwsCompatRoute]] = {}
        for route, provider in route_providers(app.router):
            compat = aws_compat_of(provider)
            if compat is None:
                continue
            if compat.path in by_path:
                raise PluginError(
                    f"the providers of /{by_path[compat.path][0]} and /{route} both declare the "
                    f"AWS-compatible path {compat.path}; uninstall or disable one of them"
                )
            if compat.path[1:] in routes:
                raise PluginError(
                    f"the provider of /{route} declares the AWS-compatible path {compat.path}, "
                    "which is another provider's route; uninstall or disable one of them"
                )
            by_path[compat.path] = (route, compat)
        return cls(by_path)

    @property
    def paths(self) -> Tuple[str, ...]:
        """The native paths answered, sorted."""
        return tuple(sorted(self._by_path))

    def __contains__(self, path: object) -> bool:
        return path in self._by_path

    async def answer(
        self, app: ServedApplication, path: str, params: Mapping[str, str]
    ) -> Tuple[int, Headers, bytes]:
        """Answer ``GET <path>?<params>`` for one of ``paths``.

        Returns ``(200, headers, body)``: the provider's rendering of the service's own JSON,
        with ``X-Cache``/``Age``/``Cache-Control`` like the native routes. Failures raise the
        CachelayerError tree, which the protocol renders as JSON errors. Values are read through
        ``app.cache``, so TTL, variants, stale-if-error and single-flight are those of the
        provider's own route.
        """
        route, compat = self._by_path[path]
        unknown = sorted(k for k in params if k not in compat.query)
        if unknown:
            raise BadRequestError(
                f"unknown query parameter(s) {', '.join(map(repr, unknown))} for {path}; "
                f"allowed: {', '.join(compat.query)}"
            )
        request = compat.to_request(params)
        lookup = await _read_first(app, route, request.reads, request.refresh)
        document = compat.render(lookup.value)
        body = json.dumps(document, separators=(",", ":")).encode("utf-8")
        return 200, _headers(lookup), body


async def _read_first(
    app: ServedApplication, route: str, reads: Tuple[CompatRead, ...], refresh: bool
) -> CacheLookup:
    """The first read that answers and is accepted; the last one answers whatever it gets."""
    for read in reads[:-1]:
        try:
            lookup = await _read(app, route, read, refresh)
        except NotFoundError:
            continue
        if read.accept is None or read.accept(lookup.value):
            return lookup
    return await _read(app, route, reads[-1], refresh)


async def _read(app: ServedApplication, route: str, read: CompatRead, refresh: bool) -> CacheLookup:
    """Resolve through the router and read through the cache (``refresh``: fetch now)."""
    provider, item = app.router.resolve(route, {"name": read.name, **read.params})
    return await app.cache.get(provider, item, refresh=refresh)


def _headers(lookup: CacheLookup) -> Headers:
    # Whole seconds, never negative, as the native routes send them.
    age = max(0, int(lookup.age))
    remaining = max(0, int(lookup.remaining))
    return [
        ("Content-Type", "application/json"),
        ("X-Cache", lookup.state),
        ("Age", str(age)),
        ("Cache-Control", f"max-age={remaining}"),
    ]
