"""The ``cachelayer`` command: serve, providers, check-config, demo, local, layer."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import logging
import os
import signal
import sys
from typing import Any, List, Optional, Sequence

from cachelayer.errors import CachelayerError
from cachelayer.logs import exit_now, setup_logging

log = logging.getLogger("cachelayer")


def install_loop_policy() -> None:
    """Use uvloop when it is installed: it roughly halves the CPU spent per cache hit."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop ships wheels for every Lambda platform
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


# -- serve ------------------------------------------------------------------------------------


async def _serve(app: Any) -> None:
    from cachelayer.server import Server

    server = Server(app)
    await server.start()
    if app.settings.init_startup:
        await app.prefetch()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("serving on http://127.0.0.1:%d (auth: %s)", server.port, app.settings.auth)
    await stop.wait()
    app.on_shutdown("signal")
    await server.close()
    log.info("%s", app.stats_line())


def cmd_serve(args: argparse.Namespace) -> int:
    from cachelayer.core.app import Application

    env = dict(os.environ)
    # Before the application is built: its startup warnings are logged in the house style.
    setup_logging(env.get("CACHE_EXTENSION_LOG_LEVEL", "INFO"))
    try:
        app = Application.from_environment(env, config_path=args.config, port=args.port)
    except CachelayerError as exc:
        print(f"cachelayer: {exc}", file=sys.stderr)
        return 2
    setup_logging(app.settings.log_level)
    install_loop_policy()
    try:
        asyncio.run(_serve(app))
    except OSError as exc:
        print(f"cachelayer: {exc}", file=sys.stderr)
        return 1
    finally:
        app.close()
    return 0


# -- providers / check-config ----------------------------------------------------------------


