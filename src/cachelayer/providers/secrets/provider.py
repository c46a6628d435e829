"""SecretsManagerProvider: Secrets Manager secrets on ``/secrets``."""

from __future__ import annotations

import base64
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import attrs

from cachelayer import (
    BINARY,
    TEXT,
    BadRequestError,
    CachelayerError,
    Item,
    JsonClient,
    ProviderContext,
    TransientError,
    UpstreamError,
    Value,
)
from cachelayer.aws import classify_code
from cachelayer.providers._named import (
    Declarations,
    fetch_or_error,
    run_batches,
    target_of,
)
from cachelayer.providers.secrets.config import SecretsConfig

__all__ = ["SecretsManagerProvider"]

NOT_FOUND_CODES = ("ResourceNotFoundException",)
BATCH_SIZE = 20  # BatchGetSecretValue accepts at most 20 ids in SecretIdList
MAX_PAGES = 5  # NextToken rounds per batch; 20 ids never need more than a few pages


def secret_deleted(code: str, message: str) -> bool:
    """A secret scheduled for deletion answers InvalidRequestException; to a reader it is gone."""
    lowered = message.lower()
    return code == "InvalidRequestException" and ("deleted" in lowered or "deletion" in lowered)


@attrs.frozen
class SecretTarget:
    """Where and what to read: region (None: default), secret id, optional version selectors."""

    region: Optional[str]
    secret_id: str
    version_id: Optional[str] = None
    version_stage: Optional[str] = None

    @property
    def current(self) -> bool:
        """Whether this reads AWSCURRENT (what BatchGetSecretValue returns)."""
        return self.version_id is None and self.version_stage is None


def _blob(data: Any) -> bytes:
    """A JSON-protocol blob (base64 text on the wire) as bytes."""
    if isinstance(data, str):
        try:
            return base64.b64decode(data, validate=True)
        except ValueError:
            raise UpstreamError(
                "secretsmanager returned a SecretBinary that is not base64"
            ) from None
    return bytes(data)


def _value(fields: Mapping[str, Any]) -> Value:
    # The value is the body: kept once, not again in the metadata.
    metadata = {
        k: v
        for k, v in fields.items()
        if k not in ("ResponseMetadata", "SecretString", "SecretBinary")
    }
    if fields.get("SecretString") is not None:
        return Value(str(fields["SecretString"]).encode("utf-8"), TEXT, metadata)
    if fields.get("SecretBinary") is not None:
        return Value(_blob(fields["SecretBinary"]), BINARY, metadata)
    raise UpstreamError(
        f"secretsmanager returned neither SecretString nor SecretBinary for {fields.get('Name')!r}"
    )


