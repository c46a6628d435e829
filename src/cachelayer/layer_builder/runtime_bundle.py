"""A CPython and its C library, from Debian's packages, bundled under /opt for any Lambda runtime.

The standalone layer must run on Amazon Linux 2 (glibc 2.26) and 2023 (glibc 2.34) images that
may have no Python at all, so it carries Debian 12's ``python3.11`` with the glibc, OpenSSL and
other libraries it was built against. The packages are fetched with ``apt-get download`` (for
either architecture: arm64 needs ``dpkg --add-architecture arm64``), unpacked with ``dpkg-deb``,
and every ELF file is patched with ``patchelf``: the interpreter's PT_INTERP names the bundled
``ld-linux`` at its ``/opt`` path and every object gets an absolute DT_RPATH (not RUNPATH, which
would lose to Lambda's ``LD_LIBRARY_PATH``) pointing at the bundled libraries. The bundle runs
at build time as a ``StagedInterpreter`` (``staged.py``).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

import attrs

from cachelayer.layer_builder.debian import CA_PACKAGE, PACKAGES, Deb, need_tool, run_tool
from cachelayer.layer_builder.elf import LAYER_ROOT, elf_interpreter, elf_machine, needed_libraries
from cachelayer.layer_builder.errors import LayerBuildError
from cachelayer.layer_builder.targets import BUNDLED_GLIBC as GLIBC
from cachelayer.layer_builder.targets import BUNDLED_PYTHON as PYTHON_VERSION

RUNTIME_DIR = "python-runtime"
"""The bundle's directory inside the layer's package directory: ``/opt/cachelayer/python-runtime``.
The hyphen keeps it from being importable from ``sys.path``'s ``/opt/cachelayer``."""

