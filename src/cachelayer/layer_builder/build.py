"""Build a Lambda layer: install the extension and its providers for a target, prune, zip."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from importlib import metadata, resources
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import attrs

from cachelayer.layer_builder import archive, bytecode, lean, packages, prune, standalone, wheels
from cachelayer.layer_builder.errors import LayerBuildError
from cachelayer.layer_builder.installer import Pip, install_args
from cachelayer.layer_builder.runtime_bundle import RuntimeBundle
from cachelayer.layer_builder.targets import Target

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


def _sizes(stage: Path, zipped: Path) -> Sizes:
    """What the layer staged at ``stage`` and zipped to ``zipped`` weighs."""
    return Sizes(zipped=zipped.stat().st_size, unzipped=archive.tree_size(stage))


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
            bundle = self._install(request, work, site)
            before = self._measure(stage, work / "before.zip")
            self._progress(
                f"      before pruning: {archive.human_size(before.zipped)} zipped, "
                f"{archive.human_size(before.unzipped)} unzipped"
            )
            found, services = self._find_providers(request, site)
            self._prune(request, site, services)
            meta = self._finish(request, bundle, stage, found, services)

            self._progress("[5/6] zipping (sorted entries, fixed timestamps and modes)")
            zipped = work / "layer.zip"
            archive.write_zip(stage, zipped, date_time=archive.zip_timestamp(self._environ))
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

    def _install(self, request: BuildRequest, work: Path, site: Path) -> Optional[RuntimeBundle]:
        """Steps 1 and 2: wheels of cachelayer and the local packages, pip into ``site``, the
        launcher, and (standalone layers) the bundled CPython."""
        wheel_dir = work / "wheels"
        pip = Pip(self._progress, self._python, self._environ)
        self._progress(
            f"[1/6] preparing wheels of cachelayer {metadata.version(OWN_DISTRIBUTION)} "
            "and local packages"
        )
        own = wheels.wheel_of_installed(OWN_DISTRIBUTION, "cachelayer", wheel_dir)
        requirements, with_names = packages.with_requirements(
            request.with_packages, pip, work, wheel_dir, self._progress
        )
        # Fail before the long install when a local package is no provider at all.
        packages.check_entry_points(
            [packages.wheel_distribution(Path(r)) for r in requirements if r.endswith(".whl")]
        )
        self._progress(f"[2/6] installing for {request.target.describe()}")
        own_requirement = str(own) + (f"[{','.join(request.extras)}]" if request.extras else "")
        args = [*install_args(request.target, site), own_requirement, *requirements]
        cwd = work
        if request.requirements is not None:
            args += ["--requirement", str(request.requirements.resolve())]
            cwd = request.requirements.resolve().parent  # its relative paths mean from there
        pip.run(args, what="installing the layer's packages", cwd=cwd, target=request.target)
        packages.check_entry_points(packages.installed(site, with_names))
        self._write_launcher(site.parent)
        if not request.target.standalone:
            return None
        return standalone.bundle_runtime(
            request.target,
            site,
            work,
            deb_cache=request.deb_cache,
            progress=self._progress,
            environ=self._environ,
        )

    def _find_providers(
        self, request: BuildRequest, site: Path
    ) -> Tuple[Dict[str, Any], List[str]]:
        """Step 3: the layer's providers and the AWS services they (and ``--keep``) need."""
        self._progress("[3/6] finding the providers and the AWS services they use")
        found = packages.probe_providers(
            self._python,
            site,
            strict=request.prune_models,
            progress=self._progress,
            environ=self._environ,
        )
        services = sorted(
            {s for p in found["providers"] for s in p["services"]} | set(request.keep_services)
        )
        for p in found["providers"]:
            self._progress(
                f"      {p['name']:<12} GET /{p['route']:<12} "
                f"{', '.join(p['services']) or '-'}  ({p['distribution']} {p['version']})"
            )
        return found, services

    def _prune(self, request: BuildRequest, site: Path, services: List[str]) -> None:
        """Step 4: botocore's models down to ``services``, caches and tests out."""
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

    def _finish(
        self,
        request: BuildRequest,
        bundle: Optional[RuntimeBundle],
        stage: Path,
        found: Mapping[str, Any],
        services: Sequence[str],
    ) -> Dict[str, Any]:
        """Bytecode (and the bundle's pruning and checks), then ``layer.json``; return it."""
        site = stage / PACKAGES_DIR
        interpreter: Optional[Dict[str, Any]] = None
        if bundle is not None:
            interpreter = standalone.finish_bundle(
                bundle,
                stage,
                compile_bytecode=request.compile_bytecode,
                python=request.python,
                progress=self._progress,
                environ=self._environ,
            )
        else:
            self._compile(request, stage, site)
        meta = self._metadata(request, site, found, services)
        if interpreter is not None:
            meta["interpreter"] = interpreter
        (site / METADATA_FILE).write_text(
            json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        return meta

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
        self._progress(bytecode.warm_startup_caches(site, interpreter, self._environ))

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
            if packages.is_local(spec) and not Path(spec).exists():
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

    def _metadata(
        self, request: BuildRequest, site: Path, found: Mapping[str, Any], services: Sequence[str]
    ) -> Dict[str, Any]:
        versions = {name: d.version for name, d in packages.distributions(site).items()}
        return {
            "format": 1,
            "extension": EXTENSION_NAME,
            "cachelayer_version": versions.get("cachelayer"),
            "runtime": request.target.runtime,
            "python_version": request.target.python_version,
            "architecture": request.target.arch,
            "compatible_runtimes": request.target.compatible_runtimes,
            "compatible_architectures": [request.target.arch],
            "providers": list(found["providers"]),
            "services": list(services),
            "botocore_models_pruned": request.prune_models,
            "packages": dict(sorted(versions.items())),
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
