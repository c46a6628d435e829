"""The standalone layer (its own CPython and C library) run in an empty root, as on any Lambda
runtime: as an extension against moto, under qemu-user for arm64, and beside a Node.js function
driven by AWS's own Node.js runtime client."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import ssl
import subprocess
import threading
import urllib.request
import zipfile
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest

from cachelayer.layer_builder import debian, elf
from cachelayer.layer_builder.cli import register, run_build
from cachelayer.layer_builder.errors import LayerBuildError
from cachelayer.layer_builder.targets import ELF_MACHINES, Target
from cachelayer.local.emulator import LocalLambda
from cachelayer.testing import empty_root
from cachelayer.testing.moto import aws_environment, free_port
from cachelayer.testing.sample import (
    SAMPLE_PARAMETER,
    SAMPLE_PARAMETER_VALUE,
    SAMPLE_SECRET,
    SAMPLE_SECRET_VALUE,
    seed_sample,
)
from cachelayer.testing.tls import make_test_ca

REPO = Path(__file__).resolve().parent.parent
HANDLERS = Path(__file__).resolve().parent / "lambda_fixtures" / "handlers"
NODE_SAMPLE = REPO / "examples" / "functions" / "node"
RIC_VERSION = "3.3.0"
RIC_CACHE = Path(
    os.environ.get("CACHELAYER_CACHE_DIR") or Path.home() / ".cache" / "cachelayer"
) / ("node-ric-" + RIC_VERSION)
# Lambda's own LD_LIBRARY_PATH, with a directory of incompatible libraries searched first.
HOSTILE_LD_LIBRARY_PATH = (
    "/badlib:/var/lang/lib:/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:/var/task:"
    "/var/task/lib:/opt/lib"
)
ITEM_NAME = "DynamoDbTable-pKey1-sKey1"

# Each layer build runs the bundled interpreter (under qemu for arm64) and the first Node.js test
# builds aws-lambda-ric: far past the suite's default per-test timeout on a loaded machine.
pytestmark = pytest.mark.timeout(900)

NO_ROOT = empty_root.unavailable_reason()
needs_root = pytest.mark.skipif(NO_ROOT is not None, reason=f"empty root: {NO_ROOT}")
needs_debian = pytest.mark.skipif(
    shutil.which("apt-get") is None or shutil.which("patchelf") is None,
    reason="the standalone layer builds from Debian packages (apt-get, patchelf): "
    "scripts/ci/install-standalone.sh",
)


def _build(argv: List[str]) -> Dict[str, Any]:
    import argparse

    parser = argparse.ArgumentParser(prog="cachelayer")
    register(parser.add_subparsers(dest="command", required=True))
    out, err = io.StringIO(), io.StringIO()
    code = run_build(parser.parse_args(["layer", "build", *argv]), out=out, err=err)
    return {"code": code, "out": out.getvalue(), "err": err.getvalue()}


def _standalone(tmp: Path, arch: str) -> Dict[str, Any]:
    """Build a ``--runtime any`` layer for ``arch``; its zip, layer.json and output."""
    out = tmp / f"layer-{arch}.zip"
    result = _build(["--runtime", "any", "--arch", arch, "-o", str(out)])
    assert result["code"] == 0, result["err"][-3000:]
    with zipfile.ZipFile(out) as zf:
        meta = json.loads(zf.read("cachelayer/layer.json"))
    return {"zip": out, "meta": meta, **result}


@pytest.fixture(scope="session")
def x86_layer(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    if NO_ROOT is None and os.uname().machine != "x86_64":
        pytest.skip("the x86_64 layer runs natively only on an x86_64 machine")
    return _standalone(tmp_path_factory.mktemp("standalone-x86_64"), "x86_64")


@pytest.fixture(scope="session")
def arm_layer(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    if shutil.which("qemu-aarch64-static") is None and os.uname().machine != "aarch64":
        pytest.skip("qemu-aarch64-static not installed (apt-get install qemu-user-static)")
    return _standalone(tmp_path_factory.mktemp("standalone-arm64"), "arm64")


def _elf_members(zip_path: Path, tmp: Path) -> Dict[str, Path]:
    """Every ELF file of a zip, extracted under ``tmp``."""
    found = {}
    with zipfile.ZipFile(zip_path) as zf:
        for info in zf.infolist():
            if info.is_dir():
                continue
            data = zf.read(info)
            if data[:4] == b"\x7fELF":
                path = tmp / info.filename
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
                found[info.filename] = path
    return found


class TestTargets:
    def test_non_python_runtimes_and_any_are_standalone(self) -> None:
        """nodejs22.x and any give the standalone target: cp311 wheels up to the bundled glibc."""
        node = Target.parse("nodejs22.x", "arm64")
        assert node.standalone and node.python_version == "3.11"
        assert node.platforms[0] == "manylinux_2_36_aarch64"
        assert node.compatible_runtimes == ["nodejs22.x"]
        anything = Target.parse("any", "x86_64")
        assert "nodejs22.x" in anything.compatible_runtimes
        assert "python3.12" in anything.compatible_runtimes
        assert len(anything.compatible_runtimes) <= 15  # PublishLayerVersion's limit
        assert not Target.parse("python3.12", "x86_64").standalone

    def test_unknown_runtime_lists_standalone_choices(self) -> None:
        """An unknown runtime is refused naming both kinds of layer."""
        with pytest.raises(LayerBuildError, match=r"nodejs22\.x.*any"):
            Target.parse("cobol1.0", "x86_64")

    def test_missing_arch_package_lists_is_explained(self, tmp_path: Path) -> None:
        """Without package lists for an architecture, the error says how to add them."""
        if shutil.which("apt-cache") is None:
            pytest.skip("not a Debian machine")
        with pytest.raises(LayerBuildError, match="dpkg --add-architecture s390x"):
            debian.apt_candidate("libc6:s390x", dict(os.environ))


@needs_debian
class TestStandaloneBuild:
    def test_only_x86_64_code_and_loaders_inside(
        self, x86_layer: Dict[str, Any], tmp_path: Path
    ) -> None:
        """Every ELF file is x86_64, and each ELF interpreter it names is in the layer."""
        elves = _elf_members(x86_layer["zip"], tmp_path)
        assert "cachelayer/python-runtime/bin/python3.11" in elves
        loader = "cachelayer/python-runtime/lib/ld-linux-x86-64.so.2"
        for name, path in elves.items():
            assert elf.elf_machine(path) == ELF_MACHINES["x86_64"], name
            interp = elf.elf_interpreter(path)
            assert interp in (None, "/opt/" + loader), (name, interp)

    def test_metadata_names_the_interpreter_and_its_packages(
        self, x86_layer: Dict[str, Any]
    ) -> None:
        """layer.json records the bundled CPython's version and each Debian package's hash."""
        interp = x86_layer["meta"]["interpreter"]
        assert interp["version"].startswith("3.11.")
        names = {p["name"] for p in interp["packages"]}
        assert {"python3.11-minimal", "libc6", "libssl3", "ca-certificates"} <= names
        assert all(len(p["sha256"]) == 64 and p["version"] for p in interp["packages"])
        assert interp["stdlib_bytes_after_pruning"] < interp["stdlib_bytes_before_pruning"]
        assert (
            "ssl" in interp["stdlib_modules_kept"]
            and "tkinter" not in interp["stdlib_modules_kept"]
        )
        assert x86_layer["meta"]["compatible_runtimes"][0] == "nodejs22.x"
        assert "standard library:" in x86_layer["err"] and "sha256:" in x86_layer["out"]

    def test_fits_the_size_target_with_the_three_providers(self, x86_layer: Dict[str, Any]) -> None:
        """With the three built-in providers the zip stays within 20 MiB."""
        assert {p["name"] for p in x86_layer["meta"]["providers"]} == {
            "parameters",
            "secrets",
            "dynamodb",
        }
        assert x86_layer["zip"].stat().st_size <= 20 * 1024 * 1024

    def test_stdlib_is_bytecode_only_for_the_bundled_interpreter(
        self, x86_layer: Dict[str, Any]
    ) -> None:
        """The bundled stdlib ships sourceless .pyc files; the packages' __pycache__ is cp311."""
        with zipfile.ZipFile(x86_layer["zip"]) as zf:
            names = zf.namelist()
        stdlib = "cachelayer/python-runtime/lib/python3.11/"
        assert stdlib + "os.pyc" in names and stdlib + "os.py" not in names
        assert "cachelayer/cachelayer/__pycache__/extension.cpython-311.pyc" in names
        # The startup caches, made by the bundled interpreter (cachelayer.startup_cache)
        for cache in ("attrs-methods", "re-programs"):
            assert f"cachelayer/cachelayer/__pycache__/{cache}.cpython-311.marshal" in names
        assert "cachelayer/cachelayer/__pycache__/startup-modules.cpython-311.bundle" in names

    @pytest.mark.slow
    def test_same_inputs_give_the_same_bytes(
        self, x86_layer: Dict[str, Any], tmp_path: Path
    ) -> None:
        """A second build from the same packages and .debs is byte-identical."""
        again = _standalone(tmp_path, "x86_64")
        assert again["zip"].read_bytes() == x86_layer["zip"].read_bytes()


