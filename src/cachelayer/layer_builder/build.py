"""Build a Lambda layer: install the extension and its providers for a target, prune, zip."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from importlib import metadata, resources
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import attrs

from cachelayer.layer_builder import archive, bytecode, lean, prune, runtime_bundle, wheels
from cachelayer.layer_builder.errors import LayerBuildError
from cachelayer.layer_builder.installer import Pip, install_args
from cachelayer.layer_builder.targets import ELF_MACHINES, Target

EXTENSION_NAME = "cachelayer"
"""The launcher's file name in ``extensions/``: Lambda registers the extension under it."""

PACKAGES_DIR = "cachelayer"
"""The layer's private package directory (``/opt/cachelayer``); never ``/opt/python``."""

METADATA_FILE = "layer.json"
"""Build metadata inside ``PACKAGES_DIR``, read back by ``cachelayer layer publish``."""

# Lambda's limits (binary megabytes, as Lambda counts them).
MAX_ZIPPED = 50 * 1024 * 1024
"""Largest zip ``PublishLayerVersion`` accepts as a direct upload."""
MAX_UNZIPPED = 250 * 1024 * 1024
"""Function code plus all its layers, unzipped."""
UNZIPPED_WARNING = MAX_UNZIPPED // 2
"""Past this the layer leaves the function little room of its own: warn."""

# The runtime dependencies come from cachelayer's own metadata; pip resolves them.
OWN_DISTRIBUTION = "cachelayer"


@attrs.frozen
class BuildRequest:
    """What to build: the target, extra provider packages, and where to write it.

    ``with_packages`` are requirement strings (``cachelayer-s3``, ``cachelayer-s3==1.2``), local
    project directories or wheel files. ``output`` ending in ``.zip`` gets a zip; anything else
    gets the layer as a directory tree (what SAM's ``ContentUri`` can point at).
    """

    target: Target
    output: Path
    with_packages: Tuple[str, ...] = ()
    requirements: Optional[Path] = None
    # cachelayer's own extras to install with it (``shared``: the Redis tier's redis-py and
    # cryptography).
    extras: Tuple[str, ...] = ()
    keep_services: Tuple[str, ...] = ()
    prune_models: bool = True
    # None: compile when an interpreter of the target's version is on this machine.
    compile_bytecode: Optional[bool] = None
    # The interpreter that compiles the bytecode (None: find one of the target's version).
    python: Optional[str] = None
    # Where downloaded Debian packages are kept (standalone layers); None: the user's cache.
    deb_cache: Optional[Path] = None


@attrs.frozen
class Sizes:
    """A layer's cost against Lambda's limits, in bytes."""

    zipped: int
    unzipped: int


@attrs.frozen
class BuildResult:
    """What was built and what it weighs."""

    output: Path
    sha256: str
    before: Sizes
    after: Sizes
    metadata: Mapping[str, Any]
    seconds: float
    warnings: Tuple[str, ...] = ()


def _is_local(spec: str) -> bool:
    return spec.endswith(".whl") or os.sep in spec or spec.startswith(".") or Path(spec).is_dir()


def _requirement_name(spec: str) -> str:
    """The project name of a requirement string: ``cachelayer-s3>=1; python_version>'3'``."""
    for stop in "[<>=!~;@ ":
        spec = spec.split(stop, 1)[0]
    return wheels.normalize_name(spec)


def _dist_info_dir(wheel: Path) -> str:
    """The ``*.dist-info/`` directory inside a wheel."""
    with zipfile.ZipFile(wheel) as zf:
        for name in zf.namelist():
            top = name.split("/", 1)[0]
            if top.endswith(".dist-info"):
                return top + "/"
    raise LayerBuildError(f"{wheel}: not a wheel (no .dist-info directory inside)")


def _sizes(stage: Path, zipped: Path) -> Sizes:
    """What the layer staged at ``stage`` and zipped to ``zipped`` weighs."""
    return Sizes(zipped=zipped.stat().st_size, unzipped=archive.tree_size(stage))


def _distributions(site: Path) -> Dict[str, metadata.Distribution]:
    """The distributions installed in ``site``, by normalised project name."""
    return {
        wheels.normalize_name(d.metadata["Name"]): d
        for d in metadata.distributions(path=[str(site)])
    }


