"""Bounded fuzzers: the real ``cachelayer serve`` under 50,000 random and grammar-built requests,
and the config loader under hypothesis-built YAML. Longer runs: ``bench/bench_fuzz.py`` (it sets
``CACHELAYER_FUZZ_BATCHES`` and ``CACHELAYER_FUZZ_EXAMPLES``; the defaults are CI's bounded run)."""

from __future__ import annotations

import asyncio
import os
import random
import re
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import boto3
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cachelayer.core import yamlload
from cachelayer.core.config import load_settings
from cachelayer.errors import ConfigError
from cachelayer.plugins import discover
from cachelayer.testing.moto import aws_environment, free_port
from cachelayer.testing.processes import stop_process

TOKEN_HEADER = "X-Aws-Parameters-Secrets-Token"
SEED = 20261201  # fixed: a failure is reproduced by running the test again
# CI's bounded run by default; bench/bench_fuzz.py raises both for longer runs.
BATCHES = int(os.environ.get("CACHELAYER_FUZZ_BATCHES", "43"))
EXAMPLES = int(os.environ.get("CACHELAYER_FUZZ_EXAMPLES", "400"))

# -- the request grammar ----------------------------------------------------------------------

ROUTES = [
    "/parameters",
    "/secrets",
    "/dynamodb",
    "/systemsmanager/parameters/get",
    "/secretsmanager/get",
    "/-/health",
    "/-/stats",
    "/-/invalidate",
    "/-/openapi.json",
    "/nowhere",
    "/",
    "*",
]
KNOWN = ["fz-a", "fz-b", "fz-c", "/fz/path", "fz-secret"]
METHODS = ["GET", "GET", "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "G E T"]
PARAMS = ["name", "secretId", "version", "label", "withDecryption", "versionStage", "x", ""]
HEADERS = [
    ("Host", "localhost"),
    ("Connection", "close"),
    ("Connection", "keep-alive"),
    ("Content-Length", "5"),
    ("Content-Length", "-1"),
    ("Transfer-Encoding", "chunked"),
    ("X-Forwarded-For", "10.0.0.1"),
    ("Expect", "100-continue"),
    ("Upgrade", "websocket"),
    ("Host", "other"),
    ("X-Pad", "p" * 300),
]


def keep_alive_request(rng: random.Random, token: str) -> bytes:
    """A request the server answers without closing: GET or HEAD on any route with any query
    (bad parameters, unknown names, odd encodings), the token, and harmless headers."""
    route = rng.choice(ROUTES[:-2])
    params = [
        (rng.choice(PARAMS), rng.choice([*KNOWN, "", "%zz", "é/ü", "x" * rng.randint(0, 200)]))
        for _ in range(rng.choice([0, 1, 1, 2]))
    ]
    query = urllib.parse.urlencode(params)
    target = route + ("?" + query if query else "")
    extra = rng.choice(["", "Connection: keep-alive\r\n", "X-Pad: " + "p" * 300 + "\r\n"])
    method = "HEAD" if rng.random() < 0.1 else "GET"
    return (
        f"{method} {target} HTTP/1.1\r\nHost: localhost\r\n{TOKEN_HEADER}: {token}\r\n{extra}\r\n"
    ).encode()


def grammar_request(rng: random.Random, token: str) -> bytes:
    """One request built from the grammar: mostly plausible, often subtly wrong."""
    route = rng.choice(ROUTES)
    params: List[Tuple[str, str]] = []
    for _ in range(rng.choice([0, 1, 1, 1, 2, 3])):
        key = rng.choice(PARAMS)
        value = rng.choice([*KNOWN, "", "%zz", "a" * rng.randint(0, 300), "é/ü", "1", "true"])
        params.append((key, value))
    query = urllib.parse.urlencode(params) if rng.random() < 0.9 else "name=%%%00&&="
    target = route + ("?" + query if query else "")
    method = rng.choice(METHODS)
    version = rng.choice(["1.1", "1.1", "1.1", "1.0", "2.0", "0.9"])
    lines = [f"{method} {target} HTTP/{version}"]
    if rng.random() < 0.9:
        lines.append("Host: localhost")
    roll = rng.random()
    if roll < 0.6:
        lines.append(f"{TOKEN_HEADER}: {token}")
    elif roll < 0.75:
        lines.append(f"{TOKEN_HEADER}: wrong-{rng.randint(0, 9)}")
    elif roll < 0.8:
        lines.append(f"{TOKEN_HEADER}: {token}")
        lines.append(f"{TOKEN_HEADER}: {token}")
    for _ in range(rng.choice([0, 0, 1, 2])):
        name, value = rng.choice(HEADERS)
        lines.append(f"{name}: {value}")
    body = ""
    if any(line.startswith("Content-Length: 5") for line in lines):
        body = "hello"
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode("utf-8", "replace")


def random_request(rng: random.Random, token: str) -> bytes:
    """A grammar request mutated at the byte level, or plain noise."""
    data = bytearray(grammar_request(rng, token))
    kind = rng.random()
    if kind < 0.2:
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 200)))
    for _ in range(rng.randint(1, 6)):
        at = rng.randrange(len(data) + 1)
        op = rng.random()
        if op < 0.3 and data:
            data[min(at, len(data) - 1)] = rng.getrandbits(8)
        elif op < 0.6:
            data[at:at] = rng.choice([b"\r", b"\n", b"\0", b" ", b":", b"\r\n", b"%", b"\xff"])
        elif op < 0.8:
            del data[at : at + rng.randint(1, 10)]
        else:
            data[at:at] = data[: rng.randint(0, 40)]
    if rng.random() < 0.1:
        data = data[: rng.randrange(len(data) + 1)]  # truncated: the server waits, then 408
    return bytes(data)


