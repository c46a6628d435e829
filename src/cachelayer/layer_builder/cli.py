"""The ``cachelayer layer build`` and ``cachelayer layer publish`` commands."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, List, Optional, TextIO

from cachelayer.layer_builder import archive
from cachelayer.layer_builder.errors import LayerBuildError
from cachelayer.layer_builder.targets import (
    ANY_RUNTIME,
    ARCHITECTURES,
    RUNTIMES,
    STANDALONE_RUNTIMES,
    Target,
)

if TYPE_CHECKING:  # build imports pip machinery: loaded only when a build runs
    from cachelayer.layer_builder.build import BuildResult


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``layer`` command (``build``, ``publish``) to a ``cachelayer`` subparsers object.

    Each leaf parser sets ``func(args) -> int`` as its handler.
    """
    layer = subparsers.add_parser(
        "layer",
        help="build and publish the extension as a Lambda layer",
        description="Build the extension plus its providers into a Lambda layer, and publish it.",
    )
    sub = layer.add_subparsers(dest="layer_command", metavar="{build,publish}")
    sub.required = True
    _add_build(sub)
    _add_publish(sub)
    return layer


def _add_build(sub: Any) -> None:
    build = sub.add_parser(
        "build",
        help="build a layer zip or directory",
        description="Install cachelayer and its providers from wheels for a Lambda runtime and "
        "architecture, prune botocore to the services the providers use, and write a "
        "reproducible layer.",
    )
    build.add_argument(
        "--runtime",
        required=True,
        metavar="RUNTIME",
        help=f"the function's runtime: {', '.join(RUNTIMES)} (a layer for that Python), or "
        f"{', '.join(STANDALONE_RUNTIMES)}, {ANY_RUNTIME} (the layer carries its own CPython "
        "and C library, built from Debian 12 packages)",
    )
    build.add_argument(
        "--arch",
        default="x86_64",
        metavar="ARCH",
        help=f"Lambda architecture: {', '.join(ARCHITECTURES)} (default x86_64)",
    )
    _add_content_arguments(build)
    build.add_argument(
        "--compile",
        dest="compile_bytecode",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="ship .pyc files for the target Python (halves the extension's cold start); "
        "default: when a python of the target's version is on this machine",
    )
    build.add_argument(
        "--python",
        metavar="PATH",
        help="the interpreter that compiles the bytecode: a python of the target runtime's "
        "version, when it is not this machine's default (e.g. /usr/bin/python3.12)",
    )
    build.add_argument(
        "-o",
        "--output",
        required=True,
        type=Path,
        metavar="DIR_OR_ZIP",
        help="where to write the layer: a path ending in .zip, or a new directory",
    )
    build.set_defaults(func=run_build)


def _add_content_arguments(build: argparse.ArgumentParser) -> None:
    """``layer build``'s options for what goes into the layer and what is pruned."""
    build.add_argument(
        "--with",
        dest="with_packages",
        action="append",
        default=[],
        metavar="PKG_OR_PATH",
        help="a provider package to add: a name from the index, a wheel, or a project "
        "directory (repeatable)",
    )
    build.add_argument(
        "--extra",
        dest="extras",
        action="append",
        default=[],
        metavar="NAME",
        help="one of cachelayer's own extras to install with it, e.g. 'shared' for the Redis "
        "tier's redis-py and cryptography (repeatable)",
    )
    build.add_argument(
        "--requirements",
        type=Path,
        metavar="FILE",
        help="extra requirements to install into the layer (pip -r)",
    )
    build.add_argument(
        "--keep-service",
        dest="keep_services",
        action="append",
        default=[],
        metavar="SERVICE",
        help="keep this botocore service model too (repeatable)",
    )
    build.add_argument(
        "--no-prune",
        dest="prune_models",
        action="store_false",
        help="keep every botocore service model",
    )


def _add_publish(sub: Any) -> None:
    publish = sub.add_parser(
        "publish",
        help="publish a built layer (Lambda PublishLayerVersion)",
        description="Publish a zip built by `cachelayer layer build`, with the compatible "
        "runtimes and architectures recorded in it, and print the LayerVersionArn.",
    )
    publish.add_argument(
        "layer", type=Path, metavar="ZIP", help="the built layer zip (or directory)"
    )
    publish.add_argument("--name", required=True, help="the layer's name")
    publish.add_argument("--region", help="AWS region (default: AWS_REGION / your profile's)")
    publish.add_argument(
        "--description", help="layer description (default: version, providers, target, hash)"
    )
    publish.add_argument("--license-info", help="license of the layer, e.g. MIT-0")
    publish.set_defaults(func=run_publish)


# Archive formats that are not a layer: Lambda takes zip files only.
_OTHER_ARCHIVES = (
    ".tar",
    ".gz",
    ".tgz",
    ".bz2",
    ".tbz2",
    ".xz",
    ".txz",
    ".zst",
    ".7z",
    ".rar",
    ".jar",
    ".whl",
)


