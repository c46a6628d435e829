"""A CPython and its C library, from Debian's packages, bundled under /opt for any Lambda runtime.

The standalone layer must run on Amazon Linux 2 (glibc 2.26) and 2023 (glibc 2.34) images that
may have no Python at all, so it carries Debian 12's ``python3.11`` with the glibc, OpenSSL and
other libraries it was built against. The packages are fetched with ``apt-get download`` (for
either architecture: arm64 needs ``dpkg --add-architecture arm64``), unpacked with ``dpkg-deb``,
and every ELF file is patched with ``patchelf``: the interpreter's PT_INTERP names the bundled
``ld-linux`` at its ``/opt`` path and every object gets an absolute DT_RPATH (not RUNPATH, which
would lose to Lambda's ``LD_LIBRARY_PATH``) pointing at the bundled libraries.

At build time the bundled interpreter runs through its own ``ld-linux`` (``--library-path``), and
under ``qemu-aarch64-static`` for arm64 on an x86_64 machine, so no binfmt_misc registration and no
``/opt`` on the build machine are needed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

import attrs

from cachelayer.layer_builder.errors import LayerBuildError
from cachelayer.layer_builder.targets import BUNDLED_GLIBC as GLIBC
from cachelayer.layer_builder.targets import BUNDLED_PYTHON as PYTHON_VERSION

RUNTIME_DIR = "python-runtime"
"""The bundle's directory inside the layer's package directory: ``/opt/cachelayer/python-runtime``.
The hyphen keeps it from being importable from ``sys.path``'s ``/opt/cachelayer``."""

LAYER_ROOT = "/opt"

