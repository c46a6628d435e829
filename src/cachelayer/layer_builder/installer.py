"""Run pip for a Lambda target: show its progress, and translate its failures."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Callable, List, Mapping, Optional, Sequence

import attrs

from cachelayer.layer_builder.errors import LayerBuildError
from cachelayer.layer_builder.targets import Target

# pip's lines worth showing as progress; the rest is kept for error reports only.
_PROGRESS = re.compile(
    r"^\s*(Collecting|Processing|Downloading|Using cached|Building wheel"
    r"|Installing collected|Successfully)"
)
_NO_VERSION = re.compile(
    r"Could not find a version that satisfies the requirement (\S+)"
    r"(?: \(from (?!versions:)([^)]*)\))?"
)
_NO_DIST = re.compile(r"No matching distribution found for (\S+)")
_NOT_PROJECT = re.compile(r"(\S+) does not appear to be a Python project")


@attrs.define
class Pip:
    """pip run by the host interpreter, with output streamed to ``progress``."""

    _progress: Callable[[str], None]
    _python: str = sys.executable
    _environ: Optional[Mapping[str, str]] = None

    def run(
        self, args: Sequence[str], *, what: str, cwd: Path, target: Optional[Target] = None
    ) -> List[str]:
        """Run ``pip <args>``; return its output lines, or raise ``LayerBuildError`` saying why.

        ``cwd`` is the build's scratch directory. ``what`` names the step for messages;
        ``target`` lets a "no wheel" failure name the
        platform and Python version it was looking for.
        """
        env = dict(os.environ if self._environ is None else self._environ)
        # Keep the user's pip cache (downloads are reused across builds) but never let a
        # virtualenv's or user's site leak into the target.
        env.pop("PYTHONPATH", None)
        env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        # -I: no user site and no current directory on sys.path, so nothing local can shadow pip.
        cmd = [self._python, "-I", "-m", "pip", *args, "--progress-bar", "off", "--no-input"]
        lines: List[str] = []
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            bufsize=1,
            cwd=cwd,
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            lines.append(line)
            if _PROGRESS.match(line):
                self._progress("    " + line.strip())
        code = proc.wait()
        if code != 0:
            unknown = _unseen_requirement(lines)
            if unknown is not None and not self._on_index(unknown, env, cwd):
                raise LayerBuildError(
                    f"{what}: package {unknown!r} was not found on the package index; check "
                    "its name, or give a local package by its path (e.g. ./cachelayer-weather)"
                )
            raise translate_failure(lines, what=what, target=target)
        return lines

    def _on_index(self, name: str, env: Mapping[str, str], cwd: Path) -> bool:
        """Whether the index knows ``name`` at all, whatever its wheels (one index query)."""
        done = subprocess.run(
            [self._python, "-I", "-m", "pip", "index", "versions", name, "--no-input"],
            capture_output=True,
            text=True,
            env=dict(env),
            cwd=cwd,
        )
        # Any other failure (no network, an old pip) says nothing: keep pip's own message.
        return done.returncode == 0 or "No matching distribution" not in done.stdout + done.stderr


def _unseen_requirement(lines: Sequence[str]) -> Optional[str]:
    """The project name of a requirement given on the command line of which pip saw no version
    at all (``from versions: none``), or None."""
    text = "\n".join(lines)
    m = _NO_VERSION.search(text)
    if m is None or m.group(2) or "(from versions: none)" not in text:
        return None
    name = re.split(r"[\[<>=!~;@ ]", m.group(1), maxsplit=1)[0]
    return name or None


def translate_failure(
    lines: Sequence[str], *, what: str, target: Optional[Target]
) -> LayerBuildError:
    """Turn pip's output into one error naming the package and the platform it lacked."""
    text = "\n".join(lines)
    where = f" for {target.describe()}" if target is not None else ""
    m = _NO_VERSION.search(text) or _NO_DIST.search(text)
    if m:
        package = m.group(1)
        parent = m.group(2) if m.re is _NO_VERSION and m.group(2) else None
        needed_by = f" (needed by {parent})" if parent else ""
        versions = re.search(r"\(from versions: ([^)]*)\)", text)
        seen = (
            f" pip saw these versions: {versions.group(1)}."
            if versions and versions.group(1) != "none"
            else ""
        )
        return LayerBuildError(
            f"{what}: no wheel of {package}{needed_by}{where}.{seen} Lambda layers are built "
            "from binary wheels only: pick a runtime/arch the package publishes wheels for, "
            "use an older version that has them, or leave the package out"
        )
    m = _NOT_PROJECT.search(text)
    if m:
        return LayerBuildError(f"{what}: {m.group(1)} is not a Python project pip can build")
    errors = [ln for ln in lines if ln.startswith("ERROR") or "error" in ln.lower()]
    tail = "\n".join((errors or list(lines))[-15:])
    return LayerBuildError(f"{what}: pip failed{where}:\n{tail}")


def install_args(target: Target, dest: Path) -> List[str]:
    """``pip install`` options that install wheels for ``target`` into ``dest``, whatever the
    host's own platform and Python are."""
    args = ["install", "--target", str(dest), "--no-compile", "--no-warn-script-location"]
    args += [
        "--python-version",
        target.python_version,
        "--implementation",
        "cp",
        "--abi",
        target.abi_tag,
    ]
    args += ["--only-binary=:all:"]
    for platform in target.platforms:
        args += ["--platform", platform]
    return args
