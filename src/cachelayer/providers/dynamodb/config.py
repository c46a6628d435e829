"""The ``dynamodb:`` config section of the DynamoDB provider (the sample's keys), in attrs."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, List, Literal, Optional, Union

import attrs

from cachelayer import Duration, not_empty
from cachelayer.providers._named import check_region, check_ttl

__all__ = ["DynamoDbConfig", "DynamoDbSection", "DynamoItem", "KeyType", "check_key_value"]

KeyType = Literal["S", "N", "B"]
KEY_TYPES = ("S", "N", "B")
# DynamoDB's number syntax: optional sign, digits with an optional point, optional exponent.
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def check_key_value(keytype: str, value: str, what: str) -> None:
    """Raise ValueError unless ``value`` is a valid key value of DynamoDB type ``keytype``."""
    if value == "":
        raise ValueError(f"{what} must not be empty (DynamoDB key values cannot be empty)")
    if keytype == "N" and not _NUMBER.match(value):
        raise ValueError(f"{what} must be a number for key type N, got {value!r}")
    if keytype == "B":
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"{what} must be base64 for key type B, got {value!r}") from None


_non_empty = not_empty("string")
_optional_non_empty = not_empty("string", optional=True)


def _key_type(instance: Any, attribute: Any, value: Any) -> None:
    if value is not None and value not in KEY_TYPES:
        raise ValueError(f"{attribute.name} must be S, N or B, got {value!r}")


@attrs.frozen(kw_only=True)
class DynamoItem:
    """One declared item, with the sample's keys.

    Served as ``<table>-<hashkeyvalue>[-<sortkeyvalue>]``.

    ``hashkeyvalue``/``sortkeyvalue`` are strings: decimal digits for type N, base64 for B.
    """

    table: str = attrs.field(validator=_non_empty)
    hashkey: str = attrs.field(validator=_non_empty)
    hashkeytype: KeyType = attrs.field(validator=_key_type)
    hashkeyvalue: str = attrs.field(validator=attrs.validators.instance_of(str))
    sortkey: Optional[str] = attrs.field(default=None, validator=_optional_non_empty)
    sortkeytype: Optional[KeyType] = attrs.field(default=None, validator=_key_type)
    sortkeyvalue: Optional[str] = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.instance_of(str))
    )
    region: Optional[str] = attrs.field(default=None, validator=check_region)
    ttl: Optional[Duration] = attrs.field(default=None, validator=check_ttl)

    def __attrs_post_init__(self) -> None:
        check_key_value(self.hashkeytype, self.hashkeyvalue, f"hashkeyvalue of table {self.table}")
        if self.sortkey is None:
            if self.sortkeytype is not None or self.sortkeyvalue is not None:
                raise ValueError(
                    f"sortkeytype/sortkeyvalue given for table {self.table} without sortkey; "
                    "add sortkey (the sort key's attribute name) or remove them"
                )
            return
        if self.sortkeytype is None or self.sortkeyvalue is None:
            raise ValueError(
                f"sortkey {self.sortkey!r} of table {self.table} needs both sortkeytype "
                "(S, N or B) "
                "and sortkeyvalue"
            )
        check_key_value(self.sortkeytype, self.sortkeyvalue, f"sortkeyvalue of table {self.table}")

    @property
    def item_name(self) -> str:
        """The name it is served under, as the Go sample builds it."""
        name = f"{self.table}-{self.hashkeyvalue}"
        return f"{name}-{self.sortkeyvalue}" if self.sortkey is not None else name


@attrs.frozen(kw_only=True)
class DynamoDbSection:
    """The mapping form of the section, with a section-level TTL: ``{ttl: 5m, items: [...]}``."""

    ttl: Optional[Duration] = attrs.field(default=None, validator=check_ttl)
    items: List[DynamoItem] = attrs.field(factory=list)


DynamoDbConfig = Union[List[DynamoItem], DynamoDbSection]
"""The whole ``dynamodb:`` section: the sample's list of items, or the mapping form."""
