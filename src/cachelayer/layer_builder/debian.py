"""Debian 12's packages for the bundled CPython: which ones, fetched with apt, verified by SHA256."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import attrs

from cachelayer.layer_builder.archive import sha256_of
from cachelayer.layer_builder.errors import LayerBuildError

# Debian's architecture names.
DEBIAN_ARCH: Dict[str, str] = {"x86_64": "amd64", "arm64": "arm64"}

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
class _Wanted:
    """A package to download: its apt spec (``name:arch``), candidate version and SHA256."""

    name: str
    spec: str
    version: str
    sha256: str
    path: Path


def default_cache_dir(environ: Optional[Mapping[str, str]] = None) -> Path:
    """Where downloaded .debs are kept between builds: ``$CACHELAYER_CACHE_DIR`` or
    ``$XDG_CACHE_HOME/cachelayer`` (``~/.cache/cachelayer``), subdirectory ``debs``."""
    env = os.environ if environ is None else environ
    if env.get("CACHELAYER_CACHE_DIR"):
        return Path(env["CACHELAYER_CACHE_DIR"]) / "debs"
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cachelayer" / "debs"


def need_tool(name: str, package: str) -> str:
    """The path of the build tool ``name``, or a LayerBuildError saying how to install it."""
    found = shutil.which(name)
    if found is None:
        raise LayerBuildError(
            f"{name} not found: building a layer with its own Python needs Debian's tools "
            f"(apt-get install {package}; scripts/ci/install-standalone.sh installs them all). "
            "On a machine that is not Debian, build inside a Debian 12 container: see "
            "deploy/README.md"
        )
    return found


def run_tool(cmd: Sequence[str], *, what: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    """Run a build tool; a failure to start or a non-zero exit is a LayerBuildError."""
    try:
        done = subprocess.run(list(cmd), capture_output=True, text=True, **kw)
    except OSError as exc:
        raise LayerBuildError(f"{what}: cannot run {cmd[0]}: {exc}") from None
    if done.returncode != 0:
        tail = (done.stderr.strip() or done.stdout.strip())[-1500:]
        raise LayerBuildError(f"{what} failed ({' '.join(cmd[:3])} ...):\n{tail}")
    return done


def apt_candidate(package: str, env: Mapping[str, str]) -> Tuple[str, str]:
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
    need_tool("apt-get", "apt")
    need_tool("dpkg-deb", "dpkg")
    env = dict(os.environ if environ is None else environ)
    env["LC_ALL"] = "C"
    cache.mkdir(parents=True, exist_ok=True)
    wanted = [(p, DEBIAN_ARCH[arch]) for p in PACKAGES] + [(CA_PACKAGE, "all")]
    debs: List[Deb] = []
    missing: List[_Wanted] = []
    for name, deb_arch in wanted:
        spec = f"{name}:{deb_arch}" if deb_arch != "all" else name
        version, sha = apt_candidate(spec, env)
        path = cache / f"{name}_{version.replace(':', '%3a')}_{deb_arch}.deb"
        if path.is_file() and (not sha or sha256_of(path) == sha):
            debs.append(Deb(name, version, deb_arch, path, sha256_of(path)))
        else:
            missing.append(_Wanted(name, spec, version, sha, path))
    if missing:
        progress(f"      downloading {len(missing)} Debian packages into {cache}")
        _download(missing, cache, env)
    else:
        progress(f"      Debian packages: all {len(wanted)} found in {cache}")
    by_name = {d.name: d for d in debs}
    for m in missing:
        by_name[m.name] = Deb(
            m.name, m.version, m.path.name.rsplit("_", 1)[1][:-4], m.path, sha256_of(m.path)
        )
    return [by_name[n] for n, _ in wanted]


def _download(missing: Sequence[_Wanted], cache: Path, env: Mapping[str, str]) -> None:
    """``apt-get download`` the ``missing`` packages into ``cache``, each checked by SHA256."""
    with tempfile.TemporaryDirectory(dir=cache, prefix="download-") as tmp:
        run_tool(
            ["apt-get", "download", "-q", *[f"{m.spec}={m.version}" for m in missing]],
            what="apt-get download",
            cwd=tmp,
            env=env,
        )
        got = {p.name.split("_", 1)[0]: p for p in Path(tmp).glob("*.deb")}
        for m in missing:
            if m.name not in got:
                raise LayerBuildError(f"apt-get download gave no .deb for {m.spec}={m.version}")
            digest = sha256_of(got[m.name])
            if m.sha256 and digest != m.sha256:
                raise LayerBuildError(
                    f"{m.spec}={m.version}: downloaded file's SHA256 {digest} is not the "
                    f"archive's {m.sha256}; run `apt-get update` and build again"
                )
            os.replace(got[m.name], m.path)
