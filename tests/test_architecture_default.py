"""The SAM template, its README and the layer builder agree on the default architecture."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import yaml

from cachelayer.layer_builder.cli import register

ROOT = Path(__file__).resolve().parent.parent


class _CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation's short-form tags (!Ref, !Sub...) as plain values."""


_CfnLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def builder_default_arch() -> str:
    parser = argparse.ArgumentParser(prog="cachelayer")
    register(parser.add_subparsers(dest="command"))
    return str(parser.parse_args(["layer", "build", "--runtime", "python3.12", "-o", "x.zip"]).arch)


def test_template_default_is_the_builders() -> None:
    """deploy/template.yaml's Architecture parameter defaults to what `layer build` builds."""
    template = yaml.load((ROOT / "deploy" / "template.yaml").read_text(), Loader=_CfnLoader)
    assert template["Parameters"]["Architecture"]["Default"] == builder_default_arch()


def test_documented_build_commands_use_the_default() -> None:
    """Every `layer build` command in the docs that names an --arch names the default one, so
    the layer built by following them matches the template as deployed by default."""
    default = builder_default_arch()
    for doc in (
        "README.md",
        "deploy/README.md",
        "docs/writing-providers.md",
        "deploy/template.yaml",
    ):
        for line in (ROOT / doc).read_text().splitlines():
            if "cachelayer layer build --runtime" in line and "--arch " in line:
                arch = re.search(r"--arch (\S+)", line)
                assert arch is not None
                assert arch.group(1).strip("[]") in (default, f"{default}|arm64"), (doc, line)
