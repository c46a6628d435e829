"""What the layer's launcher runs: the startup caches first, then the extension.

    python -I -S -u -B -c 'import sys; sys.path.insert(0, sys.argv.pop(1));
        from cachelayer.launch import run; run()' <packages> --name <name>

Not ``runpy`` (``python -m``): it imports ``importlib.util`` and friends the extension has no
use for. The startup modules' bundle goes in first, before the next import, then the caches,
before anything compiles a regular expression or builds an attrs class
(``cachelayer.startup_cache``).
"""

from __future__ import annotations

import gc
import sys


def run() -> None:
    """Install the startup bundle and caches, run the extension, exit with its code (never
    returns)."""
    # No collections while init allocates (imports, classes, config) and frees little: the
    # extension enables the collector again once ready (see cachelayer.extension.main).
    gc.disable()
    try:
        from cachelayer import startup_cache

        startup_cache.install(modules=True)
    except Exception as exc:  # a cache is a speed-up: without it, the extension still runs
        print(f"[cachelayer] WARNING startup caches not used: {exc!r}", file=sys.stderr)
    from cachelayer.extension import main
    from cachelayer.logs import exit_now

    exit_now(main())
