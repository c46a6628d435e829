"""Units a config field may be written in: ``ByteSize`` (``64MiB``) and ``Ratio`` (``20%``)."""

from __future__ import annotations

__all__ = ["ByteSize", "Ratio"]


class ByteSize(int):
    """A size in bytes, written in config as an integer or with a unit (``64MiB``, ``512KB``).

    KB/MB/GB/TB are powers of 1000 and KiB/MiB/GiB/TiB powers of 1024, as the SI and IEC
    standards define them; units are case-insensitive. Use it as a field type in a provider's
    config schema (``max_size: Optional[ByteSize]``); the core parses and validates it.
    """


class Ratio(float):
    """A fraction from 0 to 1, written in config as ``0.2`` or as a percentage string ``20%``."""
