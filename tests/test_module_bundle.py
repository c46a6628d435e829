"""cachelayer.module_bundle: modules served from the bundle are the modules a normal import makes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, List

import cachelayer

SRC = Path(cachelayer.__file__).resolve().parent.parent

# The startup imports, then what each module looks like and whether its code is the normal
# loader's: printed as JSON. argv[1]: the bundle ("-": none).
DESCRIBE = textwrap.dedent(
    """
    import json, sys
    while "" in sys.path:
        sys.path.remove("")
    from cachelayer import module_bundle
    finder = module_bundle.install(sys.argv[1]) if sys.argv[1] != "-" else None
    import cachelayer.extension, cachelayer.core.app, cachelayer.server
    from cachelayer import plugins
    plugins.discover(allow=["parameters", "secrets", "dynamodb"])
    served = finder.served if finder else 0
    modules, same_code = {}, []
    for name, module in sorted(sys.modules.items()):
        spec = getattr(module, "__spec__", None)
        if spec is None or not getattr(spec, "has_location", False):
            continue
        loader = spec.loader
        modules[name] = [getattr(module, "__file__", None), spec.origin,
                         getattr(module, "__cached__", None),
                         list(getattr(module, "__path__", []) or []) or None,
                         [c.__name__ for c in type(loader).__mro__]]
        if type(loader).__name__.startswith("_Bundled"):
            normal = type(loader).__mro__[2](name, spec.origin)  # the normal file loader
            same_code.append(loader.get_code(name) == normal.get_code(name))
    print(json.dumps({"served": served, "modules": modules,
                      "same_code": same_code, "refused": finder.refused if finder else 0}))
    """
)


def _run(*args: str, env: Any = None) -> Any:
    done = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, cwd=str(SRC)
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _write(bundle: Path, *extra: str, checked: bool = True) -> int:
    code = (
        "import sys\n"
        "while '' in sys.path: sys.path.remove('')\n"
        f"sys.path[:0] = {list(extra)!r}\n"
        "import cachelayer.extension, cachelayer.core.app, cachelayer.server\n"
        "from cachelayer import plugins, module_bundle\n"
        "plugins.discover(allow=['parameters', 'secrets', 'dynamodb'])\n"
        f"import json; print(json.dumps(module_bundle.write(sys.argv[1], checked={checked})))\n"
    )
    return int(_run("-B", "-c", code, str(bundle)))


class TestTheSameModules:
    def test_startup_modules_from_the_bundle_are_what_a_normal_import_makes(self, tmp_path):
        """The extension's startup imports, served from a bundle: the same modules load, from
        the same files, with the same __file__, __spec__.origin, __cached__ and __path__, the
        normal loader class beneath, and code equal to what that loader itself returns."""
        bundle = tmp_path / "startup.bundle"
        written = _write(bundle)
        assert written >= 150
        served = _run("-B", "-c", DESCRIBE, str(bundle))
        normal = _run("-B", "-c", DESCRIBE, "-")
        assert served["served"] >= 150 and served["refused"] == 0
        assert set(served["modules"]) == set(normal["modules"])
        assert served["same_code"] and all(served["same_code"])
        bundled = 0
        for name, (file, origin, cached, path, mro) in normal["modules"].items():
            got = served["modules"][name]
            assert got[:4] == [file, origin, cached, path], name
            if got[4][0].startswith("_Bundled"):
                bundled += 1
                assert got[4][2:] == mro, (
                    name
                )  # beneath: the very loader class of the normal import
        assert bundled == served["served"]

    def test_package_resources_and_source_still_come_from_the_files(self, tmp_path):
        """A bundled module's loader still reads the files: importlib.resources (the OpenAPI
        document) and its source, for tracebacks."""
        bundle = tmp_path / "startup.bundle"
        _write(bundle)
        code = (
            "import sys, json\n"
            "while '' in sys.path: sys.path.remove('')\n"
            "from cachelayer import module_bundle\n"
            "finder = module_bundle.install(sys.argv[1])\n"
            "import cachelayer.server.operations as ops, importlib.resources, linecache\n"
            "doc = importlib.resources.files('cachelayer').joinpath('openapi.json').read_bytes()\n"
            "src = ops.__loader__.get_source('cachelayer.server.operations')\n"
            "line = linecache.getline(ops.__file__, 1)\n"
            "print(json.dumps([finder.served > 0, json.loads(doc)['openapi'][:1], "
            'src == open(ops.__file__).read(), line.startswith(\'"""\')]))\n'
        )
        assert _run("-B", "-c", code, str(bundle)) == [True, "3", True, True]


def _package(root: Path, value: str) -> None:
    (root / "mypkg").mkdir(parents=True, exist_ok=True)
    (root / "mypkg" / "__init__.py").write_text("NAME = 'pkg'\n")
    (root / "mypkg" / "sub.py").write_text(f"VALUE = {value!r}\n")


