"""What leaving boto3 and botocore out of a layer saves, said in the build's progress output."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Iterable, Optional

__all__ = ["boto_left_out"]

BOTO = ("boto3", "botocore", "s3transfer", "jmespath")


def _installed_size(name: str, keep_services: Iterable[str]) -> int:
    """Bytes of ``name`` as installed in this Python, its botocore/boto3 models of services not
    in ``keep_services`` left out (as the layer's pruning would)."""
    try:
        files = metadata.distribution(name).files or []
    except metadata.PackageNotFoundError:
        return 0
    keep = set(keep_services)
    total = 0
    for entry in files:
        parts = Path(str(entry)).parts
        model = len(parts) > 3 and parts[1] == "data" and parts[0] in ("botocore", "boto3")
        if model and parts[2] not in keep:
            continue
        try:
            total += Path(str(entry.locate())).stat().st_size
        except OSError:
            continue
    return total


def boto_left_out(site: Path, services: Iterable[str]) -> Optional[str]:
    """A progress line when the layer at ``site`` carries no boto3/botocore, with the unzipped
    size they would have added (this Python's copies, models pruned); None when it has them."""
    if any((site / name).is_dir() for name in ("boto3", "botocore")):
        return None
    from cachelayer.layer_builder import archive

    services = list(services)
    saved = sum(_installed_size(name, services) for name in BOTO if not (site / name).is_dir())
    estimate = (
        f": {archive.human_size(saved)} unzipped smaller than with them (their size in this "
        "Python, models pruned the same way)"
        if saved
        else ""
    )
    return (
        "      boto3 and botocore left out: no provider in the layer needs them (the built-in "
        f"providers use cachelayer's own AWS transport){estimate}"
    )
