"""Empty roots for running a standalone layer as Lambda would, with nothing from the build machine.

A root holds only a static ``/bin/sh`` (busybox), ``/proc`` (mounted in a private mount namespace
when a process starts there), ``/dev`` nodes, ``/tmp``, ``/var/task`` and the layer at ``/opt``.
Processes enter it with ``unshare -m --mount-proc`` and ``chroot``: they keep the host's network,
so the emulator's APIs, moto and the extension meet on loopback. Needs root.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import zipfile
from pathlib import Path
from typing import List, Mapping, Optional, Sequence

from cachelayer.layer_builder.runtime_bundle import RUNTIME_DIR as BUNDLE
from cachelayer.layer_builder.runtime_bundle import elf_interpreter

# (name, major, minor) of the character devices a process may open.
_DEVICES = (("null", 1, 3), ("zero", 1, 5), ("random", 1, 8), ("urandom", 1, 9))


def static_busybox() -> Optional[str]:
    """Path of a statically linked busybox (Debian's busybox-static), or None."""
    found = shutil.which("busybox")
    if found is None:
        return None
    return found if elf_interpreter(Path(found).resolve()) is None else None


def unavailable_reason() -> Optional[str]:
    """Why an empty root cannot be made on this machine, or None when it can."""
    if os.geteuid() != 0:
        return "needs root (chroot, mount namespace, device nodes)"
    for tool in ("unshare", "chroot"):
        if shutil.which(tool) is None:
            return f"{tool} not found (util-linux / coreutils)"
    if static_busybox() is None:
        return (
            "no static busybox (apt-get install busybox-static; scripts/ci/install-standalone.sh)"
        )
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot create a mount namespace here: {probe.stderr.strip()}"
    return None


def make_root(dest: Path, layer: Path, config_yaml: Optional[str] = None) -> Path:
    """Create an empty root at ``dest`` with ``layer`` (a zip or a directory) unpacked at /opt."""
    for d in ("bin", "dev", "proc", "tmp", "opt", "var/task", "etc"):
        (dest / d).mkdir(parents=True, exist_ok=True)
    (dest / "tmp").chmod(0o1777)
    busybox = static_busybox()
    if busybox is None:
        raise RuntimeError("no static busybox: apt-get install busybox-static")
    shutil.copyfile(busybox, dest / "bin" / "sh")
    (dest / "bin" / "sh").chmod(0o755)
    for name, major, minor in _DEVICES:
        node = dest / "dev" / name
        if not node.exists():
            os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
    if layer.is_dir():
        shutil.copytree(layer, dest / "opt", dirs_exist_ok=True, symlinks=True)
    else:
        with zipfile.ZipFile(layer) as zf:
            for info in zf.infolist():
                target = dest / "opt" / info.filename
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(zf.read(info))
                target.chmod((info.external_attr >> 16) & 0o777 or 0o644)
    if config_yaml is not None:
        (dest / "var" / "task" / "config.yaml").write_text(config_yaml)
    return dest


def add_program(root: Path, program: str) -> Path:
    """Copy ``program`` and the shared libraries ``ldd`` says it loads into the root, at the
    same paths; return its path inside the root."""
    path = Path(shutil.which(program) or program).resolve()
    copy_with_libraries(root, [path])
    return Path("/") / path.relative_to("/")


def copy_with_libraries(root: Path, files: Sequence[Path]) -> None:
    """Copy ELF ``files`` and their libraries (per ``ldd``) into ``root`` at the same paths."""
    for path in files:
        _copy_into(root, path)
        done = subprocess.run(["ldd", str(path)], capture_output=True, text=True)
        for line in done.stdout.splitlines():
            parts = line.split()
            lib = parts[2] if "=>" in parts and len(parts) > 2 else parts[0] if parts else ""
            if lib.startswith("/"):
                _copy_into(root, Path(lib))


def _copy_into(root: Path, path: Path) -> None:
    target = root / path.relative_to("/")
    if target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(path.resolve(), target)


def enter(root: Path, argv: Sequence[str], cwd: str = "/") -> List[str]:
    """argv that runs ``argv`` inside ``root`` (private mount namespace, /proc mounted), in
    ``cwd``. The last step is an ``exec``, so signals reach the program itself."""
    return [
        shutil.which("unshare") or "unshare",
        "-m",
        f"--mount-proc={root / 'proc'}",
        shutil.which("chroot") or "chroot",
        str(root),
        "/bin/sh",
        "-c",
        'cd "$0" && exec "$@"',
        cwd,
        *argv,
    ]


def write_wrapper(
    directory: Path, name: str, argv: Sequence[str], env: Optional[Mapping[str, str]] = None
) -> Path:
    """An executable ``directory/name`` that execs ``argv`` with ``env`` added (a host-side
    extension entry that the emulator starts; the program it names runs inside a root)."""
    directory.mkdir(parents=True, exist_ok=True)
    assigned = [f"{k}={v}" for k, v in sorted((env or {}).items())]
    words = ["env", *assigned, *argv] if assigned else list(argv)
    quoted = " ".join("'" + a.replace("'", "'\"'\"'") + "'" for a in words)
    path = directory / name
    path.write_text(f"#!/bin/sh\nexec {quoted}\n")
    path.chmod(0o755)
    return path


def extension_argv(root: Path, arch: str) -> List[str]:
    """argv, inside ``root``, that starts the layer's extension for ``arch``.

    Natively that is the launcher. For another architecture the kernel would need binfmt_misc
    (a machine-wide setting this does not touch), so qemu-user is copied into the root and run
    on the bundled interpreter with the launcher's own arguments, in the environment the
    launcher would give it (set by the caller: no LD_*, no PYTHON*, SSL_CERT_FILE).
    """
    host = {"x86_64": "x86_64", "aarch64": "arm64"}.get(os.uname().machine)
    if arch == host:
        return ["/opt/extensions/cachelayer"]
    qemu = shutil.which("qemu-aarch64-static") if arch == "arm64" else None
    if qemu is None:
        raise RuntimeError(f"cannot run {arch} code here: apt-get install qemu-user-static")
    shutil.copyfile(qemu, root / "bin" / "qemu-aarch64-static")
    (root / "bin" / "qemu-aarch64-static").chmod(0o755)
    launcher = (root / "opt" / "extensions" / "cachelayer").read_text()
    snippet = launcher.split("-c '", 1)[1].split("'", 1)[0]
    return [
        "/bin/qemu-aarch64-static",
        f"/opt/cachelayer/{BUNDLE}/bin/python3.11",
        "-I",
        "-S",
        "-u",
        "-B",
        "-c",
        snippet,
        "/opt/cachelayer",
        "--name",
        "cachelayer",
    ]


LAUNCHER_ENV = {"SSL_CERT_FILE": f"/opt/cachelayer/{BUNDLE}/ssl/cert.pem"}
"""What the launcher exports for the bundled interpreter (it also unsets LD_* and PYTHON*)."""
