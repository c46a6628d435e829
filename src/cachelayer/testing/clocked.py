"""``python -m cachelayer.testing.clocked``: ``cachelayer serve`` with the cache on a FileClock.

The environment is ``cachelayer serve``'s (``CACHE_EXTENSION_CONFIG``, ``CACHE_EXTENSION_PORT``
...) plus ``CACHELAYER_TEST_CLOCK``, the file of the ``FileClock`` the test moves: a test can
let TTLs and backoffs pass in a server process without sleeping. For tests only; the serving
itself (prefetch, signals, the stats line) is the command's own.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from cachelayer.testing.clock import FileClock

CLOCK_VARIABLE = "CACHELAYER_TEST_CLOCK"


def main() -> int:
    """Serve until SIGTERM; 2 when the clock's file is not named."""
    from cachelayer import cli
    from cachelayer.core.app import Application
    from cachelayer.logs import setup_logging

    env = dict(os.environ)
    path = env.get(CLOCK_VARIABLE)
    if not path:
        print(
            f"cachelayer.testing.clocked: set {CLOCK_VARIABLE} to the clock's file", file=sys.stderr
        )
        return 2
    app = Application.from_environment(env, clock=FileClock(Path(path)))
    setup_logging(app.settings.log_level)
    cli.install_loop_policy()
    try:
        asyncio.run(cli._serve(app))  # the serve command's loop, on this application
    finally:
        app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
