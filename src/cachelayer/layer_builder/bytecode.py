"""Compile the layer's Python files to bytecode the target runtime can use as is.

Lambda mounts layers read-only, so without .pyc files every cold start compiles boto3,
botocore and the rest again (about 0.35 s of init here). The files are written with
``unchecked-hash`` invalidation (PEP 552: no source timestamps, so the bytes depend only on
the source and the interpreter version) and with paths recorded as ``/opt/...``, where Lambda
unpacks the layer; the same inputs give the same bytes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, Mapping, Optional

from cachelayer.layer_builder.errors import LayerBuildError
from cachelayer.layer_builder.targets import Target

LAMBDA_LAYER_ROOT = "/opt"


def find_interpreter(target: Target) -> Optional[str]:
    """An interpreter of the target's Python version on this machine, or None.

    Bytecode is specific to a minor version, so only a ``pythonX.Y`` of the target's version can
    compile it: this interpreter if it matches, else ``pythonX.Y`` on PATH.
    """
    wanted = target.python_version
    if f"{sys.version_info.major}.{sys.version_info.minor}" == wanted:
        return sys.executable
    candidate = shutil.which(f"python{wanted}")
    if candidate is None:
        return None
    # A name on PATH may be a shim (pyenv) with no interpreter behind it: ask it.
    try:
        done = subprocess.run(
            [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except OSError:
        return None
    return candidate if done.returncode == 0 and done.stdout.strip() == wanted else None


def check_interpreter(python: str, target: Target) -> str:
    """``python`` (a path, or a name on PATH) if it runs and is the target's version; else a
    ``LayerBuildError`` saying what it is instead."""
    found = shutil.which(python) or python
    try:
        done = subprocess.run(
            [found, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except OSError as exc:
        raise LayerBuildError(
            f"--python {python}: cannot run it ({exc.strerror or exc}); give the path of a "
            f"python{target.python_version} interpreter"
        ) from None
    version = done.stdout.strip()
    if done.returncode != 0 or not version:
        raise LayerBuildError(
            f"--python {python}: it did not run as a Python interpreter "
            f"({(done.stderr or done.stdout).strip()[:200] or f'exit {done.returncode}'})"
        )
    if version != target.python_version:
        raise LayerBuildError(
            f"--python {python} is Python {version}, but {target.runtime} needs bytecode of "
            f"Python {target.python_version}: give a python{target.python_version}, or pass "
            "--no-compile"
        )
    return found


def compile_tree(
    stage: Path, packages: Path, interpreter: str, environ: Optional[Mapping[str, str]] = None
) -> None:
    """Write ``__pycache__/*.cpython-XY.pyc`` beside every .py under ``packages``."""
    env = dict(os.environ if environ is None else environ)
    env["PYTHONHASHSEED"] = "0"  # set and frozenset constants are marshalled in hash order
    env.pop("PYTHONPYCACHEPREFIX", None)
    done = subprocess.run(
        [
            interpreter,
            "-m",
            "compileall",
            "-q",
            "-f",
            "--invalidation-mode",
            "unchecked-hash",
            "-s",
            str(stage),
            "-p",
            LAMBDA_LAYER_ROOT,
            str(packages),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    # compileall exits 1 when some file does not compile (e.g. a package's Python 2 leftovers);
    # those files are simply left as source, as an installer would.
    if done.returncode not in (0, 1):
        raise LayerBuildError(
            f"compiling bytecode with {interpreter} failed: {done.stderr.strip() or done.stdout.strip()}; "
            "pass --no-compile to ship source only"
        )


def without_python_variables(environ: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """``environ`` (``os.environ``) without the ``PYTHON*`` variables, for a build-time run of
    an interpreter that must see the layer's packages only."""
    source = os.environ if environ is None else environ
    return {k: v for k, v in source.items() if not k.startswith("PYTHON")}


# Run by the target interpreter with the layer's packages first on its path, as the launcher
# runs it (see cachelayer.startup_cache). The bundle holds only the layer's own modules (a
# Python runtime's standard library is Lambda's, not this machine's) and is unchecked, as the
# layer's .pyc files are.
WARM_SCRIPT = (
    "import sys; sys.path.insert(0, sys.argv[1]); from cachelayer import startup_cache; "
    "c = startup_cache.warm(checked=False, only_under_root=True); "
    "print(len(c.methods.used), len(c.programs.used) if c.programs else 0, c.bundled)"
)


def warm_startup_caches(
    packages: Path, interpreter: str, environ: Optional[Mapping[str, str]] = None
) -> str:
    """Write the layer's startup caches (``cachelayer.startup_cache``) with ``interpreter``:
    the bundle of the modules the extension imports on its way to ready, their regular
    expressions' programs and their attrs classes' methods, which a read-only layer could never
    write at run time. Returns a line for the build's progress; a failure (e.g. another
    architecture's C extensions) only skips the caches."""
    env = without_python_variables(environ)
    # The hash seed fixes the per-class salts attrs puts in __hash__: the same inputs give
    # the same bytes. So not -I, which would ignore it; no other PYTHON* variable is passed.
    env["PYTHONHASHSEED"] = "0"
    done = subprocess.run(
        [interpreter, "-S", "-s", "-B", "-c", WARM_SCRIPT, str(packages)],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(packages),
        timeout=300,
    )
    return startup_caches_outcome(done.returncode, done.stdout, done.stderr)


def startup_caches_outcome(code: int, stdout: str, stderr: str) -> str:
    """The progress line for a run of ``WARM_SCRIPT``."""
    counts = stdout.split()
    if code == 0 and len(counts) == 3 and all(c.isdigit() for c in counts):
        return (
            f"      startup caches: {counts[2]} modules bundled, {counts[1]} regex programs and "
            f"{counts[0]} attrs classes' methods compiled ahead (cold starts compile none)"
        )
    last = (stderr.strip().splitlines() or [f"exit {code}"])[-1]
    return f"      startup caches: skipped ({last[:200]}); cold starts do that work themselves"