def _root_with_layer(tmp: Path, layer: Path) -> Path:
    root = empty_root.make_root(tmp / "root", layer, (NODE_SAMPLE / "config.yaml").read_text())
    # Incompatible libraries where Lambda's LD_LIBRARY_PATH looks first: the build machine's
    # libc (another build of glibc) and files that are not libraries at all.
    bad = root / "badlib"
    bad.mkdir()
    host_libc = Path("/lib/x86_64-linux-gnu/libc.so.6")
    if host_libc.exists():
        shutil.copyfile(host_libc, bad / "libc.so.6")
    else:
        (bad / "libc.so.6").write_bytes(b"\x7fELF not a library")
    (bad / "libssl.so.3").write_bytes(b"\x7fELF not a library")
    (bad / "libcrypto.so.3").write_bytes(b"\x7fELF not a library")
    (bad / "libpthread.so.0").write_bytes(b"\x7fELF not a library")
    return root


# What a function's configuration may set that must not reach the extension's interpreter.
HOSTILE = {
    "LD_LIBRARY_PATH": HOSTILE_LD_LIBRARY_PATH,
    "LD_PRELOAD": "/badlib/libssl.so.3",
    "PYTHONPATH": "/badlib",
    "PYTHONHOME": "/badlib",
}


def _extension_env(aws: str, port: int) -> Dict[str, str]:
    env = dict(aws_environment(aws))
    env.update({"CACHE_EXTENSION_INIT_STARTUP": "true", "CACHE_EXTENSION_PORT": str(port)})
    return env