def check_output(output: Path) -> None:
    """Refuse an ``-o`` that names an archive other than a zip (it would become a directory)."""
    suffixes = [s.lower() for s in output.suffixes]
    if suffixes and suffixes[-1] == ".zip":
        return
    if suffixes and suffixes[-1] in _OTHER_ARCHIVES:
        raise LayerBuildError(
            f"-o {output}: Lambda layers are zip files; write -o "
            f"{output.name[: -len(''.join(output.suffixes))] or 'layer'}.zip, or give a "
            "directory name without an archive suffix"
        )


def run_build(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Handle ``cachelayer layer build``; progress on ``err``, the summary on ``out``."""
    from cachelayer.layer_builder.build import BuildRequest, LayerBuilder

    def progress(line: str) -> None:
        print(line, file=err, flush=True)

    try:
        target = Target.parse(args.runtime, args.arch)
        check_output(args.output)
        if args.python is not None and args.compile_bytecode is not False:
            from cachelayer.layer_builder.bytecode import check_interpreter

            check_interpreter(args.python, target)  # before minutes of pip, not after
        request = BuildRequest(
            target=target,
            output=args.output,
            with_packages=tuple(args.with_packages),
            requirements=args.requirements,
            extras=tuple(args.extras),
            keep_services=tuple(args.keep_services),
            prune_models=args.prune_models,
            compile_bytecode=args.compile_bytecode,
            python=args.python,
        )
        result = LayerBuilder(progress).build(request)
    except LayerBuildError as exc:
        print(f"cachelayer layer build: error: {exc}", file=err)
        return 2
    _print_summary(result, target, out)
    return 0


def _print_summary(result: BuildResult, target: Target, out: TextIO) -> None:
    """The build's sizes against Lambda's limits, providers, services, interpreter, hash."""
    from cachelayer.layer_builder.build import MAX_UNZIPPED, MAX_ZIPPED

    rows: List[List[str]] = [
        ["", "zipped", "unzipped"],
        [
            "before pruning",
            archive.human_size(result.before.zipped),
            archive.human_size(result.before.unzipped),
        ],
        [
            "after pruning",
            archive.human_size(result.after.zipped),
            archive.human_size(result.after.unzipped),
        ],
        [
            "Lambda limit",
            f"{archive.human_size(MAX_ZIPPED)} (direct upload)",
            f"{archive.human_size(MAX_UNZIPPED)} (function + layers)",
        ],
    ]
    print(
        f"built {result.output} for {target.runtime} {target.arch} in {result.seconds:.1f} s",
        file=out,
    )
    for row in rows:
        print(f"  {row[0]:<16}{row[1]:>26}{row[2]:>32}", file=out)
    providers = ", ".join(f"{p['name']} (/{p['route']})" for p in result.metadata["providers"])
    print(f"  providers: {providers}", file=out)
    print(f"  services:  {', '.join(result.metadata['services']) or '-'}", file=out)
    interpreter = result.metadata.get("interpreter")
    if interpreter:
        before = archive.human_size(interpreter["stdlib_bytes_before_pruning"])
        after = archive.human_size(interpreter["stdlib_bytes_after_pruning"])
        debs = ", ".join(f"{p['name']} {p['version']}" for p in interpreter["packages"])
        print(
            f"  python:    CPython {interpreter['version']} ({interpreter['libc']}) at "
            f"{interpreter['path']}",
            file=out,
        )
        print(f"  stdlib:    {before} before pruning, {after} after", file=out)
        print(f"  from:      {debs}", file=out)
    print(f"  sha256:    {result.sha256}", file=out)
    for w in result.warnings:
        print(f"  warning: {w}", file=out)


def run_publish(
    args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr
) -> int:
    """Handle ``cachelayer layer publish``; prints the LayerVersionArn on ``out``."""
    from cachelayer.layer_builder.publish import publish_layer

    try:
        client = _lambda_client(args.region)
        published = publish_layer(
            args.layer,
            name=args.name,
            client=client,
            description=args.description,
            license_info=args.license_info,
        )
    except LayerBuildError as exc:
        print(f"cachelayer layer publish: error: {exc}", file=err)
        return 2
    print(
        f"published {args.layer} (sha256 {published.sha256}) as version {published.version}",
        file=err,
    )
    print(published.layer_version_arn, file=out)
    return 0


def _lambda_client(region: Optional[str]) -> Any:
    import boto3
    import botocore.exceptions

    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    try:
        return boto3.session.Session().client("lambda", region_name=region)
    except botocore.exceptions.NoRegionError:
        raise LayerBuildError("no AWS region: pass --region or set AWS_REGION") from None


def main(argv: Optional[List[str]] = None) -> int:
    """Run the ``layer`` commands on their own (``python -m cachelayer.layer_builder.cli``)."""
    parser = argparse.ArgumentParser(prog="cachelayer")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
