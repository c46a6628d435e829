"""A live cachelayer for tests: the real Application and Server on loopback, in a thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import http.client
import itertools
import json
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import attrs

from cachelayer.core.app import Application
from cachelayer.server import Server
from cachelayer.testing.clock import ManualClock
from cachelayer.testing.moto import aws_environment
from cachelayer.testing.proxy import UpstreamProxy

__all__ = [
    "TOKEN_HEADER",
    "Live",
    "ManualClock",
    "Reply",
    "Requests",
    "live_server",
    "loop_turns",
    "release_once_joined",
]

TOKEN_HEADER = "X-Aws-Parameters-Secrets-Token"
RIGHT_TOKEN = "<the environment's AWS_SESSION_TOKEN>"


@attrs.frozen
class Reply:
    """One HTTP answer: status, headers (names lower-cased), body."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def x_cache(self) -> Optional[str]:
        """``hit``, ``miss`` or ``stale`` (None on errors)."""
        return self.headers.get("x-cache")

    @property
    def age(self) -> Optional[int]:
        raw = self.headers.get("age")
        return None if raw is None else int(raw)

    @property
    def max_age(self) -> Optional[int]:
        """The ``max-age`` of ``Cache-Control``, or None."""
        for part in self.headers.get("cache-control", "").split(","):
            key, _, value = part.strip().partition("=")
            if key == "max-age":
                return int(value)
        return None


@attrs.define
class Live:
    """A real Application + Server on loopback, run by an event loop in a background thread.

    ``request`` makes one request on a fresh connection and returns ``(status, headers, body)``;
    ``get`` reuses one keep-alive connection per calling thread and returns a ``Reply``;
    ``get_many`` spreads GETs over several connections at once.
    """

    app: Application
    server: Server
    loop: asyncio.AbstractEventLoop
    env: Dict[str, str]
    _local: threading.local = attrs.field(factory=threading.local, init=False, repr=False)
    _opened: List[http.client.HTTPConnection] = attrs.field(factory=list, init=False, repr=False)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False)

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    @property
    def token(self) -> str:
        return self.env.get("AWS_SESSION_TOKEN", "")

    def run(self, coro: Any, timeout: float = 10.0) -> Any:
        """Run a coroutine on the server's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def turns(self, count: int = 3, timeout: float = 10.0) -> None:
        """Let the server's loop turn over ``count`` times: what the kernel held for it when
        this was called (connections to accept, bytes to read) has been taken in after."""
        loop_turns(self.loop, count, timeout)

    def call(self, fn: Callable[..., Any], *args: Any, timeout: float = 10.0) -> Any:
        """Call ``fn(*args)`` on the loop's thread (e.g. ``app.on_invoke``); return its result."""

        async def wrapper() -> Any:
            return fn(*args)

        return self.run(wrapper(), timeout)

    def request(
        self,
        path: str,
        *,
        method: str = "GET",
        token: Optional[str] = RIGHT_TOKEN,
        headers: Optional[Mapping[str, str]] = None,
        data: Optional[bytes] = None,
    ) -> Tuple[int, Dict[str, str], bytes]:
        """One HTTP request; by default with the right token, ``token=None`` sends none."""
        sent = dict(headers or {})
        if token is not None:
            sent[TOKEN_HEADER] = self.token if token == RIGHT_TOKEN else token
        req = urllib.request.Request(self.url + path, method=method, headers=sent, data=data)
        try:
            with urllib.request.urlopen(req, timeout=15) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, dict(exc.headers), exc.read()

    def _connection(self) -> http.client.HTTPConnection:
        conn: Optional[http.client.HTTPConnection] = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            self._local.conn = conn
            with self._lock:
                self._opened.append(conn)
        return conn

    def get(self, path: str, *, method: str = "GET") -> Reply:
        """``method path`` with the right token on this thread's keep-alive connection."""
        for attempt in (1, 2):
            conn = self._connection()
            try:
                conn.request(method, path, headers={TOKEN_HEADER: self.token})
                response = conn.getresponse()
                body = response.read()
            except (ConnectionError, http.client.HTTPException):
                # The server closed a kept-alive connection (idle timeout): once more, afresh.
                conn.close()
                self._local.conn = None
                if attempt == 2:
                    raise
                continue
            if response.will_close:
                conn.close()
                self._local.conn = None
            headers = {k.lower(): v for k, v in response.getheaders()}
            return Reply(response.status, headers, body)
        raise AssertionError("unreachable")

    def get_many(
        self,
        paths: Sequence[str],
        *,
        connections: int = 8,
        sent: Optional[Callable[[], None]] = None,
    ) -> List[Reply]:
        """GET every path, spread over ``connections`` keep-alive connections used at once
        (each in its own thread, released together); the replies in the order of ``paths``.
        ``sent`` is called as each request has been written (see ``Requests``)."""
        connections = max(1, min(connections, len(paths)))
        shares: List[List[int]] = [
            list(range(i, len(paths), connections)) for i in range(connections)
        ]
        replies: List[Optional[Reply]] = [None] * len(paths)
        ready = threading.Barrier(connections)

        def worker(indexes: List[int]) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                conn.connect()
                ready.wait(10)
                for i in indexes:
                    conn.request("GET", paths[i], headers={TOKEN_HEADER: self.token})
                    if sent is not None:
                        sent()
                    response = conn.getresponse()
                    body = response.read()
                    replies[i] = Reply(
                        response.status, {k.lower(): v for k, v in response.getheaders()}, body
                    )
            finally:
                conn.close()

        with concurrent.futures.ThreadPoolExecutor(connections) as pool:
            for future in [pool.submit(worker, share) for share in shares]:
                future.result(60)
        assert all(r is not None for r in replies)
        return [r for r in replies if r is not None]

    def stats(self) -> Dict[str, Dict[str, int]]:
        """``GET /-/stats``, parsed."""
        reply = self.get("/-/stats")
        assert reply.status == 200, reply
        result: Dict[str, Dict[str, int]] = reply.json()
        return result

    def close_connections(self) -> None:
        """Close the keep-alive connections ``get`` opened."""
        with self._lock:
            opened, self._opened = self._opened, []
        for conn in opened:
            conn.close()