def _assert_serves_the_sample(
    fn: LocalLambda, aws: str, port: int, after_init: Optional[Callable[[], None]] = None
) -> None:
    report = fn.start()
    assert report.ok, (report, fn.log("cachelayer"))
    if after_init is not None:
        after_init()
    assert "cachelayer" in report.extensions
    # Prefetched at init: AWS forgetting everything changes nothing.
    urllib.request.urlopen(urllib.request.Request(f"{aws}/moto-api/reset", method="POST")).read()
    got = {}
    for route, name in (
        ("parameters", SAMPLE_PARAMETER),
        ("secrets", SAMPLE_SECRET),
        ("dynamodb", ITEM_NAME),
    ):
        result = fn.invoke({"op": "get", "path": f"/{route}?name={name}"})
        assert result.ok, (result.error, fn.log("cachelayer"))
        assert result.response["status"] == 200, (result.response, fn.log("cachelayer"))
        got[route] = result.response["body"]
    assert got["parameters"] == SAMPLE_PARAMETER_VALUE
    assert got["secrets"] == SAMPLE_SECRET_VALUE
    assert json.loads(got["dynamodb"])["data"] == "DynamoDB sample data"
    shutdown = fn.shutdown()
    assert shutdown.exit_codes["cachelayer"] == 0, fn.log("cachelayer")
    assert not shutdown.killed and shutdown.duration_ms < 2000


