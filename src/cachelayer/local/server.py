"""The HTTP server of the Lambda APIs: one Sandbox's routes on 127.0.0.1, a thread per request."""

from __future__ import annotations

import io
import threading
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, List, Optional

from cachelayer.local.api import Sandbox


def read_body(headers: Message, rfile: io.BufferedIOBase) -> bytes:
    """The body of a request whose ``headers`` were just read from ``rfile``: chunked
    (``Transfer-Encoding``) or ``Content-Length`` bytes (none when neither is given)."""
    if "chunked" in headers.get("Transfer-Encoding", "").lower():
        chunks: List[bytes] = []
        while True:
            size = int(rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                # Trailers end with an empty line.
                while rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            chunks.append(rfile.read(size))
            rfile.readline()
    return rfile.read(int(headers.get("Content-Length") or 0))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle's algorithm the second waits for the
    # client's delayed ACK (~40 ms), which would be counted into every invocation's duration.
    disable_nagle_algorithm = True
    server: ApiServer

    def log_message(self, format: str, *args: Any) -> None:
        # The processes' own logs tell the story; per-request lines would drown them.
        return

    def _serve(self, method: str) -> None:
        body = read_body(self.headers, self.rfile)
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, out_headers, out_body = self.server.sandbox.dispatch(
            method, self.path, headers, body
        )
        try:
            self.send_response(status)
            for key, value in out_headers:
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(out_body)))
            self.end_headers()
            self.wfile.write(out_body)
        except (BrokenPipeError, ConnectionResetError):
            # The caller died (killed at shutdown); nothing to answer.
            self.close_connection = True

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")


class ApiServer(ThreadingHTTPServer):
    """A threaded HTTP server for one Sandbox on 127.0.0.1 (a free port unless given)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, sandbox: Sandbox, port: int = 0) -> None:
        self.sandbox = sandbox
        super().__init__(("127.0.0.1", port), _Handler)
        self._thread: Optional[threading.Thread] = None

    @property
    def address(self) -> str:
        """The value of ``AWS_LAMBDA_RUNTIME_API``: ``127.0.0.1:PORT``."""
        return f"127.0.0.1:{self.server_address[1]}"

    def start(self) -> None:
        # A short poll interval: stop() waits for it.
        self._thread = threading.Thread(
            target=self.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="lambda-api",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        self.sandbox.close()
        self.shutdown()
        self.server_close()
