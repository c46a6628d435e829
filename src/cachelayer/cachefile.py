"""One marshal file of compile results kept between processes, as .pyc files keep modules.

The file behind ``cachelayer.attrs_cache`` (attrs' generated methods) and
``cachelayer.regex_cache`` (regular-expression programs): it lives beside this package's own
bytecode, is keyed by a header (format, interpreter) so a foreign or stale file reads as empty,
is written atomically, and is not written where bytecode may not be (``-B``, as in a read-only
Lambda layer, whose builder writes it at build time instead).
"""

from __future__ import annotations

import contextlib
import marshal
import os
import sys
from typing import Any, Dict, Iterable, Optional, Tuple

__all__ = [
    "CacheFile",
    "EntryCache",
    "cache_path",
    "default_path",
    "kept_entries",
    "python_magic",
    "write_atomically",
]


def python_magic() -> bytes:
    """The interpreter's bytecode magic number (``importlib.util.MAGIC_NUMBER``), without
    importing ``importlib.util`` on the extension's way to ready."""
    import _frozen_importlib_external  # the import system's own: loaded at startup

    return bytes(_frozen_importlib_external.MAGIC_NUMBER)


def cache_path(name: str) -> Optional[str]:
    """``<name with {tag} filled>`` in ``cachelayer/__pycache__`` (honouring
    ``PYTHONPYCACHEPREFIX``, as the package's .pyc files do); None where the interpreter writes
    no bytecode tag."""
    tag = sys.implementation.cache_tag
    if tag is None:
        return None
    package = os.path.dirname(os.path.abspath(__file__))
    prefix = sys.pycache_prefix
    if prefix:
        directory = os.path.join(prefix, package.lstrip(os.sep))
    else:
        directory = os.path.join(package, "__pycache__")
    return os.path.join(directory, name.format(tag=tag))


def default_path(stem: str) -> Optional[str]:
    """``cachelayer/__pycache__/<stem>.<cache tag>.marshal`` (see ``cache_path``)."""
    return cache_path(stem + ".{tag}.marshal")


def write_atomically(path: str, parts: Iterable[bytes]) -> None:
    """Write ``parts`` to ``path`` through a temporary file and a rename, making the directory:
    a concurrent reader sees the old file or the new. Raises what writing raised, leaving no
    temporary file behind."""
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(temporary, "wb") as f:
            for part in parts:
                f.write(part)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def kept_entries(used: Dict[Any, Any], others: Dict[Any, Any], limit: int) -> Dict[Any, Any]:
    """What to write: all of this process's entries, then the file's others (another process
    may need others) while there are fewer than ``limit``, so entries nobody uses age out."""
    kept = dict(used)
    for key, entry in others.items():
        if len(kept) >= limit:
            break
        kept.setdefault(key, entry)
    return kept


class CacheFile:
    """The file at ``path`` (None: no file; everything reads empty) whose entries belong to
    ``header``."""

    def __init__(self, path: Optional[str], header: Tuple[Any, ...]) -> None:
        self.path = path
        self.header = header

    def load(self) -> Dict[Any, Any]:
        """The entries; a missing, foreign, stale or damaged file gives none."""
        if self.path is None:
            return {}
        try:
            with open(self.path, "rb") as f:
                header, entries = marshal.loads(f.read())
        except (OSError, EOFError, ValueError, TypeError):
            return {}
        if type(header) is not tuple or header != self.header or type(entries) is not dict:
            return {}
        return entries

    def save(self, entries: Dict[Any, Any], *, force: bool = False) -> bool:
        """Write ``entries`` if bytecode may be written (``force``: even under ``-B``). Atomic:
        a concurrent reader sees the old file or the new. False if nothing was written."""
        if self.path is None or (sys.dont_write_bytecode and not force):
            return False
        try:
            write_atomically(self.path, (marshal.dumps((self.header, entries)),))
        except (OSError, ValueError) as exc:  # read-only, foreign, or an unmarshallable entry
            import logging  # only here: this module is imported before logging's patterns

            logging.getLogger("cachelayer.cachefile").debug(
                "cache file %s not written: %s", self.path, exc
            )
            return False
        return True


class EntryCache:
    """The entries of one ``CacheFile``, the ones this process used, and how many it found
    (``hits``) and had to compute (``compiled``): what the attrs and regex caches share."""

    def __init__(self, path: Optional[str], header: Tuple[Any, ...]) -> None:
        self.path = path
        self._file = CacheFile(path, header)
        self._entries: Dict[Any, Any] = {}
        self.used: Dict[Any, Any] = {}
        self.compiled = 0
        self.hits = 0

    def limit(self) -> int:
        """How many entries the file keeps at most (see ``kept_entries``)."""
        raise NotImplementedError

    def load(self) -> None:
        """Read the file; a missing, stale or damaged one is simply empty."""
        self._entries = self._file.load()

    def save(self, *, force: bool = False) -> bool:
        """Write the entries this process used (and the file's others, up to ``limit()``), if
        it computed any and bytecode may be written (``force``: even under ``-B``)."""
        if not self.compiled:
            return False
        return self._file.save(kept_entries(self.used, self._entries, self.limit()), force=force)
