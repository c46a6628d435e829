"""scripts/setup.sh says what it does and skips the install when nothing changed.

Run on a copy of the script in a throw-away project (a tiny pyproject with a ``dev`` extra), so
the test costs seconds, not the minutes of the real install.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

PYPROJECT = """\
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "setup-probe"
version = "{version}"

[project.optional-dependencies]
dev = []

[tool.setuptools]
py-modules = []
"""


def run_setup(project: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env["PYTHON"] = getattr(sys, "_base_executable", sys.executable)
    done = subprocess.run(
        ["bash", str(project / "scripts" / "setup.sh")],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.slow
def test_setup_prints_its_steps_and_skips_an_unchanged_install(tmp_path: Path) -> None:
    """A first run prints a line per step; a rerun with the same pyproject files skips pip; a
    changed pyproject installs again."""
    project = tmp_path / "project"
    (project / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "setup.sh", project / "scripts" / "setup.sh")
    (project / "pyproject.toml").write_text(PYPROJECT.format(version="1.0"))

    first = run_setup(project)
    steps = [line for line in first.splitlines() if line.startswith("setup: ")]
    assert [s.split()[1] for s in steps] == ["creating", "upgrading", "installing"], first

    again = run_setup(project)
    assert "skipping pip" in again and "installing" not in again

    (project / "pyproject.toml").write_text(PYPROJECT.format(version="1.1"))
    changed = run_setup(project)
    assert "installing" in changed and "creating" not in changed
    assert "skipping pip" in run_setup(project)
