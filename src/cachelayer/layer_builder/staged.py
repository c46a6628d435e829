"""The bundled interpreter run at build time: to record what the layer imports, and to compile.

It runs through its own ``ld-linux`` (``--library-path``), and under ``qemu-aarch64-static`` for
arm64 on an x86_64 machine, so no binfmt_misc registration and no ``/opt`` on the build machine
are needed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import attrs

from cachelayer.layer_builder.bytecode import WARM_SCRIPT, startup_caches_outcome
from cachelayer.layer_builder.elf import LAYER_ROOT
from cachelayer.layer_builder.errors import LayerBuildError
from cachelayer.layer_builder.runtime_bundle import (
    CA_FILE,
    HOST_ARCH,
    LOADER,
    QEMU,
    RUNTIME_DIR,
    RuntimeBundle,
)
from cachelayer.layer_builder.targets import BUNDLED_PYTHON as PYTHON_VERSION


@attrs.frozen
class StagedInterpreter:
    """The interpreter of an assembled ``bundle``, run on this machine from the stage."""

    bundle: RuntimeBundle
    environ: Optional[Mapping[str, str]] = None

    def emulator(self) -> Optional[str]:
        """qemu-user to run the bundle's machine code on this machine, or None when native."""
        if HOST_ARCH.get(os.uname().machine) == self.bundle.arch:
            return None
        names = QEMU.get(self.bundle.arch, ())
        found = next((shutil.which(n) for n in names if shutil.which(n)), None)
        if found is None:
            raise LayerBuildError(
                f"building an {self.bundle.arch} layer on {os.uname().machine} runs the bundled "
                f"interpreter under qemu-user, and none of {', '.join(names) or '-'} is on "
                "PATH: apt-get install qemu-user-static (scripts/ci/install-standalone.sh)"
            )
        return found

    def command(self) -> List[str]:
        """argv prefix that runs the staged interpreter on this machine: through its own loader
        (the ``/opt`` paths do not exist here), under qemu-user for another architecture."""
        emulator = self.emulator()
        return [
            *([emulator] if emulator else []),
            str(self.bundle.lib / LOADER[self.bundle.arch]),
            "--library-path",
            str(self.bundle.lib),
            str(self.bundle.python),
        ]

    def environment(self) -> Dict[str, str]:
        """A clean environment for the staged interpreter: only its home and a fixed hash seed."""
        env = {
            k: v
            for k, v in (os.environ if self.environ is None else self.environ).items()
            if not k.startswith(("PYTHON", "LD_")) and k in ("PATH", "HOME", "TMPDIR", "LANG")
        }
        env.update(
            {
                "PYTHONHOME": str(self.bundle.root),
                "PYTHONHASHSEED": "0",
                "PYTHONDONTWRITEBYTECODE": "1",
                "SSL_CERT_FILE": str(self.bundle.root / CA_FILE),
            }
        )
        return env

    def run(
        self,
        args: Sequence[str],
        *,
        what: str,
        timeout: float = 900,
        ok: Sequence[int] = (0,),
        full_stdlib: bool = False,
    ) -> str:
        """Run the staged interpreter with ``args`` (``-S`` added); return its stdout.

        ``full_stdlib``: put the unpruned standard library on its path (the build's tools, such
        as compileall, are pruned from the bundle). An exit code outside ``ok`` raises
        ``LayerBuildError`` with the end of its stderr.
        """
        cmd = [*self.command(), "-S", *args]
        env = self.environment()
        if full_stdlib:
            env["PYTHONPATH"] = str(
                self.bundle.unpacked / "usr" / "lib" / f"python{PYTHON_VERSION}"
            )
        try:
            done = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                env=env,
                timeout=timeout,
                cwd=str(self.bundle.site.parent),
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise LayerBuildError(
                f"{what}: running the bundled interpreter failed: {exc}"
            ) from None
        if done.returncode not in ok:
            tail = (done.stderr.strip() or done.stdout.strip())[-2000:]
            raise LayerBuildError(
                f"{what}: the bundled interpreter exited {done.returncode}:\n{tail}"
            )
        return done.stdout

    def record_imports(self) -> Dict[str, Any]:
        """Run the import probe in the bundled interpreter against the layer's own packages."""
        script = Path(__file__).with_name("import_probe.py")
        out = self.run(
            [str(script), str(self.bundle.site)], what="recording what the extension imports"
        )
        found: Dict[str, Any] = json.loads(out)
        return found

    def compile_stdlib(self) -> None:
        """Compile the kept stdlib to sourceless bytecode (``os.pyc`` beside where ``os.py``
        was), recorded as its ``/opt`` path, with the bundled interpreter itself."""
        self.run(
            [
                "-m",
                "compileall",
                "-q",
                "-b",
                "-f",
                "--invalidation-mode",
                "unchecked-hash",
                "-x",
                r"lib-dynload",
                "-s",
                str(self.bundle.site.parent),
                "-p",
                LAYER_ROOT,
                str(self.bundle.stdlib),
            ],
            what="compiling the bundled standard library",
            full_stdlib=True,
        )
        for source in sorted(self.bundle.stdlib.rglob("*.py")):
            if source.with_suffix(".pyc").is_file():
                source.unlink()

    def compile_packages(self) -> None:
        """Compile the layer's packages (``__pycache__``) with the bundled interpreter."""
        # compileall exits 1 when some file does not compile (a package's Python 2 leftovers):
        # those stay source only, as an installer leaves them.
        self.run(
            [
                "-m",
                "compileall",
                "-q",
                "-f",
                "--invalidation-mode",
                "unchecked-hash",
                "-x",
                re.escape(RUNTIME_DIR),
                "-s",
                str(self.bundle.site.parent),
                "-p",
                LAYER_ROOT,
                str(self.bundle.site),
            ],
            what="compiling the layer's packages",
            ok=(0, 1),
            full_stdlib=True,
        )

    def warm_startup_caches(self) -> str:
        """Write the layer's startup caches with the bundled interpreter (see
        ``bytecode.warm_startup_caches``); returns the build's progress line."""
        try:
            out = self.run(
                ["-c", WARM_SCRIPT, str(self.bundle.site)], what="warming the startup caches"
            )
        except LayerBuildError as exc:
            return startup_caches_outcome(1, "", str(exc))
        return startup_caches_outcome(0, out, "")