@attrs.frozen
class SecretsManagerProvider:
    """Serves Secrets Manager secrets: ``GET /secrets?name=<id>[&versionId=|&versionStage=]``.

    String secrets are served as UTF-8 text, binary secrets as raw bytes. Undeclared ids are
    served too, from the default region. ``SECRETS_MANAGER_TTL`` (AWS's extension's variable)
    sets the section's TTL.
    """

    name: ClassVar[str] = "secrets"
    route: ClassVar[str] = "secrets"
    services: ClassVar[Tuple[str, ...]] = ("secretsmanager",)
    config_schema: ClassVar[Any] = SecretsConfig
    query_parameters: ClassVar[Tuple[str, ...]] = ("versionId", "versionStage")
    ttl_environment_variable: ClassVar[Optional[str]] = "SECRETS_MANAGER_TTL"

    _context: ProviderContext
    _declarations: Declarations = attrs.Factory(Declarations)

    @classmethod
    def from_config(
        cls, config: Optional[SecretsConfig], context: ProviderContext
    ) -> SecretsManagerProvider:
        """Index the declared ids with their region and TTL (item > group > section)."""
        return cls(context, Declarations.from_config(config, section="secrets", noun="secret"))

    def declared(self) -> Sequence[Item]:
        """Every declared secret, current version."""
        return [self.resolve(sid, {}) for sid in self._declarations.names]

    def resolve(self, name: str, params: Mapping[str, str]) -> Item:
        """Turn a secret id plus ``versionId`` / ``versionStage`` into an Item."""
        version_id, version_stage = params.get("versionId"), params.get("versionStage")
        if version_id is not None and version_stage is not None:
            raise BadRequestError("give either 'versionId' or 'versionStage', not both")
        variant: List[Tuple[str, str]] = []
        for key, value in (("versionId", version_id), ("versionStage", version_stage)):
            if value is not None:
                if not value or len(value) > 256:
                    raise BadRequestError(f"{key!r} must be 1 to 256 characters, got {value!r}")
                variant.append((key, value))
        decl = self._declarations.get(name)
        return Item(
            route=self.route,
            name=name,
            variant=tuple(variant),
            ttl=decl.ttl,
            target=SecretTarget(decl.region, name, version_id, version_stage),
        )

    def fetch(self, item: Item) -> Value:
        """GetSecretValue for one item."""
        target = self._target(item)
        client = self._client(target.region)
        kwargs: Dict[str, str] = {"SecretId": target.secret_id}
        if target.version_id is not None:
            kwargs["VersionId"] = target.version_id
        if target.version_stage is not None:
            kwargs["VersionStage"] = target.version_stage
        response = client.call(
            "GetSecretValue",
            kwargs,
            not_found=NOT_FOUND_CODES,
            not_found_if=secret_deleted,
            what=f"secret {item.name!r}",
        )
        return _value(response)

    def fetch_many(self, items: Sequence[Item]) -> Dict[Item, Union[Value, CachelayerError]]:
        """BatchGetSecretValue by 20 per region for current versions; other versions one by one.

        BatchGetSecretValue only returns AWSCURRENT, so versionId/versionStage items are
        fetched singly. moto supports BatchGetSecretValue, and the tests exercise it.
        """
        results: Dict[Item, Union[Value, CachelayerError]] = {}
        batches: Dict[Optional[str], List[Item]] = {}
        for item in items:
            target = self._target(item)
            if target.current:
                batches.setdefault(target.region or self._default_region(), []).append(item)
            else:
                results[item] = self._fetch_or_error(item)
        calls = [
            (region, batch[start : start + BATCH_SIZE])
            for region, batch in batches.items()
            for start in range(0, len(batch), BATCH_SIZE)
        ]
        results.update(run_batches(lambda call: self._batch_get(*call), calls))
        return results

    def _batch_get(
        self, region: Optional[str], chunk: Sequence[Item]
    ) -> Dict[Item, Union[Value, CachelayerError]]:
        ids = list(dict.fromkeys(self._target(item).secret_id for item in chunk))
        values: List[Mapping[str, Any]] = []
        errors: List[Mapping[str, Any]] = []
        try:
            client = self._client(region)
            token: Optional[str] = None
            for _ in range(MAX_PAGES):
                kwargs: Dict[str, Any] = {"SecretIdList": ids}
                if token:
                    kwargs["NextToken"] = token
                response = client.call("BatchGetSecretValue", kwargs, what=f"{len(ids)} secrets")
                values.extend(response.get("SecretValues", []))
                errors.extend(response.get("Errors", []))
                token = response.get("NextToken")
                if not token:
                    break
        except TransientError as exc:
            return {item: exc for item in chunk}
        except CachelayerError:
            # E.g. a role allowed GetSecretValue but not BatchGetSecretValue (AccessDenied):
            # the secrets themselves may still be readable one by one.
            return {item: self._fetch_or_error(item) for item in chunk}
        error_by_id = {str(e.get("SecretId")): e for e in errors}
        results: Dict[Item, Union[Value, CachelayerError]] = {}
        for item in chunk:
            sid = self._target(item).secret_id
            fields = next((v for v in values if _is_secret(sid, v)), None)
            if fields is not None:
                try:
                    results[item] = _value(fields)
                except CachelayerError as exc:
                    results[item] = exc
            elif sid in error_by_id:
                error = error_by_id[sid]
                results[item] = classify_code(
                    str(error.get("ErrorCode") or "Unknown"),
                    str(error.get("Message") or ""),
                    not_found=NOT_FOUND_CODES,
                    not_found_if=secret_deleted,
                    service="secretsmanager",
                    operation="BatchGetSecretValue",
                    what=f"secret {item.name!r}",
                )
            else:
                # An id form the answer does not echo (e.g. a partial ARN we could not match).
                results[item] = self._fetch_or_error(item)
        return results

    def _fetch_or_error(self, item: Item) -> Union[Value, CachelayerError]:
        return fetch_or_error(self.fetch, item)

    def _target(self, item: Item) -> SecretTarget:
        return target_of(item, SecretTarget, self.resolve)

    def _default_region(self) -> Optional[str]:
        return self._context.default_region

    def _client(self, region: Optional[str]) -> JsonClient:
        client: JsonClient = self._context.json_client("secretsmanager", region)
        return client


def _is_secret(secret_id: str, fields: Mapping[str, Any]) -> bool:
    """Whether a BatchGetSecretValue entry answers ``secret_id`` (a name, ARN or partial ARN)."""
    arn = str(fields.get("ARN") or "")
    if secret_id in (fields.get("Name"), arn):
        return True
    # A partial ARN omits the "-XXXXXX" suffix Secrets Manager appends.
    return (
        secret_id.startswith("arn:")
        and arn.startswith(secret_id + "-")
        and len(arn) == len(secret_id) + 7
    )
