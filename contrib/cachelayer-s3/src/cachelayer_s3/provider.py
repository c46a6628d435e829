"""The S3 provider: declared objects, fetched whole, refreshed with If-None-Match."""

from __future__ import annotations

from typing import Any, ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple

import attrs

from cachelayer import (
    BINARY,
    ByteSize,
    Duration,
    Item,
    NameIndex,
    NotFoundError,
    ProviderContext,
    UpstreamError,
    Value,
    not_empty,
    positive,
)
from cachelayer.aws import translate_errors

__all__ = ["DEFAULT_MAX_SIZE", "ObjectTooLargeError", "S3Object", "S3Provider"]

DEFAULT_MAX_SIZE = 1024 * 1024
"""Bytes: larger objects are refused unless the declaration raises ``max_size``."""

# What S3 stores when an upload names no content type; HTTP clients know the IANA spelling.
_S3_DEFAULT_CONTENT_TYPE = "binary/octet-stream"
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "404"})


class ObjectTooLargeError(UpstreamError):
    """The object upstream is larger than its declared ``max_size``.

    An ``UpstreamError`` (502), not a ``BadRequestError`` (400): the request named a declared
    object correctly; what is wrong is the object upstream against the operator's limit, and
    repeating the request will not help (so not transient either). The fix is in the config or
    in the bucket, which the message says.
    """

    code = "ObjectTooLarge"


@attrs.frozen
class S3Object:
    """One declared object of the ``s3:`` section.

    ``name`` is an optional alias for requests; without it the object answers to
    ``<bucket>/<key>``. ``max_size`` is in bytes, written as a number or with a unit
    (``2MiB``, ``500KB``; default 1 MiB).
    """

    bucket: str = attrs.field(validator=not_empty())
    key: str = attrs.field(validator=not_empty())
    name: Optional[str] = attrs.field(default=None, validator=not_empty(optional=True))
    region: Optional[str] = None
    ttl: Optional[Duration] = None
    max_size: Optional[ByteSize] = attrs.field(default=None, validator=positive("number of bytes"))

    @property
    def path(self) -> str:
        """``bucket/key``: the name the object always answers to."""
        return f"{self.bucket}/{self.key}"

    @property
    def request_name(self) -> str:
        """The canonical name: the alias if there is one, else ``bucket/key``."""
        return self.name if self.name else self.path

    @property
    def limit(self) -> int:
        """The effective size limit in bytes."""
        return self.max_size if self.max_size is not None else DEFAULT_MAX_SIZE


@attrs.frozen
class S3Provider:
    """Serves the objects declared in the ``s3:`` section on ``GET /s3?name=``."""

    name: ClassVar[str] = "s3"
    route: ClassVar[str] = "s3"
    services: ClassVar[Tuple[str, ...]] = ("s3",)
    config_schema: ClassVar[Any] = List[S3Object]
    query_parameters: ClassVar[Tuple[str, ...]] = ()  # name= only
    ttl_environment_variable: ClassVar[Optional[str]] = None

    _context: ProviderContext
    _objects: NameIndex[S3Object] = attrs.Factory(NameIndex)

    @classmethod
    def from_config(
        cls, config: Optional[Sequence[S3Object]], context: ProviderContext
    ) -> S3Provider:
        """Index the declared objects by alias and by ``bucket/key``; reject ambiguous names."""
        objects = NameIndex.build(
            config,
            names=lambda obj: (("name", obj.name), ("key", obj.path)),
            section="s3",
            what="object",
            describe=lambda obj: f"s3://{obj.path}",
        )
        return cls(context, objects)

    def declared(self) -> Sequence[Item]:
        """One item per declared object, for init-startup prefetch."""
        return [self._item(obj) for obj in self._objects.entries]

    def resolve(self, name: str, params: Mapping[str, str]) -> Item:
        """``name`` is an alias or ``bucket/key``; only declared objects are served."""
        obj = self._objects.get(name)
        if obj is None:
            raise NotFoundError(
                f"no S3 object named {name!r} is declared; declare it in the s3: section of "
                "the config (bucket, key, optional name)"
            )
        return self._item(obj)

    def fetch(self, item: Item) -> Value:
        """GetObject, refusing an object over its size limit before reading the body."""
        value = self._get(item, etag=None)
        assert value is not None  # only a conditional request can answer "not modified"
        return value

    def refresh(self, item: Item, previous: Value) -> Value:
        """Refresh conditionally: ``previous`` itself when S3 answers 304 Not Modified.

        Optional capability called by the core instead of ``fetch`` when it holds a previous
        value; returning the very same object tells it nothing was transferred.
        """
        if previous.etag is None:
            return self.fetch(item)
        value = self._get(item, etag=previous.etag)
        return previous if value is None else value

    def _item(self, obj: S3Object) -> Item:
        return Item(
            route=self.route,
            name=obj.request_name,
            ttl=float(obj.ttl) if obj.ttl is not None else None,
            target=obj,
        )

    def _get(self, item: Item, etag: Optional[str]) -> Optional[Value]:
        """The object's value, or None when ``etag`` still matches (304)."""
        # botocore is imported on first use, not at plugin load: the extension must register
        # with Lambda before paying for it.
        from botocore.exceptions import ClientError

        obj: S3Object = item.target
        client = self._context.client("s3", obj.region)
        kwargs: Dict[str, Any] = {"Bucket": obj.bucket, "Key": obj.key}
        if etag is not None:
            kwargs["IfNoneMatch"] = etag
        with translate_errors(
            _NOT_FOUND_CODES, service="s3", operation="GetObject", what=f"object s3://{obj.path}"
        ):
            try:
                response = client.get_object(**kwargs)
            except ClientError as exc:
                # 304 is not an error here: the conditional request found nothing new.
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                code = exc.response.get("Error", {}).get("Code")
                if etag is not None and (status == 304 or code == "304"):
                    return None
                raise
            body_stream = response["Body"]
            try:
                size = response.get("ContentLength")
                limit = obj.limit
                if size is not None and size > limit:
                    raise self._too_large(obj, f"{size} bytes")
                # ContentLength is checked first so a huge object is never transferred; the
                # bounded read guards against a length that was absent or wrong.
                body = body_stream.read(limit + 1)
                if len(body) > limit:
                    raise self._too_large(obj, f"more than {limit} bytes")
            finally:
                body_stream.close()
        content_type = response.get("ContentType") or BINARY
        if content_type == _S3_DEFAULT_CONTENT_TYPE:
            content_type = BINARY
        metadata = {
            k: response[k]
            for k in ("ETag", "LastModified", "VersionId", "ContentLength")
            if response.get(k) is not None
        }
        return Value(
            body=body, content_type=content_type, metadata=metadata, etag=response.get("ETag")
        )

    @staticmethod
    def _too_large(obj: S3Object, size: str) -> ObjectTooLargeError:
        return ObjectTooLargeError(
            f"S3 object s3://{obj.path} is {size}, over its limit of {obj.limit} bytes; "
            "raise max_size for it in the s3: section, or make the object smaller"
        )
