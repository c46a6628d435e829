"""SSM GetParameter as AWS's extension answers it: ``/systemsmanager/parameters/get``."""

from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping, Optional, Tuple

from cachelayer import BadRequestError, Value
from cachelayer.compat import (
    AwsCompatRoute,
    CompatRead,
    CompatRequest,
    refresh_now,
    render_date,
    required,
)

__all__ = [
    "PARAMETERS_PATH",
    "PARAMETERS_ROUTE",
    "parameter_document",
    "parameter_request",
    "split_parameter_arn",
]

PARAMETERS_PATH = "/systemsmanager/parameters/get"
QUERY = ("name", "version", "label", "withDecryption", "refreshNow")
REFERENCE_PREFIX = "/aws/reference/secretsmanager/"
# arn:<partition>:ssm:<region>:<account>:parameter/<name without its leading slash>
_PARAMETER_ARN = re.compile(
    r"^arn:(?P<partition>[a-z0-9-]+):ssm:(?P<region>[a-z0-9-]*):(?P<account>[0-9]*):parameter/(?P<rest>.+)$"
)
_DIGITS = re.compile(r"^[0-9]+$")


def split_parameter_arn(name: str) -> Optional[Tuple[str, str, str]]:
    """``(region, account, name)`` of an SSM parameter ARN, or None if ``name`` is not one.

    The ARN drops the name's leading slash; hierarchical names (those with a ``/``) always
    start with one in SSM, so it is put back exactly when the rest holds a ``/``.
    """
    match = _PARAMETER_ARN.match(name)
    if match is None:
        return None
    rest = match.group("rest")
    plain = f"/{rest}" if "/" in rest else rest
    return match.group("region"), match.group("account"), plain


def _split_selector(name: str) -> Tuple[str, Optional[str]]:
    """``(name, selector)``: SSM names cannot hold ``:``, so a trailing ``:3`` or ``:label``
    (after the name, or after an ARN's ``parameter/...``) is GetParameter's selector."""
    match = _PARAMETER_ARN.match(name)
    tail = match.group("rest") if match else name
    if ":" not in tail:
        return name, None
    base, _, selector = name.rpartition(":")
    return base, selector


def _native_params(
    params: Mapping[str, str], raw_name: str, name: str, selector: Optional[str]
) -> Dict[str, str]:
    """The ``/parameters`` query (version, label, withDecryption) this request stands for."""
    native: Dict[str, str] = {}
    if selector is not None:
        if "version" in params or "label" in params:
            raise BadRequestError(
                f"the name {raw_name!r} already selects ':{selector}'; drop the 'version' or "
                "'label' query parameter, or the selector from the name"
            )
        native["version" if _DIGITS.match(selector) else "label"] = selector
    for key in ("version", "label"):
        if key in params:
            native[key] = params[key]
    # AWS's extension, like GetParameter, returns SecureStrings encrypted unless asked to
    # decrypt. References to Secrets Manager only exist decrypted, so they default to true.
    decrypt = params.get("withDecryption")
    if decrypt is None:
        decrypt = "true" if name.startswith(REFERENCE_PREFIX) else "false"
    native["withDecryption"] = decrypt
    return native


def parameter_request(params: Mapping[str, str]) -> CompatRequest:
    """The ``/parameters`` reads for one GetParameter request.

    A name read by ARN is read by its plain name first, so an ARN and a name share one cache
    entry; the ARN in the answer tells whether that was the same parameter (same region and
    account). If it was not (a parameter shared from another account, or another region), the
    full ARN is read from SSM.
    """
    refresh = refresh_now(params)
    raw_name = required(params, "name", PARAMETERS_PATH)
    name, selector = _split_selector(raw_name)
    native = _native_params(params, raw_name, name, selector)
    arn = split_parameter_arn(name)
    reads: List[CompatRead] = []
    if arn is not None:
        region, account, plain = arn
        reads.append(
            CompatRead(
                plain,
                native,
                accept=lambda value: _same_parameter(
                    value.metadata.get("ARN"), region, account, plain
                ),
            )
        )
    reads.append(CompatRead(name, native))
    return CompatRequest(reads, refresh=refresh)


def _same_parameter(found_arn: Any, region: str, account: str, plain: str) -> bool:
    if not isinstance(found_arn, str):
        return False
    found = split_parameter_arn(found_arn)
    return found is not None and found == (region, account, plain)


def parameter_document(metadata: Mapping[str, Any], body: Optional[bytes] = None) -> Dict[str, Any]:
    """The ``Parameter`` object as AWS's extension returns it: every field of the SDK's
    Parameter shape, absent ones as null, dates as RFC 3339 UTC strings. ``Value`` is the
    ``body`` (the value is stored once), else the metadata's own ``Value``."""
    value = body.decode("utf-8", "replace") if body is not None else metadata.get("Value")
    return {
        "ARN": metadata.get("ARN"),
        "DataType": metadata.get("DataType"),
        "LastModifiedDate": render_date(metadata.get("LastModifiedDate")),
        "Name": metadata.get("Name"),
        "Selector": metadata.get("Selector"),
        "SourceResult": metadata.get("SourceResult"),
        "Type": metadata.get("Type"),
        "Value": value,
        "Version": metadata.get("Version"),
    }


def get_parameter_result(value: Value) -> Dict[str, Any]:
    """GetParameter's answer for ``value``, as AWS's extension sends it."""
    return {"Parameter": parameter_document(value.metadata, value.body), "ResultMetadata": {}}


PARAMETERS_ROUTE = AwsCompatRoute(
    path=PARAMETERS_PATH,
    query=QUERY,
    to_request=parameter_request,
    render=get_parameter_result,
)
"""The ``aws_compat`` capability of ``ParameterStoreProvider``."""