# Debian's architecture names, multiarch triplets, and dynamic loaders.
DEBIAN_ARCH: Dict[str, str] = {"x86_64": "amd64", "arm64": "arm64"}
TRIPLET: Dict[str, str] = {"x86_64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu"}
LOADER: Dict[str, str] = {"x86_64": "ld-linux-x86-64.so.2", "arm64": "ld-linux-aarch64.so.1"}
QEMU: Dict[str, Tuple[str, ...]] = {"arm64": ("qemu-aarch64-static", "qemu-aarch64")}
HOST_ARCH: Dict[str, str] = {"x86_64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}

PACKAGES: Tuple[str, ...] = (
    "python3.11-minimal",
    "libpython3.11-minimal",
    "libpython3.11-stdlib",
    "libc6",
    "libssl3",
    "zlib1g",
    "libffi8",
    "libexpat1",
    "liblzma5",
    "libbz2-1.0",
    "libuuid1",
)
"""Debian packages the bundle is made of. Their shared libraries are kept only when an ELF file
the bundle keeps needs them (DT_NEEDED, resolved transitively)."""

CA_PACKAGE = "ca-certificates"
"""Mozilla's CA certificates (architecture ``all``), concatenated into the bundle's CA file."""

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

_ELF_MAGIC = b"\x7fELF"


@attrs.frozen
class Deb:
    """One downloaded Debian package."""

    name: str
    version: str
    architecture: str
    path: Path
    sha256: str

    def record(self) -> Dict[str, str]:
        """What ``layer.json`` says about it."""
        return {
            "name": self.name,
            "version": self.version,
            "architecture": self.architecture,
            "sha256": self.sha256,
        }


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


def default_cache_dir(environ: Optional[Mapping[str, str]] = None) -> Path:
    """Where downloaded .debs are kept between builds: ``$CACHELAYER_CACHE_DIR`` or
    ``$XDG_CACHE_HOME/cachelayer`` (``~/.cache/cachelayer``), subdirectory ``debs``."""
    env = os.environ if environ is None else environ
    if env.get("CACHELAYER_CACHE_DIR"):
        return Path(env["CACHELAYER_CACHE_DIR"]) / "debs"
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cachelayer" / "debs"


def _need_tool(name: str, package: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise LayerBuildError(
            f"{name} not found: building a layer with its own Python needs Debian's tools "
            f"(apt-get install {package}; scripts/ci/install-standalone.sh installs them all). "
            "On a machine that is not Debian, build inside a Debian 12 container: see "
            "deploy/README.md"
        )
    return found


def _run(cmd: Sequence[str], *, what: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(list(cmd), capture_output=True, text=True, **kw)
    except OSError as exc:
        raise LayerBuildError(f"{what}: cannot run {cmd[0]}: {exc}") from None
    if done.returncode != 0:
        tail = (done.stderr.strip() or done.stdout.strip())[-1500:]
        raise LayerBuildError(f"{what} failed ({' '.join(cmd[:3])} ...):\n{tail}")
    return done


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _candidate(package: str, env: Mapping[str, str]) -> Tuple[str, str]:
    """The version apt would download of ``package`` (``name:arch``) and its SHA256."""
    done = subprocess.run(
        ["apt-cache", "show", "--no-all-versions", package],
        capture_output=True,
        text=True,
        env=dict(env),
    )
    fields = dict(re.findall(r"^(Version|SHA256): (\S+)$", done.stdout, re.M))
    if done.returncode != 0 or "Version" not in fields:
        arch = package.rsplit(":", 1)[-1]
        hint = (
            f"; if apt has no {arch} package lists, run `dpkg --add-architecture {arch} && "
            "apt-get update` (scripts/ci/install-standalone.sh does)"
            if arch != package
            else "; run `apt-get update`"
        )
        raise LayerBuildError(
            f"apt knows no package {package}{hint}. The bundled Python comes from Debian 12 "
            "(bookworm); on another release or distribution build inside a debian:12 container "
            "(deploy/README.md)"
        )
    return fields["Version"], fields.get("SHA256", "")


def fetch_debs(
    arch: str,
    cache: Path,
    progress: Callable[[str], None],
    environ: Optional[Mapping[str, str]] = None,
) -> List[Deb]:
    """Download (or reuse from ``cache``) the bundle's packages for ``arch``; verify each SHA256."""
    _need_tool("apt-get", "apt")
    _need_tool("dpkg-deb", "dpkg")
    env = dict(os.environ if environ is None else environ)
    env["LC_ALL"] = "C"
    cache.mkdir(parents=True, exist_ok=True)
    wanted = [(p, DEBIAN_ARCH[arch]) for p in PACKAGES] + [(CA_PACKAGE, "all")]
    debs: List[Deb] = []
    missing: List[Tuple[str, str, str, str, Path]] = []
    for name, deb_arch in wanted:
        spec = f"{name}:{deb_arch}" if deb_arch != "all" else name
        version, sha = _candidate(spec, env)
        path = cache / f"{name}_{version.replace(':', '%3a')}_{deb_arch}.deb"
        if path.is_file() and (not sha or _sha256(path) == sha):
            debs.append(Deb(name, version, deb_arch, path, _sha256(path)))
        else:
            missing.append((name, spec, version, sha, path))
    if missing:
        progress(f"      downloading {len(missing)} Debian packages into {cache}")
        with tempfile.TemporaryDirectory(dir=cache, prefix="download-") as tmp:
            _run(
                ["apt-get", "download", "-q", *[f"{spec}={v}" for _, spec, v, _, _ in missing]],
                what="apt-get download",
                cwd=tmp,
                env=env,
            )
            got = {p.name.split("_", 1)[0]: p for p in Path(tmp).glob("*.deb")}
            for name, spec, version, sha, path in missing:
                if name not in got:
                    raise LayerBuildError(f"apt-get download gave no .deb for {spec}={version}")
                digest = _sha256(got[name])
                if sha and digest != sha:
                    raise LayerBuildError(
                        f"{spec}={version}: downloaded file's SHA256 {digest} is not the "
                        f"archive's {sha}; run `apt-get update` and build again"
                    )
                os.replace(got[name], path)
    else:
        progress(f"      Debian packages: all {len(wanted)} found in {cache}")
    by_name = {d.name: d for d in debs}
    for name, _spec, version, _sha, path in missing:
        by_name[name] = Deb(name, version, path.name.rsplit("_", 1)[1][:-4], path, _sha256(path))
    return [by_name[n] for n, _ in wanted]


# -- ELF files --------------------------------------------------------------------------------


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


def _needed(patchelf: str, path: Path) -> List[str]:
    done = _run([patchelf, "--print-needed", str(path)], what=f"reading {path.name}")
    return [line.strip() for line in done.stdout.splitlines() if line.strip()]


# -- the bundle -------------------------------------------------------------------------------


@attrs.define
class RuntimeBundle:
    """Assembles the bundle for ``arch`` under ``<site>/python-runtime`` and runs it at build
    time. ``progress`` gets one human line per step."""

    arch: str
    site: Path
    _progress: Callable[[str], None] = lambda line: None
    _environ: Optional[Mapping[str, str]] = None
    _version: str = ""
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
    def opt_lib(self) -> str:
        """The bundled libraries' directory as Lambda mounts it."""
        return f"{LAYER_ROOT}/cachelayer/{RUNTIME_DIR}/lib"

    def assemble(self, debs: Sequence[Deb], work: Path) -> None:
        """Unpack ``debs``, lay out interpreter, stdlib, libraries and CA file; patch the ELFs."""
        patchelf = _need_tool("patchelf", "patchelf")
        unpacked = self._unpacked = work / "debs"
        self.debs = tuple(debs)
        for deb in debs:
            _run(["dpkg-deb", "-x", str(deb.path), str(unpacked)], what=f"unpacking {deb.name}")
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
        for soname in _needed(patchelf, path):
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
            for soname in _needed(patchelf, pending.pop()):
                if soname in seen:
                    continue
                seen.add(soname)
                target = self.lib / soname
                if not target.exists():
                    shutil.copyfile(self._find_library(soname), target)
                pending.append(target)

    def prune_libraries(self, patchelf: Optional[str] = None) -> None:
        """Remove bundled libraries nothing kept needs any more (after the stdlib is pruned)."""
        patchelf = patchelf or _need_tool("patchelf", "patchelf")
        needed: Set[str] = {LOADER[self.arch]}
        package_elves = self._package_elf_files()
        needed.update(p.name for p in package_elves)
        pending = [*self._elf_roots(), *package_elves]
        while pending:
            for soname in _needed(patchelf, pending.pop()):
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
        _run(
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
            _run(
                [patchelf, *own_interp, "--force-rpath", "--set-rpath", self.opt_lib, str(path)],
                what=f"patching {path.name}",
            )
        # A wheel's own RUNPATH ($ORIGIN/../pkg.libs) would make the loader skip the
        # interpreter's RPATH for that object's libraries: keep its entries, add the bundle's.
        for path in self._package_elf_files():
            old = _run([patchelf, "--print-rpath", str(path)], what=f"reading {path.name}")
            entries = [e for e in old.stdout.strip().split(":") if e and e != self.opt_lib]
            _run(
                [
                    patchelf,
                    "--force-rpath",
                    "--set-rpath",
                    ":".join([*entries, self.opt_lib]),
                    str(path),
                ],
                what=f"patching {path.relative_to(self.site)}",
            )

    # -- running it at build time -----------------------------------------------------------

    def emulator(self) -> Optional[str]:
        """qemu-user to run the bundle's machine code on this machine, or None when native."""
        if HOST_ARCH.get(os.uname().machine) == self.arch:
            return None
        names = QEMU.get(self.arch, ())
        found = next((shutil.which(n) for n in names if shutil.which(n)), None)
        if found is None:
            raise LayerBuildError(
                f"building an {self.arch} layer on {os.uname().machine} runs the bundled "
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
            str(self.lib / LOADER[self.arch]),
            "--library-path",
            str(self.lib),
            str(self.python),
        ]

    def environment(self) -> Dict[str, str]:
        """A clean environment for the staged interpreter: only its home and a fixed hash seed."""
        env = {
            k: v
            for k, v in (os.environ if self._environ is None else self._environ).items()
            if not k.startswith(("PYTHON", "LD_")) and k in ("PATH", "HOME", "TMPDIR", "LANG")
        }
        env.update(
            {
                "PYTHONHOME": str(self.root),
                "PYTHONHASHSEED": "0",
                "PYTHONDONTWRITEBYTECODE": "1",
                "SSL_CERT_FILE": str(self.root / CA_FILE),
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
            env["PYTHONPATH"] = str(self._unpacked / "usr" / "lib" / f"python{PYTHON_VERSION}")
        try:
            done = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                env=env,
                timeout=timeout,
                cwd=str(self.site.parent),
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
        out = self.run([str(script), str(self.site)], what="recording what the extension imports")
        found: Dict[str, Any] = json.loads(out)
        self._version = found["version"]
        return found

    @property
    def version(self) -> str:
        """The bundled interpreter's full version, known once ``record_imports`` ran."""
        return self._version

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
                str(self.site.parent),
                "-p",
                LAYER_ROOT,
                str(self.stdlib),
            ],
            what="compiling the bundled standard library",
            full_stdlib=True,
        )
        for source in sorted(self.stdlib.rglob("*.py")):
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
                str(self.site.parent),
                "-p",
                LAYER_ROOT,
                str(self.site),
            ],
            what="compiling the layer's packages",
            ok=(0, 1),
            full_stdlib=True,
        )

    def warm_attrs_cache(self) -> str:
        """Write the layer's attrs code cache with the bundled interpreter (see
        ``bytecode.warm_attrs_cache``); returns the build's progress line."""
        from cachelayer.layer_builder.bytecode import WARM_ATTRS_SCRIPT, attrs_cache_outcome

        try:
            out = self.run(["-c", WARM_ATTRS_SCRIPT, str(self.site)], what="warming attrs' cache")
        except LayerBuildError as exc:
            return attrs_cache_outcome(1, "", str(exc))
        return attrs_cache_outcome(0, out, "")


def _tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
