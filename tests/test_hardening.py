"""Hardening (issue 10): each place the server did not hold under abuse, pinned through a real
socket or a real process, against moto behind the counting, fault-injecting proxy."""

from __future__ import annotations

import gc
import http.client
import json
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import boto3
import pytest
import yaml

from cachelayer.core import yamlload
from cachelayer.core.config import load_settings
from cachelayer.errors import ConfigError
from cachelayer.local import ApiServer
from cachelayer.testing.live import Live, ManualClock, live_server
from cachelayer.testing.moto import aws_environment, free_port
from cachelayer.testing.proxy import Fault, UpstreamProxy
from cachelayer.testing.wire import (
    parse_responses,
    read_until_closed,
    request_bytes,
    wait_listening,
)
from extension_helpers import deliver_shutdown, make_api, start_extension, wait_until

TOKEN_HEADER = "X-Aws-Parameters-Secrets-Token"


def serve(proxy: UpstreamProxy, tmp_path: Path, config: str = "", **kw: Any) -> Any:
    """A live cachelayer whose AWS endpoint is the proxy."""
    return live_server(proxy.url, tmp_path, config, {"AWS_ENDPOINT_URL": proxy.url}, **kw)


def raw_request(live: Live, path: str, token: Optional[str] = "", extra: str = "") -> bytes:
    """The bytes of one GET; ``token`` "" sends the right one, None sends none."""
    return request_bytes(path, live.token if token == "" else token, extra)


# -- 1. half-closed clients ---------------------------------------------------------------------


class TestHalfClosedClient:
    def test_a_miss_is_answered_after_the_client_half_closes(
        self, proxy: UpstreamProxy, ssm: Any, tmp_path: Path
    ) -> None:
        """A GET for an uncached key followed by shutdown(SHUT_WR), as ``nc -N`` does, gets its
        answer before the server closes (the upstream call is held until the server has read
        the half-close, to make sure)."""
        ssm.put_parameter(Name="half", Value="answered", Type="String")
        proxy.inject(Fault.hold(), operation="GetParameter")
        with (
            serve(proxy, tmp_path) as live,
            socket.create_connection(("127.0.0.1", live.port)) as s,
        ):
            s.sendall(raw_request(live, "/parameters?name=half"))
            s.shutdown(socket.SHUT_WR)
            proxy.wait_in_flight(1, "GetParameter")
            live.turns()  # the end of the stream is read too
            proxy.release()
            out = parse_responses(read_until_closed(s))
        assert [(st, body) for st, _, body in out] == [(200, b"answered")]

    def test_pipelined_hit_and_misses_are_all_answered_in_order(
        self, proxy: UpstreamProxy, ssm: Any, tmp_path: Path
    ) -> None:
        """A hit, a miss and a not-found pipelined then half-closed: three answers, in order."""
        for name in ("hot", "cold"):
            ssm.put_parameter(Name=name, Value=name, Type="String")
        with serve(proxy, tmp_path) as live:
            assert live.get("/parameters?name=hot").status == 200
            with socket.create_connection(("127.0.0.1", live.port)) as s:
                s.sendall(
                    b"".join(
                        raw_request(live, f"/parameters?name={n}") for n in ("hot", "cold", "none")
                    )
                )
                s.shutdown(socket.SHUT_WR)
                out = parse_responses(read_until_closed(s))
        assert [(st, body[:4]) for st, _, body in out] == [
            (200, b"hot"),
            (200, b"cold"),
            (404, b'{"er'),
        ]


# -- 2. connection slots --------------------------------------------------------------------------


