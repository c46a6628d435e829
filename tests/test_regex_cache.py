"""cachelayer.regex_cache: patterns built from cached programs are the ones re compiles itself."""

from __future__ import annotations

import json
import marshal
import os
import random
import re
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any, Iterator, List, Tuple

import pytest

from cachelayer import regex_cache

STDLIB_COMPILE = re._compiler.compile  # type: ignore[attr-defined]
YAML_NONPRINTABLE = "[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"

# (pattern, flags as int): every kind of program the compiler makes, no two keys alike.
CORPUS: List[Tuple[Any, int]] = [
    ("", 0),
    (b"", 0),
    (rb"^(?P<k>[a-z]+)=(?P<v>\d*)$", int(re.M)),
    (rb"[\x80-\xff]+|\x00", 0),
    (rb"\w+", int(re.L | re.I)),
    (b"CAF\xc9", int(re.I)),
    ("hello world", int(re.I)),
    ("hello world", 0),  # the same text under other flags: another program
    ("^line\\d$", int(re.M)),
    ("a.b", int(re.S)),
    ("(\\d+)  # digits\n \\s* - \\s* (\\d+)  # more", int(re.X)),
    ("\\w+\\s\\d", int(re.A)),
    ("^a . b $ # all four", int(re.I | re.M | re.S | re.X)),
    ("(?P<first>\\w+) (?P<last>\\w+)", 0),
    ("(a)(b)\\2\\1", 0),
    ("(?P<q>['\"]).*?(?P=q)", 0),
    ("(?<=\\$)\\d+", 0),
    ("(?<!foo)bar", 0),
    ("(<)?\\w+(?(1)>|$)", 0),
    ("(a)?(?(1)a|b)", 0),
    ("(?>a+)b", 0),
    ("a++b", 0),
    ("x*+y?+z{1,2}+", 0),
    ("(?i:ab)c(?-i:d)", 0),
    ("a{3,5}?b{,2}c{2}", 0),
    ("\\bfoo\\B|\\Aabc\\Z", 0),
    ("[^\\W\\d_]+", int(re.I)),
    ("[\u00c0-\u024f]+|stra\u00dfe", int(re.I)),
    ("\u0130|\u01c5|\U0001f600+", int(re.I)),
    (YAML_NONPRINTABLE, 0),
    ("|".join(f"word{i}" for i in range(300)), 0),
    ("|".join(["if", "elif", "else", "while", "for", "in", "is", "not", "and", "or"]), int(re.I)),
]
# Split on "|": the empty string, case pairs, groups' and lookarounds' material, unicode.
SAMPLE_TEXT = (
    "|abc|Hello World hello|foo bar baz foobar xbar|a++b aaab aab b ab|$42 and $7|<tag> tag> ab"
    "|'quoted' \"x\" 'mixed\"|word17 word199 word299 other|2024-01-01 10 - 20|xyyz xz AbcD abcd"
    "|Stra\u00dfe STRASSE caf\u00e9 \u00c9COLE \u0131 i \u01c4|line1\nline2\nk=12\nz=\n"
    "|\U0001f600\U0001f600 \x85\x00\x07 \ud7ff"
)
SAMPLES = SAMPLE_TEXT.split("|")


def behaviour(pattern: re.Pattern[Any]) -> List[Any]:
    """What the pattern does to the samples: search, match, every match with its groups."""
    found: List[Any] = []
    for sample in SAMPLES:
        text: Any = sample
        if isinstance(pattern.pattern, bytes):
            text = sample.encode("utf-8", "surrogatepass")
        first = pattern.search(text)
        found.append(first and (first.span(), first.groups(), first.groupdict()))
        found.append(bool(pattern.match(text)))
        found.append([(m.span(), m.groups(), m.lastgroup) for m in pattern.finditer(text)])
        found.append(pattern.findall(text))
    return found


def assert_as_stdlib(pattern: Any, flags: int) -> None:
    ours = regex_cache.build(pattern, regex_cache.program(pattern, flags))
    own = STDLIB_COMPILE(pattern, flags)
    assert ours == own, (pattern, flags)  # flags, pattern text and the code
    assert (ours.groups, ours.groupindex, ours.flags) == (own.groups, own.groupindex, own.flags)
    assert behaviour(ours) == behaviour(own), (pattern, flags)


def run(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=os.getcwd()
    )
    assert done.returncode == 0, done.stderr
    return done


@pytest.fixture()
def restored() -> Iterator[None]:
    """In-process installs never outlive the test, nor do patterns re cached meanwhile."""
    re.purge()
    yield
    regex_cache.uninstall()
    re.purge()
    assert re._compiler.compile is STDLIB_COMPILE  # type: ignore[attr-defined]


