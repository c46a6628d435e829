"""Keep the methods attrs generates for our classes between processes, as .pyc files keep modules.

attrs writes each class's ``__init__``, ``__repr__``, ``__eq__``, ``__hash__``... as source and
compiles it when the class is created (python-attrs/attrs#575): about half a millisecond a class,
some fifty classes on the extension's way to ready, every cold start. ``install()`` makes attrs
take the compiled code from a cache file beside this module's bytecode
(``__pycache__/attrs-methods.<tag>.marshal``) and compile only what the file lacks; ``save()``
writes what was compiled, when bytecode may be written (not under ``-B``, as in a Lambda layer,
which is read-only: the layer builder writes the file at build time with ``warm()``).

The code attrs generates is the key, so a changed class, another attrs or another interpreter
finds no entry and compiles as without the cache; what runs is always what attrs generated. The
one thing in that code that changes between processes is the per-class salt of ``__hash__``
(``hash()`` of a string, randomized per process): it is taken out of the key and put back into
the cached code's constants. If attrs' internals ever differ from what this expects,
``install()`` does nothing. tests/test_attrs_cache.py holds classes built through the cache to
those attrs builds without it.
"""

from __future__ import annotations

import contextlib
import logging
import marshal
import os
import re
import sys
import types
from importlib.util import MAGIC_NUMBER, cache_from_source
from typing import Any, Dict, Iterable, Optional, Tuple

log = logging.getLogger("cachelayer.attrs_cache")

__all__ = ["AttrsCodeCache", "install", "warm"]

# attr._make's hook: compile(script, filename, "exec"), then eval(code, globs, locs).
_HOOK = "_compile_and_eval"
_HOOK_PARAMETERS = ("script", "globs", "locs", "filename")
# In the generated __hash__: ``return hash((\n    <salt>,\n    self.a, ...``.
_SALT = re.compile(r"(return hash\(\(\s+)(-?\d+)(,)")
_FORMAT = 1
MAX_ENTRIES = 400

Key = Tuple[str, str]
Entry = Tuple[types.CodeType, Optional[int]]


def default_path() -> Optional[str]:
    """Where the cache lives: ``__pycache__`` beside this module's own bytecode (honouring
    ``PYTHONPYCACHEPREFIX``); None where the interpreter writes no bytecode tag."""
    if sys.implementation.cache_tag is None:
        return None
    pyc = cache_from_source(os.path.abspath(__file__))
    return os.path.join(
        os.path.dirname(pyc), f"attrs-methods.{sys.implementation.cache_tag}.marshal"
    )


class AttrsCodeCache:
    """The cache file's entries, the ones this process used, and the ones it compiled."""

    def __init__(self, path: Optional[str], tag: str = "") -> None:
        self.path = path
        # The generated script and the compiler decide the code, so the interpreter's bytecode
        # magic is the file's only key beside the format (``tag``: a further one, for tests).
        # Not attrs' version: attr.__version__ imports importlib.metadata (~10 ms).
        self._header = (_FORMAT, bytes(MAGIC_NUMBER), tag)
        self._entries: Dict[Key, Entry] = {}
        self.used: Dict[Key, Entry] = {}
        self.compiled = 0
        self.hits = 0

    def load(self) -> None:
        """Read the file; a missing, stale or damaged one is simply empty."""
        if self.path is None:
            return
        try:
            with open(self.path, "rb") as f:
                header, entries = marshal.loads(f.read())
        except (OSError, EOFError, ValueError, TypeError):
            return
        if tuple(header) == self._header and isinstance(entries, dict):
            self._entries = entries

    def code_for(self, script: str, filename: str) -> types.CodeType:
        """The compiled ``script``: from the cache, or compiled now and remembered."""
        match = _SALT.search(script)
        salt = int(match.group(2)) if match else None
        key = (filename, _SALT.sub(r"\g<1>0\g<3>", script, count=1) if match else script)
        entry = self._entries.get(key)
        if entry is None:
            code = compile(script, filename, "exec")
            self.compiled += 1
            self._entries[key] = self.used[key] = (code, salt)
            return code
        self.hits += 1
        self.used[key] = entry
        code, cached_salt = entry
        if salt != cached_salt and salt is not None and cached_salt is not None:
            code = _replace_constant(code, cached_salt, salt)
        return code

    def save(self, *, force: bool = False) -> bool:
        """Write the entries this process used (and the file's others), if it compiled any and bytecode may be written
        (``force``: even under ``-B``). Atomic: a concurrent reader sees the old file or the new."""
        if self.path is None or not self.compiled or (sys.dont_write_bytecode and not force):
            return False
        temporary = f"{self.path}.{os.getpid()}.tmp"
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            with open(temporary, "wb") as f:
                f.write(marshal.dumps((self._header, self._kept())))
            os.replace(temporary, self.path)
        except OSError as exc:  # a read-only or foreign directory: as a .pyc, just not kept
            log.debug("attrs code cache not written to %s: %s", self.path, exc)
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            return False
        return True

    def _kept(self) -> Dict[Key, Entry]:
        """What to write: this process's entries, then the file's others (another process may
        create other classes), up to ``MAX_ENTRIES``, so edited classes' old code ages out."""
        kept = dict(self.used)
        for key, entry in self._entries.items():
            if len(kept) >= MAX_ENTRIES:
                break
            kept.setdefault(key, entry)
        return kept


def _replace_constant(code: types.CodeType, old: int, new: int) -> types.CodeType:
    consts = tuple(
        new
        if type(c) is int and c == old
        else _replace_constant(c, old, new)
        if isinstance(c, types.CodeType)
        else c
        for c in code.co_consts
    )
    return code.replace(co_consts=consts)


_installed: Optional[Tuple[AttrsCodeCache, Any]] = None


def install(path: Optional[str] = None) -> Optional[AttrsCodeCache]:
    """Make attrs compile the methods of classes created from now on through the cache at
    ``path`` (``default_path()``); return the cache, or None if attrs is not as expected."""
    global _installed
    if _installed is not None:
        return _installed[0]
    import attr._make as make

    original = getattr(make, _HOOK, None)
    if original is None or _parameters(original) != _HOOK_PARAMETERS:
        return None
    cache = AttrsCodeCache(default_path() if path is None else path)
    cache.load()

    def compile_and_eval(script: str, globs: Any, locs: Any = None, filename: str = "") -> None:
        eval(cache.code_for(script, filename), globs, locs)

    setattr(make, _HOOK, compile_and_eval)
    _installed = (cache, original)
    return cache


def uninstall() -> None:
    """Give attrs its own compile step back (tests)."""
    global _installed
    if _installed is not None:
        import attr._make as make

        setattr(make, _HOOK, _installed[1])
        _installed = None


def _parameters(function: Any) -> Tuple[str, ...]:
    code = getattr(function, "__code__", None)
    return tuple(code.co_varnames[: code.co_argcount]) if code is not None else ()


# What the extension imports on its way to ready, beside the providers' own modules.
STARTUP_MODULES = (
    "cachelayer.extension",
    "cachelayer.core.app",
    "cachelayer.server",
)


def warm(modules: Iterable[str] = STARTUP_MODULES, path: Optional[str] = None) -> AttrsCodeCache:
    """Fill the cache for the extension's startup: import ``modules`` and every installed
    provider, then write the file whatever ``-B`` says (the layer builder's step)."""
    cache = install(path)
    if cache is None:
        raise RuntimeError("this attrs does not compile through attr._make._compile_and_eval")
    import importlib

    for name in modules:
        importlib.import_module(name)
    from cachelayer import plugins

    plugins.discover()
    cache.save(force=True)
    return cache
