"""The HTTP front end over real sockets: hits, keep-alive, pipelining, auth, limits, errors."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import http.client
import json
import socket
import threading
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

import cachelayer
from cachelayer.core.app import Application
from cachelayer.errors import (
    BadRequestError,
    CachelayerError,
    NotFoundError,
    RouteNotFoundError,
    TransientError,
    UpstreamError,
    UpstreamTimeoutError,
)
from cachelayer.plugins import make_plugin_manager
from cachelayer.server import Server
from cachelayer.server.responses import status_for
from cachelayer.testing.clock import ManualClock
from cachelayer.testing.live import Requests, loop_turns, release_once_joined
from cachelayer.testing.moto import aws_environment
from cachelayer.testing.proxy import Fault, UpstreamProxy
from cachelayer.testing.sample import (
    SAMPLE_CONFIG_YAML,
    SAMPLE_PARAMETER,
    SAMPLE_PARAMETER_VALUE,
    SAMPLE_SECRET,
    SAMPLE_SECRET_VALUE,
    seed_sample,
)
from cachelayer.testing.wire import (
    parse_responses,
    read_responses,
    read_until_closed,
    request_bytes,
)

TOKEN = "testing-session-token"  # AWS_SESSION_TOKEN of aws_environment()
PARAM = f"/parameters?name={SAMPLE_PARAMETER}"
CONFIG = SAMPLE_CONFIG_YAML + "secrets:\n  - region: us-west-2\n    names: [secret_info]\n"


class Running:
    """A Server on its own uvloop loop in a background thread, reached over real sockets."""

    def __init__(self, app: Any, **kwargs: Any) -> None:
        import uvloop

        self.app = app
        self.loop = uvloop.new_event_loop()
        self.server = Server(app, port=0, **kwargs)
        self.loop.run_until_complete(self.server.start())
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.server.port

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def get(
        self, path: str, headers: Optional[Dict[str, str]] = None, method: str = "GET"
    ) -> Tuple[int, Dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(
                method, path, headers={"X-Aws-Parameters-Secrets-Token": TOKEN, **(headers or {})}
            )
            r = conn.getresponse()
            return r.status, dict(r.getheaders()), r.read()
        finally:
            conn.close()

    def raw(self, data: bytes, *, read_until_close: bool = True, timeout: float = 5.0) -> bytes:
        """Send ``data`` on a fresh connection; read until the server closes (or ``timeout``)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            s.sendall(data)
            return read_until_closed(s) if read_until_close else s.recv(65536)


def request(path: str, token: Optional[str] = TOKEN, **kw: str) -> bytes:
    """One request's bytes, with this module's token unless told otherwise."""
    return request_bytes(path, token, **kw)


@contextlib.contextmanager
def serving(
    aws: str,
    tmp_path: Any,
    env: Optional[Dict[str, Optional[str]]] = None,
    pm: Any = None,
    clock: Optional[ManualClock] = None,
    **server_args: Any,
) -> Iterator[Running]:
    """The application (``CONFIG`` against ``aws``; ``env`` laid over the fake AWS environment,
    a None value removing the variable; ``clock`` the cache's) served by a Running server;
    both stopped after."""
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG)
    environ: Dict[str, Optional[str]] = dict(aws_environment(aws))
    environ.update(env or {})
    app = Application.from_environment(
        {k: v for k, v in environ.items() if v is not None},
        config_path=str(path),
        pm=pm,
        clock=clock,
    )
    running = Running(app, **server_args)
    try:
        yield running
    finally:
        running.stop()
        app.close()


@pytest.fixture()
def seeded(aws: str) -> str:
    seed_sample(aws)
    return aws


@pytest.fixture()
def served(seeded: str, tmp_path: Any) -> Iterator[Running]:
    with serving(seeded, tmp_path) as running:
        yield running


def assert_error(resp: Tuple[int, Dict[str, str], bytes], status: int, code: str) -> Dict[str, Any]:
    got_status, headers, body = resp
    doc = json.loads(body)
    assert (got_status, doc["error"]) == (status, code), doc
    assert doc["message"]
    assert {k.lower(): v for k, v in headers.items()}["content-type"] == "application/json"
    return dict(doc)


