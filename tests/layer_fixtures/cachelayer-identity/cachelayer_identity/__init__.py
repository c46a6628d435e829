"""A third-party provider for tests: ``GET /identity?name=account|arn|userid`` from STS."""

from __future__ import annotations

from typing import Any, ClassVar, List, Mapping, Optional, Sequence, Tuple

import cachelayer
from cachelayer import TEXT, BadRequestError, Item, ProviderContext, UpstreamError, Value

FIELDS = {"account": "Account", "arn": "Arn", "userid": "UserId"}


class IdentityProvider:
    """Serves fields of STS GetCallerIdentity; uses only cachelayer's public face."""

    name: ClassVar[str] = "identity"
    route: ClassVar[str] = "identity"
    services: ClassVar[Tuple[str, ...]] = ("sts",)
    config_schema: ClassVar[Any] = None

    def __init__(self) -> None:
        self._context: Optional[ProviderContext] = None

    def configure(self, config: Any, context: ProviderContext) -> None:
        """Keep the context; this provider takes no configuration."""
        self._context = context

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
        assert self._context is not None, "configure() first"
        try:
            answer = self._context.client("sts", None).get_caller_identity()
        except Exception as exc:  # any botocore failure: this test provider does not classify
            raise UpstreamError(f"GetCallerIdentity failed: {type(exc).__name__}") from None
        return Value(str(answer[FIELDS[item.name]]).encode(), TEXT)


@cachelayer.hookimpl
def cachelayer_providers() -> List[IdentityProvider]:
    """This plugin's one provider."""
    return [IdentityProvider()]