class TestSameProgramsAsTheStdlib:
    def test_every_pattern_the_startup_compiles(self, tmp_path):
        """The ~hundred patterns on the extension's way to ready (PyYAML, email, logging, ours),
        collected as the installed cache saw them, compile to the stdlib's own patterns."""
        out = tmp_path / "used.marshal"
        code = (
            "import sys, marshal; from cachelayer import regex_cache; "
            "c = regex_cache.install(sys.argv[1]); "
            "import cachelayer.extension, cachelayer.core.app, cachelayer.server; "
            "from cachelayer import plugins; plugins.discover(allow=['parameters','secrets','dynamodb']); "
            "open(sys.argv[2], 'wb').write(marshal.dumps(list(c.used)))"
        )
        run(code, str(tmp_path / "programs.marshal"), str(out))
        used = marshal.loads(out.read_bytes())
        assert len(used) >= 40
        for pattern, flags in used:
            assert_as_stdlib(pattern, flags)

    def test_a_hand_corpus_of_every_construct(self):
        """Bytes, each flag, groups, backreferences, lookbehind, conditionals, possessive and
        atomic groups, unicode and case folding, PyYAML's big class, many alternatives, empty."""
        assert len(set(CORPUS)) == len(CORPUS)
        for pattern, flags in CORPUS:
            assert_as_stdlib(pattern, flags)

    def test_through_re_compile_with_regexflag_values(self, restored):
        """re.compile(p, RegexFlag) while installed: each pattern is parsed once by the cache
        and equals what re.compile gives without it."""
        cache = regex_cache.install(os.devnull)
        assert cache is not None
        ours = [re.compile(p, re.RegexFlag(f)) for p, f in CORPUS]
        assert (cache.hits, cache.compiled) == (0, len(CORPUS))
        assert all(type(f) is int for _, f in cache.used)  # marshal refuses RegexFlag
        regex_cache.uninstall()
        re.purge()
        for pattern, (p, f) in zip(ours, CORPUS):
            own = re.compile(p, re.RegexFlag(f))
            assert pattern == own and pattern.groupindex == own.groupindex
            assert behaviour(pattern) == behaviour(own)


ROUND_TRIP = textwrap.dedent(
    """
    import json, re, sys; from cachelayer import regex_cache
    re.purge()
    cache = regex_cache.install(sys.argv[1])
    made = [re.compile(p, f) for p, f in CORPUS]
    counts = [cache.hits, cache.compiled]
    saved = cache.save(force=True)
    regex_cache.uninstall()
    re.purge()
    own = [re.compile(p, f) for p, f in CORPUS]
    same = [a == b and a.groupindex == b.groupindex and a.groups == b.groups
            for a, b in zip(made, own)]
    print(json.dumps({"counts": counts, "saved": saved, "same": same}))
    """
)


class TestAcrossProcesses:
    def test_a_second_process_takes_every_program_from_the_file(self, tmp_path):
        """A fills the file; B parses nothing and gets, for each pattern, what the stdlib
        compiles in B itself."""
        path = str(tmp_path / "programs.marshal")
        code = f"CORPUS = {CORPUS!a}\n{ROUND_TRIP}"
        first = json.loads(run(code, path).stdout)
        assert first["counts"] == [0, len(CORPUS)] and first["saved"]
        second = json.loads(run(code, path).stdout)
        assert second["counts"] == [len(CORPUS), 0]
        assert not second["saved"]  # nothing parsed, nothing new to write
        assert first["same"] == second["same"] == [True] * len(CORPUS)


def filled(path: Path, tag: str = "t") -> None:
    cache = regex_cache.RegexProgramCache(str(path), tag)
    for pattern, flags in CORPUS:
        cache.pattern(pattern, flags)
    assert cache.save(force=True)


def read_back(path: Any, tag: str = "t") -> regex_cache.RegexProgramCache:
    """A cache on ``path`` that compiled the corpus, every pattern checked against the stdlib."""
    cache = regex_cache.RegexProgramCache(str(path), tag)
    cache.load()
    for pattern, flags in CORPUS:
        assert cache.pattern(pattern, flags) == STDLIB_COMPILE(pattern, flags)
    return cache


# Entries _sre.compile (or the unpacking before it) refuses: bad opcodes, none, too big a code,
# no list, too short a tuple, no tuple.
DAMAGED: List[Any] = [(0, [999999], 0, {}, (None,)), (0, [], 0, {}, (None,))]
DAMAGED += [(0, [2**40], 0, {}, (None,)), (0, "code", 0, {}, (None,)), (0, [1, 2]), 5]


