"""The provider guide's "try it locally" commands, run as written from an empty folder in a
fresh virtual environment: the core installed from a checkout first, then the package."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "writing-providers.md"


def try_it_locally_block() -> str:
    """The first ``sh`` block of section 8 of the guide."""
    section = GUIDE.read_text().split("## 8. Try it locally", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, flags=re.S)
    assert block is not None, "section 8 of the guide has no sh block"
    return block.group(1)


def test_block_installs_the_core_before_the_package() -> None:
    """The guide says where the core comes from before `pip install -e '.[test]'` (the core is
    not on the package index, so the package's dependency cannot be resolved from there)."""
    lines = [line.split("#")[0].strip() for line in try_it_locally_block().splitlines()]
    core = next(i for i, line in enumerate(lines) if line.startswith('pip install "$CACHELAYER'))
    package = lines.index("pip install -e '.[test]'")
    assert core < package


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_guide_commands_work_from_an_empty_folder(tmp_path: Path) -> None:
    """Copy the template (the guide's section 1) into an empty folder, then run section 8's
    commands as written, with CACHELAYER pointing at a copy of this checkout: the package's
    tests pass, `cachelayer providers` lists it and `check-config` accepts its section."""
    checkout = tmp_path / "cachelayer"
    checkout.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, checkout / name)
    shutil.copytree(
        ROOT / "src", checkout / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    project = tmp_path / "cachelayer-example"
    shutil.copytree(
        ROOT / "contrib" / "template",
        project,
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"),
    )
    (project / "config.yaml").write_text("example:\n  - name: /my/parameter\n")
    block = try_it_locally_block()
    script = re.sub(r"^CACHELAYER=\S+", f"CACHELAYER={checkout}", block, count=1, flags=re.M)
    assert script != block
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    # Outside this project's venv: the guide's python3 is the machine's.
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(str(ROOT / ".venv"))
    )
    env["CACHE_EXTENSION_AUTH"] = "none"
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=570,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "4 passed" in done.stdout
    rows = [line.split() for line in done.stdout.splitlines()]
    assert ["example", "/example", "ssm", "cachelayer-example", "0.1.0", "example"] in rows
    assert "config.yaml: OK" in done.stdout
