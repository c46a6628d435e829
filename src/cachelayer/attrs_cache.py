"""Keep the methods attrs generates for our classes between processes, as .pyc files keep modules.

attrs writes each class's ``__init__``, ``__repr__``, ``__eq__``, ``__hash__``... as source and
compiles it when the class is created (python-attrs/attrs#575): about half a millisecond a class,
some fifty classes on the extension's way to ready, every cold start. ``install()`` makes attrs
take the compiled code from a cache file beside this module's bytecode
(``__pycache__/attrs-methods.<tag>.marshal``) and compile only what the file lacks; ``save()``
writes what was compiled, when bytecode may be written (not under ``-B``, as in a Lambda layer,
which is read-only: the layer builder writes the file at build time with
``cachelayer.startup_cache.warm()``).

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
import re
import sys
import types
from typing import Any, Optional, Tuple

from cachelayer import cachefile

__all__ = ["AttrsCodeCache", "install", "uninstall"]

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
    """Where the cache lives: ``__pycache__`` beside this package's own bytecode (honouring
    ``PYTHONPYCACHEPREFIX``); None where the interpreter writes no bytecode tag."""
    return cachefile.default_path("attrs-methods")


class AttrsCodeCache(cachefile.EntryCache):
    """The cache file's entries, the ones this process used, and the ones it compiled."""

    def __init__(self, path: Optional[str], tag: str = "") -> None:
        # The generated script and the compiler decide the code, so the interpreter's bytecode
        # magic is the file's only key beside the format (``tag``: a further one, for tests).
        # Not attrs' version: attr.__version__ imports importlib.metadata (~10 ms).
        super().__init__(path, (_FORMAT, cachefile.python_magic(), tag))

    def limit(self) -> int:
        return MAX_ENTRIES

    def code_for(self, script: str, filename: str) -> types.CodeType:
        """The compiled ``script``: from the cache, or compiled now and remembered."""
        match = _SALT.search(script)
        salt = int(match.group(2)) if match else None
        key = (filename, _SALT.sub(r"\g<1>0\g<3>", script, count=1) if match else script)
        entry = self._entries.get(key)
        if type(entry) is not tuple or len(entry) != 2 or type(entry[0]) is not types.CodeType:
            entry = None  # none, or a damaged one: compiled afresh
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
_MODULE = "attr._make"


def install(path: Optional[str] = None) -> Optional[AttrsCodeCache]:
    """Make attrs compile the methods of classes created from now on through the cache at
    ``path`` (``default_path()``); return the cache, or None if attrs is not as expected.

    Before attrs is imported, this patches ``attr._make`` as soon as that module has run, so
    even the classes attrs makes of its own (its validators, converters...) come from the cache;
    an attrs found not to be as expected is then left alone, and the cache stays unused."""
    global _installed
    if _installed is not None:
        return _installed[0]
    cache = AttrsCodeCache(default_path() if path is None else path)
    cache.load()
    make = sys.modules.get(_MODULE)
    if make is None:
        finder = _PatchAfterImport(cache)
        sys.meta_path.insert(0, finder)
        _installed = (cache, finder)
        return cache
    original = _patch(make, cache)
    if original is None:
        return None
    _installed = (cache, original)
    return cache


def _patch(make: types.ModuleType, cache: AttrsCodeCache) -> Any:
    """Point ``attr._make``'s compile hook at the cache; its original, or None if the hook is
    not the function this expects (nothing patched)."""
    original = getattr(make, _HOOK, None)
    if original is None or _parameters(original) != _HOOK_PARAMETERS:
        return None

    def compile_and_eval(script: str, globs: Any, locs: Any = None, filename: str = "") -> None:
        eval(cache.code_for(script, filename), globs, locs)

    setattr(make, _HOOK, compile_and_eval)
    return original


class _PatchAfterImport:
    """A one-shot meta path finder: the other finders find ``attr._make``, and its loader patches
    the module the moment it has run, before attrs' other modules build classes with it."""

    def __init__(self, cache: AttrsCodeCache) -> None:
        self.cache = cache
        self.original: Any = None

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != _MODULE:
            return None
        _remove_finder(self)
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            spec = find(fullname, path, target) if find is not None else None
            if spec is not None:
                break
        else:
            return None
        exec_module = getattr(spec.loader, "exec_module", None)
        if exec_module is None:
            return spec

        def exec_then_patch(module: types.ModuleType) -> None:
            exec_module(module)
            self.original = _patch(module, self.cache)

        spec.loader.exec_module = exec_then_patch  # this spec's own loader instance
        return spec


def _remove_finder(finder: Any) -> None:
    with contextlib.suppress(ValueError):
        sys.meta_path.remove(finder)


def uninstall() -> None:
    """Give attrs its own compile step back (tests)."""
    global _installed
    if _installed is None:
        return
    original = _installed[1]
    if isinstance(original, _PatchAfterImport):
        _remove_finder(original)
        original = original.original
    make = sys.modules.get(_MODULE)
    if original is not None and make is not None:
        setattr(make, _HOOK, original)
    _installed = None


def _parameters(function: Any) -> Tuple[str, ...]:
    code = getattr(function, "__code__", None)
    return tuple(code.co_varnames[: code.co_argcount]) if code is not None else ()
