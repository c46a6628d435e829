"""cachelayer.attrs_cache: classes built from cached code are the classes attrs builds itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Dict

from cachelayer import attrs_cache

# Class shapes whose generated methods differ: validators, converters, frozen hashing, slots
# pickling, ordering, keyword-only, factories, on_setattr, an explicit hash.
CLASSES = textwrap.dedent(
    """
    import attrs

    @attrs.frozen
    class Record:
        a: int = attrs.field(validator=attrs.validators.instance_of(int))
        b: str = "x"
        c: tuple = attrs.field(factory=tuple, eq=False)

    @attrs.frozen
    class Other:
        a: int
        b: str = "x"

    @attrs.define
    class Service:
        _port: int = attrs.field(converter=int)
        names: list = attrs.field(factory=list)
        level: int = attrs.field(default=1, on_setattr=attrs.setters.validate,
                                 validator=attrs.validators.ge(0))

    @attrs.define(order=True, kw_only=True, hash=True)
    class Ordered:
        x: int
        y: int = 0

    @attrs.frozen(slots=False, repr=False)
    class Loose:
        v: object = None
    """
)

PROBE = textwrap.dedent(
    """
    import json, pickle, sys
    from cachelayer import attrs_cache
    cache = attrs_cache.install(sys.argv[1]) if sys.argv[1] != "-" else None
    namespace = globals()  # the classes live in __main__, so pickle finds them
    exec(compile(CLASSES, "shapes", "exec"), namespace)
    R, O, S, D, L = (namespace[n] for n in ("Record", "Other", "Service", "Ordered", "Loose"))
    out = {"hits": cache.hits if cache else None, "compiled": cache.compiled if cache else None}
    def shape(code):  # nested code objects by content, not by address
        return [code.co_code.hex(), list(code.co_names), code.co_filename,
                [shape(c) if hasattr(c, "co_code") else repr(c) for c in code.co_consts]]
    def methods(cls):
        found = {}
        for name in ("__init__", "__repr__", "__eq__", "__ne__", "__lt__", "__hash__",
                     "__setattr__", "__getstate__", "__setstate__"):
            f = cls.__dict__.get(name)
            code = getattr(f, "__code__", None)
            if code is not None:
                found[name] = shape(code)
        return found
    out["methods"] = {c.__name__: methods(c) for c in (R, O, S, D, L)}
    behaviour = []
    try:
        R("no")
    except TypeError as exc:
        behaviour.append(str(exc).split(" must be")[0])
    behaviour += [repr(R(1)), R(1) == R(1, c=(2,)), R(1) == R(2), hash(R(1)) == hash(R(1)),
                  hash(R(1)) != hash(O(1)), repr(S("80")), S(1) == S(1)]
    s = S(1)
    try:
        s.level = -1
    except ValueError:
        behaviour.append("validated on setattr")
    behaviour += [D(x=1) < D(x=2), hash(D(x=1)) == hash(D(x=1)), pickle.loads(pickle.dumps(R(3))) == R(3),
                  L(1) == L(1), "Loose object" in repr(L(1))]
    out["behaviour"] = [repr(b) for b in behaviour]
    if cache:
        cache.save(force=True)
    print(json.dumps(out))
    """
)


def _probe(cache: str, seed: int) -> Dict[str, Any]:
    env = dict(os.environ, PYTHONHASHSEED=str(seed))
    done = subprocess.run(
        [sys.executable, "-c", f"CLASSES = {CLASSES!r}\n{PROBE}", cache],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


class TestSameClassesAsAttrs:
    def test_cached_code_in_another_process_is_what_attrs_compiles_itself(self, tmp_path):
        """Filled under one hash seed, read under another: the methods' bytecode, constants
        (the per-class hash salt included) and names equal attrs' own build under that seed,
        and every behaviour (validation, repr, eq, hash, setattr hooks, order, pickle) agrees."""
        path = str(tmp_path / "methods.marshal")
        first = _probe(path, seed=7)
        # Installed before attrs is imported: attrs' own classes (its validators...) too.
        assert first["hits"] == 0 and first["compiled"] > 5
        cached = _probe(path, seed=123)
        assert (cached["hits"], cached["compiled"]) == (first["compiled"], 0)
        own = _probe("-", seed=123)
        assert cached["methods"] == own["methods"]
        assert cached["behaviour"] == own["behaviour"] == first["behaviour"]
        assert "'validated on setattr'" in own["behaviour"]
        # The salt does differ between seeds, so the substitution was exercised.
        assert first["methods"]["Record"]["__hash__"] != own["methods"]["Record"]["__hash__"]

    def test_a_changed_class_compiles_afresh(self, tmp_path):
        """The generated code is the key: a field added makes a miss, not a stale method."""
        path = str(tmp_path / "methods.marshal")
        cache = attrs_cache.AttrsCodeCache(path, "test")
        first = cache.code_for("def f():\n    return 1\n", "<f>")
        again = cache.code_for("def f():\n    return 1\n", "<f>")
        other = cache.code_for("def f():\n    return 2\n", "<f>")
        assert first is again and other is not first
        assert (cache.hits, cache.compiled) == (1, 2)


class TestTheFile:
    def _filled(self, path: Path, version: str = "1") -> None:
        cache = attrs_cache.AttrsCodeCache(str(path), version)
        cache.code_for("x = 1\n", "<x>")
        assert cache.save(force=True)

    def test_another_attrs_version_or_a_damaged_file_is_ignored(self, tmp_path):
        """A file from another attrs (or interpreter), or garbage, reads as empty."""
        path = tmp_path / "methods.marshal"
        self._filled(path, version="1")
        stale = attrs_cache.AttrsCodeCache(str(path), "2")
        stale.load()
        stale.code_for("x = 1\n", "<x>")
        assert (stale.hits, stale.compiled) == (0, 1)
        path.write_bytes(b"\x00garbage")
        damaged = attrs_cache.AttrsCodeCache(str(path), "1")
        damaged.load()
        damaged.code_for("x = 1\n", "<x>")
        assert (damaged.hits, damaged.compiled) == (0, 1)
        fresh = attrs_cache.AttrsCodeCache(str(tmp_path / "other.marshal"), "1")
        self._filled(tmp_path / "other.marshal")
        fresh.load()
        fresh.code_for("x = 1\n", "<x>")
        assert (fresh.hits, fresh.compiled) == (1, 0)

    def test_nothing_is_written_under_dont_write_bytecode_or_without_news(
        self, tmp_path, monkeypatch
    ):
        """As .pyc files: -B (a read-only layer) writes nothing; nothing compiled, nothing new."""
        path = tmp_path / "methods.marshal"
        cache = attrs_cache.AttrsCodeCache(str(path), "1")
        assert not cache.save()  # nothing compiled
        cache.code_for("x = 1\n", "<x>")
        monkeypatch.setattr(sys, "dont_write_bytecode", True)
        assert not cache.save() and not path.exists()
        assert cache.save(force=True) and path.exists()

    def test_other_processes_entries_are_kept_up_to_the_bound(self, tmp_path, monkeypatch):
        """A process that creates fewer classes keeps the others' entries, within MAX_ENTRIES."""
        path = tmp_path / "methods.marshal"
        first = attrs_cache.AttrsCodeCache(str(path), "1")
        first.code_for("a = 1\n", "<a>")
        first.code_for("b = 1\n", "<b>")
        assert first.save(force=True)
        second = attrs_cache.AttrsCodeCache(str(path), "1")
        second.load()
        second.code_for("c = 1\n", "<c>")
        assert second.save(force=True)
        third = attrs_cache.AttrsCodeCache(str(path), "1")
        third.load()
        for name in "abc":
            third.code_for(f"{name} = 1\n", f"<{name}>")
        assert (third.hits, third.compiled) == (3, 0)
        monkeypatch.setattr(attrs_cache, "MAX_ENTRIES", 1)
        fourth = attrs_cache.AttrsCodeCache(str(path), "1")
        fourth.load()
        fourth.code_for("d = 1\n", "<d>")
        assert fourth.save(force=True)
        bounded = attrs_cache.AttrsCodeCache(str(path), "1")
        bounded.load()
        bounded.code_for("d = 1\n", "<d>")
        bounded.code_for("a = 1\n", "<a>")
        assert (bounded.hits, bounded.compiled) == (1, 1)  # over the bound: only its own kept

    def test_a_path_that_is_a_file_is_no_error(self, tmp_path):
        """The cache directory cannot be made (a file is in the way): not kept, no exception."""
        (tmp_path / "sub").write_text("")
        cache = attrs_cache.AttrsCodeCache(str(tmp_path / "sub" / "m.marshal"), "1")
        cache.code_for("x = 1\n", "<x>")
        assert not cache.save(force=True)