# -- the process under test -----------------------------------------------------------------------


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture()
def served(aws: str, tmp_path: Path) -> Iterator[Tuple[subprocess.Popen, int, str, Path]]:
    """``cachelayer serve`` (a real process) against moto, with a few values seeded."""
    ssm = boto3.client("ssm", endpoint_url=aws, region_name="us-west-2")
    for name in KNOWN[:4]:
        ssm.put_parameter(Name=name, Value=f"value of {name}", Type="String")
    boto3.client("secretsmanager", endpoint_url=aws, region_name="us-west-2").create_secret(
        Name="fz-secret", SecretString="s3cr3t"
    )
    config = tmp_path / "config.yaml"
    config.write_text("parameters:\n  - names: [fz-a, fz-b]\n")
    port = free_port()
    env = {
        **os.environ,
        **aws_environment(aws),
        "CACHE_EXTENSION_CONFIG": str(config),
        "CACHE_EXTENSION_PORT": str(port),
        "CACHE_EXTENSION_LOG_LEVEL": "WARNING",
    }
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cachelayer", "serve"], env=env, stdout=out, stderr=out
        )
    deadline = time.monotonic() + 20
    while True:
        assert proc.poll() is None, log.read_text()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    try:
        yield proc, port, env["AWS_SESSION_TOKEN"], log
    finally:
        stop_process(proc, timeout=10)