class TestConnectionSlots:
    @pytest.mark.parametrize("token", [None, "wrong-token"])
    def test_a_failed_auth_closes_the_connection(
        self, aws: str, tmp_path: Path, token: Optional[str]
    ) -> None:
        """A keep-alive request without the token (401) or with a wrong one (403) is answered
        and its connection closed: it cannot keep a slot by asking again and again."""
        with (
            live_server(aws, tmp_path) as live,
            socket.create_connection(("127.0.0.1", live.port)) as s,
        ):
            s.sendall(raw_request(live, "/-/health", token=token))
            out = parse_responses(read_until_closed(s, timeout=5))
        assert [(st, h.get("connection")) for st, h, _ in out] == [
            (401 if token is None else 403, "close")
        ]

    def test_token_holder_is_served_while_silent_connections_fill_every_slot(
        self, aws: str, tmp_path: Path
    ) -> None:
        """With 40 silent connections held against a limit of 8, a client with the token is
        served at once: it takes the slot of the oldest connection that never authenticated."""
        with live_server(aws, tmp_path, max_connections=8) as live:
            held = [socket.create_connection(("127.0.0.1", live.port)) for _ in range(40)]
            try:
                live.turns()  # every one accepted
                for _ in range(3):
                    status, _, body = live.request("/-/health")
                    assert status == 200, body
            finally:
                for s in held:
                    s.close()

    def test_token_holder_is_served_while_tokenless_clients_keep_asking(
        self, aws: str, tmp_path: Path
    ) -> None:
        """Eight clients sending tokenless requests in a loop (each reconnecting as soon as it is
        closed) never make a client with the token wait for a slot."""
        with live_server(aws, tmp_path, max_connections=8) as live:
            stop = threading.Event()
            refused: List[int] = []

            def pester() -> None:
                while not stop.is_set():
                    try:
                        with socket.create_connection(("127.0.0.1", live.port), timeout=5) as s:
                            s.sendall(raw_request(live, "/-/health", token=None))
                            refused.extend(
                                st for st, _, _ in parse_responses(read_until_closed(s, 5))
                            )
                    except OSError:
                        pass

            threads = [threading.Thread(target=pester, daemon=True) for _ in range(8)]
            for t in threads:
                t.start()
            try:
                deadline = time.monotonic() + 10
                while len(refused) < 8:  # the pestering is under way
                    assert time.monotonic() < deadline, refused
                    time.sleep(0.01)
                statuses = [live.request("/-/health")[0] for _ in range(20)]
            finally:
                stop.set()
                for t in threads:
                    t.join(10)
        assert statuses == [200] * 20
        assert refused and set(refused) <= {401, 503}  # 503: over the limit, not displacing

    def test_a_token_holder_accepted_over_the_limit_is_served_once_others_have_gone(
        self, aws: str, tmp_path: Path
    ) -> None:
        """A connection accepted over the limit whose authenticated request arrives after the
        others closed is served, not refused for a limit it no longer exceeds."""
        with live_server(aws, tmp_path, max_connections=2) as live:
            first = [socket.create_connection(("127.0.0.1", live.port)) for _ in range(2)]
            late = socket.create_connection(("127.0.0.1", live.port))
            try:
                deadline = time.monotonic() + 5
                while live.server.connections < 3 and time.monotonic() < deadline:
                    time.sleep(0.01)
                assert live.server.connections == 3  # the third was accepted over the limit
                for s in first:
                    s.close()
                while live.server.connections > 1 and time.monotonic() < deadline:
                    time.sleep(0.01)
                assert live.server.connections == 1
                late.sendall(raw_request(live, "/-/health", extra="Connection: close\r\n"))
                assert [st for st, _, _ in parse_responses(read_until_closed(late, 5))] == [200]
            finally:
                late.close()

    def test_a_connection_that_never_authenticates_is_closed_after_its_budget(
        self, aws: str, tmp_path: Path
    ) -> None:
        """A connection that keeps sending bytes but completes no authenticated request is
        closed after ``pending_timeout``, however active it is."""
        with (
            live_server(aws, tmp_path, pending_timeout=1.0) as live,
            socket.create_connection(("127.0.0.1", live.port)) as s,
        ):
            s.settimeout(0.3)
            s.sendall(b"GET /-/health HTTP/1.1\r\n")
            closed_after = None
            started = time.monotonic()
            while time.monotonic() - started < 8:
                try:
                    s.sendall(b"X-Slow: 1\r\n")
                    if s.recv(1) == b"":
                        closed_after = time.monotonic() - started
                        break
                except socket.timeout:
                    continue
                except OSError:
                    closed_after = time.monotonic() - started
                    break
        assert closed_after is not None and closed_after < 6, closed_after


