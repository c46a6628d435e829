"""ELF files: their machine and interpreter, read from the headers, and the layer's check."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

from cachelayer.layer_builder.debian import run_tool
from cachelayer.layer_builder.errors import LayerBuildError

LAYER_ROOT = "/opt"
"""Where Lambda mounts a layer."""

_ELF_MAGIC = b"\x7fELF"


def elf_machine(path: Path) -> Optional[int]:
    """The ELF ``e_machine`` of ``path``, or None when it is not an ELF file."""
    try:
        with open(path, "rb") as f:
            head = f.read(20)
    except OSError:
        return None
    if len(head) < 20 or head[:4] != _ELF_MAGIC:
        return None
    if head[5] == 1:  # EI_DATA: little-endian
        return int.from_bytes(head[18:20], "little")
    return int.from_bytes(head[18:20], "big")


def elf_interpreter(path: Path) -> Optional[str]:
    """The PT_INTERP of an ELF file (64-bit little-endian, what Lambda runs), or None."""
    with open(path, "rb") as f:
        data = f.read(1 << 16)
    if data[:4] != _ELF_MAGIC or data[4] != 2:
        return None
    phoff = int.from_bytes(data[32:40], "little")
    phentsize = int.from_bytes(data[54:56], "little")
    phnum = int.from_bytes(data[56:58], "little")
    for i in range(phnum):
        at = phoff + i * phentsize
        if int.from_bytes(data[at : at + 4], "little") == 3:  # PT_INTERP
            offset = int.from_bytes(data[at + 8 : at + 16], "little")
            size = int.from_bytes(data[at + 32 : at + 40], "little")
            with open(path, "rb") as f:
                f.seek(offset)
                return f.read(size).rstrip(b"\0").decode()
    return None


def check_elf_files(stage: Path, machine: int) -> int:
    """Every ELF file under ``stage`` is for ``machine`` and names an ELF interpreter (if any)
    inside the layer; return how many ELF files there are. Raise ``LayerBuildError`` otherwise."""
    count = 0
    for path in sorted(p for p in stage.rglob("*") if p.is_file() and not p.is_symlink()):
        found = elf_machine(path)
        if found is None:
            continue
        count += 1
        rel = path.relative_to(stage)
        if found != machine:
            raise LayerBuildError(
                f"{rel}: ELF machine {found}, not the target's {machine}; a package installed "
                "a wheel or library for another architecture"
            )
        interp = elf_interpreter(path)
        if interp is not None:
            inside = stage / os.path.relpath(interp, LAYER_ROOT)
            if not interp.startswith(LAYER_ROOT + "/") or not inside.is_file():
                raise LayerBuildError(
                    f"{rel}: its ELF interpreter {interp} is not inside the layer, so it would "
                    "depend on the image's C library"
                )
    return count


def needed_libraries(patchelf: str, path: Path) -> List[str]:
    """The DT_NEEDED sonames of ``path``, as ``patchelf --print-needed`` lists them."""
    done = run_tool([patchelf, "--print-needed", str(path)], what=f"reading {path.name}")
    return [line.strip() for line in done.stdout.splitlines() if line.strip()]