WRITE_MYPKG = (
    "import sys, json; sys.path.insert(0, sys.argv[2])\n"
    "while '' in sys.path: sys.path.remove('')\n"
    "import mypkg.sub\n"
    "from cachelayer import module_bundle\n"
    "mods = {n: sys.modules[n] for n in ('mypkg', 'mypkg.sub')}\n"
    "print(json.dumps(module_bundle.write(sys.argv[1], modules=mods, checked=sys.argv[3] == 'c')))\n"
)
READ_MYPKG = (
    "import sys, json; sys.path.insert(0, sys.argv[2])\n"
    "while '' in sys.path: sys.path.remove('')\n"
    "from cachelayer import module_bundle\n"
    "finder = module_bundle.install(sys.argv[1])\n"
    "import mypkg.sub\n"
    "print(json.dumps([finder and finder.served, finder and finder.refused, mypkg.sub.VALUE, "
    "mypkg.sub.__file__, mypkg.__path__]))\n"
)


class TestWhenToServe:
    def test_a_changed_source_is_imported_the_normal_way(self, tmp_path):
        """A checked bundle serves a module only while its file is as it was (size, mtime)."""
        pkgs, bundle = tmp_path / "pkgs", tmp_path / "b.bundle"
        _package(pkgs, "old")
        assert _run("-B", "-c", WRITE_MYPKG, str(bundle), str(pkgs), "c") == 2
        assert _run("-B", "-c", READ_MYPKG, str(bundle), str(pkgs))[:3] == [2, 0, "old"]
        (pkgs / "mypkg" / "sub.py").write_text("VALUE = 'new, longer'\n")
        served, refused, value, _, _ = _run("-B", "-c", READ_MYPKG, str(bundle), str(pkgs))
        assert (served, refused, value) == (1, 1, "new, longer")

    def test_an_unchecked_bundle_serves_what_it_holds(self, tmp_path):
        """As an unchecked-hash .pyc: no stat; the layer's files do not change after the build."""
        pkgs, bundle = tmp_path / "pkgs", tmp_path / "b.bundle"
        _package(pkgs, "old")
        assert _run("-B", "-c", WRITE_MYPKG, str(bundle), str(pkgs), "u") == 2
        (pkgs / "mypkg" / "sub.py").write_text("VALUE = 'changed'\n")
        assert _run("-B", "-c", READ_MYPKG, str(bundle), str(pkgs))[:3] == [2, 0, "old"]

    def test_another_sys_path_gets_no_bundle(self, tmp_path):
        """A module could be found elsewhere if sys.path began otherwise: no bundle at all, for
        another first entry, or the working directory ('') before an entry the bundle uses."""
        pkgs, other, bundle = tmp_path / "pkgs", tmp_path / "other", tmp_path / "b.bundle"
        _package(pkgs, "real")
        _package(other, "shadow")
        assert _run("-B", "-c", WRITE_MYPKG, str(bundle), str(pkgs), "c") == 2
        shadowed = READ_MYPKG.replace(
            "sys.path.insert(0, sys.argv[2])\n", "sys.path[:0] = [sys.argv[3], sys.argv[2]]\n"
        )
        got = _run("-B", "-c", shadowed, str(bundle), str(pkgs), str(other))
        assert got[:3] == [None, None, "shadow"]
        cwd_first = READ_MYPKG.replace(
            "while '' in sys.path: sys.path.remove('')\n", "sys.path.insert(0, '')\n"
        )
        assert _run("-B", "-c", cwd_first, str(bundle), str(pkgs))[:3] == [None, None, "real"]

    def test_a_foreign_or_damaged_bundle_is_none(self, tmp_path):
        """Not a bundle, a truncated one, a damaged module in one: imported the normal way."""
        from cachelayer import module_bundle

        junk = tmp_path / "junk.bundle"
        junk.write_bytes(b"CLMB" + b"\xff" * 40)
        assert module_bundle.install(str(junk)) is None
        assert module_bundle.install(str(tmp_path / "missing.bundle")) is None
        pkgs, bundle = tmp_path / "pkgs", tmp_path / "b.bundle"
        _package(pkgs, "intact")
        _run("-B", "-c", WRITE_MYPKG, str(bundle), str(pkgs), "u")
        data = bytearray(bundle.read_bytes())
        data[20:60] = b"\x00" * 40  # the first module's code
        bundle.write_bytes(bytes(data))
        served, _, value, _, _ = _run("-B", "-c", READ_MYPKG, str(bundle), str(pkgs))
        assert value == "intact" and served == 1  # one damaged (normal way), one served


