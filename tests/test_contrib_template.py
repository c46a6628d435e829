"""The provider template installs into a fresh virtual environment and works there as a plugin.

This is the path docs/writing-providers.md walks a provider author through: copy
contrib/template, install it with pip, see it in ``cachelayer providers``, run its tests, serve it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any, Callable, Iterator

import boto3
import pytest

# The provider-author fixtures (cachelayer_server); tests/conftest.py's moto fixtures win.
pytest_plugins = ["cachelayer.testing.fixtures"]

TEMPLATE = Path(__file__).resolve().parent.parent / "contrib" / "template"


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def example_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A new venv with the template installed (a real wheel build); cachelayer comes from ours.

    The venv sees this environment's packages through a .pth calling ``site.addsitedir`` (so
    cachelayer, boto3 and moto are not downloaded again), while the template is installed into
    the venv's own site-packages, exactly as ``pip install ./my-provider`` would.
    """
    root = tmp_path_factory.mktemp("template")
    project = root / "cachelayer-example"
    shutil.copytree(
        TEMPLATE, project, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    )
    venv = root / "venv"
    done = run(sys.executable, "-m", "venv", "--without-pip", str(venv))
    assert done.returncode == 0, done.stderr
    python = venv / "bin" / "python"
    site_packages = Path(
        run(
            str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"
        ).stdout.strip()
    )
    ours = sysconfig.get_paths()["purelib"]
    (site_packages / "zz_cachelayer_dev.pth").write_text(
        f"import site; site.addsitedir({ours!r})\n"
    )
    # pip from this environment drives the new one (--python): no ensurepip, no second pip.
    done = run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        str(python),
        "install",
        "--no-deps",
        "-q",
        str(project),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (site_packages / "cachelayer_example").is_dir()
    yield venv


@pytest.mark.slow
class TestTemplate:
    def test_installed_template_is_listed_by_cachelayer_providers(self, example_venv: Path) -> None:
        """`cachelayer providers` in the new venv lists the template's section, route, service and distribution."""
        done = run(str(example_venv / "bin" / "python"), "-m", "cachelayer", "providers")
        assert done.returncode == 0, done.stderr
        rows = [line.split() for line in done.stdout.splitlines()]
        assert ["example", "/example", "ssm", "cachelayer-example", "0.1.0", "example"] in rows
        assert not [
            line for line in done.stdout.splitlines() if line.startswith("BROKEN  plugin 'example'")
        ]

    def test_template_tests_pass_in_the_new_venv(self, example_venv: Path, tmp_path: Path) -> None:
        """The template's own test suite (moto + cachelayer.testing fixtures) passes against the installed copy."""
        project = example_venv.parent / "cachelayer-example"
        done = run(
            str(example_venv / "bin" / "python"),
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(project / "tests"),
            timeout=180,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "4 passed" in done.stdout

    def test_installed_template_is_served(
        self, example_venv: Path, aws: str, cachelayer_server: Callable[..., Any]
    ) -> None:
        """`cachelayer serve` in the new venv answers GET /example?name= from SSM (moto)."""
        boto3.client("ssm").put_parameter(Name="/tmpl/colour", Value="green", Type="String")
        server = cachelayer_server(
            "example:\n  - name: /tmpl/colour\n", python=str(example_venv / "bin" / "python")
        )
        response = server.get("/example?name=/tmpl/colour")
        assert response.status == 200, response.body
        assert response.body == b"green"
        assert server.get("/example?name=/tmpl/other").status == 404