def cmd_providers(args: argparse.Namespace) -> int:
    from cachelayer.core.config import plugin_filters
    from cachelayer.plugins import discover, filter_warnings, filtered_out

    allow, deny = plugin_filters(os.environ)
    try:
        pm, registry = discover(allow=allow, deny=deny)
    except CachelayerError as exc:
        print(f"cachelayer: {exc}", file=sys.stderr)
        return 2
    rows = [("SECTION", "ROUTE", "AWS SERVICES", "DISTRIBUTION", "VERSION", "PLUGIN")]
    for name, info in sorted(registry.by_name.items()):
        p = info.provider_type
        rows.append(
            (
                name,
                f"/{p.route}",
                ",".join(p.services),
                info.distribution,
                info.version,
                info.plugin,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    for b in registry.broken:
        print(f"BROKEN  plugin {b.plugin!r} from {b.distribution}: {b.error}")
    for name in filtered_out(pm):
        print(f"FILTERED OUT  plugin {name!r} (CACHE_EXTENSION_PLUGINS / _DISABLE_PLUGINS)")
    for warning in filter_warnings(allow, deny):
        print(f"warning: {warning}", file=sys.stderr)
    # A broken plugin is an installation fault a script (or a layer build check) must see.
    return 1 if registry.broken else 0


def cmd_check_config(args: argparse.Namespace) -> int:
    from cachelayer.core.app import Application
    from cachelayer.core.durations import format_duration

    env = dict(os.environ)
    # Warnings are printed below with the rest of the report, not logged a second time.
    logging.getLogger("cachelayer").setLevel(logging.ERROR)
    try:
        app = Application.from_environment(env, config_path=args.file, client_factory=_no_clients)
    except CachelayerError as exc:
        more = getattr(exc, "more", ())
        for error in (exc, *more):
            print(f"cachelayer: {error}", file=sys.stderr)
        if more:
            print(f"cachelayer: {1 + len(more)} errors in {args.file}", file=sys.stderr)
        return 2
    finally:
        logging.getLogger("cachelayer").setLevel(logging.NOTSET)
    s = app.settings
    print(f"{args.file}: OK")
    print(
        f"default ttl {format_duration(s.default_ttl)}, init_startup {str(s.init_startup).lower()}, "
        f"max_entries {s.cache.max_entries}, max_bytes {format_size(int(s.cache.max_bytes))}, "
        f"negative_ttl {format_duration(float(s.cache.negative_ttl))}, "
        f"stale_if_error {format_duration(float(s.cache.stale_if_error))}"
    )
    total = 0
    default_region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    for name, provider in sorted(app.providers.items()):
        items = list(provider.declared())
        if not items:
            continue
        print(f"{name} (GET /{provider.route}?name=...):")
        for item in items:
            ttl = item.ttl if item.ttl is not None else s.ttl_for(name)
            variant = "".join(f" {k}={v}" for k, v in item.variant)
            print(
                f"  {item.name}{variant}  ttl {format_duration(ttl)}{_region(item, default_region)}"
            )
            total += 1
    noun = "item" if total == 1 else "items"
    print(f"{total} {noun} would be cached" + (" and prefetched at init" if s.init_startup else ""))
    for w in s.warnings:
        print(f"warning: {w}")
    return 0


def format_size(size: int) -> str:
    """Bytes in the units the README and the config use: ``64MiB``, ``512KB``, else bytes."""
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    for unit, factor in (("GB", 1000**3), ("MB", 1000**2), ("KB", 1000)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size} bytes"


def _region(item: Any, default: Optional[str]) -> str:
    """``  region X`` for an item whose provider keeps a region (the built-ins do), else ""."""
    if not hasattr(item.target, "region"):
        return ""
    region = item.target.region
    if region:
        return f"  region {region}"
    return f"  region {default} (the default)" if default else "  region: AWS_REGION (unset here)"


def _no_clients(service: str, region: Optional[str] = None) -> Any:
    raise RuntimeError("check-config makes no AWS calls")


# -- demo -------------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    from cachelayer.demo import run_demo

    return run_demo(invocations=args.invocations)


# -- wiring -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cachelayer",
        description="In-memory caching layer for AWS Lambda (SSM, Secrets Manager, DynamoDB, plugins).",
    )
    from cachelayer import __version__

    parser.add_argument("--version", action="version", version=f"cachelayer {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser(
        "serve",
        help="run the cache server on localhost (outside Lambda, or as a sidecar)",
        description="Run the cache server on 127.0.0.1 (and ::1) outside Lambda, as a local "
        "process or a sidecar, with the same config, routes and auth as the extension. "
        "SIGTERM or SIGINT stops it cleanly.",
    )
    p.add_argument(
        "--config", help="config file (default: $CACHE_EXTENSION_CONFIG or /var/task/config.yaml)"
    )
    p.add_argument("--port", type=int, help="port (default: $CACHE_EXTENSION_PORT or 4000)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "providers",
        help="list installed providers: section, route, AWS services, distribution",
        description="List the installed provider plugins (entry-point group 'cachelayer'): "
        "config section, route, AWS services, distribution, version and plugin name; broken "
        "and filtered-out plugins are listed after them.",
    )
    p.set_defaults(func=cmd_providers)

    p = sub.add_parser(
        "check-config",
        help="validate a config file and print what would be cached",
        description="Validate a config file against the installed providers' schemas, as the "
        "extension does at startup (no AWS call), and print the effective settings and every "
        "item that would be cached, with its TTL and region.",
    )
    p.add_argument("file", help="the config.yaml to check")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser(
        "demo",
        help="run the local demo: moto as AWS, the extension under the local Lambda emulator",
        description="Seed an embedded moto server with the cache-extension-demo sample's data, "
        "run a function reading through the extension and one calling boto3 on every "
        "invocation under the local Lambda emulator, and print their durations side by side.",
    )
    p.add_argument(
        "--invocations", type=int, default=10, help="invocations per function (default 10)"
    )
    p.set_defaults(func=cmd_demo)

    # Sub-command groups that live beside their code.
    for module in ("cachelayer.local.cli", "cachelayer.layer_builder.cli"):
        if importlib.util.find_spec(module) is None:
            continue
        importlib.import_module(module).register(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``cachelayer`` command."""
    parser = build_parser()
    if not list(argv if argv is not None else sys.argv[1:]):
        parser.print_help()  # a bare `cachelayer` asks what it can do
        return 2
    args = parser.parse_args(argv)
    if args.command != "serve":
        setup_logging(os.environ.get("CACHE_EXTENSION_LOG_LEVEL", "WARNING"))
    result: int = args.func(args)
    return result


def run(argv: Optional[List[str]] = None) -> None:
    """The console script: ``serve`` exits at once when done, whatever AWS call is in flight."""
    args = sys.argv[1:] if argv is None else argv
    code = main(args)
    if args[:1] == ["serve"]:
        exit_now(code)
    sys.exit(code)


if __name__ == "__main__":
    run()