# Debian's multiarch triplets, and the dynamic loaders.
TRIPLET: Dict[str, str] = {"x86_64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu"}
LOADER: Dict[str, str] = {"x86_64": "ld-linux-x86-64.so.2", "arm64": "ld-linux-aarch64.so.1"}
QEMU: Dict[str, Tuple[str, ...]] = {"arm64": ("qemu-aarch64-static", "qemu-aarch64")}
HOST_ARCH: Dict[str, str] = {"x86_64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}

CA_FILE = "ssl/cert.pem"
"""The bundled CA file, relative to the bundle: the launcher points ``SSL_CERT_FILE`` at it, since
Amazon Linux keeps its own at ``/etc/pki/tls/certs/ca-bundle.crt`` where Debian's OpenSSL never
looks."""

# Top-level stdlib modules always kept: codecs looked up by name at run time, and what the
# interpreter needs before any user code runs.
ALWAYS_KEEP = frozenset({"encodings", "os", "site", "_sitebuiltins", "_collections_abc"})

# Never worth shipping, whatever imports them during the probe.
NEVER_KEEP = frozenset(
    {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "pydoc_data"}
)


@attrs.frozen
class BundleReport:
    """What the bundle holds and what pruning it saved, for the build output and layer.json."""

    version: str
    debs: Tuple[Deb, ...]
    stdlib_before: int
    stdlib_after: int
    modules_kept: Tuple[str, ...]
    libraries: Tuple[str, ...]
    tools: Mapping[str, str]

    def metadata(self, arch: str) -> Dict[str, Any]:
        """The ``interpreter`` section of ``layer.json``."""
        return {
            "implementation": "CPython",
            "version": self.version,
            "path": f"{LAYER_ROOT}/cachelayer/{RUNTIME_DIR}/bin/python{PYTHON_VERSION}",
            "loader": f"{LAYER_ROOT}/cachelayer/{RUNTIME_DIR}/lib/{LOADER[arch]}",
            "libc": "glibc {}.{}".format(*GLIBC),
            "source": "Debian 12 (bookworm) packages, apt-get download",
            "packages": [d.record() for d in self.debs],
            "libraries": list(self.libraries),
            "stdlib_bytes_before_pruning": self.stdlib_before,
            "stdlib_bytes_after_pruning": self.stdlib_after,
            "stdlib_modules_kept": list(self.modules_kept),
            "ca_file": f"{LAYER_ROOT}/cachelayer/{RUNTIME_DIR}/{CA_FILE}",
            "tools": dict(self.tools),
        }


# -- the bundle -------------------------------------------------------------------------------


@attrs.define
class RuntimeBundle:
    """Assembles the bundle for ``arch`` under ``<site>/python-runtime`` and prunes it.
    ``progress`` gets one human line per step."""

    arch: str
    site: Path
    _progress: Callable[[str], None] = lambda line: None
    _library_dirs: List[Path] = attrs.field(factory=list)
    _unpacked: Path = Path("/nonexistent")
    debs: Tuple[Deb, ...] = ()

    @property
    def root(self) -> Path:
        """The bundle's directory in the stage (``/opt/cachelayer/python-runtime`` on Lambda)."""
        return self.site / RUNTIME_DIR

    @property
    def lib(self) -> Path:
        return self.root / "lib"

    @property
    def stdlib(self) -> Path:
        return self.lib / f"python{PYTHON_VERSION}"

    @property
    def python(self) -> Path:
        return self.root / "bin" / f"python{PYTHON_VERSION}"

    @property
    def unpacked(self) -> Path:
        """Where the Debian packages were unpacked (the full standard library is there)."""
        return self._unpacked

    @property
    def opt_lib(self) -> str:
        """The bundled libraries' directory as Lambda mounts it."""
        return f"{LAYER_ROOT}/cachelayer/{RUNTIME_DIR}/lib"

    def assemble(self, debs: Sequence[Deb], work: Path) -> None:
        """Unpack ``debs``, lay out interpreter, stdlib, libraries and CA file; patch the ELFs."""
        patchelf = need_tool("patchelf", "patchelf")
        unpacked = self._unpacked = work / "debs"
        self.debs = tuple(debs)
        for deb in debs:
            run_tool(["dpkg-deb", "-x", str(deb.path), str(unpacked)], what=f"unpacking {deb.name}")
        triplet = TRIPLET[self.arch]
        self.lib.mkdir(parents=True)
        (self.root / "bin").mkdir()
        shutil.copy2(unpacked / "usr" / "bin" / f"python{PYTHON_VERSION}", self.python)
        shutil.copytree(
            unpacked / "usr" / "lib" / f"python{PYTHON_VERSION}",
            self.stdlib,
            symlinks=False,
            ignore=shutil.ignore_patterns("__pycache__", *NEVER_KEEP),
        )
        # Debian splits dist-packages out; it is empty here and never on sys.path with -S.
        shutil.rmtree(self.stdlib / "dist-packages", ignore_errors=True)
        self._library_dirs = [unpacked / "lib" / triplet, unpacked / "usr" / "lib" / triplet]
        loader = self._find_library(LOADER[self.arch])
        shutil.copyfile(loader, self.lib / LOADER[self.arch])
        (self.lib / LOADER[self.arch]).chmod(0o755)
        self._drop_unbundled_modules(patchelf)
        self._copy_closure(patchelf)
        self._write_ca_file(unpacked)
        self._copy_licenses(unpacked, debs)
        self._patch(patchelf)

    def _find_library(self, soname: str) -> Path:
        for d in self._library_dirs:
            if (d / soname).exists():
                return (d / soname).resolve()
        raise LayerBuildError(
            f"the bundle needs {soname}, which none of the Debian packages "
            f"({', '.join(PACKAGES)}) provides for {self.arch}"
        )

    def _resolvable(self, patchelf: str, path: Path, seen: Dict[str, bool]) -> bool:
        """Whether every library ``path`` needs, transitively, is in the bundle's packages."""
        for soname in needed_libraries(patchelf, path):
            if soname not in seen:
                seen[soname] = False  # a cycle resolves to what the rest of it says
                found = next(
                    (d / soname for d in self._library_dirs if (d / soname).exists()), None
                )
                seen[soname] = found is not None and self._resolvable(patchelf, found, seen)
            if not seen[soname]:
                return False
        return True

    def _drop_unbundled_modules(self, patchelf: str) -> None:
        """Remove extension modules whose libraries the bundle does not carry (readline,
        curses, dbm, sqlite3, nis, crypt): the extension imports none of them."""
        seen: Dict[str, bool] = {}
        dropped = []
        for path in sorted((self.stdlib / "lib-dynload").glob("*.so")):
            if not self._resolvable(patchelf, path, seen):
                path.unlink()
                dropped.append(path.name.split(".", 1)[0])
        if dropped:
            self._progress(
                "      not bundled (their libraries are not in the packages): " + ", ".join(dropped)
            )

    def _elf_roots(self) -> List[Path]:
        """The ELF files the bundle runs: the interpreter and its extension modules."""
        dynload = self.stdlib / "lib-dynload"
        return [self.python, *sorted(dynload.glob("*.so"))]

    def _package_elf_files(self) -> List[Path]:
        """Native code of the layer's wheels (outside the bundle itself)."""
        return [
            p
            for p in sorted(self.site.rglob("*"))
            if RUNTIME_DIR not in p.relative_to(self.site).parts[:1]
            and p.is_file()
            and not p.is_symlink()
            and elf_machine(p) is not None
        ]

    def _copy_closure(self, patchelf: str) -> None:
        """Copy into ``lib/`` exactly the shared libraries the kept ELF files and the wheels'
        native code need (those a wheel carries itself, in its ``*.libs``, excepted)."""
        package_elves = self._package_elf_files()
        pending = [*self._elf_roots(), *package_elves]
        seen: Set[str] = {p.name for p in package_elves}
        while pending:
            for soname in needed_libraries(patchelf, pending.pop()):
                if soname in seen:
                    continue
                seen.add(soname)
                target = self.lib / soname
                if not target.exists():
                    shutil.copyfile(self._find_library(soname), target)
                pending.append(target)

    def prune_libraries(self, patchelf: Optional[str] = None) -> None:
        """Remove bundled libraries nothing kept needs any more (after the stdlib is pruned)."""
        patchelf = patchelf or need_tool("patchelf", "patchelf")
        needed: Set[str] = {LOADER[self.arch]}
        package_elves = self._package_elf_files()
        needed.update(p.name for p in package_elves)
        pending = [*self._elf_roots(), *package_elves]
        while pending:
            for soname in needed_libraries(patchelf, pending.pop()):
                if soname not in needed:
                    needed.add(soname)
                    pending.append(self.lib / soname)
        for path in sorted(self.lib.iterdir()):
            if path.is_file() and path.name not in needed:
                path.unlink()

    def _write_ca_file(self, unpacked: Path) -> None:
        certs = sorted((unpacked / "usr" / "share" / "ca-certificates" / "mozilla").glob("*.crt"))
        if not certs:
            raise LayerBuildError(f"the {CA_PACKAGE} package holds no certificates")
        dest = self.root / CA_FILE
        dest.parent.mkdir(parents=True)
        dest.write_bytes(b"".join(c.read_bytes().rstrip(b"\n") + b"\n" for c in certs))

    def _copy_licenses(self, unpacked: Path, debs: Sequence[Deb]) -> None:
        """Debian's copyright file of each package: the bundle redistributes their binaries."""
        dest = self.root / "licenses"
        dest.mkdir()
        for deb in debs:
            src = unpacked / "usr" / "share" / "doc" / deb.name / "copyright"
            if src.is_file():
                shutil.copyfile(src, dest / f"{deb.name}.copyright")

    def _patch(self, patchelf: str) -> None:
        """PT_INTERP of the interpreter to the bundled loader; DT_RPATH on every object."""
        interp = f"{self.opt_lib}/{LOADER[self.arch]}"
        run_tool(
            [
                patchelf,
                "--set-interpreter",
                interp,
                "--force-rpath",
                "--set-rpath",
                self.opt_lib,
                str(self.python),
            ],
            what="patching the interpreter",
        )
        for path in [*sorted(self.lib.iterdir()), *self._elf_roots()[1:]]:
            if path.name == LOADER[self.arch] or elf_machine(path) is None:
                continue
            # libc.so.6 is also a program (it prints its version) and names the system loader.
            own_interp = ["--set-interpreter", interp] if elf_interpreter(path) else []
            run_tool(
                [patchelf, *own_interp, "--force-rpath", "--set-rpath", self.opt_lib, str(path)],
                what=f"patching {path.name}",
            )
        # A wheel's own RUNPATH ($ORIGIN/../pkg.libs) would make the loader skip the
        # interpreter's RPATH for that object's libraries: keep its entries, add the bundle's.
        for path in self._package_elf_files():
            old = run_tool([patchelf, "--print-rpath", str(path)], what=f"reading {path.name}")
            entries = [e for e in old.stdout.strip().split(":") if e and e != self.opt_lib]
            run_tool(
                [
                    patchelf,
                    "--force-rpath",
                    "--set-rpath",
                    ":".join([*entries, self.opt_lib]),
                    str(path),
                ],
                what=f"patching {path.relative_to(self.site)}",
            )

    def prune_stdlib(self, used: Iterable[str]) -> Tuple[int, int, List[str]]:
        """Keep only the top-level stdlib modules in ``used`` (plus ``ALWAYS_KEEP``) and the
        extension modules they need; return (bytes before, bytes after, modules kept)."""
        keep = (set(used) | ALWAYS_KEEP) - NEVER_KEEP
        before = _tree_bytes(self.stdlib)
        dynload = self.stdlib / "lib-dynload"
        for path in sorted(self.stdlib.iterdir()):
            if path == dynload:
                continue
            name = path.name[:-3] if path.name.endswith(".py") else path.name
            if name not in keep:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        for path in sorted(dynload.iterdir()):
            if path.name.split(".", 1)[0] not in keep:
                path.unlink()
        after = _tree_bytes(self.stdlib)
        kept = sorted(
            p.name[:-3] if p.name.endswith(".py") else p.name.split(".", 1)[0]
            for p in [*self.stdlib.iterdir(), *dynload.iterdir()]
            if p != dynload
        )
        return before, after, kept


def _tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
