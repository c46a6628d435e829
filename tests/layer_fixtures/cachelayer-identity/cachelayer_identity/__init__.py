"""A third-party provider for tests: ``GET /identity?name=account|arn|userid`` from STS."""

from __future__ import annotations

from typing import Any, ClassVar, List, Mapping, Optional, Sequence, Tuple, Type

import cachelayer
from cachelayer import TEXT, BadRequestError, Item, ProviderContext, UpstreamError, Value

FIELDS = {"account": "Account", "arn": "Arn", "userid": "UserId"}


class IdentityProvider:
    """Serves fields of STS GetCallerIdentity; uses only cachelayer's public face."""

    name: ClassVar[str] = "identity"
    route: ClassVar[str] = "identity"
    services: ClassVar[Tuple[str, ...]] = ("sts",)
    config_schema: ClassVar[Any] = None
    query_parameters: ClassVar[Tuple[str, ...]] = ()
    ttl_environment_variable: ClassVar[Optional[str]] = None

    def __init__(self, context: ProviderContext) -> None:
        self._context = context

    @classmethod
    def from_config(cls, config: Any, context: ProviderContext) -> IdentityProvider:
        """Keep the context; this provider takes no configuration."""
        return cls(context)

    def declared(self) -> Sequence[Item]:
        """The account id, so init startup prefetches it."""
        return [Item(self.route, "account")]

    def resolve(self, name: str, params: Mapping[str, str]) -> Item:
        """``account``, ``arn`` or ``userid``."""
        if name not in FIELDS:
            raise BadRequestError(
                f"unknown identity field {name!r}: use one of {', '.join(FIELDS)}"
            )
        return Item(self.route, name)

    def fetch(self, item: Item) -> Value:
        """One GetCallerIdentity call."""
        try:
            answer = self._context.client("sts", None).get_caller_identity()
        except Exception as exc:  # any botocore failure: this test provider does not classify
            raise UpstreamError(f"GetCallerIdentity failed: {type(exc).__name__}") from None
        return Value(str(answer[FIELDS[item.name]]).encode(), TEXT)


@cachelayer.hookimpl
def cachelayer_providers() -> List[Type[IdentityProvider]]:
    """This plugin's one provider type."""
    return [IdentityProvider]