def load_launcher() -> str:
    """The launcher script shipped as package data next to this module."""
    try:
        return (resources.files("cachelayer.layer_builder") / "launcher.sh").read_text(
            encoding="utf-8"
        )
    except FileNotFoundError:
        raise LayerBuildError(
            "cachelayer/layer_builder/launcher.sh is missing from the installed package; "
            "reinstall cachelayer (pip install -e .)"
        ) from None


def _tool_version(name: str) -> str:
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


@attrs.define
class LayerBuilder:
    """Builds layers. ``progress`` receives one human line per step (the CLI prints them)."""

    _progress: Callable[[str], None] = lambda line: None
    _python: str = sys.executable
    _environ: Optional[Mapping[str, str]] = None

    def build(self, request: BuildRequest) -> BuildResult:
        """Build the layer ``request`` describes; raise ``LayerBuildError`` on any failure."""
        started = time.monotonic()
        self._check_inputs(request)
        with tempfile.TemporaryDirectory(prefix="cachelayer-layer-") as tmp:
            work = Path(tmp)
            stage = work / "layer"
            site = stage / PACKAGES_DIR
            site.mkdir(parents=True)
            wheel_dir = work / "wheels"
            pip = Pip(self._progress, self._python, self._environ)

            self._progress(
                f"[1/6] preparing wheels of cachelayer {metadata.version(OWN_DISTRIBUTION)} "
                "and local packages"
            )
            own = wheels.wheel_of_installed(OWN_DISTRIBUTION, "cachelayer", wheel_dir)
            requirements, with_names = self._with_requirements(request, pip, work, wheel_dir)
            for wheel in [Path(r) for r in requirements if r.endswith(".whl")]:
                # Fail before the long install when a local package is no provider at all.
                self._check_entry_points(
                    [metadata.PathDistribution(zipfile.Path(wheel, _dist_info_dir(wheel)))]
                )

            self._progress(f"[2/6] installing for {request.target.describe()}")
            own_requirement = str(own) + (f"[{','.join(request.extras)}]" if request.extras else "")
            args = [*install_args(request.target, site), own_requirement, *requirements]
            cwd = work
            if request.requirements is not None:
                args += ["--requirement", str(request.requirements.resolve())]
                cwd = request.requirements.resolve().parent  # its relative paths mean from there
            pip.run(args, what="installing the layer's packages", cwd=cwd, target=request.target)
            self._check_entry_points(self._installed(site, with_names))
            self._write_launcher(stage)
            bundle = None
            if request.target.standalone:
                bundle = self._bundle(request, site, work)
            before = self._measure(stage, work / "before.zip")
            self._progress(
                f"      before pruning: {archive.human_size(before.zipped)} zipped, "
                f"{archive.human_size(before.unzipped)} unzipped"
            )

            self._progress("[3/6] finding the providers and the AWS services they use")
            found = self._probe(site, strict=request.prune_models)
            services = sorted(
                {s for p in found["providers"] for s in p["services"]} | set(request.keep_services)
            )
            for p in found["providers"]:
                self._progress(
                    f"      {p['name']:<12} GET /{p['route']:<12} "
                    f"{', '.join(p['services']) or '-'}  ({p['distribution']} {p['version']})"
                )

            self._progress(
                "[4/6] pruning "
                + (
                    "botocore models to " + (", ".join(services) or "none")
                    if request.prune_models
                    else "caches and tests (models kept: --no-prune)"
                )
            )
            report = prune.prune(site, set(services), models=request.prune_models)
            left_out = lean.boto_left_out(site, services)
            if left_out:
                self._progress(left_out)
            self._progress(
                f"      kept {len(report.services_kept)} service models, removed "
                f"{report.services_removed} models and {report.files_removed} other files"
            )
            interpreter: Optional[Dict[str, Any]] = None
            if bundle is not None:
                interpreter = self._finish_bundle(request, bundle, stage)
            else:
                self._compile(request, stage, site)
            meta = self._metadata(request, site, found, services)
            if interpreter is not None:
                meta["interpreter"] = interpreter
            (site / METADATA_FILE).write_text(
                json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8"
            )

            self._progress("[5/6] zipping (sorted entries, fixed timestamps and modes)")
            date_time = archive.zip_timestamp(self._environ)
            zipped = work / "layer.zip"
            archive.write_zip(stage, zipped, date_time=date_time)
            after = _sizes(stage, zipped)
            digest = archive.sha256_of(zipped)

            self._progress("[6/6] checking Lambda's limits and writing " + str(request.output))
            warnings = self._check_limits(after)
            self._place(stage, zipped, request.output)
        return BuildResult(
            output=request.output,
            sha256=digest,
            before=before,
            after=after,
            metadata=meta,
            seconds=time.monotonic() - started,
            warnings=tuple(warnings),
        )

    # -- steps ---------------------------------------------------------------------------

    def _bundle(
        self, request: BuildRequest, site: Path, work: Path
    ) -> runtime_bundle.RuntimeBundle:
        """Fetch and lay out the bundled CPython and C library (standalone layers)."""
        arch = request.target.arch
        self._progress(
            f"      bundling CPython {request.target.python_version} and glibc for {arch} "
            "from Debian 12 packages"
        )
        cache = request.deb_cache or runtime_bundle.default_cache_dir(self._environ)
        debs = runtime_bundle.fetch_debs(arch, cache, self._progress, self._environ)
        bundle = runtime_bundle.RuntimeBundle(arch, site, self._progress, self._environ)
        bundle.assemble(debs, work)
        return bundle

    def _finish_bundle(
        self, request: BuildRequest, bundle: runtime_bundle.RuntimeBundle, stage: Path
    ) -> Dict[str, Any]:
        """Prune the bundled stdlib to what the layer imports, compile, check every ELF file."""
        emulator = bundle.emulator()
        how = f" (under {Path(emulator).name})" if emulator else ""
        self._progress(
            f"      running the bundled interpreter{how} to record what the layer imports"
        )
        found = bundle.record_imports()
        before, after, kept = bundle.prune_stdlib(found["stdlib"])
        bundle.prune_libraries()
        self._progress(
            f"      standard library: {archive.human_size(before)} -> {archive.human_size(after)} "
            f"({len(kept)} top-level modules kept)"
        )
        if request.compile_bytecode is False:
            self._progress("      bytecode: not compiled (--no-compile)")
        else:
            ignored = f" (not --python {request.python})" if request.python else ""
            self._progress(
                f"      bytecode: compiling with the bundled CPython {found['version']}{ignored}"
            )
            bundle.compile_stdlib()
            bundle.compile_packages()
            self._progress(bundle.warm_attrs_cache())
        count = runtime_bundle.check_elf_files(stage, ELF_MACHINES[bundle.arch])
        libraries = sorted(p.name for p in bundle.lib.iterdir() if p.is_file())
        self._progress(
            f"      {count} ELF files, all {bundle.arch}, loader inside the layer; "
            f"libraries: {', '.join(libraries)}"
        )
        report = runtime_bundle.BundleReport(
            version=found["version"],
            debs=bundle.debs,
            stdlib_before=before,
            stdlib_after=after,
            modules_kept=tuple(kept),
            libraries=tuple(libraries),
            tools={"patchelf": _tool_version("patchelf"), "openssl": found["openssl"]},
        )
        return report.metadata(bundle.arch)

    def _compile(self, request: BuildRequest, stage: Path, site: Path) -> None:
        if request.compile_bytecode is False:
            self._progress("      bytecode: not compiled (--no-compile)")
            return
        if request.python is not None:
            interpreter: Optional[str] = bytecode.check_interpreter(request.python, request.target)
        else:
            interpreter = bytecode.find_interpreter(request.target)
        if interpreter is None:
            message = (
                f"no python{request.target.python_version} on this machine to compile bytecode "
                f"for {request.target.runtime}"
            )
            if request.compile_bytecode:
                raise LayerBuildError(
                    message + "; install it, name one with --python PATH, or drop --compile"
                )
            self._progress(
                f"      bytecode: skipped, {message}: each cold start will compile the "
                "packages (about 0.35 s of init); name one with --python PATH"
            )
            return
        self._progress(f"      bytecode: compiling for {request.target.runtime} with {interpreter}")
        bytecode.compile_tree(stage, site, interpreter, self._environ)
        self._progress(bytecode.warm_attrs_cache(site, interpreter, self._environ))

    def _check_inputs(self, request: BuildRequest) -> None:
        offered = set(metadata.metadata(OWN_DISTRIBUTION).get_all("Provides-Extra") or [])
        for extra in request.extras:
            if extra not in offered:
                raise LayerBuildError(
                    f"--extra {extra}: cachelayer has no such extra; it offers "
                    f"{', '.join(sorted(offered - {'dev', 'test'})) or 'none'}"
                )
        if request.requirements is not None and not request.requirements.is_file():
            raise LayerBuildError(f"--requirements {request.requirements}: no such file")
        for spec in request.with_packages:
            if _is_local(spec) and not Path(spec).exists():
                raise LayerBuildError(
                    f"--with {spec}: no such file or directory; pass a provider project "
                    "directory, a wheel file, or a package name"
                )
        out = request.output
        if out.suffix != ".zip" and out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise LayerBuildError(
                f"-o {out}: exists and is not an empty directory; pass a new directory, an empty "
                "one, or a path ending in .zip"
            )
        if not out.parent.exists():
            raise LayerBuildError(f"-o {out}: the directory {out.parent} does not exist")

    def _with_requirements(
        self, request: BuildRequest, pip: Pip, work: Path, wheel_dir: Path
    ) -> Tuple[List[str], List[str]]:
        """Requirement arguments for pip and the project names of the ``--with`` packages.

        A local project is built into a wheel first (from a copy, so its directory stays
        clean); pure-Python wheels install on any platform.
        """
        args: List[str] = []
        names: List[str] = []
        for i, spec in enumerate(request.with_packages):
            if not _is_local(spec):
                args.append(spec)
                names.append(_requirement_name(spec))
                continue
            path = Path(spec).resolve()
            if path.suffix == ".whl":
                args.append(str(path))
                names.append(wheels.dist_name_of_wheel(path))
                continue
            copy = wheels.copy_project(path, work / f"src{i}")
            before = os.listdir(wheel_dir)
            self._progress(f"      building a wheel of {path}")
            pip.run(
                ["wheel", "--no-deps", "--wheel-dir", str(wheel_dir), str(copy)],
                what=f"building --with {spec}",
                cwd=work,
            )
            wheel = wheels.find_new_wheel(wheel_dir, before)
            if wheel is None:
                raise LayerBuildError(f"--with {spec}: pip built no wheel from {path}")
            args.append(str(wheel))
            names.append(wheels.dist_name_of_wheel(wheel))
        return args, names

    def _installed(self, site: Path, names: Sequence[str]) -> List[metadata.Distribution]:
        """The installed distributions of the ``--with`` packages, by project name."""
        installed = _distributions(site)
        found = []
        for name in names:
            if name not in installed:
                raise LayerBuildError(
                    f"--with {name}: pip reported success but {name} is not in the layer"
                )
            found.append(installed[name])
        return found

    def _check_entry_points(self, dists: Sequence[metadata.Distribution]) -> None:
        """Every ``--with`` package must declare a provider in the ``cachelayer`` group."""
        for dist in dists:
            name = dist.metadata["Name"]
            eps = [ep for ep in dist.entry_points if ep.group == "cachelayer"]
            if not eps:
                raise LayerBuildError(
                    f"--with {name}: the package declares no entry point in the 'cachelayer' "
                    "group, "
                    "so the extension would never load it. A provider package needs, in its "
                    "pyproject.toml:\n  [project.entry-points.cachelayer]\n"
                    '  myprovider = "my_package.plugin"'
                )

    def _write_launcher(self, stage: Path) -> None:
        ext = stage / "extensions"
        ext.mkdir()
        launcher = ext / EXTENSION_NAME
        launcher.write_text(load_launcher(), encoding="utf-8")
        launcher.chmod(0o755)

    def _measure(self, stage: Path, scratch: Path) -> Sizes:
        archive.write_zip(stage, scratch)
        sizes = _sizes(stage, scratch)
        scratch.unlink()
        return sizes

    def _probe(self, site: Path, *, strict: bool) -> Dict[str, Any]:
        """Run probe.py with the host interpreter against the layer's own packages.

        ``strict`` (pruning on): a provider that cannot be loaded is an error, since the
        services it needs are unknown. Otherwise it is a warning.
        """
        script = Path(__file__).with_name("probe.py")
        env = {
            k: v
            for k, v in (os.environ if self._environ is None else self._environ).items()
            if not k.startswith("PYTHON")
        }
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        proc = subprocess.run(
            [self._python, "-I", "-S", str(script), str(site)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            cwd=site.parent,
        )
        if proc.returncode != 0 and not strict:
            self._progress(
                "      warning: could not load the layer's providers: " + proc.stderr.strip()[-500:]
            )
            return {"providers": [], "broken": []}
        if proc.returncode != 0:
            raise LayerBuildError(
                "could not load the layer's providers to learn which AWS services they use "
                f"(python {sys.version_info.major}.{sys.version_info.minor} importing the layer's "
                f"pure-Python packages):\n{proc.stderr.strip()[-2000:]}\n"
                "pass --no-prune to skip pruning"
            )
        found: Dict[str, Any] = json.loads(proc.stdout)
        lines = "\n".join(
            f"  {b['plugin']} ({b['distribution']}): {b['error']}" for b in found["broken"]
        )
        if found["broken"] and not strict:
            self._progress("      warning: these provider plugins failed to load:\n" + lines)
        elif found["broken"]:
            raise LayerBuildError(
                "these provider plugins in the layer failed to load, so their AWS services are "
                f"unknown:\n{lines}\n"
                "fix or leave out the package, or pass --no-prune to keep every model"
            )
        if not found["providers"] and strict:
            raise LayerBuildError(
                "the layer holds no providers: cachelayer's entry points are missing from its "
                "metadata; reinstall cachelayer (pip install -e .) and build again"
            )
        return found

    def _metadata(
        self, request: BuildRequest, site: Path, found: Mapping[str, Any], services: Sequence[str]
    ) -> Dict[str, Any]:
        packages = {name: d.version for name, d in _distributions(site).items()}
        return {
            "format": 1,
            "extension": EXTENSION_NAME,
            "cachelayer_version": packages.get("cachelayer"),
            "runtime": request.target.runtime,
            "python_version": request.target.python_version,
            "architecture": request.target.arch,
            "compatible_runtimes": request.target.compatible_runtimes,
            "compatible_architectures": [request.target.arch],
            "providers": list(found["providers"]),
            "services": list(services),
            "botocore_models_pruned": request.prune_models,
            "packages": dict(sorted(packages.items())),
        }

    def _check_limits(self, sizes: Sizes) -> List[str]:
        if sizes.unzipped > MAX_UNZIPPED:
            raise LayerBuildError(
                f"the layer is {archive.human_size(sizes.unzipped)} unzipped, over Lambda's "
                f"{archive.human_size(MAX_UNZIPPED)} limit for a function and its layers; leave "
                "out --with packages or prune more"
            )
        warnings: List[str] = []
        if sizes.zipped > MAX_ZIPPED:
            warnings.append(
                f"the zip is {archive.human_size(sizes.zipped)}, over the "
                f"{archive.human_size(MAX_ZIPPED)} Lambda accepts as a direct upload: publish it "
                "through S3 (sam deploy does) instead of `cachelayer layer publish`"
            )
        if sizes.unzipped > UNZIPPED_WARNING:
            warnings.append(
                f"the layer is {archive.human_size(sizes.unzipped)} unzipped, leaving only "
                f"{archive.human_size(MAX_UNZIPPED - sizes.unzipped)} of Lambda's "
                f"{archive.human_size(MAX_UNZIPPED)} for the function and its other layers"
            )
        for w in warnings:
            self._progress("      warning: " + w)
        return warnings

    def _place(self, stage: Path, zipped: Path, output: Path) -> None:
        if output.suffix == ".zip":
            shutil.copyfile(zipped, output)
            return
        if output.exists():
            output.rmdir()  # checked empty up front
        shutil.copytree(stage, output)
