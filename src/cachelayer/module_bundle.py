"""The extension's startup modules from one file, as CPython serves its own frozen modules.

Each ``import`` of a module from a file costs the import system's own work before any of the
module runs: the path finders' lookups, a ``stat`` of the source, the ``.pyc`` opened, read,
checked and closed. About 250 modules are imported on the extension's way to ready (asyncio,
email, attrs, yaml, pluggy, ours), and that work came to some 15-20 ms of CPU of every cold
start here (``bench/bench_startup.py``). CPython 3.11 freezes the modules of its own startup for
the same reason; this does the same for ours, with a finder placed first on ``sys.meta_path``
that hands out the code of the modules a bundle file holds, read with one ``pread`` each.

What stays the same: a module is served from the file the normal finders found it in when the
bundle was written, with the normal loader's behaviour (a subclass of ``SourceFileLoader`` or
``SourcelessFileLoader``) and so the same ``__file__``, ``__spec__``, ``__path__``, source for
tracebacks, ``co_filename`` and package resources; only its code comes from the bundle. The
bundle is used only if ``sys.path`` is, up to the last entry it holds modules of, what it was
when the bundle was written (entries under the package root stored relative to it, so a layer
built in one place runs in ``/opt``), and a submodule only while its parent's ``__path__`` holds
the directory it was found in. A module not in the bundle, and a bundled one whose file has
changed (in a "checked" bundle, by its size and mtime, as a .pyc is checked), is imported the
normal way; a new file that would now shadow a bundled module (a package or an extension
module of the same name, written after the bundle) is not looked for: write the bundle again. A
layer's bundle is "unchecked", as the layer's .pyc files are (``--invalidation-mode
unchecked-hash``): its files do not change after the build. ``-O`` and ``-OO`` have bundles of
their own. A damaged file is no bundle, or a damaged entry its module imported the normal way.
The file lives beside this package's bytecode (``__pycache__/startup-modules.<tag>.bundle``);
``write()`` makes it from what a process has imported (``cachelayer.startup_cache.warm``, the
layer builder's step).
"""

from __future__ import annotations

import _frozen_importlib_external as _external
import _imp
import contextlib
import marshal
import os
import sys
from types import CodeType
from typing import Any, Dict, List, Optional, Sequence, Tuple

from cachelayer import cachefile

__all__ = ["BundleFinder", "bundle_path", "install", "uninstall", "write"]

_FORMAT = 1
_MAGIC = b"CLMB"  # cachelayer module bundle
_LENGTH_BYTES = 8  # the table's offset, then its length
# name -> (sys.path entry index, path under it, sourceless, mtime_ns, size, offset, length)
Entry = Tuple[int, str, bool, int, int, int, int]


def bundle_path() -> Optional[str]:
    """``cachelayer/__pycache__/startup-modules.<cache tag>.bundle``; None where the interpreter
    writes no bytecode tag."""
    return cachefile.cache_path("startup-modules.{tag}.bundle")


def package_root() -> str:
    """The directory that holds the ``cachelayer`` package (a layer's ``cachelayer/``)."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _header() -> Tuple[Any, ...]:
    # -O and -OO read other .pyc files (.opt-1, .opt-2): another bundle.
    return (
        _FORMAT,
        bytes(_external.MAGIC_NUMBER),
        sys.implementation.cache_tag,
        sys.flags.optimize,
    )


def _stored_entry(entry: str, root: str) -> Tuple[bool, str]:
    """A sys.path entry as written: (relative to the package root?, path)."""
    if not entry:
        return False, ""
    entry = os.path.normpath(os.path.abspath(entry))
    if entry == root or entry.startswith(root + os.sep):
        return True, os.path.relpath(entry, root)
    return False, entry


def _runtime_entry(stored: Sequence[Any], root: str) -> str:
    relative, path = stored
    return os.path.normpath(os.path.join(root, path)) if relative else path


class _BundledCode:
    """Mixed into the normal file loaders: the code comes from the bundle."""

    _bundle: Tuple[BundleFinder, int, int]

    def get_code(self, fullname: str) -> Any:
        finder, offset, length = self._bundle
        try:
            code = marshal.loads(os.pread(finder.fd, length, offset))
            if type(code) is not CodeType:
                raise TypeError("not code")
        except Exception:  # a damaged file, or one closed by uninstall(): the normal way
            return super().get_code(fullname)  # type: ignore[misc]
        if isinstance(self, _external.SourceFileLoader):
            # As the normal loader does: the code names the file it is run from, wherever the
            # .pyc was compiled (a layer's name /opt).
            _imp._fix_co_filename(code, self.path)
        finder.served += 1
        return code


class _BundledSourceLoader(_BundledCode, _external.SourceFileLoader):  # type: ignore[misc]
    pass


class _BundledSourcelessLoader(_BundledCode, _external.SourcelessFileLoader):
    pass


def _parent_directory(origin: str, relative: str) -> str:
    """The directory a parent package's ``__path__`` holds for the module at ``origin``."""
    directory = os.path.dirname(origin)
    is_package = os.path.basename(relative).startswith("__init__.")
    return os.path.dirname(directory) if is_package else directory


