"""The router: from a route name and query parameters to a provider and an Item."""

from __future__ import annotations

from typing import Dict, Mapping, Tuple

from cachelayer.errors import BadRequestError, RouteNotFoundError
from cachelayer.helpers import check_query_parameters, declared_query_parameters
from cachelayer.provider import Item, Provider


class Router:
    """Routes by the providers' route names, refuses the query parameters a provider does not
    declare; providers turn the rest of the query into an Item."""

    def __init__(self, providers: Mapping[str, Provider]) -> None:
        """``providers`` maps route name to provider."""
        self._providers: Dict[str, Provider] = dict(providers)
        # Declared on the provider's type: fixed for the router's life.
        self._accepted: Dict[str, Tuple[str, ...]] = {
            route: declared_query_parameters(p) for route, p in providers.items()
        }

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
        already URL-decoded, each key at most once) into an Item: the provider's ``resolve``
        gets ``name`` and the other parameters, each one it declares in ``query_parameters``.
        Raises RouteNotFoundError for an unknown route, BadRequestError for a missing/empty
        name, a parameter the provider does not declare, or a bad value."""
        provider = self.provider(route)
        name = params.get("name")
        if name is None:
            raise BadRequestError(f"missing query parameter 'name': use GET /{route}?name=<name>")
        if not name.strip():
            raise BadRequestError(f"empty query parameter 'name': use GET /{route}?name=<name>")
        rest = {k: v for k, v in params.items() if k != "name"}
        if rest:
            check_query_parameters(route, rest, self._accepted[route])
        return provider, provider.resolve(name, rest)
