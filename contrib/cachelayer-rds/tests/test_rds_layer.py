"""``cachelayer layer build --with contrib/cachelayer-rds``: the provider and its drivers ship."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent


@pytest.mark.slow
class TestLayer:
    def test_layer_carries_the_provider_and_pure_python_drivers(self, tmp_path: Path) -> None:
        """The layer (arm64: built from x86_64 with no native code needed) holds cachelayer_rds,
        pg8000 and PyMySQL with their dist-info, and the build prints its size. With the
        built-in providers it ships no boto3/botocore: the provider uses the core's transport."""
        out = tmp_path / "layer"
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "cachelayer",
                "layer",
                "build",
                "--runtime",
                "python3.11",
                "--arch",
                "arm64",
                "--no-compile",
                "--with",
                str(PACKAGE),
                "-o",
                str(out),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "rds (/rds)" in result.stdout
        assert "after pruning" in result.stdout  # the size lines
        root = out / "cachelayer"
        for module in ("cachelayer_rds", "pg8000", "pymysql", "scramp"):
            assert (root / module / "__init__.py").exists(), module
        assert "boto3 and botocore left out" in result.stdout + result.stderr
        for module in ("boto3", "botocore", "s3transfer", "jmespath"):
            assert not (root / module).exists(), module
        # The entry point survives, and the package imports from the layer's own directory.
        code = (
            "import sys; sys.path[:0] = [sys.argv[1]]\n"
            "from importlib.metadata import entry_points\n"
            "eps = {e.name: e.value for e in entry_points(group='cachelayer')}\n"
            "assert eps.get('rds') == 'cachelayer_rds', eps\n"
            "import cachelayer_rds.drivers, cachelayer_rds.iam, pg8000.native, pymysql\n"
            "print(cachelayer_rds.drivers.__file__)\n"
        )
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        imported = subprocess.run(
            [sys.executable, "-S", "-c", code, str(root)], capture_output=True, text=True, env=env
        )
        assert imported.returncode == 0, imported.stderr
        assert imported.stdout.startswith(str(root))