@needs_debian
@needs_root
@pytest.mark.slow
class TestInEmptyRoot:
    def test_extension_serves_the_sample_from_an_empty_root(
        self, x86_layer: Dict[str, Any], aws: str, tmp_path: Path
    ) -> None:
        """In a root with only busybox sh, the layer registers, prefetches, serves /parameters,
        /secrets and /dynamodb, and exits 0 inside SHUTDOWN's deadline; the function's LD_* and
        PYTHON* never reach its interpreter, which maps only the bundled libraries."""
        root = _root_with_layer(tmp_path, x86_layer["zip"])
        assert not [p for p in root.rglob("python*") if "opt" not in p.relative_to(root).parts]
        seed_sample(aws)
        port = free_port()
        extensions = tmp_path / "extensions"
        # The hostile variables go to the extension only: the handler here is the host's Python.
        empty_root.write_wrapper(
            extensions,
            "cachelayer",
            empty_root.enter(root, ["/opt/extensions/cachelayer"]),
            env=HOSTILE,
        )
        pids: Dict[str, int] = {}

        def clean_process() -> None:
            # The launcher exec'd its way to the interpreter: same pid, its environment and
            # its mapped libraries are the extension's own.
            pid = pids["cachelayer"]
            environ = dict(
                kv.split("=", 1)
                for kv in Path(f"/proc/{pid}/environ").read_text().split("\0")
                if "=" in kv
            )
            assert not set(HOSTILE) & set(environ), environ
            assert environ["SSL_CERT_FILE"] == "/opt/cachelayer/python-runtime/ssl/cert.pem"
            maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
            libs = {line.split()[-1] for line in maps if ".so" in line}
            # Seen from outside the root, its paths carry the root's own prefix.
            inside = str(root / "opt" / "cachelayer") + "/"
            assert libs and all(lib.startswith(inside) for lib in libs), libs

        with LocalLambda(
            extensions_dir=extensions,
            handler="app.handler",
            handler_dir=HANDLERS,
            env=_extension_env(aws, port),
            log_dir=tmp_path / "logs",
            on_spawn=pids.__setitem__,
        ) as fn:
            _assert_serves_the_sample(fn, aws, port, after_init=clean_process)

    def test_bundled_libraries_win_over_ld_library_path(
        self, x86_layer: Dict[str, Any], tmp_path: Path
    ) -> None:
        """Even run bare (no launcher) with incompatible libraries first on LD_LIBRARY_PATH, the
        interpreter loads the bundled libc and OpenSSL and verifies TLS with the bundled CAs."""
        root = _root_with_layer(tmp_path, x86_layer["zip"])
        script = (
            "import ssl, sys; sys.path.insert(0, '/opt/cachelayer'); import httptools, yaml;"
            "maps = open('/proc/self/maps').read();"
            "libs = sorted({l.split()[-1] for l in maps.splitlines() if '.so' in l});"
            "ctx = ssl.create_default_context(cafile=sys.argv[1]);"
            "print(len(ctx.get_ca_certs()), ssl.OPENSSL_VERSION); print('\\n'.join(libs))"
        )
        done = subprocess.run(
            empty_root.enter(
                root,
                [
                    "/opt/cachelayer/python-runtime/bin/python3.11",
                    "-I",
                    "-S",
                    "-c",
                    script,
                    "/opt/cachelayer/python-runtime/ssl/cert.pem",
                ],
            ),
            capture_output=True,
            text=True,
            env={"LD_LIBRARY_PATH": HOSTILE_LD_LIBRARY_PATH, "PATH": "/bin"},
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        first, *libs = done.stdout.splitlines()
        assert int(first.split()[0]) > 100 and "OpenSSL 3" in first
        assert libs and all(lib.startswith("/opt/cachelayer/") for lib in libs), libs

    def test_tls_verifies_with_the_ca_file_the_launcher_names(
        self, x86_layer: Dict[str, Any], tmp_path: Path
    ) -> None:
        """With no CA store in the image (as on Amazon Linux, for Debian's OpenSSL), the bundled
        interpreter's default TLS context trusts exactly the file SSL_CERT_FILE names: a
        loopback server signed by a test CA verifies, and the bundled file holds Amazon's
        roots, which AWS endpoints chain to."""
        root = _root_with_layer(tmp_path, x86_layer["zip"])
        ca_pem, server_ctx = _test_ca_and_server(tmp_path)
        (root / "tmp" / "ca.pem").write_bytes(ca_pem)
        with socket.create_server(("127.0.0.1", 0)) as listener:
            port = listener.getsockname()[1]

            def serve() -> None:
                conn, _ = listener.accept()
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"hello over tls")

            server = threading.Thread(target=serve, daemon=True)
            server.start()
            script = (
                "import socket, ssl, sys;"
                "ctx = ssl.create_default_context();"
                "s = ctx.wrap_socket(socket.create_connection(('127.0.0.1', int(sys.argv[1]))),"
                " server_hostname='localhost');"
                "print(s.recv(100).decode());"
                "bundled = ssl.create_default_context(cafile=sys.argv[2]);"
                "print('|'.join(dict(x[0] for x in c['subject']).get('commonName', '')"
                " for c in bundled.get_ca_certs()))"
            )
            done = subprocess.run(
                empty_root.enter(
                    root,
                    [
                        "/opt/cachelayer/python-runtime/bin/python3.11",
                        "-I",
                        "-S",
                        "-c",
                        script,
                        str(port),
                        "/opt/cachelayer/python-runtime/ssl/cert.pem",
                    ],
                ),
                capture_output=True,
                text=True,
                env={"SSL_CERT_FILE": "/tmp/ca.pem", "PATH": "/bin"},
                timeout=60,
            )
            server.join(10)
        assert done.returncode == 0, done.stderr
        greeting, names = done.stdout.splitlines()
        assert greeting == "hello over tls"
        assert {"Amazon Root CA 1", "Starfield Services Root Certificate Authority - G2"} <= set(
            names.split("|")
        )