async def _send(port: int, payload: bytes, read_cap: int = 1 << 20) -> bytes:
    """Write ``payload`` on a fresh connection, half-close, read the answers (bounded)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
    except (OSError, asyncio.TimeoutError):
        return b""
    out = b""
    try:
        writer.write(payload)
        await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
        while len(out) < read_cap:
            chunk = await asyncio.wait_for(reader.read(65536), 2.0)
            if not chunk:
                break
            out += chunk
    except (OSError, asyncio.TimeoutError):
        pass
    finally:
        writer.close()
    return out


async def _good(port: int, token: str) -> bytes:
    request = (
        f"GET /parameters?name=fz-a HTTP/1.1\r\nHost: localhost\r\n{TOKEN_HEADER}: {token}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    return await _send(port, request)


_STATUS_LINE = re.compile(rb"HTTP/1\.1 [1-5][0-9][0-9] [A-Z]")


async def _fuzz(port: int, token: str, rng: random.Random, batches: int) -> Dict[str, int]:
    sent = {"grammar": 0, "random": 0, "connections": 0, "answers": 0}
    gate = asyncio.Semaphore(48)

    async def one(payload: bytes, n: int, kind: str) -> None:
        async with gate:
            answer = await _send(port, payload)
        sent[kind] += n
        sent["connections"] += 1
        sent["answers"] += len(_STATUS_LINE.findall(answer))

    for batch in range(batches):
        jobs = []
        # Grammar requests, pipelined 20 to a connection: 19 the server answers and keeps the
        # connection for, then one from the whole grammar (which may close it).
        for _ in range(60):
            group = [keep_alive_request(rng, token) for _ in range(19)]
            group.append(grammar_request(rng, token))
            jobs.append(one(b"".join(group), len(group), "grammar"))
        # Random requests, one to a connection, so each is parsed from a clean start.
        for _ in range(150):
            jobs.append(one(random_request(rng, token), 1, "random"))
        await asyncio.gather(*jobs)
        good = await _good(port, token)
        assert good.startswith(b"HTTP/1.1 200") and good.endswith(b"value of fz-a"), (batch, good)
    return sent


class TestSocketFuzzer:
    @pytest.mark.slow
    def test_fifty_thousand_requests_never_break_the_server(
        self, served: Tuple[subprocess.Popen, int, str, Path]
    ) -> None:
        """54,000 grammar-built and 6,750 byte-mutated requests (with, without and with a wrong
        token) in 45 batches, at least 50,000 of them answered: after every batch a good
        request is answered; the process never dies, never logs a traceback, and its RSS grows
        by less than 40 MiB."""
        proc, port, token, log = served
        rng = random.Random(SEED)
        warm = asyncio.run(_fuzz(port, token, rng, 2))  # imports, memos, negative entries
        rss_before = _rss_kib(proc.pid)
        started = time.monotonic()
        sent = asyncio.run(_fuzz(port, token, rng, BATCHES))
        took = time.monotonic() - started
        rss_after = _rss_kib(proc.pid)
        total = {k: warm[k] + sent[k] for k in sent}
        assert total["grammar"] + total["random"] >= 60_000
        assert total["answers"] >= 50_000
        assert proc.poll() is None, log.read_text()[-3000:]
        text = log.read_text()
        assert "Traceback" not in text and "never retrieved" not in text, text[-3000:]
        assert rss_after - rss_before < 40 * 1024, (rss_before, rss_after)
        print(f"fuzz: {total} in {took:.1f}s, RSS {rss_before} -> {rss_after} KiB")


# -- the config fuzzer ----------------------------------------------------------------------------

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["30s", "1h30m", "-1s", "0", "64MiB", "20%", "1.5", "yes", "S", "N", "B", ""]),
    st.text(max_size=30),
)
KEYS = st.sampled_from(
    [
        "cache",
        "parameters",
        "secrets",
        "dynamodb",
        "ttl",
        "max_entries",
        "max_bytes",
        "negative_ttl",
        "stale_if_error",
        "refresh_ahead",
        "init_startup",
        "stale_wait",
        "upstream_timeout",
        "region",
        "names",
        "groups",
        "name",
        "table",
        "hashkey",
        "hashkeytype",
        "hashkeyvalue",
        "sortkey",
        "version",
        "label",
        "<<",
    ]
)
DOCS = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(KEYS, st.text(max_size=8)), inner, max_size=5),
    ),
    max_leaves=25,
)
TOP = st.dictionaries(
    st.sampled_from(["cache", "parameters", "secrets", "dynamodb", "x"]), DOCS, max_size=4
)


def _mutate(text: str, data: st.DataObject) -> str:
    """Byte-level damage that YAML dumps never produce: brackets, dashes, tabs, anchors."""
    ops = data.draw(st.lists(st.integers(0, 8), max_size=4))
    for op in ops:
        at = data.draw(st.integers(0, len(text)))
        piece = [
            "[" * 200,
            "- " * 200,
            "{a: " * 200,
            "\t",
            "&a [*a]",
            "*nowhere",
            "9" * 5000,
            "\x01",
            '"\\U99999999"',
        ][op]
        text = text[:at] + piece + text[at:]
    return text


@pytest.fixture(params=["libyaml", "pure"])
def yaml_loader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each config test runs with libyaml's parser and with PyYAML's pure-Python one."""
    if request.param == "libyaml" and not yaml.__with_libyaml__:
        pytest.skip("PyYAML built without libyaml")
    monkeypatch.setattr(yamlload, "USE_LIBYAML", request.param == "libyaml")
    return str(request.param)


class TestConfigFuzzer:
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(doc=TOP, data=st.data())
    def test_any_file_is_settings_or_a_config_error_naming_it(
        self, tmp_path: Path, yaml_loader: str, doc: Dict[str, Any], data: st.DataObject
    ) -> None:
        """Whatever the file holds (schema-shaped documents with wrong types, damaged text,
        deep nesting, huge numbers), loading it against the installed providers' schemas gives
        Settings or a short ConfigError that names the file; never another exception."""
        try:
            text = yaml.safe_dump(doc, allow_unicode=True)
        except yaml.YAMLError:
            text = repr(doc)
        text = _mutate(text, data)
        path = tmp_path / "fuzzed.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            load_settings(_ENV, _schemas(), config_path=str(path))
        except ConfigError as exc:
            assert str(exc).startswith(str(path)), str(exc)[:300]
            assert len(str(exc)) < 2000


_ENV = aws_environment("http://127.0.0.1:9")
_SCHEMAS: Dict[str, Any] = {}


def _schemas() -> Dict[str, Any]:
    """The installed providers' config schemas, discovered once (entry points are slow)."""
    if not _SCHEMAS:
        _, registry = discover()
        _SCHEMAS.update(
            {
                n: getattr(i.provider_type, "config_schema", None)
                for n, i in registry.by_name.items()
            }
        )
    return _SCHEMAS
