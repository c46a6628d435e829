"""A layer in which no provider needs boto3 ships neither boto3 nor botocore, and says so."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from cachelayer.cli import build_parser
from cachelayer.layer_builder.cli import run_build


@pytest.mark.slow
def test_built_in_only_layer_leaves_boto3_out(tmp_path: Path) -> None:
    """Built with the built-in providers only, the layer has no boto3, botocore or s3transfer,
    still holds the providers' entry points, and the build prints what leaving them out saved."""
    out, err = io.StringIO(), io.StringIO()
    runtime = f"python{sys.version_info.major}.{sys.version_info.minor}"
    target = tmp_path / "layer"
    args = build_parser().parse_args(["layer", "build", "--runtime", runtime, "-o", str(target)])
    code = run_build(args, out=out, err=err)
    assert code == 0, err.getvalue()[-3000:]
    site = target / "cachelayer"
    for name in ("boto3", "botocore", "s3transfer"):
        assert not (site / name).exists(), name
    assert (site / "cachelayer" / "awsjson" / "client.py").is_file()
    text = out.getvalue() + err.getvalue()
    assert "boto3 and botocore left out: no provider in the layer needs them" in text
    assert "unzipped smaller than with them" in text