def _test_ca_and_server(tmp: Path) -> Tuple[bytes, ssl.SSLContext]:
    """A throwaway CA (PEM) and a server context with a localhost certificate it signed."""
    ca = make_test_ca(tmp / "test-ca")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(ca.cert_file, ca.key_file)
    return ca.ca_file.read_bytes(), ctx


@needs_debian
@needs_root
@pytest.mark.slow
class TestArm64UnderQemu:
    def test_only_aarch64_code_and_loaders_inside(
        self, arm_layer: Dict[str, Any], tmp_path: Path
    ) -> None:
        """An arm64 layer built here holds only aarch64 ELF files naming its own loader."""
        elves = _elf_members(arm_layer["zip"], tmp_path)
        assert len(elves) > 10
        for name, path in elves.items():
            assert elf.elf_machine(path) == ELF_MACHINES["arm64"], name
            interp = elf.elf_interpreter(path)
            assert interp in (None, "/opt/cachelayer/python-runtime/lib/ld-linux-aarch64.so.1")

    def test_extension_serves_the_sample_under_qemu(
        self, arm_layer: Dict[str, Any], aws: str, tmp_path: Path
    ) -> None:
        """The arm64 layer's interpreter, under qemu-aarch64 in an empty root, serves the
        sample. binfmt_misc is not assumed (a shared kernel setting): qemu is started on the
        interpreter explicitly, with the launcher's own arguments, so the arch-independent
        launcher itself is what the x86_64 test covers."""
        root = _root_with_layer(tmp_path, arm_layer["zip"])
        seed_sample(aws)
        port = free_port()
        argv = empty_root.extension_argv(root, "arm64")
        env = {**_extension_env(aws, port), **empty_root.LAUNCHER_ENV}
        extensions = tmp_path / "extensions"
        empty_root.write_wrapper(extensions, "cachelayer", empty_root.enter(root, argv))
        with LocalLambda(
            extensions_dir=extensions,
            handler="app.handler",
            handler_dir=HANDLERS,
            env=env,
            log_dir=tmp_path / "logs",
            init_timeout_s=60.0,
        ) as fn:
            _assert_serves_the_sample(fn, aws, port)