# -- 3. memory held but not counted -----------------------------------------------------------------


class TestMemoryAccounting:
    def test_long_failing_names_count_toward_max_bytes(
        self, proxy: UpstreamProxy, tmp_path: Path
    ) -> None:
        """150 distinct 8,100-character names upstream has not: each remembered answer
        counts its name and error, the per-URL memos count too, and all of it stays within
        ``max_bytes`` (entries are evicted to make room)."""
        max_bytes = 512 * 1024
        with serve(proxy, tmp_path, f"cache: {{max_bytes: {max_bytes}}}") as live:
            for i in range(150):
                reply = live.get(f"/parameters?name={i:05d}" + "n" * 8095)
                assert reply.status in (404, 502), reply  # moto: not found, or refused
            stats = live.stats()["parameters"]
            held = live.app.cache.size[1]
            memos = live.server.memo_bytes
        assert stats["entries"] > 0 and stats["evictions"] > 0
        assert stats["bytes"] >= stats["entries"] * 2 * 8100  # the name, and the message naming it
        assert 0 < memos <= max_bytes // 4
        assert held == stats["bytes"] + memos <= max_bytes
        assert proxy.count("GetParameter") == 150 * 1  # refused outright: botocore does not retry

    def test_values_are_held_once(self, proxy: UpstreamProxy, ssm: Any, tmp_path: Path) -> None:
        """SSM's and Secrets Manager's values live in the body only, not again in the metadata;
        the AWS-compatible routes still answer them in full."""
        value = "v" * 3000
        ssm.put_parameter(Name="once", Value=value, Type="SecureString")
        sm = boto3.client(
            "secretsmanager", endpoint_url=proxy.upstream_url, region_name="us-west-2"
        )
        sm.create_secret(Name="once-secret", SecretString=value)
        with serve(proxy, tmp_path) as live:
            compat = live.get("/systemsmanager/parameters/get?name=once&withDecryption=true")
            assert compat.json()["Parameter"]["Value"] == value
            secret = live.get("/secretsmanager/get?secretId=once-secret")
            assert secret.json()["SecretString"] == value
            assert secret.json()["SecretBinary"] is None
            for route, name in (("parameters", "once"), ("secrets", "once-secret")):
                _, item = live.app.router.resolve(route, {"name": name})
                lookup = live.call(live.app.cache.peek, item)
                assert lookup is not None and lookup.value.body == value.encode()
                assert value not in json.dumps(dict(lookup.value.metadata), default=str)
            stats = live.stats()
        for route in ("parameters", "secrets"):
            assert 3000 < stats[route]["bytes"] < 2 * 3000


# -- 4. retry storms for keys with no value ------------------------------------------------------


