"""The local demo: the blog post's walkthrough, run on this machine against moto."""

from __future__ import annotations

import logging
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List

FUNCTIONS = Path(__file__).resolve().parent / "functions"


# As the layer's launcher runs it: the startup caches first (cachelayer.launch).
LAUNCH = "from cachelayer.launch import run; run()"


def _launcher(directory: Path) -> Path:
    """An extensions dir whose ``cachelayer`` runs this interpreter's installed cachelayer.

    The built layer's launcher isolates the extension with its own packages; here the packages
    are this environment's, so the launcher just names the interpreter.
    """
    ext = directory / "extensions"
    ext.mkdir(parents=True, exist_ok=True)
    launcher = ext / "cachelayer"
    launcher.write_text(
        "#!/bin/sh\n"
        "# Demo launcher: the installed cachelayer under this interpreter.\n"
        f'exec "{sys.executable}" -u -c "{LAUNCH}" --name "$(basename "$0")"\n'
    )
    launcher.chmod(0o755)
    return ext


def _summary(results: List[Any]) -> Dict[str, float]:
    warm = [r.duration_ms for r in results[1:]] or [0.0]
    return {
        "init": results[0].init_duration_ms or 0.0,
        "cold": results[0].duration_ms,
        "warm_avg": statistics.mean(warm),
        "warm_p50": statistics.median(warm),
        "warm_max": max(warm),
    }


def _ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}x" if theirs > 0 else "-"


def comparison(cached: Dict[str, float], direct: Dict[str, float]) -> List[str]:
    """Ratios and a plain summary of the two functions' durations, whichever way they fall."""
    lines = [
        "",
        "Through cachelayer / boto3 every call: "
        f"init {_ratio(cached['init'], direct['init'])}, "
        f"cold {_ratio(cached['cold'], direct['cold'])}, "
        f"warm avg {_ratio(cached['warm_avg'], direct['warm_avg'])}",
    ]
    for label, key in (
        ("Init", "init"),
        ("The cold invocation", "cold"),
        ("A warm invocation", "warm_avg"),
    ):
        ours, theirs = cached[key], direct[key]
        if ours > theirs:
            verdict = f"is {ours - theirs:.1f} ms LONGER through the extension"
        else:
            verdict = f"is {theirs - ours:.1f} ms shorter through the extension"
        lines.append(f"  {label} {verdict} ({ours:.1f} vs {theirs:.1f} ms).")
    lines.append(
        "  Init through cachelayer includes the extension's own start and its prefetch of the "
        "three items; moto on loopback answers in about a millisecond, real AWS in 10-30 ms per "
        "call, so a real cold invocation saves more."
    )
    return lines


def run_demo(invocations: int = 10, out: Any = None) -> int:
    """Seed moto with the sample, run both demo functions ``invocations`` times, print a table."""
    from cachelayer.local import LocalLambda
    from cachelayer.testing.moto import aws_environment, moto_server
    from cachelayer.testing.sample import SAMPLE_CONFIG_YAML, seed_sample

    out = out or sys.stdout
    # moto's web server logs every request at INFO; the demo's output is the table.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)

    def say(text: str = "") -> None:
        print(text, file=out, flush=True)

    with tempfile.TemporaryDirectory(prefix="cachelayer-demo-") as tmp, moto_server() as endpoint:
        say(f"moto (AWS) on {endpoint}: seeding the sample's table, parameter and secret")
        seed_sample(endpoint)
        config = Path(tmp) / "config.yaml"
        config.write_text(
            SAMPLE_CONFIG_YAML + "secrets:\n  - region: us-west-2\n    names: [secret_info]\n"
        )
        env = aws_environment(endpoint)
        env.update(
            CACHE_EXTENSION_CONFIG=str(config),
            CACHE_EXTENSION_INIT_STARTUP="true",
            CACHE_EXTENSION_TTL="5m",
        )
        extensions = _launcher(Path(tmp))
        rows: Dict[str, Dict[str, float]] = {}
        last: Dict[str, Any] = {}
        for label, handler, ext in (
            ("through cachelayer", "through_extension.handler", extensions),
            ("boto3 every call", "direct_boto3.handler", None),
        ):
            say(
                f"\n== {label}: {invocations} invocations of {handler} under the local Lambda emulator"
            )
            with LocalLambda(
                extensions_dir=ext,
                handler=handler,
                handler_dir=FUNCTIONS,
                env=env,
                function_name=handler.split(".")[0],
                log_dir=Path(tmp) / f"logs-{handler.split('.')[0]}",
            ) as fn:
                results = []
                for _ in range(invocations):
                    result = fn.invoke({}, freeze_between=0.0)
                    say(result.report_line())
                    if not result.ok:
                        say(f"invocation failed: {result.error}")
                        for name in ("cachelayer", "runtime"):
                            log = fn.log(name)
                            if log:
                                say(f"--- {name} log ---\n{log[-3000:]}")
                        return 1
                    results.append(result)
                last[label] = results[-1].response
                rows[label] = _summary(results)
                fn.shutdown()
        values = last["through cachelayer"]
        say("\nValues read through the extension (last invocation):")
        for key, value in values["values"].items():
            shown = f"<secret, {len(value)} chars>" if key == "secret" else value
            say(
                f"  {key:<10} {shown}   X-Cache: {values['cache'][key]}, read in {values['read_ms'][key]:.2f} ms"
            )
        direct = last["boto3 every call"]
        say(f"  secret via boto3 GetSecretValue: read in {direct['read_ms']['secret']:.2f} ms")
        say("\nDurations (ms), as Lambda's REPORT lines count them:")
        say(
            f"  {'function':<20} {'init':>8} {'cold':>8} {'warm avg':>9} {'warm p50':>9} {'warm max':>9}"
        )
        for label, r in rows.items():
            say(
                f"  {label:<20} {r['init']:>8.1f} {r['cold']:>8.2f} {r['warm_avg']:>9.2f} "
                f"{r['warm_p50']:>9.2f} {r['warm_max']:>9.2f}"
            )
        for line in comparison(rows["through cachelayer"], rows["boto3 every call"]):
            say(line)
    return 0


__all__ = ["run_demo"]
