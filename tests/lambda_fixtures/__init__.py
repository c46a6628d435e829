"""Builders for emulator tests: extension directories, test extensions, test handlers."""

from __future__ import annotations

import json
import shutil
import stat
import sys
from pathlib import Path
from typing import Any

HANDLERS_DIR = Path(__file__).parent / "handlers"
REPO_SRC = Path(__file__).resolve().parents[2] / "src"
LAUNCHER_SH = REPO_SRC / "cachelayer" / "layer_builder" / "launcher.sh"

# A stdlib-only extension whose behaviour is baked in as JSON; it logs every step to stdout.
_TEST_EXTENSION = """#!{python}
import http.client, json, os, sys, time

B = json.loads({behaviour!r})
NAME = os.path.basename(sys.argv[0])
API = os.environ["AWS_LAMBDA_RUNTIME_API"]


def call(method, path, body=None, headers=None):
    conn = http.client.HTTPConnection(API)
    conn.request(method, "/2020-01-01/extension/" + path, body=body, headers=headers or {{}})
    resp = conn.getresponse()
    return resp.status, dict(resp.getheaders()), resp.read()


def log(*args):
    print(NAME, *args, flush=True)


time.sleep(B.get("register_delay", 0))
if "exit_before_register" in B:
    sys.exit(B["exit_before_register"])
if B.get("env_file"):
    with open(B["env_file"], "w") as f:
        json.dump(dict(os.environ), f)
status, headers, body = call(
    "POST", "register", json.dumps({{"events": B.get("events", ["INVOKE", "SHUTDOWN"])}}),
    {{"Lambda-Extension-Name": NAME}},
)
log("registered", status, body.decode())
ident = headers["Lambda-Extension-Identifier"]
if "init_error" in B:
    call("POST", "init/error", json.dumps({{"errorMessage": "bad", "errorType": B["init_error"]}}),
         {{"Lambda-Extension-Identifier": ident,
           "Lambda-Extension-Function-Error-Type": B["init_error"]}})
    sys.exit(1)
time.sleep(B.get("init_delay", 0))
invokes = 0
while True:
    status, headers, body = call(
        "GET", "event/next", headers={{"Lambda-Extension-Identifier": ident}}
    )
    event = json.loads(body)
    log("event", json.dumps(event))
    if event["eventType"] == "INVOKE":
        invokes += 1
        time.sleep(B.get("post_invoke_sleep", 0))
        if B.get("crash_after") == invokes and not os.path.exists(B.get("crash_marker", "")):
            if B.get("crash_marker"):
                open(B["crash_marker"], "w").close()
            log("crashing")
            sys.exit(B.get("crash_code", 0))
    else:
        if B.get("ignore_shutdown"):
            log("ignoring shutdown")
            while True:
                time.sleep(1)
        log("shutdown", round(event["deadlineMs"] / 1000.0 - time.time(), 3))
        sys.exit(0)
"""


def _make_executable(path: Path) -> None:
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def write_test_extension(extensions_dir: Path, name: str, **behaviour: Any) -> Path:
    """Write an executable stdlib test extension called ``name``; ``behaviour`` keys:
    events, register_delay, init_delay, exit_before_register, init_error, post_invoke_sleep,
    crash_after, crash_code, crash_marker (crash only while this file is absent),
    ignore_shutdown, env_file."""
    extensions_dir.mkdir(parents=True, exist_ok=True)
    path = extensions_dir / name
    path.write_text(_TEST_EXTENSION.format(python=sys.executable, behaviour=json.dumps(behaviour)))
    _make_executable(path)
    return path


def write_dev_launcher(extensions_dir: Path, name: str = "cachelayer") -> Path:
    """An extension launcher running this checkout's ``cachelayer.extension`` with the venv's
    Python (what the layer's launcher does, minus the layer)."""
    extensions_dir.mkdir(parents=True, exist_ok=True)
    path = extensions_dir / name
    path.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m cachelayer.extension "$@"\n')
    _make_executable(path)
    return path


def write_packages(packages: Path) -> Path:
    """Make ``packages`` look like a layer's private packages directory: a symlink to every
    entry of this venv's site-packages (dist-info included, so entry points resolve) and
    ``cachelayer`` pointing at this checkout's source."""
    import sysconfig

    packages.mkdir(parents=True, exist_ok=True)
    site = Path(sysconfig.get_paths()["purelib"])
    for entry in site.iterdir():
        if entry.name.startswith(("__editable__", "cachelayer")) and not entry.name.endswith(
            ".dist-info"
        ):
            continue
        if entry.suffix == ".pth" or entry.name == "__pycache__":
            continue
        (packages / entry.name).symlink_to(entry)
    (packages / "cachelayer").symlink_to(REPO_SRC / "cachelayer")
    return packages


def write_layer(root: Path) -> Path:
    """Lay out ``root`` like ``/opt`` of a layer: ``extensions/cachelayer`` is the real
    launcher.sh and ``cachelayer/`` the packages (see write_packages). Return the extensions
    directory. Run the function with ``CACHE_EXTENSION_PYTHON`` set to the venv's Python."""
    extensions = root / "extensions"
    extensions.mkdir(parents=True, exist_ok=True)
    launcher = extensions / "cachelayer"
    shutil.copyfile(LAUNCHER_SH, launcher)
    _make_executable(launcher)
    write_packages(root / "cachelayer")
    return extensions