class TestMovedTree:
    def test_a_tree_built_in_one_place_is_served_in_another(self, tmp_path):
        """As a layer built in a staging directory runs from /opt: entries under the package
        root are stored relative to it, and only_under_root leaves the rest (a Python runtime's
        standard library is Lambda's, not the build machine's) out."""
        built, moved = tmp_path / "stage" / "cachelayer", tmp_path / "opt" / "cachelayer"
        shutil.copytree(SRC / "cachelayer", built / "cachelayer", ignore=_no_bundles)
        write = (
            "import sys; sys.path.insert(0, sys.argv[1])\n"
            "while '' in sys.path: sys.path.remove('')\n"
            "import cachelayer.regex_cache, cachelayer.attrs_cache, json\n"
            "from cachelayer import module_bundle\n"
            "print(module_bundle.write(checked=False, only_under_root=True))\n"
        )
        env = dict(os.environ, PYTHONPATH="")
        done = subprocess.run(
            [sys.executable, "-B", "-s", "-c", write, str(built)],
            capture_output=True,
            text=True,
            env=env,
        )
        assert done.returncode == 0, done.stderr
        assert int(done.stdout) >= 4
        shutil.move(str(built.parent), str(moved.parent))
        read = (
            "import sys; sys.path.insert(0, sys.argv[1])\n"
            "while '' in sys.path: sys.path.remove('')\n"
            "from cachelayer import module_bundle\n"
            "finder = module_bundle.install()\n"
            "import cachelayer.regex_cache, cachelayer.attrs_cache, json\n"
            "print(json.dumps([finder.served, sorted(finder.index), "
            "cachelayer.regex_cache.__file__]))\n"
        )
        served, index, file = _run("-B", "-s", "-c", read, str(moved), env=env)
        assert served >= 2 and all(n.startswith("cachelayer") for n in index)
        assert file == str(moved / "cachelayer" / "regex_cache.py")


def _no_bundles(directory: str, names: List[str]) -> List[str]:
    return [n for n in names if n.endswith((".bundle", ".marshal")) or n == "__pycache__"]


class TestAsTheNormalLoader:
    def test_code_names_the_file_it_runs_from_wherever_its_pyc_was_compiled(self, tmp_path):
        """A .pyc compiled elsewhere (a layer's names /opt): co_filename is fixed to the file,
        as the normal loader fixes it."""
        pkgs, bundle = tmp_path / "pkgs", tmp_path / "b.bundle"
        _package(pkgs, "v")
        (pkgs / "mypkg" / "sub.py").write_text("def f():\n    return 1\n")
        subprocess.run(
            [sys.executable, "-m", "compileall", "-q", "-d", "/elsewhere", str(pkgs)], check=True
        )
        assert _run("-c", WRITE_MYPKG, str(bundle), str(pkgs), "c") == 2
        read = READ_MYPKG.replace("mypkg.sub.VALUE", "mypkg.sub.f.__code__.co_filename")
        served, _, filename, file, _ = _run("-c", read, str(bundle), str(pkgs))
        assert served == 2 and filename == file == str(pkgs / "mypkg" / "sub.py")

    def test_an_optimized_interpreter_has_a_bundle_of_its_own(self, tmp_path):
        """-O reads .opt-1.pyc (no asserts): a bundle written under -O is not served without."""
        pkgs, bundle = tmp_path / "pkgs", tmp_path / "b.bundle"
        _package(pkgs, "v")
        assert _run("-O", "-B", "-c", WRITE_MYPKG, str(bundle), str(pkgs), "c") == 2
        assert _run("-B", "-c", READ_MYPKG, str(bundle), str(pkgs))[:2] == [None, None]
        assert _run("-O", "-B", "-c", READ_MYPKG, str(bundle), str(pkgs))[:2] == [2, 0]

    def test_a_submodule_of_a_parent_found_elsewhere_is_not_served(self, tmp_path):
        """The parent package's __path__ must hold the directory the bundle found it in."""
        pkgs, other, bundle = tmp_path / "pkgs", tmp_path / "other", tmp_path / "b.bundle"
        _package(pkgs, "bundled")
        _package(other, "elsewhere")
        assert _run("-B", "-c", WRITE_MYPKG, str(bundle), str(pkgs), "c") == 2
        moved = READ_MYPKG.replace(
            "import mypkg.sub\n",
            "import mypkg\nmypkg.__path__[:] = [sys.argv[3] + '/mypkg']\nimport mypkg.sub\n",
        )
        served, _, value, _, _ = _run("-B", "-c", moved, str(bundle), str(pkgs), str(other))
        assert (served, value) == (1, "elsewhere")

    def test_a_damaged_table_is_no_bundle(self, tmp_path):
        """A table that unmarshals but is not a bundle's: install() gives None, no exception."""
        import marshal

        from cachelayer import module_bundle

        for table in ({"path": [1], "checked": True, "modules": {}}, {"path": [], "modules": 3}):
            index = marshal.dumps((module_bundle._header(), table))
            head = b"CLMB" + (20).to_bytes(8, "little") + len(index).to_bytes(8, "little")
            (tmp_path / "t.bundle").write_bytes(head + index)
            assert module_bundle.install(str(tmp_path / "t.bundle")) is None