class TestTheFile:
    @pytest.mark.parametrize(
        "damage",
        ["none", "other tag", "random bytes", "truncated", "wrong shape", "directory", "missing"],
    )
    def test_a_stale_foreign_or_damaged_file_reads_as_empty(self, tmp_path, damage):
        """Another tag (header), garbage, a cut file, another marshal, a directory or no file:
        all compiled as without the cache. The control, no damage: all read back."""
        path = tmp_path / "p.marshal"
        filled(path)
        tag = "other" if damage == "other tag" else "t"
        if damage == "random bytes":
            path.write_bytes(random.Random(0).randbytes(512))
        elif damage == "truncated":
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        elif damage == "wrong shape":
            path.write_bytes(marshal.dumps([1, 2, 3]))
        elif damage in ("directory", "missing"):
            path.unlink()
            if damage == "directory":
                path.mkdir()
        cache = read_back(path, tag)
        read = len(CORPUS) if damage == "none" else 0
        assert (cache.hits, cache.compiled) == (read, len(CORPUS) - read)
        if damage != "none":
            assert cache.save(force=True) == (damage != "directory")

    def test_a_foreign_marshal_file_with_a_scalar_header_reads_as_empty(self, tmp_path):
        """A 2-tuple marshal file from something else (header an int) is just foreign."""
        path = tmp_path / "p.marshal"
        path.write_bytes(marshal.dumps((5, {})))
        cache = read_back(path)
        assert (cache.hits, cache.compiled) == (0, len(CORPUS))

    def test_a_directory_that_cannot_be_made_is_no_error(self, tmp_path):
        """A file where the cache directory should be: not written, False, no exception."""
        (tmp_path / "sub").write_text("")
        cache = regex_cache.RegexProgramCache(str(tmp_path / "sub" / "p.marshal"), "t")
        cache.pattern("abc", 0)
        assert cache.save(force=True) is False

    @pytest.mark.parametrize("entry", DAMAGED)
    def test_a_damaged_entry_falls_back_to_compiling(self, tmp_path, entry):
        """_sre refuses the entry: the pattern is parsed as without the cache, counted as
        compiled, and the next save repairs the file."""
        path = tmp_path / "p.marshal"
        filled(path)
        header, entries = marshal.loads(path.read_bytes())
        key = ("(?P<first>\\w+) (?P<last>\\w+)", 0)
        assert key in entries
        entries[key] = entry
        path.write_bytes(marshal.dumps((header, entries)))
        cache = regex_cache.RegexProgramCache(str(path), "t")
        cache.load()
        made = cache.pattern(*key)
        assert made == STDLIB_COMPILE(*key) and made.groupindex == {"first": 1, "last": 2}
        assert made.match("ab cd").group("last") == "cd"
        assert (cache.hits, cache.compiled) == (0, 1)
        assert cache.save(force=True)
        repaired = read_back(path)
        assert (repaired.hits, repaired.compiled) == (len(CORPUS), 0)

    def test_max_entries_keeps_this_processs_first_then_others(self, tmp_path, monkeypatch):
        """Bound 2: a process that used c (a hit) and d keeps only those; one that used e keeps
        e and one of the file's others."""
        path, saved = tmp_path / "p.marshal", tmp_path / "abc.marshal"

        def used(*patterns: str) -> regex_cache.RegexProgramCache:
            cache = regex_cache.RegexProgramCache(str(path), "t")
            cache.load()
            for p in patterns:
                assert cache.pattern(p, 0) == STDLIB_COMPILE(p, 0)
            return cache

        def counts(*patterns: str) -> Tuple[int, int]:
            cache = used(*patterns)
            return cache.hits, cache.compiled

        assert used("a", "b", "c").save(force=True)
        saved.write_bytes(path.read_bytes())
        monkeypatch.setattr(regex_cache, "MAX_ENTRIES", 2)
        assert used("c", "d").save(force=True)
        assert counts("c", "d") == (2, 0) and counts("a", "b") == (0, 2)
        path.write_bytes(saved.read_bytes())
        assert used("e").save(force=True)
        assert counts("e") == (1, 0) and counts("a", "b", "c") == (1, 2)

    def test_not_written_under_dont_write_bytecode_unless_forced(self, tmp_path, monkeypatch):
        """As .pyc files: -B writes nothing, force does; nothing parsed, nothing written."""
        path = tmp_path / "p.marshal"
        cache = regex_cache.RegexProgramCache(str(path), "t")
        assert not cache.save(force=True)  # nothing compiled
        cache.pattern("abc", 0)
        monkeypatch.setattr(sys, "dont_write_bytecode", True)
        assert cache.save() is False and not path.exists()
        assert cache.save(force=True) is True and path.exists()


BAD = ["(", "a)", "[a-", "[z-a]", "(?P<1>a)", "\\1", "(?<=a+)b", "a**", "(?P<n>a)(?P<n>b)"]
BAD += ["(?(2)a|b)", "x{2,1}", "(?z)", "\\", "(?i", "a\n(b", "(?P=nope)", "(?<=(a)|bc)"]