class TestOutageBackoff:
    def test_an_uncached_key_costs_about_one_upstream_call_per_backoff(
        self, proxy: UpstreamProxy, tmp_path: Path
    ) -> None:
        """While upstream answers 500, five clients reading one uncached key as fast as they
        can for 3 s make at most 4 fetches (backoffs of 0.5-1 s, 1-2 s, 2-4 s), not hundreds;
        every read gets the 502."""
        proxy.inject(Fault.server_error(), operation="GetParameter")
        statuses: List[int] = []
        with serve(proxy, tmp_path) as live:
            deadline = time.monotonic() + 3.0

            def hammer() -> None:
                conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=10)
                while time.monotonic() < deadline:
                    conn.request("GET", "/parameters?name=down", headers={TOKEN_HEADER: live.token})
                    response = conn.getresponse()
                    response.read()
                    statuses.append(response.status)
                conn.close()

            threads = [threading.Thread(target=hammer) for _ in range(5)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            stats = live.stats()["parameters"]
        assert len(statuses) > 50 and set(statuses) == {502}
        assert stats["upstream_calls"] <= 4, stats  # API calls (each up to 2 wire attempts)
        assert proxy.count("GetParameter") <= 8
        assert stats["backoff_hits"] >= len(statuses) - 4 * 5

    def test_throttling_is_503_with_retry_after_and_backs_off_longer(
        self, proxy: UpstreamProxy, ssm: Any, tmp_path: Path
    ) -> None:
        """A throttled fetch answers 503 with Retry-After; reads inside its backoff (2 to 4 s
        for a first throttle) get the same without an upstream call; past it, one retry."""
        clock = ManualClock()
        ssm.put_parameter(Name="busy", Value="v", Type="String")
        proxy.inject(Fault.throttle(), operation="GetParameter")
        with serve(proxy, tmp_path, clock=clock) as live:
            first = live.get("/parameters?name=busy")
            assert (first.status, first.json()["error"]) == (503, "Throttled")
            assert 2 <= int(first.headers["retry-after"]) <= 4
            calls = proxy.count("GetParameter")
            clock.advance(1.9)
            again = live.get("/parameters?name=busy")
            assert again.status == 503 and 1 <= int(again.headers["retry-after"]) <= 3
            assert proxy.count("GetParameter") == calls
            proxy.clear()
            clock.advance(2.2)
            assert live.get("/parameters?name=busy").status == 200
        assert proxy.count("GetParameter") == calls + 1


# -- 5. stale_wait and the upstream deadline ------------------------------------------------------


class TestStaleWait:
    def test_a_hanging_refresh_serves_the_stale_value_within_stale_wait(
        self, proxy: UpstreamProxy, ssm: Any, tmp_path: Path
    ) -> None:
        """When the refresh of an expired key hangs, the read gets the stale value after
        ``stale_wait`` (here 200 ms), not after the upstream's 5 s; the refresh goes on and its
        value is served once it arrives."""
        clock = ManualClock()
        ssm.put_parameter(Name="slow", Value="old", Type="String")
        with serve(proxy, tmp_path, "cache: {ttl: 10s, stale_wait: 200ms}", clock=clock) as live:
            assert live.get("/parameters?name=slow").text == "old"
            ssm.put_parameter(Name="slow", Value="new", Type="String", Overwrite=True)
            proxy.inject(Fault.delay(1.5), operation="GetParameter", times=1)
            clock.advance(10.5)
            started = time.monotonic()
            reply = live.get("/parameters?name=slow")
            took = time.monotonic() - started
            assert (reply.status, reply.x_cache, reply.text) == (200, "stale", "old")
            assert took < 1.2, took  # well under the 1.5 s the refresh takes
            deadline = time.monotonic() + 5  # the refresh lands in the background
            while live.get("/parameters?name=slow").text != "new":
                assert time.monotonic() < deadline, "the refresh never landed"
                time.sleep(0.1)

    def test_an_uncached_key_gets_504_at_the_upstream_timeout(
        self, proxy: UpstreamProxy, ssm: Any, tmp_path: Path
    ) -> None:
        """``cache: upstream_timeout`` bounds how long a read waits for upstream: then 504,
        while the fetch goes on and its value is kept for the next read."""
        ssm.put_parameter(Name="late", Value="v", Type="String")
        proxy.inject(Fault.delay(2.0), operation="GetParameter", times=1)
        with serve(proxy, tmp_path, "cache: {upstream_timeout: 500ms}") as live:
            started = time.monotonic()
            reply = live.get("/parameters?name=late")
            took = time.monotonic() - started
            assert (reply.status, reply.json()["error"]) == (504, "UpstreamTimeout")
            assert "upstream_timeout" in reply.json()["message"]
            assert took < 1.8, took
            deadline = time.monotonic() + 15  # reads join the one fetch until it lands
            while live.get("/parameters?name=late").status != 200:
                assert time.monotonic() < deadline, "the fetch never landed"
            assert live.get("/parameters?name=late").x_cache == "hit"
        assert proxy.count("GetParameter") == 1


# -- 6. config files that crashed the loader ---------------------------------------------------------

BAD_FILES = {
    "5000-digit-integer": ("cache: {max_entries: " + "9" * 5000 + "}\n", 1),
    "5000-digit-size": ("cache:\n  max_bytes: " + "9" * 5000 + "KB\n", 2),
    "10000-brackets": ("[" * 10000, 1),
    "5000-nested-dashes": ("parameters:\n" + "- " * 5000 + "x\n", 2),
    "3000-nested-braces": ("{a: " * 3000, 1),
    "control-character": ("cache:\n  ttl: 1s\x01\n", 2),
    "escape-beyond-unicode": ('cache:\n  ttl: "\\U99999999"\n', 2),  # found by test_fuzz
}


def cachelayer_cli(*args: str, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cachelayer", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


class TestConfigCrashes:
    @pytest.mark.parametrize("case", list(BAD_FILES), ids=list(BAD_FILES))
    def test_check_config_reports_file_and_line(self, tmp_path: Path, case: str) -> None:
        """Each file that used to raise ValueError or RecursionError is a ConfigError naming the
        file and the line, exit code 2, no traceback."""
        text, line = BAD_FILES[case]
        path = tmp_path / "config.yaml"
        path.write_text(text)
        done = cachelayer_cli("check-config", str(path))
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith(f"cachelayer: {path}:{line}: "), done.stderr[:300]
        assert "Traceback" not in done.stderr and len(done.stderr) < 1000

    @pytest.mark.parametrize("use_libyaml", [True, False], ids=["libyaml", "pure"])
    @pytest.mark.parametrize("case", list(BAD_FILES), ids=list(BAD_FILES))
    def test_both_yaml_loaders_report_file_and_line(
        self, tmp_path: Path, case: str, use_libyaml: bool, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With libyaml's parser and with PyYAML's pure-Python one, each file is the same
        ConfigError naming the file and the line."""
        if use_libyaml and not yaml.__with_libyaml__:
            pytest.skip("PyYAML built without libyaml")
        monkeypatch.setattr(yamlload, "USE_LIBYAML", use_libyaml)
        text, line = BAD_FILES[case]
        path = tmp_path / "config.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError) as info:
            load_settings({}, {}, config_path=str(path))
        assert str(info.value).startswith(f"{path}:{line}: "), str(info.value)[:300]

    def test_serve_reports_it_too(self, tmp_path: Path) -> None:
        """``cachelayer serve`` refuses the same file with the same message, exit code 2."""
        path = tmp_path / "config.yaml"
        path.write_text(BAD_FILES["10000-brackets"][0])
        done = cachelayer_cli("serve", "--config", str(path), "--port", str(free_port()))
        assert done.returncode == 2
        assert done.stderr.startswith(f"cachelayer: {path}:1: nested more than")
        assert "Traceback" not in done.stderr


# -- 7 and 9. plugins: name clashes, broken plugins, hooks ------------------------------------------


def install(site: Path, dist: str, entry_points: Dict[str, str], modules: Dict[str, str]) -> None:
    """Install a throw-away distribution the way pip leaves one: modules and a dist-info."""
    for module, source in modules.items():
        (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[cachelayer]\n{lines}")


HOOKS_MODULE = """
import time
import cachelayer

@cachelayer.hookimpl
def cachelayer_startup(providers):
    raise RuntimeError("startup hook failed on purpose")

@cachelayer.hookimpl
def cachelayer_invoke(event):
    raise RuntimeError("invoke hook failed on purpose")

@cachelayer.hookimpl
def cachelayer_shutdown(reason):
    time.sleep(60)  # blocks: shutdown must not wait for it
"""

RAISING_SHUTDOWN_MODULE = """
import cachelayer

@cachelayer.hookimpl
def cachelayer_shutdown(reason):
    raise RuntimeError("shutdown hook failed on purpose")
"""


@pytest.fixture()
def site(tmp_path: Path) -> Path:
    """A directory of throw-away distributions, put on the child processes' PYTHONPATH."""
    root = tmp_path / "site"
    root.mkdir()
    return root


def with_site(site: Path, env: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    return {**(env or {}), "PYTHONPATH": path}


def empty_config(tmp_path: Path) -> Path:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    return path


class TestPluginLoader:
    def test_one_name_from_two_distributions_is_a_startup_error_naming_both(
        self, site: Path, tmp_path: Path
    ) -> None:
        """Two distributions registering the entry-point name ``dup``: ``providers`` and
        ``serve`` fail, naming both distributions (the second was dropped without a word)."""
        install(site, "cachelayer-dup-one", {"dup": "dup_one"}, {"dup_one": ""})
        install(site, "cachelayer-dup-two", {"dup": "dup_two"}, {"dup_two": ""})
        for args in (["providers"], ["serve", "--port", str(free_port())]):
            done = cachelayer_cli(*args, env=with_site(site))
            assert done.returncode == 2, (args, done.stderr)
            assert "'cachelayer-dup-one'" in done.stderr and "'cachelayer-dup-two'" in done.stderr
            assert "'dup'" in done.stderr and "Traceback" not in done.stderr

    def test_providers_exits_non_zero_listing_a_broken_plugin(self, site: Path) -> None:
        """``cachelayer providers`` lists a plugin that fails to import as BROKEN and exits 1."""
        install(site, "cachelayer-bad", {"bad": "bad_plugin"}, {"bad_plugin": "import nowhere_x\n"})
        done = cachelayer_cli("providers", env=with_site(site))
        assert done.returncode == 1, done.stdout + done.stderr
        assert "BROKEN  plugin 'bad' from cachelayer-bad" in done.stdout
        assert "parameters" in done.stdout  # the good ones are still listed


def _with_raising_shutdown_hook(site: Path, aws: str, tmp_path: Path) -> Tuple[int, Dict[str, str]]:
    """Install the plugin whose shutdown hook raises; a free port and the environment of a
    cachelayer with an empty config on it."""
    install(
        site,
        "cachelayer-hooks-two",
        {"raisy": "raisy_plugin"},
        {"raisy_plugin": RAISING_SHUTDOWN_MODULE},
    )
    port = free_port()
    env = {
        **aws_environment(aws),
        "CACHE_EXTENSION_CONFIG": str(empty_config(tmp_path)),
        "CACHE_EXTENSION_PORT": str(port),
    }
    return port, env


def _nexts(api: ApiServer) -> int:
    """How many /next calls the extensions have made (the caller may hold the sandbox's lock)."""
    return sum(1 for _, kind, _ in api.sandbox.timeline if kind == "next")


class TestHookIsolation:
    def test_raising_and_blocking_hooks_leave_the_extension_whole(
        self, site: Path, aws: str, tmp_path: Path
    ) -> None:
        """Under the Extensions API: a startup hook and an INVOKE hook that raise are logged
        with their plugin's name and the extension serves on; at SHUTDOWN one hook raises and
        another blocks, and the extension still exits 0 inside the 2 s deadline, stats logged."""
        install(site, "cachelayer-hooks", {"hooky": "hooky_plugin"}, {"hooky_plugin": HOOKS_MODULE})
        port, env = _with_raising_shutdown_hook(site, aws, tmp_path)
        api = make_api()
        api.start()
        try:
            proc = start_extension(api, with_site(site, env))
            wait_until(
                "the extension's /next",
                lambda: api.sandbox.extensions and api.sandbox.extensions_idle(),
                process=proc,
                timeout=20,
            )
            with api.sandbox.cond:
                nexts = _nexts(api)
                api.sandbox.deliver_to_extensions({"eventType": "INVOKE", "requestId": "r1"})
            # Back in /next after the INVOKE: one more /next call, and nothing left to hand it.
            wait_until(
                "the extension's /next after the INVOKE",
                lambda: api.sandbox.extensions_idle() and _nexts(api) > nexts,
                process=proc,
            )
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/-/health", headers={TOKEN_HEADER: env["AWS_SESSION_TOKEN"]})
            assert conn.getresponse().status == 200
            conn.close()
            started = deliver_shutdown(api, within=2.0)
            code = proc.wait(10)
            took = time.monotonic() - started
            err = proc.stderr.read() if proc.stderr else ""
        finally:
            api.stop()
        assert code == 0, err
        assert took < 1.9, err
        assert "plugin 'hooky': its cachelayer_startup hook raised" in err
        assert "plugin 'hooky': its cachelayer_invoke hook raised" in err
        assert "plugin 'raisy': its cachelayer_shutdown hook raised" in err
        assert "plugin 'hooky': its cachelayer_shutdown hook did not return" in err
        assert "cachelayer stats |" in err

    def test_serve_shuts_down_cleanly_despite_a_raising_shutdown_hook(
        self, site: Path, aws: str, tmp_path: Path
    ) -> None:
        """``cachelayer serve`` on SIGTERM with a raising shutdown hook: closed, stats logged,
        exit 0 (it used to die non-zero without closing)."""
        port, env = _with_raising_shutdown_hook(site, aws, tmp_path)
        proc = subprocess.Popen(
            [sys.executable, "-m", "cachelayer", "serve"],
            env={**os.environ, **with_site(site, env)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            wait_listening(port, proc)
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(10)
            out = proc.stdout.read() if proc.stdout else ""
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert code == 0, out
        assert "plugin 'raisy': its cachelayer_shutdown hook raised" in out
        assert "cachelayer stats |" in out


# -- 8. no "Future exception was never retrieved" ----------------------------------------------------


class TestCancelledClients:
    def test_clients_that_leave_mid_request_leave_no_unretrieved_futures(
        self, proxy: UpstreamProxy, tmp_path: Path
    ) -> None:
        """Clients that reset their connection while their fetch (which fails: not found) is in
        flight: asyncio logs no "Future exception was never retrieved"."""
        records: List[logging.LogRecord] = []
        handler = logging.Handler()
        handler.emit = records.append  # type: ignore[method-assign]  # a list as the handler
        logging.getLogger("asyncio").addHandler(handler)
        proxy.inject(Fault.delay(0.3), operation="GetParameter")
        try:
            with serve(proxy, tmp_path) as live:
                for i in range(10):
                    with socket.create_connection(("127.0.0.1", live.port)) as s:
                        s.sendall(raw_request(live, f"/parameters?name=gone-{i}"))
                        proxy.wait_for(i + 1, "GetParameter")  # read, and its fetch started
                        # Reset, not FIN: the server sees the client gone, cancels its read.
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                deadline = time.monotonic() + 10
                while live.stats()["parameters"]["entries"] < 10:  # every fetch has failed
                    assert time.monotonic() < deadline
                    time.sleep(0.1)
                # Drop what the cache holds (a kept error's traceback can hold a future), then
                # collect: every future left unretrieved is reported now.
                assert live.get("/-/invalidate", method="POST").status == 200
                live.call(gc.collect)
        finally:
            logging.getLogger("asyncio").removeHandler(handler)
        assert proxy.count("GetParameter") == 10
        logged = [r.getMessage() for r in records]
        assert not any("never retrieved" in m for m in logged), logged
