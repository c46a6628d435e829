"""The router: from a route name and query parameters to a provider and an Item."""

from __future__ import annotations

from typing import Dict, Mapping, Tuple

from cachelayer.errors import BadRequestError, RouteNotFoundError
from cachelayer.provider import Item, Provider


class Router:
    """Routes by the providers' route names; providers turn the query into an Item."""

    def __init__(self, providers: Mapping[str, Provider]) -> None:
        """``providers`` maps route name to provider."""
        self._providers: Dict[str, Provider] = dict(providers)

    @property
    def routes(self) -> Tuple[str, ...]:
        """The route names served, sorted."""
        return tuple(sorted(self._providers))

    def provider(self, route: str) -> Provider:
        """The provider of ``route``; RouteNotFoundError listing the known routes otherwise."""
        try:
            return self._providers[route]
        except KeyError:
            known = ", ".join(f"/{r}" for r in self.routes) or "(none: no provider is installed)"
            raise RouteNotFoundError(
                f"no provider serves the route /{route}; known routes: {known}"
            ) from None

    def resolve(self, route: str, params: Mapping[str, str]) -> Tuple[Provider, Item]:
        """Find the provider for ``route`` and let it turn ``params`` (``name`` and the rest,
        already URL-decoded, each key at most once) into an Item. Raises RouteNotFoundError for
        an unknown route, BadRequestError for a missing/empty name or a bad parameter."""
        provider = self.provider(route)
        name = params.get("name")
        if name is None:
            raise BadRequestError(f"missing query parameter 'name': use GET /{route}?name=<name>")
        if not name.strip():
            raise BadRequestError(f"empty query parameter 'name': use GET /{route}?name=<name>")
        rest = {k: v for k, v in params.items() if k != "name"}
        return provider, provider.resolve(name, rest)