def loop_turns(loop: asyncio.AbstractEventLoop, count: int = 3, timeout: float = 10.0) -> None:
    """Wait, from another thread, until ``loop`` has turned over ``count`` times (each a
    task's step and one more turn, I/O polled in between)."""
    for _ in range(count):
        asyncio.run_coroutine_threadsafe(asyncio.sleep(0), loop).result(timeout)


class Requests:
    """Counts requests as clients write them (pass ``sent`` as the callback), so a test can
    wait until every one is written."""

    def __init__(self) -> None:
        self.count = 0
        self._moved = threading.Condition()

    def sent(self) -> None:
        """One more request written."""
        with self._moved:
            self.count += 1
            self._moved.notify_all()

    def wait(self, count: int, timeout: float = 10.0) -> None:
        """Block until ``count`` requests are written; AssertionError after ``timeout``."""
        with self._moved:
            if not self._moved.wait_for(lambda: self.count >= count, timeout):
                raise AssertionError(f"{self.count} of {count} requests written in {timeout:g}s")


def release_once_joined(
    proxy: UpstreamProxy,
    operation: str,
    loop: asyncio.AbstractEventLoop,
    requests: Requests,
    count: int,
    *,
    timeout: float = 10.0,
) -> None:
    """Release the proxy's held ``operation`` (``Fault.hold``) once exactly one such request
    is held, all ``count`` client requests are written, and the server's ``loop`` has turned
    over a few times since (so it has read them, and each reader joined the held fetch or
    started one: a second would be held too, and fail the check)."""
    proxy.wait_in_flight(1, operation, timeout=timeout)
    requests.wait(count, timeout)
    loop_turns(loop, 3, timeout)
    held = proxy.in_flight(operation)
    assert held == 1, f"{held} {operation} requests held: want exactly one"
    proxy.release()


_configs = itertools.count()


def _run_in_thread(
    loop: asyncio.AbstractEventLoop, server: Server
) -> Tuple[threading.Thread, List[BaseException]]:
    """Start ``server`` on ``loop`` in a new thread and run the loop there; the thread, and
    the error the start raised if it failed (then the loop does not run)."""
    started = threading.Event()
    failure: List[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(server.start())
        except BaseException as exc:  # reported to the test by live_server
            failure.append(exc)
            started.set()
            return
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="cachelayer-test-server", daemon=True)
    thread.start()
    if not started.wait(15):
        raise RuntimeError("the test server neither started nor failed within 15 s")
    return thread, failure


@contextlib.contextmanager
def live_server(
    endpoint: str,
    tmp_path: Path,
    config: str = "",
    extra_env: Optional[Mapping[str, str]] = None,
    *,
    port: Optional[int] = 0,
    clock: Optional[Callable[[], float]] = None,
    client_factory: Any = None,
    json_clients: Any = None,
    pm: Any = None,
    **server_args: Any,
) -> Iterator[Live]:
    """Start the real application and server against AWS at ``endpoint`` (moto, or a proxy in
    front of it); stop them after. ``config`` is the YAML text, ``extra_env`` is laid over the
    fake AWS environment, ``clock`` replaces the cache's clock, ``client_factory`` the boto3
    client factory and ``json_clients`` the lean JSON-protocol one (e.g. one with shorter
    timeouts), ``pm`` the plugin manager, ``server_args`` go to Server."""
    env = dict(aws_environment(endpoint))
    env.update(extra_env or {})
    config_path = tmp_path / "config.yaml"
    if config_path.exists():  # several servers in one test: one file each
        config_path = tmp_path / f"config-{next(_configs)}.yaml"
    config_path.write_text(config)
    app = Application.from_environment(
        env,
        config_path=str(config_path),
        clock=clock,
        client_factory=client_factory,
        json_clients=json_clients,
        pm=pm,
    )
    server = Server(app, port=port, **server_args)
    loop = asyncio.new_event_loop()
    thread, failure = _run_in_thread(loop, server)
    live = Live(app, server, loop, env)
    try:
        if failure:
            raise failure[0]
        yield live
    finally:
        live.close_connections()
        if not failure:
            asyncio.run_coroutine_threadsafe(server.close(), loop).result(10)
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(app.cache.drain(1.0), loop).result(5)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        app.close()