class TestHits:
    def test_miss_then_hit(self, served: Running) -> None:
        """The first read is a miss, the next a hit, with Age, Cache-Control and the value."""
        status, headers, body = served.get(PARAM)
        assert (status, body, headers["X-Cache"]) == (200, SAMPLE_PARAMETER_VALUE.encode(), "miss")
        assert headers["Content-Type"] == "text/plain; charset=utf-8"
        assert headers["Age"] == "0"
        status, headers, body = served.get(PARAM)
        assert (status, body, headers["X-Cache"]) == (200, SAMPLE_PARAMETER_VALUE.encode(), "hit")
        assert 3500 <= int(headers["Cache-Control"].split("=")[1]) <= 3600
        assert headers["Content-Length"] == str(len(SAMPLE_PARAMETER_VALUE))

    def test_head_has_headers_and_no_body(self, served: Running) -> None:
        """HEAD answers like GET without a body."""
        served.get(PARAM)
        out = parse_responses(
            served.raw(request(PARAM, method="HEAD", extra="Connection: close\r\n"))
        )
        status, headers, _ = out[0]
        assert status == 200 and headers["x-cache"] == "hit"
        assert headers["content-length"] == str(len(SAMPLE_PARAMETER_VALUE))

    def test_other_routes(self, served: Running) -> None:
        """Every provider route answers through the same path (secrets, dynamodb)."""
        assert served.get(f"/secrets?name={SAMPLE_SECRET}")[2] == SAMPLE_SECRET_VALUE.encode()
        status, headers, body = served.get("/dynamodb?name=DynamoDbTable-pKey1-sKey1")
        assert status == 200 and headers["Content-Type"] == "application/json"
        assert json.loads(body)["data"] == "DynamoDB sample data"

    def test_age_grows_on_hits(self, seeded: str, tmp_path: Any) -> None:
        """Age counts seconds since the fetch, re-rendered as it changes, and max-age what is
        left of the TTL."""
        clock = ManualClock()
        with serving(seeded, tmp_path, clock=clock) as running:
            assert running.get(PARAM)[1]["Age"] == "0"
            for age in (1, 2, 30):
                clock.now = 1000.0 + age
                _, headers, _ = running.get(PARAM)
                assert (headers["X-Cache"], headers["Age"]) == ("hit", str(age))
                assert headers["Cache-Control"] == f"max-age={3600 - age}"


class TestKeepAlive:
    def test_one_connection_many_requests(self, served: Running) -> None:
        """HTTP/1.1 keeps the connection open across requests, hits and misses alike."""
        conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
        seen = []
        for path in [PARAM, PARAM, f"/secrets?name={SAMPLE_SECRET}", "/nope?name=x", PARAM]:
            conn.request("GET", path, headers={"X-Aws-Parameters-Secrets-Token": TOKEN})
            r = conn.getresponse()
            r.read()
            seen.append(r.status)
            sock = conn.sock
            assert sock is not None
            if len(seen) == 1:
                first = sock
            assert sock is first  # never reconnected
        assert seen == [200, 200, 200, 404, 200]
        conn.close()

    def test_http10_without_keep_alive_closes(self, served: Running) -> None:
        """An HTTP/1.0 request without keep-alive gets Connection: close and the socket closes."""
        out = parse_responses(served.raw(request(PARAM, version="1.0")))
        assert [(s, h["connection"]) for s, h, _ in out] == [(200, "close")]

    def test_http10_with_keep_alive_stays_open(self, served: Running) -> None:
        """HTTP/1.0 with Connection: keep-alive gets two answers on one connection."""
        req = request(PARAM, version="1.0", extra="Connection: keep-alive\r\n")
        with socket.create_connection(("127.0.0.1", served.port), timeout=5) as s:
            out = []
            for _ in range(2):  # the second is written once the first is answered
                s.sendall(req)
                out += read_responses(s, 1)
        assert [(st, h["connection"]) for st, h, _ in out] == [(200, "keep-alive")] * 2

    def test_connection_close_is_honoured(self, served: Running) -> None:
        """Connection: close on HTTP/1.1 closes after the answer; later pipelined bytes go."""
        data = request(PARAM, extra="Connection: close\r\n") + request(PARAM)
        out = parse_responses(served.raw(data))
        assert [(s, h["connection"]) for s, h, _ in out] == [(200, "close")]