def failure(pattern: Any, flags: int = 0) -> Tuple[Any, ...]:
    with pytest.raises(Exception) as info:
        re.compile(pattern, flags)
    exc = info.value
    where = (exc.pos, exc.lineno, exc.colno, exc.pattern) if isinstance(exc, re.error) else ()
    return (type(exc), str(exc), *where)


class TestInstalled:
    def test_bad_patterns_raise_as_the_stdlib_does(self, restored):
        """Same exception, message, position, line and column; nothing is counted or kept."""
        bad: List[Tuple[Any, int]] = [(p, 0) for p in BAD]
        bad += [(b"\\u0041", 0), (b"a", int(re.U)), ("a", int(re.A | re.U)), ("a{4294967296}", 0)]
        cache = regex_cache.install(os.devnull)
        assert cache is not None
        ours = [failure(p, f) for p, f in bad]
        assert not any(key in cache.used for key in bad)
        regex_cache.uninstall()
        re.purge()
        own = [failure(p, f) for p, f in bad]
        assert ours == own
        assert sum(1 for f in own if f[0] is re.error) >= len(BAD)

    def test_debug_and_a_parsed_pattern_go_to_the_stdlib_compiler(self, restored, capsys):
        """re.Scanner's parsed SubPattern and re.DEBUG (which prints the program) are the
        stdlib's own doing: same output, nothing counted."""
        cache = regex_cache.install(os.devnull)
        assert cache is not None
        before = (cache.hits, cache.compiled, len(cache.used))
        made = re._compiler.compile(re._parser.parse("a+"), 0)  # type: ignore[attr-defined]
        assert made.pattern is None and made.match("aaab").group() == "aaa"
        scanner = re.Scanner([(r"\d+", lambda s, t: int(t)), (r"\s+", None)])  # type: ignore[attr-defined]
        assert scanner.scan("12 3") == ([12, 3], "")
        re.compile("(a|b)+c", re.DEBUG)
        ours = capsys.readouterr().out
        assert (cache.hits, cache.compiled, len(cache.used)) == before
        regex_cache.uninstall()
        re.purge()
        re.compile("(a|b)+c", re.DEBUG)
        assert ours == capsys.readouterr().out and "MAX_REPEAT" in ours

    def test_a_probe_mismatch_patches_nothing(self, restored, monkeypatch):
        """If this compiler's program differs from the stdlib's for the probe, re is left alone."""
        real = regex_cache.program

        def different(pattern: Any, flags: int) -> Any:
            flags_out, *rest = real(pattern, flags)
            return (flags_out | int(re.IGNORECASE), *rest)

        monkeypatch.setattr(regex_cache, "program", different)
        monkeypatch.setattr(regex_cache, "_installed", None)
        assert regex_cache.install(os.devnull) is None
        assert re._compiler.compile is STDLIB_COMPILE  # type: ignore[attr-defined]
        monkeypatch.setattr(regex_cache, "program", real)
        assert regex_cache.install(os.devnull) is not None  # the control: it does install
        assert re._compiler.compile is not STDLIB_COMPILE  # type: ignore[attr-defined]

    def test_a_parser_warning_points_at_the_caller_as_the_stdlibs_does(self, restored):
        """_parser's FutureWarning (a possible nested set) names re.compile's caller."""

        def warned() -> List[Tuple[Any, ...]]:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                re.compile("[[a]")
            return [(w.category, str(w.message), w.filename, w.lineno) for w in caught]

        assert regex_cache.install(os.devnull) is not None
        ours = warned()
        regex_cache.uninstall()
        re.purge()
        own = warned()
        assert own and own[0][2] == __file__
        assert ours == own

    def test_a_parser_warning_comes_when_parsed_not_when_read_from_the_file(self, tmp_path):
        """As a .pyc's compile-time SyntaxWarnings: the process that parses the pattern warns
        (at re's caller); one that reads its program from the file does not parse it."""
        code = (
            "import re, sys, warnings; from cachelayer import regex_cache; "
            "c = regex_cache.install(sys.argv[1]); warnings.simplefilter('always'); "
            "h = c.hits; re.compile('[[a]'); c.save(force=True); "
            "print(c.hits - h, ('[[a]', 0) in c.used)"
        )
        path = str(tmp_path / "p.marshal")
        parsed = run(code, path)
        assert "Possible nested set" in parsed.stderr and "<string>:1" in parsed.stderr
        assert parsed.stdout.split()[-2:] == ["0", "True"]  # parsed, and kept
        cached = run(code, path)
        assert "Possible nested set" not in cached.stderr
        assert cached.stdout.split()[-2:] == ["1", "True"]  # from the file
