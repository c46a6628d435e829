"""The Lambda extension process: register, build the app, bind the port, then follow the lifecycle.

Run by the layer's launcher as ``python -m cachelayer.extension --name <launcher file name>``.
Registering comes first and imports only the stdlib: Lambda's init clock is running, and
nothing heavy (botocore above all) may be loaded before the extension has said it exists.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from cachelayer.core.lifecycle import ExtensionsApiError, ExtensionsClient
from cachelayer.logs import exit_now, setup_logging

if TYPE_CHECKING:
    # asyncio alone costs ~20 ms of imports: it is loaded after registering, where it is used.
    import asyncio

# Lambda caps init at 10 s for the function and every extension together.
PREFETCH_BUDGET_S = 6.0

log = logging.getLogger("cachelayer.extension")

DEFAULT_NAME = "cachelayer"
# Leave this much of the shutdown deadline unused: Lambda SIGKILLs at the deadline itself.
SHUTDOWN_MARGIN_S = 0.3


def extension_name(argv: Sequence[str], environ: Optional[Mapping[str, str]] = None) -> str:
    """``--name NAME`` (or ``--name=NAME``) from the launcher, else ``$CACHE_EXTENSION_NAME``
    (for a launcher of one's own that passes no ``--name``), else ``cachelayer``."""
    for i, arg in enumerate(argv):
        if arg == "--name" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--name="):
            return arg.split("=", 1)[1]
    return (environ or {}).get("CACHE_EXTENSION_NAME") or DEFAULT_NAME


def _init_failed(client: ExtensionsClient, error_type: str, message: str) -> int:
    """Tell Lambda why init failed (it shows the type to the invoker), log it, return exit 1."""
    log.error("%s: %s", error_type, message)
    try:
        client.init_error(error_type, message)
    except ExtensionsApiError as exc:
        log.error("%s", exc)
    return 1


Event = Union[Dict[str, Any], BaseException]


class _EventPump:
    """A thread blocked in ``/event/next``, handing each event to the asyncio loop.

    For INVOKE it waits until the loop has run ``on_invoke`` before asking for the next event:
    once every process sits in ``/next`` Lambda may freeze the environment, and refresh-ahead
    must have been started by then.
    """

    def __init__(self, client: ExtensionsClient, loop: asyncio.AbstractEventLoop, app: Any) -> None:
        import asyncio

        self._client = client
        self._loop = loop
        self._app = app
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self._thread = threading.Thread(target=self._run, name="lambda-events", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                event = self._client.next_event()
            except BaseException as exc:  # the API vanished: the loop decides what to do
                self._loop.call_soon_threadsafe(self.events.put_nowait, exc)
                return
            kind = str(event.get("eventType", "")).upper()
            if kind == "INVOKE":
                done = threading.Event()
                self._loop.call_soon_threadsafe(self._invoke, event, done)
                done.wait()
                continue
            self._loop.call_soon_threadsafe(self.events.put_nowait, event)
            if kind == "SHUTDOWN":
                return

    def _invoke(self, event: Dict[str, Any], done: threading.Event) -> None:
        try:
            self._app.on_invoke(event)
        except Exception:
            # A failed refresh-ahead start must not take the cache down with it.
            log.exception("INVOKE handling failed")
        finally:
            done.set()


def _start_prefetch(app: Any) -> asyncio.Future[Any]:
    """The prefetch as a task, within the init budget: Lambda gives init 10 s in all; what is
    not fetched by then is fetched on demand."""
    import asyncio

    return asyncio.ensure_future(asyncio.wait_for(app.prefetch(), PREFETCH_BUDGET_S))


async def _prefetch_unless_stopped(
    app: Any,
    pump: _EventPump,
    prefetch: Optional[asyncio.Future[Any]] = None,
    started: Optional[float] = None,
) -> bool:
    """Await the prefetch (started here unless ``prefetch`` is the task already running, since
    ``started``); True if a signal asked to stop first (prefetch cancelled)."""
    import asyncio

    started = time.monotonic() if started is None else started
    if prefetch is None:
        prefetch = _start_prefetch(app)
    stop = asyncio.ensure_future(pump.events.get())
    done, _ = await asyncio.wait({prefetch, stop}, return_when=asyncio.FIRST_COMPLETED)
    if stop in done:
        pump.events.put_nowait(stop.result())  # handled by the shutdown path, as any stop
        prefetch.cancel()
        await asyncio.gather(prefetch, return_exceptions=True)
        log.warning("init startup: asked to stop during the prefetch, which was cancelled")
        return True
    stop.cancel()  # a cancelled Queue.get leaves any item in the queue
    try:
        report = prefetch.result()
    except asyncio.TimeoutError:
        log.warning(
            "init startup: prefetch did not finish within %.0f s (is AWS slow or "
            "unreachable?); the items not fetched yet will be fetched on demand",
            PREFETCH_BUDGET_S,
        )
    else:
        log.info(
            "init startup: %d items fetched, %d failed, in %.0f ms",
            report.fetched,
            report.failed,
            (time.monotonic() - started) * 1000,
        )
    return False


def _build_app(client: ExtensionsClient, environ: Mapping[str, str]) -> Union[Any, int]:
    """The Application, or the exit code after telling Lambda why it could not be built."""
    from cachelayer.errors import ConfigError, PluginError

    try:
        from cachelayer.core.app import Application

        return Application.from_environment(environ)
    except ConfigError as exc:
        return _init_failed(client, "Extension.ConfigError", str(exc))
    except PluginError as exc:
        return _init_failed(client, "Extension.PluginError", str(exc))
    except Exception as exc:
        log.exception("init failed")
        return _init_failed(client, "Extension.InternalError", f"{type(exc).__name__}: {exc}")


async def _start_serving(
    client: ExtensionsClient, app: Any, pump: _EventPump
) -> Union[Tuple[Any, bool], int]:
    """Start the prefetch, bind, await the prefetch: the bound Server and whether SHUTDOWN came
    meanwhile, or the exit code."""
    import asyncio

    prefetch = None
    prefetch_started = time.monotonic()
    if app.settings.init_startup:
        # Started before the server is imported and bound: the first batch calls wait on AWS
        # in the cache's threads while this thread imports and binds (ready is then the longer
        # of the two, not their sum). A read arriving once the port is bound joins the batch.
        prefetch = _start_prefetch(app)
        for _ in range(4):  # a few loop turns: the prefetch hands its first batches to threads
            await asyncio.sleep(0)

    from cachelayer.server import Server

    server = Server(app)
    try:
        await server.start()
    except OSError as exc:
        if prefetch is not None:
            prefetch.cancel()
            await asyncio.gather(prefetch, return_exceptions=True)
        app.close()
        return _init_failed(
            client,
            "Extension.PortInUse",
            f"cannot listen on 127.0.0.1:{app.settings.port}: {exc.strerror or exc}; "
            "another process holds the port: set CACHE_EXTENSION_PORT to a free one",
        )
    log.info("listening on port %s", server.port)
    stopped = False
    if prefetch is not None:
        stopped = await _prefetch_unless_stopped(app, pump, prefetch, prefetch_started)
    return server, stopped


async def _shut_down(app: Any, server: Any, event: Event) -> int:
    """Run the plugins' shutdown hooks and close the server within Lambda's deadline."""
    import asyncio

    code = 0
    if isinstance(event, BaseException):
        log.error("lost the Lambda Extensions API: %s", event)
        reason, code, deadline_ms = "failure", 1, None
    else:
        reason = str(event.get("shutdownReason", "unknown"))
        deadline_ms = event.get("deadlineMs")
    log.info("shutting down (%s)", reason)
    budget = 1.5
    if isinstance(deadline_ms, (int, float)):
        budget = max(0.05, min(budget, deadline_ms / 1000.0 - time.time() - SHUTDOWN_MARGIN_S))
    try:
        # The plugins' hooks get a third of the budget, however they behave; closing the rest.
        app.on_shutdown(reason, timeout=budget / 3)
        await asyncio.wait_for(server.close(), budget * 2 / 3)
    except asyncio.TimeoutError:
        log.warning("connections still open after %.2f s; closing anyway", budget)
    finally:
        app.close()
    log.info("%s", app.stats_line())
    return code


async def serve(client: ExtensionsClient, environ: Mapping[str, str]) -> int:
    """Everything after registering: build, start the prefetch, bind, await the prefetch, then
    serve until SHUTDOWN."""
    import asyncio

    from cachelayer import startup_cache

    # Installed already by the launcher (cachelayer.launch), else now, before the first attrs
    # class: regular expressions and attrs' methods come compiled from the caches (see there).
    caches = startup_cache.install()
    app = _build_app(client, environ)
    if isinstance(app, int):
        return app
    setup_logging(str(getattr(app.settings, "log_level", "INFO")))
    loop = asyncio.get_running_loop()
    pump = _EventPump(client, loop, app)
    # Installed before the prefetch, so SIGTERM during a slow init still ends in a clean exit.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(
            sig,
            pump.events.put_nowait,
            {"eventType": "SHUTDOWN", "shutdownReason": signal.Signals(sig).name},
        )
    started = await _start_serving(client, app, pump)
    if isinstance(started, int):
        return started
    server, stopped = started
    # Init's objects live as long as the process: out of the collector's sight from now on, so
    # no full collection walks them during the first requests (see main()).
    gc.freeze()
    gc.enable()
    if not stopped:
        pump.start()  # ready: the first /event/next
    log.debug("startup caches: %s", caches.summary())
    caches.save()  # only where bytecode may be written (not a layer: see startup_cache)
    return await _shut_down(app, server, await pump.events.get())


def _run(coro: Any) -> int:
    """Run ``coro`` on asyncio's own event loop.

    Not uvloop: importing it costs milliseconds and megabytes of the function's init and
    memory, and an extension answers one function's few reads per invocation, where uvloop's
    per-request saving is microseconds. ``cachelayer serve`` (a busy sidecar) uses uvloop.
    """
    import asyncio

    return int(asyncio.run(coro))


def main(argv: Optional[List[str]] = None, environ: Optional[Mapping[str, str]] = None) -> int:
    """Register, then serve; return the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    environ = os.environ if environ is None else environ
    setup_logging(environ.get("CACHE_EXTENSION_LOG_LEVEL", "INFO"))
    name = extension_name(argv, environ)
    try:
        client = ExtensionsClient.from_environment(environ)
        client.register(name, ("INVOKE", "SHUTDOWN"))
    except ExtensionsApiError as exc:
        log.error("%s", exc)
        return 1
    log.debug("registered as %s", name)
    # Init allocates much and frees little (imports, classes, config): no collections until
    # ready, where serve() freezes what init made and enables the collector again.
    gc.disable()
    try:
        return _run(serve(client, environ))
    finally:
        gc.enable()


if __name__ == "__main__":
    exit_now(main())