class TestPipelining:
    def test_responses_keep_request_order(self, served: Running) -> None:
        """Pipelined requests (a slow miss, hits, errors) are answered in request order."""
        served.get(PARAM)  # warm: a hit, answered synchronously
        data = (
            request(f"/secrets?name={SAMPLE_SECRET}")  # miss: goes upstream
            + request(PARAM)
            + request("/parameters?name=")
            + request("/dynamodb?name=DynamoDbTable-pKey1-sKey1")  # miss
            + request(PARAM, extra="Connection: close\r\n")
        )
        out = parse_responses(served.raw(data))
        assert [s for s, _, _ in out] == [200, 200, 400, 200, 200]
        assert out[0][2] == SAMPLE_SECRET_VALUE.encode()
        assert out[1][2] == SAMPLE_PARAMETER_VALUE.encode() and out[1][1]["x-cache"] == "hit"
        assert json.loads(out[3][2])["data"] == "DynamoDB sample data"

    def test_many_pipelined_hits(self, served: Running) -> None:
        """Hundreds of pipelined hits in one write are all answered, in order."""
        served.get(PARAM)
        data = request(PARAM) * 300 + request("/-/health", extra="Connection: close\r\n")
        out = parse_responses(served.raw(data))
        assert len(out) == 301
        assert all(body == SAMPLE_PARAMETER_VALUE.encode() for _, _, body in out[:300])
        assert json.loads(out[300][2])["status"] == "ok"


