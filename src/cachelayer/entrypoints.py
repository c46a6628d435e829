"""One entry-point group of the installed distributions, read without ``importlib.metadata``.

Importing ``importlib.metadata`` brings zipfile, shutil, bz2, lzma, tempfile, csv, pathlib and
importlib.resources: about 10 ms of the extension's init, every cold start, to read a few small
text files. This reads the same files the same way (``importlib.metadata``'s own path search,
section parser and first-on-``sys.path``-wins rule) for the plain directories a layer and a
virtualenv have, and hands anything else (a zip or egg on the path, a custom distribution
finder) to ``importlib.metadata`` itself. tests/test_entrypoints.py holds it to that oracle.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from typing import Any, Dict, Iterable, List, Optional, Tuple

import attrs

from cachelayer.errors import PluginError

__all__ = ["Distribution", "EntryPoint", "entry_points"]

# importlib.metadata.EntryPoint.pattern
_VALUE = re.compile(r"(?P<module>[\w.]+)\s*(:\s*(?P<attr>[\w.]+)\s*)?((?P<extras>\[.*\])\s*)?$")


@attrs.frozen
class Distribution:
    """The installed distribution an entry point comes from: its name and version as its
    metadata states them, and its metadata directory (``*.dist-info`` / ``*.egg-info``)."""

    name: str
    version: str
    path: str


@attrs.frozen
class EntryPoint:
    """One ``name = module:attr`` line of a distribution's ``entry_points.txt``."""

    name: str
    value: str
    group: str
    dist: Optional[Any]
    """A ``Distribution`` (or an ``importlib.metadata`` one, on the fallback path)."""

    def load(self) -> Any:
        """Import the module and return the object the value names, as importlib does."""
        match = _VALUE.match(self.value)
        if match is None:
            raise ValueError(f"entry point {self.name!r} has a malformed value {self.value!r}")
        obj: Any = importlib.import_module(match.group("module"))
        for part in (match.group("attr") or "").split("."):
            if part:
                obj = getattr(obj, part)
        return obj


def normalize(name: str) -> str:
    """A distribution name as ``importlib.metadata`` compares them (PEP 503, dashes as ``_``)."""
    return re.sub(r"[-_.]+", "-", name).lower().replace("-", "_")


def entry_points(group: str, path: Optional[Iterable[str]] = None) -> List[EntryPoint]:
    """The entry points in ``group`` of every distribution on ``path`` (``sys.path``), one
    distribution per normalized name, the first found on the path winning, in path order."""
    entries = list(sys.path if path is None else path)
    if not _plain(entries):
        return _from_importlib(group, entries)
    key = (group, tuple(entries))
    memo = _memo.get(key)
    if memo is not None and memo[0] == _stamp(entries, memo[2]):
        return list(memo[1])
    found: List[EntryPoint] = []
    read: List[str] = []
    seen: set = set()
    for entry in entries:
        for info in _metadata_dirs(entry or "."):
            name = normalize(_name_from_dir(info))
            if name in seen:
                continue
            seen.add(name)
            found.extend(_read_group(info, group, read))
    _memo[key] = (_stamp(entries, read), tuple(found), read)
    return found


# The last scan per (group, path), with the modification times it was read at: startup asks
# twice (the plugin filters' check, then loading), and a venv holds ~100 distributions.
_memo: Dict[
    Tuple[str, Tuple[str, ...]], Tuple[Tuple[int, ...], Tuple[EntryPoint, ...], List[str]]
] = {}


def _stamp(entries: List[str], files: List[str]) -> Tuple[int, ...]:
    """The path entries' and the read entry_points.txt files' mtimes: a distribution installed,
    removed or rewritten changes one of them."""
    stamp = []
    for name in (*entries, *files):
        try:
            stamp.append(os.stat(name or ".").st_mtime_ns)
        except OSError:
            stamp.append(-1)
    return tuple(stamp)


def _plain(entries: List[str]) -> bool:
    """Whether every distribution on the path sits in a plain directory this module reads:
    no zip, no egg, and no distribution finder on ``sys.meta_path`` but the standard one."""
    from importlib.machinery import PathFinder

    for finder in sys.meta_path:
        if finder is not PathFinder and getattr(finder, "find_distributions", None) is not None:
            return False
    return not any(entry.lower().endswith(".egg") or os.path.isfile(entry) for entry in entries)


def _metadata_dirs(root: str) -> List[str]:
    try:
        children = os.listdir(root)
    except OSError:  # a path entry that does not exist, as importlib.metadata skips it
        return []
    return [
        os.path.join(root, child)
        for child in children
        if child.lower().endswith((".dist-info", ".egg-info"))
    ]


def _name_from_dir(info: str) -> str:
    # importlib.metadata's Lookup: the part of the lower-cased stem before the first '-'.
    return os.path.basename(info).lower().rpartition(".")[0].partition("-")[0]


def _read_group(info: str, group: str, read: List[str]) -> List[EntryPoint]:
    filename = os.path.join(info, "entry_points.txt")
    try:
        with open(filename, encoding="utf-8") as f:
            text = f.read()
    except (FileNotFoundError, NotADirectoryError):
        return []
    read.append(filename)
    pairs = [
        (name, value) for section, name, value in _sections(text, filename) if section == group
    ]
    if not pairs:
        return []
    dist = _distribution(info)
    return [EntryPoint(name, value, group, dist) for name, value in pairs]


def _sections(text: str, filename: str) -> Iterable[Tuple[str, str, str]]:
    """``(section, name, value)`` for each entry, as importlib.metadata's ``Sectioned`` reads."""
    section: Optional[str] = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line.strip("[]")
            continue
        if section is None:
            continue
        name, sep, value = line.partition("=")
        if not sep:
            raise PluginError(
                f"{filename}, line {number}: {line!r} is not 'name = module:attribute'; "
                "the distribution's metadata is damaged: reinstall it"
            )
        yield section, name.strip(), value.strip()


def _distribution(info: str) -> Distribution:
    headers: Dict[str, str] = {}
    for filename in ("METADATA", "PKG-INFO"):
        try:
            with open(os.path.join(info, filename), encoding="utf-8") as f:
                for line in f:
                    if not line.strip():
                        break  # the headers end at the first blank line
                    key, sep, value = line.partition(":")
                    if sep and key in ("Name", "Version") and key not in headers:
                        headers[key] = value.strip()
            break
        except (FileNotFoundError, NotADirectoryError):
            continue
    name = headers.get("Name") or _name_from_dir(info)
    return Distribution(name, headers.get("Version", ""), info)


def _from_importlib(group: str, entries: List[str]) -> List[EntryPoint]:
    from importlib import metadata

    found: List[EntryPoint] = []
    seen: set = set()
    for dist in metadata.distributions(path=entries):
        key = normalize(dist.name or "")
        if key in seen:
            continue
        seen.add(key)
        found.extend(
            EntryPoint(ep.name, ep.value, group, dist)
            for ep in dist.entry_points
            if ep.group == group
        )
    return found
