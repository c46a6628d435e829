"""cachelayer.entrypoints against importlib.metadata, the reference it stands in for at startup."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zipfile
from importlib import metadata
from pathlib import Path
from typing import List, Tuple

import pytest

from cachelayer import entrypoints
from cachelayer.errors import PluginError


def _ours(group: str) -> List[Tuple[str, str, str, str]]:
    return [(e.name, e.value, e.dist.name, e.dist.version) for e in entrypoints.entry_points(group)]


def _oracle(group: str) -> List[Tuple[str, str, str, str]]:
    return [
        (e.name, e.value, e.dist.name, e.dist.version)  # type: ignore[union-attr]
        for e in metadata.entry_points(group=group)
    ]


def _dist(
    root: Path, dirname: str, name: str, version: str, entry_points: str = "", pkg_info=False
) -> Path:
    info = root / dirname
    info.mkdir(parents=True)
    (info / ("PKG-INFO" if pkg_info else "METADATA")).write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: a: b\n\nName: body\n"
    )
    if entry_points:
        (info / "entry_points.txt").write_text(textwrap.dedent(entry_points).lstrip())
    return info


class TestSameAsImportlibMetadata:
    @pytest.mark.parametrize("group", ["cachelayer", "console_scripts", "pytest11", "nothing"])
    def test_this_environment_gives_the_same_entry_points_in_the_same_order(self, group):
        """The development venv (editable installs, setuptools' finders) reads alike."""
        assert _ours(group) == _oracle(group)

    def test_crafted_distributions_read_alike(self, tmp_path, monkeypatch):
        """Sections, comments, extras, egg-info, first-on-path-wins by normalized name."""
        first, second = tmp_path / "first", tmp_path / "second"
        _dist(
            first,
            "Foo_Bar-1.0.dist-info",
            "Foo_Bar",
            "1.0",
            """
            # a comment
            [cachelayer]
            foo = foo_pkg.plugin:Plugin.inner

            bar=bar_pkg  [extra]
            [console_scripts]
            foo = foo_pkg.cli:main
            """,
        )
        _dist(second, "foo.bar-2.0.dist-info", "foo.bar", "2.0", "[cachelayer]\nfoo = other:x\n")
        _dist(second, "eggy-3.1.egg-info", "eggy", "3.1", "[cachelayer]\negg = eggy\n", True)
        _dist(second, "plain-1.dist-info", "plain", "1")  # no entry_points.txt
        (second / "not-a-dist").mkdir()
        monkeypatch.setattr(sys, "path", [str(first), str(second), str(tmp_path / "missing")])
        assert _ours("cachelayer") == _oracle("cachelayer")
        assert [e[:3] for e in _ours("cachelayer")] == [
            ("foo", "foo_pkg.plugin:Plugin.inner", "Foo_Bar"),
            ("bar", "bar_pkg  [extra]", "Foo_Bar"),
            ("egg", "eggy", "eggy"),
        ]
        assert _ours("console_scripts") == _oracle("console_scripts")

    def test_a_zip_on_the_path_is_left_to_importlib_metadata(self, tmp_path, monkeypatch):
        """A zipped distribution is read through importlib.metadata, so it is still found."""
        archive = tmp_path / "dists.zip"
        with zipfile.ZipFile(archive, "w") as z:
            z.writestr("zipped-1.0.dist-info/METADATA", "Name: zipped\nVersion: 1.0\n\n")
            z.writestr("zipped-1.0.dist-info/entry_points.txt", "[cachelayer]\nz = zipped:P\n")
        monkeypatch.setattr(sys, "path", [str(archive)])
        assert _ours("cachelayer") == _oracle("cachelayer") == [("z", "zipped:P", "zipped", "1.0")]


class TestLoading:
    def test_load_follows_dotted_attributes_and_module_only_values(self):
        """``module:attr.attr`` and a bare module load as importlib's EntryPoint.load would."""
        dotted = entrypoints.EntryPoint("x", "cachelayer.errors:PluginError.__name__", "g", None)
        assert dotted.load() == "PluginError"
        assert (
            entrypoints.EntryPoint("m", "cachelayer.errors", "g", None).load()
            is sys.modules["cachelayer.errors"]
        )
        assert metadata.EntryPoint("x", dotted.value, "g").load() == dotted.load()

    def test_a_malformed_line_names_its_file_and_line(self, tmp_path, monkeypatch):
        """importlib.metadata would raise a bare ValueError; this says where and what to do."""
        _dist(tmp_path, "broken-1.dist-info", "broken", "1", "[cachelayer]\n\nno equals sign\n")
        monkeypatch.setattr(sys, "path", [str(tmp_path)])
        with pytest.raises(
            PluginError, match=r"entry_points.txt, line 3: 'no equals sign'.*reinstall"
        ):
            entrypoints.entry_points("cachelayer")


def test_the_extension_path_does_not_import_importlib_metadata():
    """The extension's startup (attrs' code cache, the app, the server, discovering the built-in
    providers) loads none of importlib.metadata's ~10 ms of imports."""
    code = (
        "import sys; from cachelayer import attrs_cache; attrs_cache.install(); "
        "import cachelayer.extension, cachelayer.core.app, cachelayer.server; "
        "from cachelayer import plugins; pm, reg = plugins.discover(); "
        "assert 'parameters' in reg.by_name; "
        "print(sorted(m for m in ('importlib.metadata', 'zipfile', 'tempfile') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


class TestRepeatedScans:
    def test_a_repeated_scan_sees_a_distribution_installed_or_rewritten_in_between(
        self, tmp_path, monkeypatch
    ):
        """The second scan of startup is served from the first unless the path changed."""
        monkeypatch.setattr(sys, "path", [str(tmp_path)])
        info = _dist(tmp_path, "one-1.dist-info", "one", "1", "[cachelayer]\na = one\n")
        assert [e.name for e in entrypoints.entry_points("cachelayer")] == ["a"]
        _dist(tmp_path, "two-1.dist-info", "two", "1", "[cachelayer]\nb = two\n")
        assert sorted(e.name for e in entrypoints.entry_points("cachelayer")) == ["a", "b"]
        entry_file = info / "entry_points.txt"
        entry_file.write_text("[cachelayer]\nc = one\n")
        stat = entry_file.stat()
        os.utime(entry_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
        assert sorted(e.name for e in entrypoints.entry_points("cachelayer")) == ["b", "c"]
        assert _ours("cachelayer") == _oracle("cachelayer")