class TestAuth:
    def test_missing_token(self, served: Running) -> None:
        """No token header: 401 MissingToken."""
        conn_out = parse_responses(
            served.raw(request(PARAM, token=None, extra="Connection: close\r\n"))
        )
        status, _, body = conn_out[0]
        assert (status, json.loads(body)["error"]) == (401, "MissingToken")

    def test_wrong_token(self, served: Running) -> None:
        """A wrong token: 403 InvalidToken, and never the value."""
        resp = served.get(PARAM, headers={"X-Aws-Parameters-Secrets-Token": "nope"})
        assert_error(resp, 403, "InvalidToken")
        assert SAMPLE_PARAMETER_VALUE.encode() not in resp[2]

    def test_wrong_token_after_a_memoised_request(self, served: Running) -> None:
        """Requests remembered for the parser-free path never let another token through."""
        with socket.create_connection(("127.0.0.1", served.port), timeout=5) as s:
            out = []
            for _ in range(3):  # each written once the one before is answered
                s.sendall(request(PARAM))
                out += read_responses(s, 1)
            s.sendall(request(PARAM, token=TOKEN[:-1] + "X"))
            out += parse_responses(read_until_closed(s))  # answered, then closed
        assert [st for st, _, _ in out] == [200, 200, 200, 403]

    def test_remembered_bytes_after_a_partial_request_are_parsed(self, served: Running) -> None:
        """A remembered request's bytes arriving while the parser holds part of another message
        are parsed as the continuation they are (here: a malformed header, 400), not served."""
        with socket.create_connection(("127.0.0.1", served.port), timeout=5) as s:
            out = []
            for _ in range(3):  # miss, hit, hit whose bytes are remembered
                s.sendall(request(PARAM))
                out += read_responses(s, 1)
            # One whole request and the start of the next in one chunk; once the whole one is
            # answered (the chunk was read), the remembered bytes, in a chunk of their own.
            s.sendall(request(PARAM) + b"GET /parameters?name=x HTTP/1.1\r\nHo")
            out += read_responses(s, 1)
            s.sendall(request(PARAM))
            out += parse_responses(read_until_closed(s))
        assert [st for st, _, _ in out] == [200, 200, 200, 200, 400]

    def test_forwarded_request_refused(self, served: Running) -> None:
        """X-Forwarded-For is refused even with a valid token."""
        assert_error(
            served.get(PARAM, headers={"X-Forwarded-For": "10.0.0.1"}), 403, "ForwardedRequest"
        )

    def test_health_is_behind_auth(self, served: Running) -> None:
        """Operations need the token too."""
        out = parse_responses(
            served.raw(request("/-/health", token=None, extra="Connection: close\r\n"))
        )
        assert out[0][0] == 401

    def test_auth_none(self, seeded: str, tmp_path: Any) -> None:
        """CACHE_EXTENSION_AUTH=none serves without a token (the sample's Node code unchanged)."""
        with serving(seeded, tmp_path, env={"CACHE_EXTENSION_AUTH": "none"}) as running:
            out = parse_responses(
                running.raw(request(PARAM, token=None, extra="Connection: close\r\n"))
            )
            assert (out[0][0], out[0][2]) == (200, SAMPLE_PARAMETER_VALUE.encode())

    def test_token_auth_without_session_token(
        self, seeded: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Auth on but no AWS_SESSION_TOKEN: every request is 401 with a message saying why."""
        monkeypatch.delenv("AWS_SESSION_TOKEN")
        with serving(seeded, tmp_path, env={"AWS_SESSION_TOKEN": None}) as running:
            doc = assert_error(running.get(PARAM), 401, "MissingToken")
            assert "AWS_SESSION_TOKEN is not set" in doc["message"]


class TestBadRequests:
    @pytest.mark.parametrize(
        ("path", "fragment"),
        [
            ("/parameters", "missing"),
            ("/parameters?name=", "empty"),
            ("/parameters?name=a&name=b", "more than once"),
            ("/parameters?name=%zz", "percent-encoding"),
            ("/parameters?name=%4", "percent-encoding"),
            ("/parameters?name", "key=value"),
            ("/parameters?name=%ff", "UTF-8"),
        ],
    )
    def test_bad_query(self, served: Running, path: str, fragment: str) -> None:
        """A bad query is 400 BadRequest saying what is wrong, and the server keeps serving."""
        doc = assert_error(served.get(path), 400, "BadRequest")
        assert fragment in doc["message"]
        assert served.get(PARAM)[0] == 200

    def test_unknown_route(self, served: Running) -> None:
        """An unknown route is 404 UnknownRoute listing the known ones."""
        doc = assert_error(served.get("/nope?name=x"), 404, "UnknownRoute")
        assert "/parameters" in doc["message"]

    def test_item_not_found(self, served: Running) -> None:
        """A name that does not exist upstream is 404 NotFound."""
        assert_error(served.get("/parameters?name=DoesNotExist"), 404, "NotFound")

    def test_method_not_allowed(self, served: Running) -> None:
        """POST on a route and GET on /-/invalidate are 405 with an Allow header."""
        status, headers, _ = served.get(PARAM, method="POST")
        assert (status, headers["Allow"]) == (405, "GET, HEAD")
        status, headers, _ = served.get("/-/invalidate")
        assert (status, headers["Allow"]) == (405, "POST")

    def test_get_with_body(self, served: Running) -> None:
        """A GET carrying a body is 400."""
        out = parse_responses(
            served.raw(request(PARAM, extra="Content-Length: 3\r\nConnection: close\r\n") + b"abc")
        )
        assert out[0][0] == 400

    def test_body_too_large(self, served: Running) -> None:
        """A declared body over 8 KiB is 413, answered before it is read."""
        out = parse_responses(
            served.raw(request("/-/invalidate", method="POST", extra="Content-Length: 100000\r\n"))
        )
        assert (out[0][0], json.loads(out[0][2])["error"]) == (413, "PayloadTooLarge")

    def test_chunked_body_too_large(self, served: Running) -> None:
        """A chunked body that grows over 8 KiB is 413."""
        chunk = b"2000\r\n" + b"x" * 0x2000 + b"\r\n"
        data = (
            request("/-/invalidate", method="POST", extra="Transfer-Encoding: chunked\r\n")
            + chunk * 2
            + b"0\r\n\r\n"
        )
        out = parse_responses(served.raw(data))
        assert (out[0][0], json.loads(out[0][2])["error"]) == (413, "PayloadTooLarge")

    def test_url_too_long(self, served: Running) -> None:
        """A request target over 8 KiB is 414."""
        out = parse_responses(served.raw(request("/parameters?name=" + "a" * 9000)))
        assert (out[0][0], json.loads(out[0][2])["error"]) == (414, "URITooLong")

    @pytest.mark.parametrize(
        "extra",
        [
            "X-Big: " + "a" * 9000 + "\r\n",
            "".join(f"X-H{i}: v\r\n" for i in range(101)),
            "".join(f"X-H{i}: {'b' * 7000}\r\n" for i in range(5)),
        ],
        ids=["one-header-over-8k", "over-100-headers", "headers-over-32k"],
    )
    def test_headers_too_large(self, served: Running, extra: str) -> None:
        """Oversized or too many headers are 431, and the server keeps serving."""
        out = parse_responses(served.raw(request(PARAM, extra=extra)))
        assert (out[0][0], json.loads(out[0][2])["error"]) == (431, "RequestHeaderFieldsTooLarge")
        assert served.get(PARAM)[0] == 200

    def test_unterminated_header_is_bounded(self, served: Running) -> None:
        """A header line that never ends is cut off at the request bound with 431."""
        with socket.create_connection(("127.0.0.1", served.port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.1\r\nX-Endless: ")
            try:
                for _ in range(20):
                    s.sendall(b"a" * 8192)
            except OSError:
                pass  # the server closed on us: that is the point
            out = read_until_closed(s)
        assert out.startswith(b"HTTP/1.1 431")

    def test_malformed_request(self, served: Running) -> None:
        """Bytes that are not HTTP are 400 MalformedRequest, then the connection closes."""
        out = parse_responses(served.raw(b"HELLO WORLD\r\n\r\n"))
        assert (out[0][0], json.loads(out[0][2])["error"]) == (400, "MalformedRequest")
        assert served.get(PARAM)[0] == 200


class TestOperations:
    def test_health(self, served: Running) -> None:
        """/-/health answers ok with the installed providers."""
        status, _, body = served.get("/-/health")
        doc = json.loads(body)
        assert status == 200 and doc["status"] == "ok"
        assert {"parameters", "secrets", "dynamodb"} <= set(doc["providers"])

    def test_stats_count_hits_and_misses(self, served: Running) -> None:
        """/-/stats reports per-route counters, including hits served by the fast path."""
        for _ in range(3):
            served.get(PARAM)
        stats = json.loads(served.get("/-/stats")[2])
        assert (stats["parameters"]["misses"], stats["parameters"]["hits"]) == (1, 2)
        assert stats["parameters"]["entries"] == 1

    def test_invalidate_one_route_all(self, served: Running) -> None:
        """Invalidate drops one entry, a route, or everything, and says how many."""
        served.get(PARAM)
        served.get(f"/secrets?name={SAMPLE_SECRET}")
        doc = json.loads(
            served.get(f"/-/invalidate?route=parameters&name={SAMPLE_PARAMETER}", method="POST")[2]
        )
        assert doc == {"invalidated": 1}
        assert served.get(PARAM)[1]["X-Cache"] == "miss"
        assert json.loads(served.get("/-/invalidate?route=secrets", method="POST")[2]) == {
            "invalidated": 1
        }
        assert json.loads(served.get("/-/invalidate", method="POST")[2]) == {"invalidated": 1}

    def test_invalidate_bad_parameters(self, served: Running) -> None:
        """A name without a route is 400; an unknown route is 404."""
        assert_error(served.get("/-/invalidate?name=x", method="POST"), 400, "BadRequest")
        assert_error(served.get("/-/invalidate?route=nope", method="POST"), 404, "UnknownRoute")

    def test_unknown_operation(self, served: Running) -> None:
        """An unknown /-/ path is 404."""
        assert_error(served.get("/-/nope"), 404, "UnknownRoute")


async def _many_gets(
    port: int, path: str, n: int, requests: Optional[Requests] = None
) -> List[bytes]:
    async def one() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request(path, extra="Connection: close\r\n"))
        await writer.drain()
        if requests is not None:
            requests.sent()
        data = await reader.read()
        writer.close()
        return data

    return list(await asyncio.gather(*(one() for _ in range(n))))


def _gets_joining_one_held_call(running: Running, proxy: UpstreamProxy, n: int) -> List[bytes]:
    """``n`` concurrent GETs of PARAM while the proxy holds GetParameter, released once
    exactly one is held and every GET has reached the server."""
    proxy.inject(Fault.hold(), operation="GetParameter")
    requests = Requests()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        answers = pool.submit(asyncio.run, _many_gets(running.port, PARAM, n, requests))
        try:
            release_once_joined(proxy, "GetParameter", running.loop, requests, n)
        finally:
            proxy.release()
        return answers.result(30)


class TestUpstream:
    def test_concurrent_misses_make_one_call(
        self, seeded: str, proxy: UpstreamProxy, tmp_path: Any
    ) -> None:
        """200 concurrent requests for one missing key cause exactly one upstream call: all
        of them wait for it (each a miss: one that came after it would be a hit)."""
        with serving(proxy.url, tmp_path) as running:
            answers = _gets_joining_one_held_call(running, proxy, 200)
            assert proxy.count("GetParameter") == 1
        unexpected = [
            a
            for a in answers
            if not (
                a.startswith(b"HTTP/1.1 200")
                and b"X-Cache: miss" in a
                and a.endswith(SAMPLE_PARAMETER_VALUE.encode())
            )
        ]
        assert not unexpected, f"{len(unexpected)} of {len(answers)}, e.g. {unexpected[:3]!r}"

    def test_concurrent_reads_of_an_expired_key_make_one_call(
        self, seeded: str, proxy: UpstreamProxy, tmp_path: Any
    ) -> None:
        """200 concurrent requests for one expired key cause exactly one upstream refresh; the
        refresh is slower than ``stale_wait`` (250 ms), so readers get the stale value rather
        than wait for it, and those that come after it get the new one."""
        clock = ManualClock()
        with serving(
            proxy.url, tmp_path, env={"CACHE_EXTENSION_TTL": "1s"}, clock=clock
        ) as running:
            assert running.get(PARAM)[0] == 200
            clock.advance(1.1)  # the entry is now expired
            proxy.reset_counts()
            proxy.inject(Fault.delay(0.3), operation="GetParameter")
            answers = asyncio.run(_many_gets(running.port, PARAM, 200))
            assert proxy.count("GetParameter") == 1
        assert all(
            a.startswith(b"HTTP/1.1 200") and a.endswith(SAMPLE_PARAMETER_VALUE.encode())
            for a in answers
        )
        stale = sum(b"X-Cache: stale" in a for a in answers)
        assert stale >= 1 and stale + sum(b"X-Cache: miss" in a for a in answers) == 200

    def test_upstream_failure_is_502(
        self, seeded: str, proxy: UpstreamProxy, tmp_path: Any
    ) -> None:
        """Upstream failing with no cached value is 502 UpstreamUnavailable, not 200."""
        proxy.inject(Fault.server_error(500), operation="GetParameter")
        with serving(proxy.url, tmp_path) as running:
            assert_error(running.get(PARAM), 502, "UpstreamUnavailable")

    def test_unexpected_error_is_500_and_generic(
        self, seeded: str, tmp_path: Any, caplog: pytest.LogCaptureFixture
    ) -> None:
        """An unexpected provider error is 500 (resolve) or 502 (fetch), generic, logged."""

        class Exploding:
            # No real provider misbehaves on purpose: a test plugin is the only way to get here.
            name = "exploding"
            route = "exploding"
            services = ()
            config_schema = None

            @classmethod
            def from_config(cls, config: Any, context: Any) -> Any:
                return cls()

            def declared(self) -> List[Any]:
                return []

            def resolve(self, name: str, params: Any) -> cachelayer.Item:
                if name == "boom":
                    raise RuntimeError("secret-ish detail")
                return cachelayer.Item(route="exploding", name=name)

            def fetch(self, item: Any) -> Any:
                raise RuntimeError("secret-ish detail")

        class Plugin:
            @cachelayer.hookimpl
            def cachelayer_providers(self) -> List[Any]:
                return [Exploding]

        pm = make_plugin_manager()
        pm.register(Plugin(), name="exploding")
        with serving(seeded, tmp_path, pm=pm) as running:
            doc = assert_error(running.get("/exploding?name=boom"), 500, "InternalError")
            assert "secret-ish" not in doc["message"]
            assert "secret-ish detail" in caplog.text  # logged with its traceback
            doc = assert_error(running.get("/exploding?name=x"), 502, "UpstreamError")
            assert "secret-ish" not in doc["message"]
            assert running.get(PARAM)[0] == 200


class TestStatusMapping:
    @pytest.mark.parametrize(
        ("exc", "status", "code"),
        [
            (BadRequestError("x"), 400, "BadRequest"),
            (NotFoundError("x"), 404, "NotFound"),
            (RouteNotFoundError("x"), 404, "UnknownRoute"),
            (UpstreamError("x"), 502, "UpstreamError"),
            (TransientError("x"), 502, "UpstreamUnavailable"),
            (UpstreamTimeoutError("x"), 504, "UpstreamTimeout"),
            (CachelayerError("x"), 500, "InternalError"),
        ],
    )
    def test_codes(self, exc: CachelayerError, status: int, code: str) -> None:
        """Each error code maps to its precise status."""
        assert status_for(exc) == (status, code)

    def test_new_code_takes_ancestor_status(self) -> None:
        """A provider's own subclass with a new code keeps its parent's status."""

        class AccessDenied(UpstreamError):
            code = "AccessDenied"

        assert status_for(AccessDenied("x")) == (502, "AccessDenied")


class TestBinding:
    def test_port_in_use(self, served: Running) -> None:
        """A port in use is an OSError naming the port and how to change it."""
        other = Server(served.app, port=served.port)
        with pytest.raises(OSError) as info:
            asyncio.run(other.start())
        assert info.value.errno == errno.EADDRINUSE
        assert str(served.port) in str(info.value) and "CACHE_EXTENSION_PORT" in str(info.value)

    def test_listens_on_ipv6_loopback(self, served: Running) -> None:
        """::1 answers too where the host has it (Node may resolve localhost there)."""
        try:
            s = socket.create_connection(("::1", served.port), timeout=5)
        except OSError:
            pytest.skip("this host has no IPv6 loopback")
        with s:
            s.sendall(request(PARAM, extra="Connection: close\r\n"))
            assert read_until_closed(s).startswith(b"HTTP/1.1 200")

    def test_refuses_non_loopback(self, served: Running) -> None:
        """Binding a wildcard or external address is refused."""
        with pytest.raises(ValueError, match="loopback"):
            asyncio.run(Server(served.app, port=0).start(hosts=["0.0.0.0"]))


class TestConnectionBounds:
    def test_over_the_limit_gets_503(self, seeded: str, tmp_path: Any) -> None:
        """Beyond max_connections held by authenticated clients, a newcomer is answered 503
        and closed, even with the token; the others go on."""
        with serving(seeded, tmp_path, max_connections=2) as running:
            a = socket.create_connection(("127.0.0.1", running.port), timeout=5)
            b = socket.create_connection(("127.0.0.1", running.port), timeout=5)
            for held in (a, b):  # each authenticates once, and keeps its connection
                held.sendall(request("/-/health"))
                assert held.recv(65536).startswith(b"HTTP/1.1 200")
            out = parse_responses(running.raw(request("/-/health")))
            assert (out[0][0], json.loads(out[0][2])["error"]) == (503, "ServiceUnavailable")
            a.sendall(request("/-/health", extra="Connection: close\r\n"))
            assert read_until_closed(a).startswith(b"HTTP/1.1 200")
            a.close()
            b.close()

    def test_remembered_request_on_an_over_limit_connection_gets_503(
        self, seeded: str, tmp_path: Any
    ) -> None:
        """A request byte-identical to a remembered one, sent on a connection over the limit,
        still gets 503: the parser-free path is no way around the connection bound."""
        with (
            serving(seeded, tmp_path, max_connections=1) as running,
            socket.create_connection(("127.0.0.1", running.port), timeout=5) as a,
        ):
            statuses = []
            for _ in range(3):  # miss, hit, hit whose bytes are remembered
                a.sendall(request(PARAM))
                statuses += [st for st, _, _ in read_responses(a, 1)]
            assert statuses == [200, 200, 200]
            out = parse_responses(running.raw(request(PARAM)))
            assert (out[0][0], json.loads(out[0][2])["error"]) == (503, "ServiceUnavailable")

    def test_idle_and_slow_connections_time_out(self, seeded: str, tmp_path: Any) -> None:
        """An idle connection is closed; a request that never completes gets 408."""
        with (
            serving(seeded, tmp_path, idle_timeout=1, request_timeout=1) as running,
            socket.create_connection(("127.0.0.1", running.port), timeout=5) as idle,
            socket.create_connection(("127.0.0.1", running.port), timeout=5) as slow,
        ):
            slow.sendall(b"GET /-/health HTTP/1.1\r\n")
            loop_turns(running.loop)  # the first part is read: the rest comes on its own
            slow.sendall(b"Host: x\r\n")
            t0 = time.monotonic()
            assert read_until_closed(idle) == b""
            assert read_until_closed(slow).startswith(b"HTTP/1.1 408")
            assert time.monotonic() - t0 < 4
