"""The standalone layer's own steps: bundle Debian's CPython, then prune, compile and check it."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional

from cachelayer.layer_builder import archive
from cachelayer.layer_builder.debian import default_cache_dir, fetch_debs
from cachelayer.layer_builder.elf import check_elf_files
from cachelayer.layer_builder.runtime_bundle import BundleReport, RuntimeBundle
from cachelayer.layer_builder.staged import StagedInterpreter
from cachelayer.layer_builder.targets import ELF_MACHINES, Target


def tool_version(name: str) -> str:
    """``patchelf 0.14.3``: the version a build tool reports, recorded with the build."""
    try:
        done = subprocess.run([name, "--version"], capture_output=True, text=True, timeout=30)
    except OSError:
        return "unknown"
    return (
        (done.stdout.strip() or done.stderr.strip()).splitlines()[0]
        if done.returncode == 0
        else "unknown"
    )


def bundle_runtime(
    target: Target,
    site: Path,
    work: Path,
    *,
    deb_cache: Optional[Path],
    progress: Callable[[str], None],
    environ: Optional[Mapping[str, str]],
) -> RuntimeBundle:
    """Fetch and lay out the bundled CPython and C library under ``site``."""
    progress(
        f"      bundling CPython {target.python_version} and glibc for {target.arch} "
        "from Debian 12 packages"
    )
    cache = deb_cache or default_cache_dir(environ)
    debs = fetch_debs(target.arch, cache, progress, environ)
    bundle = RuntimeBundle(target.arch, site, progress)
    bundle.assemble(debs, work)
    return bundle


def finish_bundle(
    bundle: RuntimeBundle,
    stage: Path,
    *,
    compile_bytecode: Optional[bool],
    python: Optional[str],
    progress: Callable[[str], None],
    environ: Optional[Mapping[str, str]],
) -> Dict[str, Any]:
    """Prune the bundled stdlib to what the layer imports, compile, check every ELF file;
    return the ``interpreter`` section of ``layer.json``."""
    interpreter = StagedInterpreter(bundle, environ)
    emulator = interpreter.emulator()
    how = f" (under {Path(emulator).name})" if emulator else ""
    progress(f"      running the bundled interpreter{how} to record what the layer imports")
    found = interpreter.record_imports()
    before, after, kept = bundle.prune_stdlib(found["stdlib"])
    bundle.prune_libraries()
    progress(
        f"      standard library: {archive.human_size(before)} -> {archive.human_size(after)} "
        f"({len(kept)} top-level modules kept)"
    )
    if compile_bytecode is False:
        progress("      bytecode: not compiled (--no-compile)")
    else:
        ignored = f" (not --python {python})" if python else ""
        progress(f"      bytecode: compiling with the bundled CPython {found['version']}{ignored}")
        interpreter.compile_stdlib()
        interpreter.compile_packages()
        progress(interpreter.warm_startup_caches())
    count = check_elf_files(stage, ELF_MACHINES[bundle.arch])
    libraries = sorted(p.name for p in bundle.lib.iterdir() if p.is_file())
    progress(
        f"      {count} ELF files, all {bundle.arch}, loader inside the layer; "
        f"libraries: {', '.join(libraries)}"
    )
    report = BundleReport(
        version=found["version"],
        debs=bundle.debs,
        stdlib_before=before,
        stdlib_after=after,
        modules_kept=tuple(kept),
        libraries=tuple(libraries),
        tools={"patchelf": tool_version("patchelf"), "openssl": found["openssl"]},
    )
    return report.metadata(bundle.arch)
