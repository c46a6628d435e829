"""Lambda targets a layer can be built for: runtimes, architectures and their wheel tags."""

from __future__ import annotations

from typing import Dict, List, Tuple

import attrs

from cachelayer.layer_builder.errors import LayerBuildError

# Python runtimes Lambda offers, with the glibc of the Amazon Linux they run on: 3.9-3.11 on
# Amazon Linux 2 (glibc 2.26), 3.12+ on Amazon Linux 2023 (glibc 2.34). The glibc bounds which
# manylinux wheels run there.
RUNTIMES: Dict[str, Tuple[int, int]] = {
    "python3.9": (2, 26),
    "python3.10": (2, 26),
    "python3.11": (2, 26),
    "python3.12": (2, 34),
    "python3.13": (2, 34),
}

# Lambda's architecture names and the machine names wheels are tagged with.
ARCHITECTURES: Dict[str, str] = {"x86_64": "x86_64", "arm64": "aarch64"}

# ELF e_machine values, to check what a built layer really carries.
ELF_MACHINES: Dict[str, int] = {"x86_64": 62, "arm64": 183}


@attrs.frozen
class Target:
    """One Lambda runtime on one architecture, as pip needs to see it."""

    runtime: str
    arch: str

    @classmethod
    def parse(cls, runtime: str, arch: str) -> Target:
        """Validate ``runtime`` and ``arch``; raise ``LayerBuildError`` naming the choices."""
        if runtime not in RUNTIMES:
            raise LayerBuildError(
                f"unknown runtime {runtime!r}: the extension runs on Lambda's Python runtimes, "
                f"pass --runtime one of {', '.join(RUNTIMES)}"
            )
        if arch not in ARCHITECTURES:
            hint = " (Lambda calls it arm64)" if arch in ("aarch64", "arm") else ""
            hint = " (Lambda calls it x86_64)" if arch in ("amd64", "x64", "x86-64") else hint
            raise LayerBuildError(
                f"unknown architecture {arch!r}{hint}: "
                f"pass --arch one of {', '.join(ARCHITECTURES)}"
            )
        return cls(runtime, arch)

    @property
    def python_version(self) -> str:
        """``3.12`` for ``python3.12``."""
        return self.runtime[len("python") :]

    @property
    def machine(self) -> str:
        """The machine name in wheel tags: ``x86_64`` or ``aarch64``."""
        return ARCHITECTURES[self.arch]

    @property
    def platforms(self) -> List[str]:
        """pip ``--platform`` values, most specific first.

        pip does not widen ``manylinux_2_X`` tags by itself, so every glibc from the runtime's
        down to 2.17 is listed, then the legacy ``manylinux2014`` alias.
        """
        major, minor = RUNTIMES[self.runtime]
        tags = [f"manylinux_{major}_{m}_{self.machine}" for m in range(minor, 16, -1)]
        tags.append(f"manylinux2014_{self.machine}")
        return tags

    @property
    def abi_tag(self) -> str:
        """``cp312`` for ``python3.12``."""
        return "cp" + self.python_version.replace(".", "")

    def describe(self) -> str:
        """Human text: ``python3.12 on arm64 (manylinux, glibc 2.34, aarch64)``."""
        major, minor = RUNTIMES[self.runtime]
        glibc = f"{major}.{minor}"
        wheels = f"manylinux wheels up to glibc {glibc}, {self.machine}"
        return f"{self.runtime} on {self.arch} ({wheels})"
