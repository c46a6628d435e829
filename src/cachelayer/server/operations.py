"""The server's own operations under ``/-/``: a table of handlers, and the OpenAPI document."""

from __future__ import annotations

import functools
from typing import Any, Awaitable, Callable, Dict, Mapping, Optional, Tuple, Union

from cachelayer import __version__
from cachelayer.errors import BadRequestError, RouteNotFoundError
from cachelayer.server.application import ServedApplication

__all__ = ["OPERATIONS", "Answer", "Operation", "openapi_bytes", "unknown_operation"]

Answer = Tuple[int, Any]
"""``(status, document)``: a JSON document, or ``bytes`` already rendered as JSON."""
Handler = Callable[[ServedApplication, Mapping[str, str]], Union[Answer, Awaitable[Answer]]]


class Operation:
    """One operation: the methods it answers (the ``Allow`` header otherwise) and its handler.

    The handler returns an Answer, or an awaitable of one when it must wait (off the hit path);
    it raises BadRequestError or RouteNotFoundError for a bad request.
    """

    __slots__ = ("allow", "handler", "methods", "verb")

    def __init__(self, methods: Tuple[bytes, ...], verb: str, handler: Handler) -> None:
        self.methods = methods
        self.verb = verb
        self.allow: Tuple[Tuple[bytes, bytes], ...] = ((b"Allow", b", ".join(methods)),)
        self.handler = handler


@functools.lru_cache(maxsize=1)
def openapi_bytes() -> bytes:
    """The OpenAPI 3.1 document of the whole HTTP surface (package data), for
    ``GET /-/openapi.json``."""
    import importlib.resources  # ~10 ms of imports (tempfile, zipfile...): not on the way to ready

    return importlib.resources.files("cachelayer").joinpath("openapi.json").read_bytes()


def _no_params(path: str, params: Mapping[str, str]) -> None:
    if params:
        raise BadRequestError(f"{path} takes no query parameters; got {', '.join(sorted(params))}")


def _health(app: ServedApplication, params: Mapping[str, str]) -> Answer:
    _no_params("/-/health", params)
    return 200, {"status": "ok", "version": __version__, "providers": list(app.registry.names())}


def _stats(app: ServedApplication, params: Mapping[str, str]) -> Answer:
    _no_params("/-/stats", params)
    return 200, app.stats()


def _openapi(app: ServedApplication, params: Mapping[str, str]) -> Answer:
    return 200, openapi_bytes()


def _invalidate_target(
    app: ServedApplication, params: Mapping[str, str]
) -> Tuple[Optional[str], Optional[str]]:
    """``(route, name)`` of an invalidation, each None for "all"; checked."""
    unknown = sorted(set(params) - {"route", "name"})
    if unknown:
        raise BadRequestError(
            f"/-/invalidate takes route and name; unknown parameter {unknown[0]!r}"
        )
    route = params.get("route")
    if route is not None and route.startswith("/"):
        route = route[1:]  # "/<route>" as the URL writes it, or "<route>"
    name = params.get("name")
    if route == "" or name == "":
        raise BadRequestError("route and name must not be empty; leave them out to invalidate more")
    if name is not None and route is None:
        raise BadRequestError("name needs a route: POST /-/invalidate?route=<route>&name=<name>")
    routes = app.router.routes
    if route is not None and route not in routes:
        known = ", ".join(routes) or "(none)"
        raise RouteNotFoundError(f"no provider answers route {route!r}; installed routes: {known}")
    return route, name


def _invalidate(
    app: ServedApplication, params: Mapping[str, str]
) -> Union[Answer, Awaitable[Answer]]:
    route, name = _invalidate_target(app, params)
    local = app.cache.invalidate(route, name)
    if app.cache.shared is None:
        return 200, {"invalidated": local}

    async def with_shared() -> Answer:  # the shared copies too, off the loop thread
        return 200, {"invalidated": local, "shared": await app.invalidate_shared(route, name)}

    return with_shared()


_READ = (b"GET", b"HEAD")

OPERATIONS: Dict[str, Operation] = {
    "/-/health": Operation(_READ, "GET", _health),
    "/-/stats": Operation(_READ, "GET", _stats),
    "/-/invalidate": Operation((b"POST",), "POST", _invalidate),
    "/-/openapi.json": Operation(_READ, "GET", _openapi),
}
"""Every operation by path, in the order the 404 for an unknown one lists them."""


def unknown_operation(path: str) -> RouteNotFoundError:
    """The error for ``/-/<path>`` that is no operation, listing those there are."""
    names = list(OPERATIONS)
    return RouteNotFoundError(
        f"no operation {path}; operations are {', '.join(names[:-1])} and {names[-1]}"
    )
