"""The answers that wait (a cache miss, an AWS-native path, an operation off the loop), as bytes."""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Mapping

from cachelayer.errors import CachelayerError
from cachelayer.provider import Item, Provider
from cachelayer.server.application import ServedApplication
from cachelayer.server.compat import CompatRoutes
from cachelayer.server.operations import Answer
from cachelayer.server.responses import (
    GENERIC_500,
    render_error,
    render_failure,
    render_json,
    render_lookup,
    render_raw,
)

__all__ = ["compat_later", "operation_later", "render_answer", "value_later"]

log = logging.getLogger("cachelayer.server")


def render_answer(status: int, document: Any, head: bool, conn: bytes, extra: Any = ()) -> bytes:
    """An operation's answer: a JSON document, or ``bytes`` of JSON sent as they are."""
    if isinstance(document, bytes):
        return render_raw(
            status, [("Content-Type", "application/json")], document, connection=conn, head=head
        )
    return render_json(status, document, connection=conn, head=head, extra=extra)


async def value_later(
    app: ServedApplication, provider: Provider, item: Item, head: bool, conn: bytes
) -> bytes:
    """``GET /<route>?name=`` for an item the cache does not hold fresh."""
    try:
        # Rendering inside the try too: a bad content type must become a 500, not a task
        # that dies and leaves its slot (and every later response) waiting.
        return render_lookup(await app.cache.get(provider, item), conn, head)
    except CachelayerError as exc:
        return render_failure(exc, conn, head, f"reading a /{item.route} item from the cache")
    except Exception:
        log.exception("internal error reading a /%s item", item.route)
        return render_error(500, "InternalError", GENERIC_500, connection=conn, head=head)


async def compat_later(
    app: ServedApplication,
    compat: CompatRoutes,
    path: str,
    params: Mapping[str, str],
    head: bool,
    conn: bytes,
) -> bytes:
    """``GET <path>`` for an AWS-native path a provider declares."""
    try:
        status, headers, body = await compat.answer(app, path, params)
    except CachelayerError as exc:
        return render_failure(exc, conn, head, f"answering {path}")
    except Exception:
        log.exception("internal error answering %s", path)
        return render_error(500, "InternalError", GENERIC_500, connection=conn, head=head)
    return render_raw(status, headers, body, connection=conn, head=head)


async def operation_later(answer: Awaitable[Answer], path: str, head: bool, conn: bytes) -> bytes:
    """An operation whose handler had to wait (e.g. the shared tier's invalidation)."""
    try:
        status, document = await answer
    except CachelayerError as exc:
        return render_failure(exc, conn, head, f"answering {path}")
    except Exception:
        log.exception("internal error answering %s", path)
        return render_error(500, "InternalError", GENERIC_500, connection=conn, head=head)
    return render_answer(status, document, head, conn)
