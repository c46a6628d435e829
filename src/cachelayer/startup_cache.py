"""The extension's startup caches: its modules' code, regular-expression programs and attrs'
generated methods.

Each holds what every cold start would otherwise do again, the same each time
(``cachelayer.module_bundle``, ``cachelayer.regex_cache``, ``cachelayer.attrs_cache``). The
launcher installs them before anything else is imported (``cachelayer.launch``); the extension
saves the two caches once ready, where bytecode may be written; ``warm()`` fills all three (the
layer builder's step, since a layer is read-only at run time, and the benchmark's).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Iterable, Optional

if TYPE_CHECKING:
    from cachelayer.attrs_cache import AttrsCodeCache
    from cachelayer.module_bundle import BundleFinder
    from cachelayer.regex_cache import RegexProgramCache

__all__ = ["STARTUP_MODULES", "StartupCaches", "install", "warm"]

# What the extension imports on its way to ready, beside the providers' own modules.
STARTUP_MODULES = (
    "cachelayer.extension",
    "cachelayer.core.app",
    "cachelayer.server",
)


class StartupCaches:
    """The installed caches; each None where there is none usable (no bundle for this
    ``sys.path``, or a library not as the cache expects)."""

    def __init__(
        self,
        modules: Optional[BundleFinder],
        programs: Optional[RegexProgramCache],
        methods: Optional[AttrsCodeCache],
    ) -> None:
        self.modules = modules
        self.programs = programs
        self.methods = methods
        self.bundled = 0  # modules written to the bundle by warm()

    def save(self, *, force: bool = False) -> None:
        """Write what this process compiled that the caches lacked (``force``: even under -B).
        The bundle is written by ``warm()`` only."""
        for cache in (self.programs, self.methods):
            if cache is not None:
                cache.save(force=force)

    def summary(self) -> str:
        """``modules: 243 from the bundle; regex programs: 62 cached, 0 compiled; ...``."""
        if self.modules is not None:
            modules = f"{self.modules.served} from the bundle, {self.modules.refused} changed"
        else:
            modules = f"{self.bundled} written to the bundle" if self.bundled else "no bundle"
        parts = [f"modules: {modules}"]
        for label, cache in (("regex programs", self.programs), ("attrs classes", self.methods)):
            if cache is None:
                parts.append(f"{label}: no cache (library not as expected)")
            else:
                parts.append(f"{label}: {cache.hits} cached, {cache.compiled} compiled")
        return "; ".join(parts)


_modules: Optional[BundleFinder] = None


def install(
    programs_path: Optional[str] = None,
    methods_path: Optional[str] = None,
    *,
    modules: bool = False,
) -> StartupCaches:
    """Install the caches (at their default paths unless given); again, the same ones.

    ``modules``: the startup modules' bundle too, first (the launcher's way, before anything
    else is imported). It serves only a process whose ``sys.path`` starts as the bundle's did,
    so the working directory (``''``, which ``python -c`` puts first) leaves ``sys.path``: the
    extension never imports from it (a layer's launcher runs ``python -I``, which drops it)."""
    global _modules
    if modules and _modules is None:
        from cachelayer import module_bundle

        _drop_working_directory()
        _modules = module_bundle.install()
    # The regex cache first: attrs_cache and logging compile patterns when imported.
    from cachelayer import regex_cache

    programs = regex_cache.install(programs_path)
    from cachelayer import attrs_cache

    return StartupCaches(_modules, programs, attrs_cache.install(methods_path))


def _drop_working_directory() -> None:
    while "" in sys.path:
        sys.path.remove("")


def warm(
    modules: Iterable[str] = STARTUP_MODULES,
    programs_path: Optional[str] = None,
    methods_path: Optional[str] = None,
    *,
    bundle: Optional[str] = "",
    checked: bool = True,
    only_under_root: bool = False,
) -> StartupCaches:
    """Fill the caches for the extension's startup: import ``modules`` and every installed
    provider, write the caches whatever ``-B`` says, then the bundle of every module imported
    (at ``bundle``: ``""`` for its default path, None for none; ``checked`` and
    ``only_under_root`` as for ``module_bundle.write``). Returns the caches, with
    ``bundled``, the number of modules in the bundle."""
    _drop_working_directory()
    caches = install(programs_path, methods_path)
    import importlib

    for name in modules:
        importlib.import_module(name)
    from cachelayer import plugins

    plugins.discover()
    methods = caches.methods
    if methods is None or not (methods.hits or methods.compiled):
        raise RuntimeError("this attrs does not compile through attr._make._compile_and_eval")
    caches.save(force=True)
    if bundle is not None:
        from cachelayer import module_bundle

        caches.bundled = module_bundle.write(
            bundle or None, checked=checked, only_under_root=only_under_root
        )
    return caches
