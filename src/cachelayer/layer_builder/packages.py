"""The layer's provider packages: ``--with`` requirements and wheels, their entry points, and
the probe that learns which AWS services the installed providers use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from cachelayer.layer_builder import bytecode, wheels
from cachelayer.layer_builder.errors import LayerBuildError
from cachelayer.layer_builder.installer import Pip


def is_local(spec: str) -> bool:
    """Whether a ``--with`` spec names a wheel file or a project directory, not a requirement."""
    return spec.endswith(".whl") or os.sep in spec or spec.startswith(".") or Path(spec).is_dir()


def requirement_name(spec: str) -> str:
    """The project name of a requirement string: ``cachelayer-s3>=1; python_version>'3'``."""
    for stop in "[<>=!~;@ ":
        spec = spec.split(stop, 1)[0]
    return wheels.normalize_name(spec)


def wheel_distribution(wheel: Path) -> metadata.Distribution:
    """The distribution metadata inside a wheel file (its ``*.dist-info/`` directory)."""
    with zipfile.ZipFile(wheel) as zf:
        for name in zf.namelist():
            top = name.split("/", 1)[0]
            if top.endswith(".dist-info"):
                return metadata.PathDistribution(zipfile.Path(wheel, top + "/"))
    raise LayerBuildError(f"{wheel}: not a wheel (no .dist-info directory inside)")


def distributions(site: Path) -> Dict[str, metadata.Distribution]:
    """The distributions installed in ``site``, by normalised project name."""
    return {
        wheels.normalize_name(d.metadata["Name"]): d
        for d in metadata.distributions(path=[str(site)])
    }


def with_requirements(
    specs: Sequence[str], pip: Pip, work: Path, wheel_dir: Path, progress: Callable[[str], None]
) -> Tuple[List[str], List[str]]:
    """Requirement arguments for pip and the project names of the ``--with`` packages.

    A local project is built into a wheel first (from a copy, so its directory stays
    clean); pure-Python wheels install on any platform.
    """
    args: List[str] = []
    names: List[str] = []
    for i, spec in enumerate(specs):
        if not is_local(spec):
            args.append(spec)
            names.append(requirement_name(spec))
            continue
        path = Path(spec).resolve()
        if path.suffix == ".whl":
            args.append(str(path))
            names.append(wheels.dist_name_of_wheel(path))
            continue
        copy = wheels.copy_project(path, work / f"src{i}")
        before = os.listdir(wheel_dir)
        progress(f"      building a wheel of {path}")
        pip.run(
            ["wheel", "--no-deps", "--wheel-dir", str(wheel_dir), str(copy)],
            what=f"building --with {spec}",
            cwd=work,
        )
        wheel = wheels.find_new_wheel(wheel_dir, before)
        if wheel is None:
            raise LayerBuildError(f"--with {spec}: pip built no wheel from {path}")
        args.append(str(wheel))
        names.append(wheels.dist_name_of_wheel(wheel))
    return args, names


def installed(site: Path, names: Sequence[str]) -> List[metadata.Distribution]:
    """The installed distributions of the ``--with`` packages, by project name."""
    found_in_site = distributions(site)
    found = []
    for name in names:
        if name not in found_in_site:
            raise LayerBuildError(
                f"--with {name}: pip reported success but {name} is not in the layer"
            )
        found.append(found_in_site[name])
    return found


def check_entry_points(dists: Sequence[metadata.Distribution]) -> None:
    """Every ``--with`` package must declare a provider in the ``cachelayer`` group."""
    for dist in dists:
        name = dist.metadata["Name"]
        eps = [ep for ep in dist.entry_points if ep.group == "cachelayer"]
        if not eps:
            raise LayerBuildError(
                f"--with {name}: the package declares no entry point in the 'cachelayer' "
                "group, "
                "so the extension would never load it. A provider package needs, in its "
                "pyproject.toml:\n  [project.entry-points.cachelayer]\n"
                '  myprovider = "my_package.plugin"'
            )


def probe_providers(
    python: str,
    site: Path,
    *,
    strict: bool,
    progress: Callable[[str], None],
    environ: Optional[Mapping[str, str]],
) -> Dict[str, Any]:
    """Run probe.py with the host interpreter ``python`` against the layer's own packages.

    ``strict`` (pruning on): a provider that cannot be loaded is an error, since the
    services it needs are unknown. Otherwise it is a warning.
    """
    script = Path(__file__).with_name("probe.py")
    env = bytecode.without_python_variables(environ)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    proc = subprocess.run(
        [python, "-I", "-S", str(script), str(site)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=site.parent,
    )
    if proc.returncode != 0 and not strict:
        progress(
            "      warning: could not load the layer's providers: " + proc.stderr.strip()[-500:]
        )
        return {"providers": [], "broken": []}
    if proc.returncode != 0:
        raise LayerBuildError(
            "could not load the layer's providers to learn which AWS services they use "
            f"(python {sys.version_info.major}.{sys.version_info.minor} importing the layer's "
            f"pure-Python packages):\n{proc.stderr.strip()[-2000:]}\n"
            "pass --no-prune to skip pruning"
        )
    found: Dict[str, Any] = json.loads(proc.stdout)
    _check_probe(found, strict, progress)
    return found


def _check_probe(found: Mapping[str, Any], strict: bool, progress: Callable[[str], None]) -> None:
    lines = "\n".join(
        f"  {b['plugin']} ({b['distribution']}): {b['error']}" for b in found["broken"]
    )
    if found["broken"] and not strict:
        progress("      warning: these provider plugins failed to load:\n" + lines)
    elif found["broken"]:
        raise LayerBuildError(
            "these provider plugins in the layer failed to load, so their AWS services are "
            f"unknown:\n{lines}\n"
            "fix or leave out the package, or pass --no-prune to keep every model"
        )
    if not found["providers"] and strict:
        raise LayerBuildError(
            "the layer holds no providers: cachelayer's entry points are missing from its "
            "metadata; reinstall cachelayer (pip install -e .) and build again"
        )
