"""Wheels the layer installs from: the running cachelayer itself, and local provider projects."""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.util
import os
import re
import shutil
import sys
import zipfile
from pathlib import Path
from typing import List, Optional, Tuple

from cachelayer.layer_builder.archive import ZIP_EPOCH
from cachelayer.layer_builder.errors import LayerBuildError

_SKIP_DIRS = {"__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache"}
_SKIP_SUFFIXES = (".pyc", ".pyo")


def normalize_name(name: str) -> str:
    """PEP 503 normalised project name: ``Cachelayer_S3`` -> ``cachelayer-s3``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_file_name(name: str) -> str:
    """The name as a wheel file or dist-info directory spells it: ``cachelayer_s3``."""
    return normalize_name(name).replace("-", "_")


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def _package_files(package_dir: Path) -> List[Tuple[str, Path]]:
    """Files of the package as (path in the wheel, path on disk), sorted, without caches."""
    found: List[Tuple[str, Path]] = []
    base = package_dir.parent
    for dirpath, dirnames, filenames in os.walk(package_dir):
        dirnames[:] = sorted(
            d for d in dirnames if d not in _SKIP_DIRS and not d.endswith(".egg-info")
        )
        for f in filenames:
            if f.endswith(_SKIP_SUFFIXES):
                continue
            path = Path(dirpath) / f
            found.append((path.relative_to(base).as_posix(), path))
    return sorted(found)


def wheel_of_installed(dist_name: str, package: str, wheel_dir: Path) -> Path:
    """Write a pure-Python wheel of an installed distribution (editable installs included).

    The package's files come from where Python imports ``package`` from (for an editable
    install, the source tree); the metadata (version, requirements, entry points) from the
    installed dist-info. So the layer carries exactly what this machine runs: after changing
    dependencies or entry points of an editable install, reinstall it first. The wheel is
    byte-for-byte stable: sorted entries and fixed timestamps.
    """
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        raise LayerBuildError(
            f"distribution {dist_name!r} is not installed in {sys.prefix}; "
            "install it (pip install -e .) before building a layer"
        ) from None
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise LayerBuildError(f"package {package!r} of {dist_name!r} cannot be found on sys.path")
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    metadata_text = dist.read_text("METADATA")
    if not metadata_text:
        raise LayerBuildError(f"the installed {dist_name!r} has no METADATA; reinstall it")
    version = dist.version
    stem = f"{wheel_file_name(dist_name)}-{version}"
    dist_info = f"{stem}.dist-info"
    members: List[Tuple[str, bytes]] = [
        (arc, path.read_bytes()) for arc, path in _package_files(package_dir)
    ]
    members.append((f"{dist_info}/METADATA", metadata_text.encode()))
    entry_points = dist.read_text("entry_points.txt")
    if entry_points:
        members.append((f"{dist_info}/entry_points.txt", entry_points.encode()))
    members.append(
        (
            f"{dist_info}/WHEEL",
            b"Wheel-Version: 1.0\nGenerator: cachelayer-layer-builder\nRoot-Is-Purelib: true\n"
            b"Tag: py3-none-any\n",
        )
    )
    record = "".join(f"{arc},{_record_hash(data)},{len(data)}\n" for arc, data in members)
    record += f"{dist_info}/RECORD,,\n"
    members.append((f"{dist_info}/RECORD", record.encode()))
    wheel_dir.mkdir(parents=True, exist_ok=True)
    dest = wheel_dir / f"{stem}-py3-none-any.whl"
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for arc, data in members:
            info = zipfile.ZipInfo(arc, date_time=ZIP_EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return dest


def copy_project(src: Path, dest: Path) -> Path:
    """Copy a local project to ``dest`` without build leftovers, so building it leaves the
    original untouched (setuptools writes ``build/`` and ``*.egg-info`` in place)."""
    if not (src / "pyproject.toml").is_file() and not (src / "setup.py").is_file():
        raise LayerBuildError(
            f"--with {src}: not a Python project (no pyproject.toml or setup.py there); pass a "
            "project directory, a wheel file, or a package name from PyPI"
        )
    shutil.copytree(
        src,
        dest,
        ignore=shutil.ignore_patterns(
            "build", "dist", "*.egg-info", "__pycache__", ".git", ".venv", "*.pyc"
        ),
    )
    return dest


def dist_name_of_wheel(wheel: Path) -> str:
    """The normalised project name a wheel file installs."""
    return normalize_name(wheel.name.split("-")[0])


def find_new_wheel(wheel_dir: Path, before: List[str]) -> Optional[Path]:
    """The wheel that appeared in ``wheel_dir`` since ``before`` was listed."""
    new = sorted(set(os.listdir(wheel_dir)) - set(before))
    wheels = [n for n in new if n.endswith(".whl")]
    return wheel_dir / wheels[0] if wheels else None
