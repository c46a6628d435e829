"""Lambda targets a layer can be built for: runtimes, architectures and their wheel tags."""

from __future__ import annotations

from typing import Dict, List, Tuple

import attrs

from cachelayer.layer_builder.errors import LayerBuildError

# The standalone layer's interpreter and C library (Debian 12's); see runtime_bundle.
BUNDLED_PYTHON = "3.11"
BUNDLED_GLIBC = (2, 36)

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

# Every other Lambda runtime gets the standalone layer (its own CPython and C library), as does
# ``any``; its wheels are those of the bundled interpreter.
STANDALONE_RUNTIMES: Tuple[str, ...] = (
    "nodejs22.x",
    "nodejs20.x",
    "nodejs18.x",
    "java21",
    "java17",
    "java11",
    "java8.al2",
    "dotnet8",
    "ruby3.4",
    "ruby3.3",
    "ruby3.2",
    "provided.al2023",
    "provided.al2",
)
ANY_RUNTIME = "any"
# What a layer built with ``--runtime any`` declares (PublishLayerVersion takes at most 15).
ANY_COMPATIBLE: Tuple[str, ...] = (
    "nodejs22.x",
    "nodejs20.x",
    "python3.13",
    "python3.12",
    "python3.11",
    "python3.10",
    "java21",
    "java17",
    "dotnet8",
    "ruby3.4",
    "ruby3.3",
    "provided.al2023",
    "provided.al2",
)
ALL_RUNTIMES: Tuple[str, ...] = (*RUNTIMES, *STANDALONE_RUNTIMES, ANY_RUNTIME)

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
        if runtime not in ALL_RUNTIMES:
            raise LayerBuildError(
                f"unknown runtime {runtime!r}: pass --runtime one of {', '.join(RUNTIMES)} (a "
                f"layer for that Python), or {', '.join(STANDALONE_RUNTIMES)} or "
                f"{ANY_RUNTIME} (a layer carrying its own Python, for any runtime)"
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
    def standalone(self) -> bool:
        """The layer carries its own CPython and C library (every runtime but Python's)."""
        return self.runtime not in RUNTIMES

    @property
    def python_version(self) -> str:
        """``3.12`` for ``python3.12``; the bundled interpreter's for a standalone layer."""
        if self.standalone:
            return BUNDLED_PYTHON
        return self.runtime[len("python") :]

    @property
    def glibc(self) -> Tuple[int, int]:
        """The glibc the layer's native code runs on: the image's, or the bundled one."""
        return BUNDLED_GLIBC if self.standalone else RUNTIMES[self.runtime]

    @property
    def compatible_runtimes(self) -> List[str]:
        """What ``CompatibleRuntimes`` says when the layer is published."""
        return list(ANY_COMPATIBLE) if self.runtime == ANY_RUNTIME else [self.runtime]

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
        major, minor = self.glibc
        tags = [f"manylinux_{major}_{m}_{self.machine}" for m in range(minor, 16, -1)]
        tags.append(f"manylinux2014_{self.machine}")
        return tags

    @property
    def abi_tag(self) -> str:
        """``cp312`` for ``python3.12``."""
        return "cp" + self.python_version.replace(".", "")

    def describe(self) -> str:
        """Human text: ``python3.12 on arm64 (manylinux, glibc 2.34, aarch64)``."""
        major, minor = self.glibc
        glibc = f"{major}.{minor}"
        wheels = f"manylinux wheels up to glibc {glibc}, {self.machine}"
        if self.standalone:
            wheels = f"bundled CPython {self.python_version}, " + wheels
        return f"{self.runtime} on {self.arch} ({wheels})"
