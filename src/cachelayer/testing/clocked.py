"""``python -m cachelayer.testing.clocked``: ``cachelayer serve`` with the cache on a FileClock.

The environment is ``cachelayer serve``'s (``CACHE_EXTENSION_CONFIG``, ``CACHE_EXTENSION_PORT``
...) plus ``CACHELAYER_TEST_CLOCK``, the file of the ``FileClock`` the test moves: a test can
let TTLs and backoffs pass in a server process without sleeping. For tests only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from cachelayer.core.app import Application
from cachelayer.server import Server
from cachelayer.testing.clock import FileClock

CLOCK_VARIABLE = "CACHELAYER_TEST_CLOCK"

log = logging.getLogger("cachelayer")


async def _serve(app: Application) -> None:
    server = Server(app)
    await server.start()
    if app.settings.init_startup:
        await app.prefetch()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("serving on http://127.0.0.1:%d on a test clock", server.port)
    await stop.wait()
    app.on_shutdown("signal")
    await server.close()
    log.info("%s", app.stats_line())


def main() -> int:
    """Serve until SIGTERM; 2 when the clock's file is not named."""
    env = dict(os.environ)
    path = env.get(CLOCK_VARIABLE)
    if not path:
        print(
            f"cachelayer.testing.clocked: set {CLOCK_VARIABLE} to the clock's file", file=sys.stderr
        )
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    app = Application.from_environment(env, clock=FileClock(Path(path)))
    try:
        asyncio.run(_serve(app))
    finally:
        app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
