"""Shrink an installed package tree: keep only the botocore models the providers need, drop
caches, tests, sources and scripts, and keep every RECORD truthful and reproducible."""

from __future__ import annotations

import difflib
import os
import shutil
from pathlib import Path
from typing import AbstractSet, Iterable, List

import attrs

from cachelayer.layer_builder.errors import LayerBuildError

# Files kept only for building or type checking; nothing imports them at run time.
_DROP_SUFFIXES = (".pyc", ".pyo", ".pyi", ".pyx", ".pxd", ".pxi", ".c", ".h", ".cpp")
# Per-service botocore files used only to render documentation.
_DOC_ONLY_MODEL_FILES = ("examples-1.json", "examples-1.json.gz")
# Directories inside dependency packages that hold their test suites.
_TEST_DIRS = {"tests", "test"}
# Our own package keeps everything (its ``testing`` helpers are not a test suite anyway).
_OWN_PACKAGES = {"cachelayer"}


@attrs.frozen
class PruneReport:
    """What pruning kept and removed."""

    services_kept: List[str]
    services_removed: int
    files_removed: int


def available_services(site: Path) -> List[str]:
    """Service models botocore carries in ``site``."""
    data = site / "botocore" / "data"
    return sorted(p.name for p in data.iterdir() if p.is_dir()) if data.is_dir() else []


def check_services(site: Path, services: Iterable[str]) -> None:
    """Raise ``LayerBuildError`` for a declared service botocore has no model for."""
    known = set(available_services(site))
    if not known:
        return  # no botocore in the layer: nothing to check against, nothing to prune
    for service in sorted(set(services)):
        if service not in known:
            close = difflib.get_close_matches(service, sorted(known), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise LayerBuildError(
                f"a provider declares the AWS service {service!r}, which botocore has no model "
                f"for{hint}; services are botocore's names, as in boto3.client('ssm'); fix the "
                "provider's `services`, or pass --no-prune to keep every model"
            )


def prune_models(site: Path, keep: AbstractSet[str]) -> int:
    """Remove botocore/boto3 model directories of services not in ``keep``; return how many.

    botocore's top-level data files (endpoints.json, partitions.json, _retry.json,
    sdk-default-configuration.json) are always kept: every client needs them to resolve
    endpoints and retry.
    """
    removed = 0
    for data in (site / "botocore" / "data", site / "boto3" / "data"):
        if not data.is_dir():
            continue
        for child in sorted(data.iterdir()):
            if child.is_dir() and child.name not in keep:
                shutil.rmtree(child)
                removed += data.parent.name == "botocore"
            elif child.is_dir():
                for doc in child.rglob("*"):
                    if doc.name in _DOC_ONLY_MODEL_FILES:
                        doc.unlink()
    examples = site / "boto3" / "examples"  # reStructuredText shown in boto3's docs only
    if examples.is_dir():
        shutil.rmtree(examples)
    return removed


def drop_junk(site: Path) -> int:
    """Remove bytecode caches, dependency test suites, C/Cython sources, stubs and the
    ``bin/`` scripts pip writes (their shebangs name the build machine's interpreter)."""
    removed = 0
    bin_dir = site / "bin"
    if bin_dir.is_dir():
        removed += sum(1 for _ in bin_dir.rglob("*"))
        shutil.rmtree(bin_dir)
    for dirpath, dirnames, filenames in os.walk(site, topdown=True):
        here = Path(dirpath)
        top = here.relative_to(site).parts[:1]
        for d in list(dirnames):
            own = bool(top) and top[0] in _OWN_PACKAGES
            if d == "__pycache__" or (d in _TEST_DIRS and here != site and not own):
                removed += sum(1 for _ in (here / d).rglob("*"))
                shutil.rmtree(here / d)
                dirnames.remove(d)
        for f in filenames:
            if f.endswith(_DROP_SUFFIXES):
                (here / f).unlink()
                removed += 1
    return removed


def normalize_dist_infos(site: Path) -> None:
    """Make installed metadata reproducible and truthful after pruning.

    ``direct_url.json`` records the temporary path a local wheel was installed from, so it is
    removed; each RECORD keeps only the files still present, in sorted order.
    """
    for dist_info in sorted(site.glob("*.dist-info")):
        direct_url = dist_info / "direct_url.json"
        if direct_url.exists():
            direct_url.unlink()
        record = dist_info / "RECORD"
        if not record.is_file():
            continue
        kept = []
        for line in record.read_text(encoding="utf-8").splitlines():
            path = line.split(",", 1)[0]
            if not path:
                continue
            full = os.path.normpath(site / path)
            if full.startswith(str(site) + os.sep) and os.path.isfile(full):
                kept.append(line)
        record.write_text("".join(f"{line}\n" for line in sorted(set(kept))), encoding="utf-8")


def remove_empty_dirs(site: Path) -> None:
    """Remove directories left empty by pruning."""
    for dirpath, _dirnames, _filenames in sorted(os.walk(site), key=lambda w: -len(w[0])):
        if dirpath != str(site) and not os.listdir(dirpath):
            os.rmdir(dirpath)


def prune(site: Path, services: AbstractSet[str], *, models: bool = True) -> PruneReport:
    """Prune the package tree at ``site``; keep models of ``services`` (all if not ``models``)."""
    before = len(available_services(site))
    removed_services = 0
    if models:
        check_services(site, services)
        removed_services = prune_models(site, services)
    files = drop_junk(site)
    normalize_dist_infos(site)
    remove_empty_dirs(site)
    kept = available_services(site)
    assert before - removed_services == len(kept)
    return PruneReport(services_kept=kept, services_removed=removed_services, files_removed=files)
