"""The ``cachelayer local invoke`` command: run a function and its extensions under the emulator."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List

from cachelayer.local.emulator import LocalLambda


def register(subparsers: Any) -> None:
    """Add ``local`` (with its ``invoke`` subcommand) to the ``cachelayer`` command's subparsers."""
    local = subparsers.add_parser(
        "local",
        help="run a function with extensions under a local Lambda emulator",
        description="A local emulator of Lambda's Extensions and Runtime APIs on loopback, "
        "driving real extension processes and AWS's Python runtime interface client.",
    )
    sub = local.add_subparsers(dest="local_command", metavar="COMMAND")
    sub.required = True
    _add_invoke(sub)


def _add_invoke(sub: Any) -> None:
    invoke = sub.add_parser(
        "invoke",
        help="invoke a Python handler with the extensions in a directory",
        description="Start the extensions in DIR and the handler under awslambdaric with the "
        "environment Lambda sets, invoke it N times (frozen with SIGSTOP between invocations "
        "if asked), shut down within Lambda's 2 s, and print each response and REPORT line.",
    )
    invoke.add_argument(
        "--extensions",
        required=True,
        metavar="DIR",
        help="directory of extension executables (like /opt/extensions)",
    )
    invoke.add_argument(
        "--handler", required=True, metavar="MODULE.FUNC", help="the handler, e.g. app.handler"
    )
    invoke.add_argument(
        "--handler-dir",
        default=".",
        metavar="DIR",
        help="directory holding the handler's module (default: .)",
    )
    invoke.add_argument(
        "--event", default="{}", metavar="JSON", help="the event, as JSON (default: {})"
    )
    invoke.add_argument(
        "--times", type=int, default=1, metavar="N", help="number of invocations (default: 1)"
    )
    invoke.add_argument(
        "--freeze-between",
        type=float,
        default=0.0,
        metavar="S",
        help="seconds frozen between invocations",
    )
    invoke.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="K=V",
        help="a function environment variable (repeatable)",
    )
    invoke.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="function timeout in seconds (default: 30)",
    )
    invoke.add_argument(
        "--show-logs", action="store_true", help="print the processes' logs after the run"
    )
    invoke.set_defaults(func=run_invoke)


def _parse_env(pairs: List[str]) -> Dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"cachelayer local invoke: --env {pair!r}: expected KEY=VALUE")
        env[key] = value
    return env


def run_invoke(args: argparse.Namespace) -> int:
    """Run ``args.times`` invocations; print responses and REPORT lines. Exit 1 if any failed."""
    try:
        event = json.loads(args.event)
    except ValueError as exc:
        raise SystemExit(f"cachelayer local invoke: --event is not valid JSON: {exc}") from None
    if args.times < 1:
        raise SystemExit("cachelayer local invoke: --times must be at least 1")
    extensions = Path(args.extensions)
    if not extensions.is_dir():
        raise SystemExit(f"cachelayer local invoke: --extensions {extensions}: no such directory")
    failed = False
    with LocalLambda(
        extensions_dir=extensions,
        handler=args.handler,
        handler_dir=args.handler_dir,
        env=_parse_env(args.env),
        timeout_s=args.timeout,
    ) as fn:
        for i in range(args.times):
            result = fn.invoke(event, freeze_between=args.freeze_between if i else 0.0)
            if result.ok:
                print(result.payload.decode("utf-8", "replace") if result.payload else "null")
            else:
                failed = True
                print(json.dumps(result.error))
            print(result.report_line())
        report = fn.shutdown()
        if report.killed:
            print(f"SHUTDOWN: killed after the deadline: {', '.join(report.killed)}")
        if args.show_logs:
            for name in sorted(p.stem for p in fn.log_dir.glob("*.log")):
                print(f"----- {name} -----")
                sys.stdout.write(fn.log(name))
    return 1 if failed else 0
