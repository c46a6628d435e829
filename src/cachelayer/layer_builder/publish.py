"""Publish a built layer with Lambda's PublishLayerVersion, using the build's own metadata."""

from __future__ import annotations

import json
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import attrs

from cachelayer.layer_builder import archive
from cachelayer.layer_builder.build import MAX_ZIPPED, METADATA_FILE, PACKAGES_DIR
from cachelayer.layer_builder.errors import LayerBuildError

_LAYER_NAME = re.compile(
    r"^(arn:[a-zA-Z0-9-]+:lambda:[a-zA-Z0-9-]+:\d{12}:layer:)?[a-zA-Z0-9_-]{1,140}$"
)


@attrs.frozen
class PublishedLayer:
    """The version Lambda created."""

    layer_version_arn: str
    version: int
    sha256: str


def read_layer_metadata(zip_path: Path) -> Dict[str, Any]:
    """``cachelayer/layer.json`` from a built zip; a clear error when it is not one."""
    member = f"{PACKAGES_DIR}/{METADATA_FILE}"
    try:
        with zipfile.ZipFile(zip_path) as zf:
            raw = zf.read(member)
    except FileNotFoundError:
        raise LayerBuildError(
            f"{zip_path}: no such file; build it with `cachelayer layer build -o {zip_path}`"
        ) from None
    except zipfile.BadZipFile:
        raise LayerBuildError(
            f"{zip_path}: not a zip file; pass the zip `cachelayer layer build` wrote"
        ) from None
    except KeyError:
        raise LayerBuildError(
            f"{zip_path}: has no {member}, so it was not made by `cachelayer layer build`; "
            "rebuild it with that command"
        ) from None
    try:
        meta: Dict[str, Any] = json.loads(raw)
    except ValueError as exc:
        raise LayerBuildError(
            f"{zip_path}: {member} is not valid JSON ({exc}); rebuild the layer"
        ) from None
    for key in ("runtime", "architecture", "compatible_runtimes", "compatible_architectures"):
        if not isinstance(meta, dict) or not meta.get(key):
            raise LayerBuildError(f"{zip_path}: {member} lacks {key!r}; rebuild the layer")
    return meta


def default_description(meta: Mapping[str, Any], sha256: str) -> str:
    """``cachelayer 0.1.0: parameters, secrets, dynamodb; python3.12 arm64; sha256 1a2b3c...``"""
    providers = ", ".join(p["name"] for p in meta.get("providers", [])) or "no providers"
    text = (
        f"cachelayer {meta.get('cachelayer_version')}: {providers}; {meta['runtime']} "
        f"{meta['architecture']}; sha256 {sha256[:16]}"
    )
    return text[:256]  # Lambda's limit for a layer description


def publish_layer(
    layer: Path,
    *,
    name: str,
    client: Any,
    description: Optional[str] = None,
    license_info: Optional[str] = None,
) -> PublishedLayer:
    """Publish ``layer`` (a built zip, or a built directory which is zipped the same way).

    ``client`` is a boto3 Lambda client (so tests and callers choose region and endpoint).
    """
    if not _LAYER_NAME.match(name):
        raise LayerBuildError(
            f"--name {name!r}: a layer name is 1-140 letters, digits, '-' or '_' (or a layer ARN)"
        )
    with tempfile.TemporaryDirectory(prefix="cachelayer-publish-") as tmp:
        zip_path = layer
        if layer.is_dir():
            zip_path = Path(tmp) / "layer.zip"
            if not (layer / PACKAGES_DIR / METADATA_FILE).is_file():
                raise LayerBuildError(
                    f"{layer}: not a layer built by `cachelayer layer build` "
                    f"(no {PACKAGES_DIR}/{METADATA_FILE})"
                )
            archive.write_zip(layer, zip_path, date_time=archive.zip_timestamp())
        meta = read_layer_metadata(zip_path)
        size = zip_path.stat().st_size
        if size > MAX_ZIPPED:
            raise LayerBuildError(
                f"{layer}: {archive.human_size(size)} zipped, over the "
                f"{archive.human_size(MAX_ZIPPED)} Lambda accepts as a direct upload; upload it "
                "to S3 and publish from there (sam deploy does this for you)"
            )
        digest = archive.sha256_of(zip_path)
        kwargs: Dict[str, Any] = {
            "LayerName": name,
            "Description": description
            if description is not None
            else default_description(meta, digest),
            "Content": {"ZipFile": zip_path.read_bytes()},
            "CompatibleRuntimes": list(meta["compatible_runtimes"]),
            "CompatibleArchitectures": list(meta["compatible_architectures"]),
        }
        if license_info:
            kwargs["LicenseInfo"] = license_info
        response = _call(client, kwargs, name)
    return PublishedLayer(
        layer_version_arn=response["LayerVersionArn"],
        version=int(response["Version"]),
        sha256=digest,
    )


def _call(client: Any, kwargs: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    import botocore.exceptions

    try:
        return client.publish_layer_version(**kwargs)
    except botocore.exceptions.ClientError as exc:
        err = exc.response.get("Error", {})
        raise LayerBuildError(
            f"Lambda refused to publish layer {name!r}: {err.get('Code')}: {err.get('Message')}"
        ) from None
    except botocore.exceptions.NoCredentialsError:
        raise LayerBuildError(
            "no AWS credentials found to publish the layer: set AWS_PROFILE or "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
        ) from None
    except botocore.exceptions.BotoCoreError as exc:
        raise LayerBuildError(f"publishing layer {name!r} failed: {exc}") from None
