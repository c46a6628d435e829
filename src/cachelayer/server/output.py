"""A connection's responses, written in request order, with back-pressure and a graceful close."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Callable, Deque, List, Optional

from cachelayer.server.checks import Limits

__all__ = ["Output", "Pending", "Stop"]


class Pending:
    """A response in a connection's queue: its bytes (None until ready) and whether the
    connection closes after it."""

    __slots__ = ("close", "data")

    def __init__(self, data: Optional[bytes], close: bool) -> None:
        self.data = data
        self.close = close


class Stop(Exception):
    """Raised from a parser callback to stop parsing: the connection is closing."""


class Output:
    """The write side of one connection: responses leave in request order.

    A response that waits for an upstream holds its place in ``queue`` (see ``hold``); the
    ones after it queue behind it. Past ``Limits.pipeline`` queued responses the connection
    stops reading; a client that does not read its responses stops it too (``pause_writing``).
    ``released`` is called once the connection lingers after its last response.
    """

    __slots__ = ("_released", "closing", "paused_pipeline", "paused_writing", "queue", "transport")

    def __init__(self, released: Callable[[], None]) -> None:
        self._released = released
        self.transport: Any = None
        self.queue: Deque[Pending] = deque()
        self.closing = False
        self.paused_pipeline = False
        self.paused_writing = False

    def send(self, data: bytes, close: bool) -> None:
        """Write ``data`` now, or after the responses still pending; close after it if told."""
        if self.queue:
            self.queue.append(Pending(data, close))
            self.check_pipeline()
        elif not self.transport.is_closing():
            self.transport.write(data)
            if close:
                self.close_gracefully()
        if close:
            self.closing = True

    def hold(self, close: bool) -> Pending:
        """A place in the queue for a response still being made: set its ``data``, then
        ``flush``."""
        slot = Pending(None, close)
        self.queue.append(slot)
        self.check_pipeline()
        return slot

    def flush(self) -> None:
        """Write the responses ready at the head of the queue."""
        queue = self.queue
        out: List[bytes] = []
        close = False
        while queue and queue[0].data is not None:
            slot = queue.popleft()
            out.append(slot.data)  # type: ignore[arg-type]  # not None: tested above
            close = slot.close
            if close:
                break
        transport = self.transport
        if out and not transport.is_closing():
            transport.write(b"".join(out))
        if close:
            queue.clear()
            self.close_gracefully()
        elif self.paused_pipeline and len(queue) < Limits.pipeline // 2:
            self.paused_pipeline = False
            if not self.paused_writing and not self.closing:
                transport.resume_reading()
        elif self.closing and not queue:
            self.close_gracefully()

    def check_pipeline(self) -> None:
        """Stop reading while too many responses wait."""
        if len(self.queue) >= Limits.pipeline and not self.paused_pipeline:
            self.paused_pipeline = True
            self.transport.pause_reading()

    def pause_writing(self) -> None:
        """The client is not reading its responses: stop reading its requests."""
        self.paused_writing = True
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.paused_writing = False
        if not self.paused_pipeline and not self.closing:
            self.transport.resume_reading()

    def finish(self) -> None:
        """Close once every queued response has been written."""
        self.closing = True
        if not self.queue:
            self.close_gracefully()

    def close_now(self) -> None:
        """Close at once (a timeout, or server shutdown)."""
        self.closing = True
        self.transport.close()

    def close_gracefully(self) -> None:
        """FIN after the queued bytes, drain what the client still sends, then close.

        Closing with unread input makes the kernel send an RST, which can destroy the error
        response still in flight (the client sees "connection reset" instead of a 431).
        """
        transport = self.transport
        if transport.is_closing():
            return
        if transport.can_write_eof():
            transport.write_eof()
            asyncio.get_running_loop().call_later(Limits.linger, transport.close)
            self._released()
        else:
            transport.close()