class BundleFinder:
    """A meta path finder for the modules of one bundle file (see the module's docstring)."""

    def __init__(self, fd: int, index: Dict[str, Entry], entries: List[str], checked: bool) -> None:
        self.fd = fd
        self.index = index
        self.entries = entries
        self.checked = checked
        self.served = 0
        self.refused = 0

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        entry = self.index.get(fullname)
        if entry is None:
            return None
        try:
            where, relative, sourceless, mtime_ns, size, offset, length = entry
            origin = self.entries[where] + os.sep + relative
        except Exception:  # a damaged table: the normal way
            return None
        if path is not None and _parent_directory(origin, relative) not in path:
            return None  # the parent package is not where the bundle found it
        if self.checked:
            try:
                stat = os.stat(origin)
            except (OSError, ValueError):
                self.refused += 1
                return None
            if stat.st_mtime_ns != mtime_ns or stat.st_size != size:
                self.refused += 1  # changed since the bundle was written: the normal way
                return None
        loader_class = _BundledSourcelessLoader if sourceless else _BundledSourceLoader
        loader = loader_class(fullname, origin)
        loader._bundle = (self, offset, length)
        return _external.spec_from_file_location(fullname, origin, loader=loader)

    def invalidate_caches(self) -> None:
        """Nothing to invalidate: the index is fixed (``importlib.invalidate_caches``)."""

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def _read(path: str) -> Optional[Tuple[int, Dict[str, Any]]]:
    """The open file and its table, or None if missing, foreign or damaged."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        head = os.pread(fd, len(_MAGIC) + 2 * _LENGTH_BYTES, 0)
        if head[: len(_MAGIC)] != _MAGIC or len(head) != len(_MAGIC) + 2 * _LENGTH_BYTES:
            raise ValueError("not a module bundle")
        start = int.from_bytes(head[len(_MAGIC) : len(_MAGIC) + _LENGTH_BYTES], "little")
        length = int.from_bytes(head[len(_MAGIC) + _LENGTH_BYTES :], "little")
        if start + length != os.fstat(fd).st_size:
            raise ValueError("truncated or damaged")
        header, table = marshal.loads(os.pread(fd, length, start))
        if tuple(header) != _header() or not isinstance(table, dict):
            raise ValueError("another interpreter's bundle")
        stored, modules = table["path"], table["modules"]
        if not isinstance(modules, dict) or not all(
            type(s) is tuple and len(s) == 2 and isinstance(s[1], str) for s in stored
        ):
            raise ValueError("a damaged table")
    except Exception:
        os.close(fd)
        return None
    return fd, table


def _matches(path: Sequence[str], stored: Sequence[Any], root: str) -> Optional[List[str]]:
    """The runtime entries if ``sys.path`` begins with the stored ones, else None."""
    expected = [_runtime_entry(s, root) for s in stored]
    if len(path) < len(expected):
        return None
    for entry, want in zip(path, expected):
        if not entry or os.path.normpath(os.path.abspath(entry)) != want:
            return None  # '' (the working directory) could hold anything
    return expected


_installed: Optional[BundleFinder] = None


def install(path: Optional[str] = None) -> Optional[BundleFinder]:
    """Serve the modules of the bundle at ``path`` (``bundle_path()``) from now on; the finder,
    or None if there is no usable bundle for this interpreter and ``sys.path``."""
    global _installed
    if _installed is not None:
        return _installed
    path = bundle_path() if path is None else path
    read = _read(path) if path else None
    if read is None:
        return None
    fd, table = read
    entries = _matches(sys.path, table["path"], package_root())
    if entries is None:
        os.close(fd)
        return None
    finder = BundleFinder(fd, table["modules"], entries, bool(table["checked"]))
    sys.meta_path.insert(0, finder)
    _installed = finder
    return finder


def uninstall() -> None:
    """Take the finder off ``sys.meta_path`` (tests)."""
    global _installed
    if _installed is not None:
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(_installed)
        _installed.close()
        _installed = None


def _bundled(name: str, module: Any, entries: List[str]) -> Optional[Tuple[int, str, bool, bytes]]:
    """(entry index, path under it, sourceless, marshalled code) for a module the normal file
    loaders loaded from under one of ``entries`` at the place its name gives; else None."""
    spec: Any = getattr(module, "__spec__", None)
    loader: Any = getattr(spec, "loader", None)
    origin = getattr(spec, "origin", None)
    if spec is None or type(loader) not in (
        _external.SourceFileLoader,
        _external.SourcelessFileLoader,
    ):
        return None
    if not isinstance(origin, str) or not spec.has_location:
        return None
    sourceless = type(loader) is _external.SourcelessFileLoader
    suffix = ".pyc" if sourceless else ".py"
    package = spec.submodule_search_locations is not None
    relative = name.replace(".", os.sep) + (os.sep + "__init__" + suffix if package else suffix)
    origin = os.path.normpath(os.path.abspath(origin))
    for index, entry in enumerate(entries):
        if entry and origin == os.path.join(entry, relative):
            try:
                code = loader.get_code(name)
            except (ImportError, OSError, SyntaxError):
                return None
            if code is None:
                return None
            return (index, relative, sourceless, _marshalled(code, origin, sourceless))
    return None


def _marshalled(code: Any, origin: str, sourceless: bool) -> bytes:
    """``code`` marshalled: the bytes of its .pyc when that holds this very code, as written
    by compileall (reproducible: marshal's output for a live object depends on reference
    counts), else marshalled now."""
    pyc = origin if sourceless else _external.cache_from_source(origin)
    try:
        with open(pyc, "rb") as f:
            data = f.read()[16:]
        if marshal.loads(data) == code:
            return data
    except (OSError, EOFError, ValueError, TypeError):
        pass
    return marshal.dumps(code)


def write(
    path: Optional[str] = None,
    *,
    checked: bool = True,
    only_under_root: bool = False,
    modules: Optional[Dict[str, Any]] = None,
) -> int:
    """Write the bundle of the modules this process has imported (``modules``: instead of
    ``sys.modules``) that were loaded from files under ``sys.path``; return how many.

    ``checked``: record each origin's size and mtime and serve a module only while they hold
    (a development tree); a layer's bundle is unchecked. ``only_under_root``: bundle only the
    modules under the package root (a layer built for a Python runtime, whose standard library
    is the runtime's own, not the build machine's).
    """
    path = bundle_path() if path is None else path
    if path is None:
        return 0
    root = package_root()
    # '' (the working directory) stays in place, so the indexes are sys.path's, and is never
    # matched: a bundle written with it before a used entry is never used.
    entries = [os.path.normpath(os.path.abspath(e)) if e else "" for e in sys.path]
    found: Dict[str, Tuple[int, str, bool, bytes]] = {}
    for name, module in sorted((modules if modules is not None else dict(sys.modules)).items()):
        bundled = _bundled(name, module, entries)
        if bundled is None:
            continue
        if only_under_root and not _stored_entry(entries[bundled[0]], root)[0]:
            continue
        found[name] = bundled
    used = 1 + max((b[0] for b in found.values()), default=-1)
    # The layout: magic, the table's offset and length, the modules' code, the table.
    offset = len(_MAGIC) + 2 * _LENGTH_BYTES
    blobs: List[bytes] = []
    table: Dict[str, Entry] = {}
    for name, (where, relative, sourceless, blob) in found.items():
        mtime_ns = size = 0
        if checked:
            try:
                stat = os.stat(os.path.join(entries[where], relative))
            except OSError:  # gone since it was imported
                continue
            mtime_ns, size = stat.st_mtime_ns, stat.st_size
        table[name] = (where, relative, sourceless, mtime_ns, size, offset, len(blob))
        blobs.append(blob)
        offset += len(blob)
    stored = [_stored_entry(e, root) for e in entries[:used]]
    index = marshal.dumps((_header(), {"path": stored, "checked": checked, "modules": table}))
    head = _MAGIC + offset.to_bytes(_LENGTH_BYTES, "little")
    head += len(index).to_bytes(_LENGTH_BYTES, "little")
    cachefile.write_atomically(path, (head, *blobs, index))
    return len(table)