def _aws_lambda_ric() -> Path:
    """AWS's Node.js runtime client, installed (and its native part built) once per cache."""
    package = RIC_CACHE / "node_modules" / "aws-lambda-ric"
    if (package / "bin" / "index.mjs").is_file() and list(package.rglob("*.node")):
        return package
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm not installed: AWS's Node.js runtime client comes from npm")
    RIC_CACHE.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", f"aws-lambda-ric@{RIC_VERSION}"],
        cwd=RIC_CACHE,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, (
        "npm install aws-lambda-ric failed (it builds with autoconf, automake, libtool, cmake, "
        "g++: scripts/ci/install-standalone.sh):\n" + done.stderr[-3000:]
    )
    return package


@needs_debian
@needs_root
@pytest.mark.slow
class TestNodeFunction:
    # npm builds aws-lambda-ric's native part (curl, aws-lambda-cpp) on first use: minutes.
    @pytest.fixture()
    def node_root(self, x86_layer: Dict[str, Any], tmp_path: Path) -> Iterator[Path]:
        """An empty root with the layer, Node.js, AWS's runtime client and the sample function:
        the shape of Lambda's nodejs22.x image, without any Python."""
        node = shutil.which("node")
        if node is None:
            pytest.skip("node not installed")
        ric = _aws_lambda_ric()
        root = _root_with_layer(tmp_path, x86_layer["zip"])
        empty_root.add_program(root, node)
        runtime = root / "var" / "runtime" / "node_modules" / "aws-lambda-ric"
        shutil.copytree(ric, runtime, symlinks=False)
        empty_root.copy_with_libraries(root, sorted(runtime.rglob("*.node")))
        for src in sorted(NODE_SAMPLE.iterdir()):
            shutil.copyfile(src, root / "var" / "task" / src.name)
        (root / "etc" / "hosts").write_text("127.0.0.1 localhost\n::1 localhost\n")
        yield root

    def test_node_sample_reads_all_three_values(
        self, node_root: Path, aws: str, tmp_path: Path
    ) -> None:
        """The Node.js sample, run by aws-lambda-ric in a root with Node.js and no Python,
        reads the parameter, the secret and the item through the layer."""
        assert not list(node_root.glob("usr/bin/python*"))
        seed_sample(aws)
        port = free_port()
        node = "/" + str(Path(shutil.which("node") or "node").resolve().relative_to("/"))
        extensions = tmp_path / "extensions"
        empty_root.write_wrapper(
            extensions,
            "cachelayer",
            empty_root.enter(node_root, ["/opt/extensions/cachelayer"]),
            env=HOSTILE,
        )
        runtime = empty_root.enter(
            node_root,
            [node, "/var/runtime/node_modules/aws-lambda-ric/bin/index.mjs", "index.handler"],
            cwd="/var/task",
        )
        env = _extension_env(aws, port)
        env.update({"AWS_EXECUTION_ENV": "AWS_Lambda_nodejs22.x", "PATH": "/usr/bin:/bin"})
        with LocalLambda(
            extensions_dir=extensions,
            handler="index.handler",
            handler_dir=NODE_SAMPLE,
            env=env,
            log_dir=tmp_path / "logs",
            runtime_command=runtime,
        ) as fn:
            report = fn.start()
            assert report.ok, (report, fn.log("cachelayer"), fn.log("runtime"))
            result = fn.invoke({})
            assert result.ok, (result.error, fn.log("runtime"), fn.log("cachelayer"))
            body = result.response
            assert body["errors"] == {}, (body, fn.log("runtime"))
            assert body["values"]["parameter"] == SAMPLE_PARAMETER_VALUE
            assert body["values"]["secret"] == SAMPLE_SECRET_VALUE
            assert body["values"]["item"]["data"] == "DynamoDB sample data"
            assert "Executing 'index.handler'" in fn.log("runtime")  # aws-lambda-ric's banner
            shutdown = fn.shutdown()
        assert shutdown.exit_codes["cachelayer"] == 0, fn.log("cachelayer")
