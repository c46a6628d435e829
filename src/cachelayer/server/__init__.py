"""The HTTP front end: asyncio + httptools, parse -> router -> cache -> render; no boto3."""

from __future__ import annotations

from cachelayer.server.server import DEFAULT_HOSTS, Server

__all__ = ["DEFAULT_HOSTS", "Server"]
