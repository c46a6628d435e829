"""Record which standard-library modules the layer's packages import, run by the bundled Python.

Run as a script by the layer's own interpreter with ``-S`` and the layer's package directory as
its argument. It imports every module of every package in the layer (so imports done only by a
code path a short session would not reach are seen too), loads the providers through the layer's
``cachelayer.plugins`` and creates a client for each AWS service they declare (botocore loads
much of what it needs lazily), then prints JSON: the top-level names of the stdlib modules in
``sys.modules``, and the interpreter's version. It imports nothing from the build machine.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pkgutil
import sys
from typing import Any, Dict, List, Set

# Modules that run something when imported, rather than define something.
_SKIP_SUFFIXES = ("__main__",)
_SKIP_PREFIXES = ("cachelayer.testing", "cachelayer.demo", "cachelayer.local")


def _import_everything(site: str) -> List[str]:
    """Import each module found under ``site``; return the ones that failed (optional extras)."""
    import importlib

    failed: List[str] = []
    for info in pkgutil.walk_packages([site], onerror=lambda name: failed.append(name)):
        name = info.name
        if name.endswith(_SKIP_SUFFIXES) or name.startswith(_SKIP_PREFIXES):
            continue
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                importlib.import_module(name)
        except BaseException:  # an optional dependency missing is expected here
            failed.append(name)
    return failed


def _exercise_providers() -> None:
    """Create the clients the providers will create, as the extension does at startup."""
    from cachelayer import plugins

    _pm, registry = plugins.discover()
    services: Set[str] = set()
    for name in registry.names():
        services.update(str(s) for s in registry.by_name[name].provider_type.services)
    try:
        import boto3
    except ImportError:
        return
    session = boto3.session.Session(
        aws_access_key_id="probe", aws_secret_access_key="probe", region_name="us-east-1"
    )
    for service in sorted(services):
        session.client(service, endpoint_url="https://127.0.0.1:9")


def _stdlib_used(stdlib_root: str) -> Set[str]:
    """Top-level stdlib names (modules, packages, extension modules) now in ``sys.modules``."""
    used: Set[str] = set()
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path is None or not os.path.abspath(path).startswith(stdlib_root + os.sep):
            continue  # built into the interpreter, or not the standard library's
        rel = os.path.relpath(path, stdlib_root).split(os.sep)
        if rel[0] == "lib-dynload":
            used.add(rel[1].split(".", 1)[0])  # _ssl.cpython-311-x86_64-linux-gnu.so
        else:
            used.add(rel[0][:-3] if rel[0].endswith(".py") else rel[0])
    return used


def _import_package_contents(stdlib_root: str, names: Set[str], done: Set[str]) -> None:
    """Import every submodule of the stdlib packages in ``names``: a package is kept whole,
    so what any of its modules imports must be kept too (``encodings.idna`` needs
    ``stringprep``, looked up only when a host name is encoded)."""
    import importlib

    for name in sorted(names - done):
        done.add(name)
        path = os.path.join(stdlib_root, name)
        if not os.path.isfile(os.path.join(path, "__init__.py")):
            continue
        for info in pkgutil.walk_packages([path], name + ".", onerror=lambda _name: None):
            if info.name.endswith(_SKIP_SUFFIXES):
                continue
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    importlib.import_module(info.name)
            except BaseException:  # e.g. a module needing a library the bundle lacks
                pass


def main(site: str) -> Dict[str, Any]:
    """Import the layer's packages; describe the stdlib modules that came with them."""
    sys.path.insert(0, site)
    failed = _import_everything(site)
    _exercise_providers()
    import encodings
    import importlib.util
    import ssl

    del encodings  # always kept whole: codecs are looked up by name at run time
    stdlib_root = os.path.dirname(os.__file__)
    done: Set[str] = set()
    used = _stdlib_used(stdlib_root)
    while used - done:
        _import_package_contents(stdlib_root, used, done)
        used = _stdlib_used(stdlib_root)
    return {
        "version": "{}.{}.{}".format(*sys.version_info[:3]),
        "magic": importlib.util.MAGIC_NUMBER.hex(),
        "openssl": ssl.OPENSSL_VERSION,
        "stdlib": sorted(used),
        "not_importable": sorted(failed),
    }


if __name__ == "__main__":
    result = main(sys.argv[1])
    sys.stdout.write(json.dumps(result))
