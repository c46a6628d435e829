"""Keep compiled regular-expression programs between processes, as .pyc files keep modules.

CPython compiles a pattern in Python (``re._parser`` then ``re._compiler``) and hands the
result, a list of opcodes with the flags and group tables, to ``_sre.compile``. That costs tens
to hundreds of microseconds a pattern, and the extension's way to ready compiles about a hundred
at import (PyYAML's reader and resolver, the email parser under http.client, logging, platform
under attrs, ours): some 10 ms of every cold start, the same work each time. ``install()`` makes
``re`` take the program from a cache file beside this package's bytecode
(``__pycache__/re-programs.<tag>.marshal``) and parse only what the file lacks; ``save()`` writes
what was parsed, where bytecode may be written (a read-only layer's file is written by the
layer builder).

The pattern and its flags are the key; the interpreter's bytecode magic and full version and
``_sre``'s own magic and code size are the file's, so another interpreter (even another patch
release) or another regex engine finds no entry. As with a .pyc and the compiler's
SyntaxWarnings, the parser's warnings come when a pattern is parsed, not when its program is
read from the file. ``_sre.compile`` checks every program it is given, as it does the stdlib's; one that fails
(a damaged file) is compiled as without the cache. ``install()`` first compiles a probe both ways
and does nothing unless the two patterns are equal (``Pattern.__eq__`` compares the programs),
so an interpreter whose compiler differs from what this expects is left alone.
tests/test_regex_cache.py holds the patterns the startup compiles, and more, to the stdlib's.
"""

from __future__ import annotations

import _sre
import re
import sys
from typing import Any, Dict, List, Optional, Tuple

from cachelayer import cachefile

__all__ = ["RegexProgramCache", "install", "program", "uninstall"]

if hasattr(re, "_compiler"):  # 3.11+
    _compiler: Any = getattr(re, "_compiler")  # noqa: B009 - private: not in the stubs
    _parser: Any = getattr(re, "_parser")  # noqa: B009
    _constants: Any = getattr(re, "_constants")  # noqa: B009
else:  # pragma: no cover - 3.9, 3.10
    import sre_compile as _compiler
    import sre_constants as _constants
    import sre_parse as _parser

_FORMAT = 1
MAX_ENTRIES = 1000
_DEBUG = int(_constants.SRE_FLAG_DEBUG)
# Named and numbered groups, classes, unicode, a lookahead, a backreference, scoped flags.
_PROBE = (r"(?P<word>[^\W\d_]+)-(\d{2,})(?=x)|[\u00e9\U0001f600]\1(?i:y)", 0)

Key = Tuple[Any, int]  # (pattern: str or bytes, flags)
# What _sre.compile takes beside the pattern: flags, code, groups, groupindex, indexgroup.
Program = Tuple[int, List[int], int, Dict[str, int], Tuple[Optional[str], ...]]


def program(pattern: Any, flags: int) -> Program:
    """Parse and compile ``pattern`` as ``re._compiler.compile`` does, short of ``_sre.compile``."""
    return program_of(_parser.parse(pattern, flags), flags)


def program_of(parsed: Any, flags: int) -> Program:
    """The program of a parsed pattern (``re._parser.parse``'s result)."""
    code = _compiler._code(parsed, flags)
    groupindex = dict(parsed.state.groupdict)
    indexgroup: List[Optional[str]] = [None] * parsed.state.groups
    for name, index in groupindex.items():
        indexgroup[index] = name
    return (
        int(flags | parsed.state.flags),
        [int(op) for op in code],  # opcodes are int subclasses, which marshal refuses
        parsed.state.groups - 1,
        groupindex,
        tuple(indexgroup),
    )


def build(pattern: Any, compiled: Program) -> re.Pattern[Any]:
    """The pattern object for ``compiled``, made as the stdlib makes it."""
    flags, code, groups, groupindex, indexgroup = compiled
    made: re.Pattern[Any] = _sre.compile(pattern, flags, code, groups, groupindex, indexgroup)
    return made


class RegexProgramCache(cachefile.EntryCache):
    """The cache file's programs, the ones this process used, and how many it parsed."""

    def __init__(self, path: Optional[str], tag: str = "") -> None:
        # The parser and compiler may change in a patch release without any magic changing.
        magic = (int(_constants.MAGIC), int(_sre.CODESIZE), sys.version)
        super().__init__(path, (_FORMAT, cachefile.python_magic(), magic, tag))

    def limit(self) -> int:
        return MAX_ENTRIES

    def pattern(self, pattern: Any, flags: int) -> Any:
        """``re._compiler.compile(pattern, flags)``, from the cache where it holds the program."""
        made = self.cached(pattern, flags)
        if made is None:
            made = self.parsed(pattern, flags, _parser.parse(pattern, flags))
        return made

    def cached(self, pattern: Any, flags: int) -> Any:
        """The pattern made from the cached program, or None (not cached, or damaged)."""
        key = (pattern, flags)
        compiled = self._entries.get(key)
        if compiled is None:
            return None
        try:
            made = build(pattern, compiled)
        except Exception:  # a damaged entry: _sre refused it
            self._entries.pop(key, None)
            return None
        self.hits += 1
        self.used[key] = compiled
        return made

    def parsed(self, pattern: Any, flags: int, parsed: Any) -> Any:
        """The pattern made from ``parsed``, its program kept."""
        compiled = program_of(parsed, flags)
        made = build(pattern, compiled)
        self.compiled += 1
        self._entries[(pattern, flags)] = self.used[(pattern, flags)] = compiled
        return made


_installed: Optional[Tuple[RegexProgramCache, Any]] = None


def install(path: Optional[str] = None) -> Optional[RegexProgramCache]:
    """Make ``re`` compile the patterns it has not compiled yet in this process through the
    cache at ``path`` (``cachefile.default_path``); return the cache, or None if this
    interpreter's compiler does not match what the cache expects (nothing patched)."""
    global _installed
    if _installed is not None:
        return _installed[0]
    original = _compiler.compile
    try:
        matches = build(_PROBE[0], program(*_PROBE)) == original(*_PROBE)
    except Exception:
        matches = False
    if not matches:
        return None
    cache = RegexProgramCache(cachefile.default_path("re-programs") if path is None else path)
    cache.load()

    def compile(p: Any, flags: int = 0) -> Any:
        # A parsed SubPattern (re.Scanner's) or the debug flag (which prints): the stdlib's way.
        if type(p) not in (str, bytes) or flags & _DEBUG:
            return original(p, flags)
        flags = int(flags)
        made = cache.cached(p, flags)
        if made is not None:
            return made
        # Parsed here, in the frame that stands where the stdlib's compile() stands, so that
        # the parser's warnings ("possible nested set") name re's caller, as they do without
        # the cache. Like a .pyc's compile-time SyntaxWarnings, they come when a pattern is
        # parsed, not when its program is read from the file.
        return cache.parsed(p, flags, _parser.parse(p, flags))

    _compiler.compile = compile
    _installed = (cache, original)
    return cache


def uninstall() -> None:
    """Give ``re`` its own compiler back (tests)."""
    global _installed
    if _installed is not None:
        _compiler.compile = _installed[1]
        _installed = None