class TestInstall:
    def test_installed_after_attrs_is_imported_it_covers_the_classes_made_from_then_on(
        self, tmp_path
    ):
        """attrs already loaded: its own classes were compiled by it; ours come from the cache."""
        path = str(tmp_path / "methods.marshal")
        code = (
            "import sys, attrs; from cachelayer import attrs_cache; "
            "c = attrs_cache.install(sys.argv[1]); "
            f"exec(compile({CLASSES!r}, 'shapes', 'exec'), {{}}); print(c.hits, c.compiled)"
        )
        done = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["0", "5"]

    def test_uninstall_before_attrs_is_imported_takes_the_finder_away(self):
        """The one-shot finder that patches attr._make leaves sys.meta_path on uninstall."""
        code = (
            "import sys; from cachelayer import attrs_cache; import os; "
            "c = attrs_cache.install(os.devnull); n = len(sys.meta_path); attrs_cache.uninstall(); "
            "import attrs\n@attrs.frozen\nclass A:\n    x: int\n"
            "print(n - len(sys.meta_path), c.hits + c.compiled)"
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["1", "0"]

    def test_an_attrs_with_another_compile_hook_is_left_alone(self, monkeypatch):
        """If attr._make's hook is not the one this expects, attrs keeps compiling itself."""
        import attr._make as make

        def other(source: str, namespace: Any) -> None:  # another signature
            raise AssertionError("not to be called")

        monkeypatch.setattr(make, "_compile_and_eval", other)
        monkeypatch.setattr(attrs_cache, "_installed", None)
        assert attrs_cache.install(os.devnull) is None
        assert make._compile_and_eval is other

    def test_the_extensions_startup_classes_all_come_from_a_warmed_cache(self, tmp_path):
        """warm() (the layer builder's step) covers every class the extension makes on its way
        to ready: a process that then imports the startup path compiles none."""
        path = str(tmp_path / "methods.marshal")
        code = (
            "import sys; from cachelayer import startup_cache; "
            "c = startup_cache.warm(programs_path=sys.argv[1] + '.re', methods_path=sys.argv[1], "
            "bundle=None); print(len(c.methods.used))"
        )
        warmed = subprocess.run(
            [sys.executable, "-B", "-c", code, path], capture_output=True, text=True
        )
        assert warmed.returncode == 0, warmed.stderr
        assert int(warmed.stdout) >= 40
        startup = (
            "import sys; from cachelayer import attrs_cache; c = attrs_cache.install(sys.argv[1]); "
            "import cachelayer.extension, cachelayer.core.app, cachelayer.server; "
            "from cachelayer import plugins; plugins.discover(allow=['parameters','secrets','dynamodb']); "
            "print(c.hits, c.compiled)"
        )
        done = subprocess.run(
            [sys.executable, "-B", "-c", startup, path], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        hits, compiled = map(int, done.stdout.split())
        assert compiled == 0 and hits >= 40
