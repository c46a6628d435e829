"""Where an AWS service lives: partition endpoints, FIPS and dual-stack variants, endpoint overrides."""

from __future__ import annotations

import os
import re
from typing import Mapping, Optional, Tuple

import attrs

from cachelayer.errors import UpstreamError

__all__ = ["Partition", "endpoint_url", "partition_of"]


@attrs.frozen
class Partition:
    """An AWS partition: its name, region pattern and DNS suffixes (botocore's partitions.json)."""

    name: str
    region_regex: str
    dns_suffix: str
    dual_stack_dns_suffix: Optional[str]

    def matches(self, region: str) -> bool:
        """Whether ``region`` belongs to this partition."""
        return re.match(self.region_regex, region) is not None


PARTITIONS: Tuple[Partition, ...] = (
    Partition("aws", r"^(us|eu|ap|sa|ca|me|af|il|mx)\-\w+\-\d+$", "amazonaws.com", "api.aws"),
    Partition("aws-cn", r"^cn\-\w+\-\d+$", "amazonaws.com.cn", "api.amazonwebservices.com.cn"),
    Partition("aws-us-gov", r"^us\-gov\-\w+\-\d+$", "amazonaws.com", "api.aws"),
    Partition("aws-eusc", r"^eusc\-(de)\-\w+\-\d+$", "amazonaws.eu", "api.amazonwebservices.eu"),
    # The isolated partitions: botocore's dual-stack answers there are not settled; refused.
    Partition("aws-iso", r"^us\-iso\-\w+\-\d+$", "c2s.ic.gov", None),
    Partition("aws-iso-b", r"^us\-isob\-\w+\-\d+$", "sc2s.sgov.gov", None),
    Partition("aws-iso-e", r"^eu\-isoe\-\w+\-\d+$", "cloud.adc-e.uk", None),
    Partition("aws-iso-f", r"^us\-isof\-\w+\-\d+$", "csp.hci.ic.gov", None),
)
_HOST_LABEL = re.compile(r"^[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$")
_TRUE = ("true", "1")


def partition_of(region: str) -> Partition:
    """The partition of ``region``; an unknown region is in ``aws``, as botocore has it."""
    for partition in PARTITIONS:
        if partition.matches(region):
            return partition
    return PARTITIONS[0]


def _flag(env: Mapping[str, str], name: str) -> bool:
    return str(env.get(name, "")).strip().lower() in _TRUE


def configured_endpoint(service_id: str, environ: Mapping[str, str]) -> Optional[str]:
    """``AWS_ENDPOINT_URL_<SERVICE_ID>`` else ``AWS_ENDPOINT_URL`` (unless
    ``AWS_IGNORE_CONFIGURED_ENDPOINT_URLS`` is true), else None."""
    if _flag(environ, "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"):
        return None
    specific = "AWS_ENDPOINT_URL_" + service_id.replace(" ", "_").upper()
    return environ.get(specific) or environ.get("AWS_ENDPOINT_URL") or None


def endpoint_url(
    endpoint_prefix: str,
    service_id: str,
    region: str,
    environ: Optional[Mapping[str, str]] = None,
    *,
    fips: Optional[bool] = None,
    dual_stack: Optional[bool] = None,
) -> str:
    """The endpoint URL of a service in ``region``, as botocore resolves it.

    ``AWS_ENDPOINT_URL_<SERVICE_ID>`` / ``AWS_ENDPOINT_URL`` win; otherwise
    ``https://<prefix>[-fips].<region>.<dns suffix>``, with the dual-stack suffix when
    ``AWS_USE_DUALSTACK_ENDPOINT`` is true and ``-fips`` when ``AWS_USE_FIPS_ENDPOINT`` is
    (``fips`` / ``dual_stack`` override the variables).
    """
    env = os.environ if environ is None else environ
    configured = configured_endpoint(service_id, env)
    if configured:
        return configured.rstrip("/")
    if not _HOST_LABEL.match(region):
        raise UpstreamError(
            f"{region!r} is not a valid AWS region name (letters, digits and '-'); "
            "set AWS_REGION or the config's region to one such as us-west-2"
        )
    use_fips = _flag(env, "AWS_USE_FIPS_ENDPOINT") if fips is None else fips
    use_dual = _flag(env, "AWS_USE_DUALSTACK_ENDPOINT") if dual_stack is None else dual_stack
    if endpoint_prefix == "dynamodb" and region == "local":
        return "http://localhost:8000"  # DynamoDB Local, as botocore's rules have it
    partition = partition_of(region)
    host = f"{endpoint_prefix}-fips" if use_fips else endpoint_prefix
    if use_dual:
        if partition.dual_stack_dns_suffix is None:
            raise UpstreamError(
                f"dual-stack endpoints are not supported in partition {partition.name} "
                f"(region {region}); unset AWS_USE_DUALSTACK_ENDPOINT"
            )
        return f"https://{host}.{region}.{partition.dual_stack_dns_suffix}"
    if use_fips and partition.name == "aws-us-gov" and endpoint_prefix == "ssm":
        # SSM's GovCloud endpoints are FIPS endpoints under the plain name.
        return f"https://ssm.{region}.{partition.dns_suffix}"
    return f"https://{host}.{region}.{partition.dns_suffix}"
