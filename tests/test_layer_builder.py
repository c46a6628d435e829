"""The layer builder: targets, reproducible zips, pruning, real builds, the built layer run under
the local Lambda emulator, and publishing to Lambda (moto)."""

from __future__ import annotations

import argparse
import io
import json
import os
import stat
import subprocess
import sys
import urllib.request
import zipfile
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from cachelayer.layer_builder import archive, prune, wheels
from cachelayer.layer_builder.cli import register, run_build, run_publish
from cachelayer.layer_builder.errors import LayerBuildError
from cachelayer.layer_builder.installer import translate_failure
from cachelayer.layer_builder.publish import publish_layer, read_layer_metadata
from cachelayer.layer_builder.targets import ELF_MACHINES, Target
from cachelayer.testing.moto import aws_environment, free_port
from cachelayer.testing.sample import (
    SAMPLE_PARAMETER_VALUE,
    SAMPLE_SECRET_VALUE,
    seed_sample,
)

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "layer_fixtures"
IDENTITY = FIXTURES / "cachelayer-identity"
HOST_RUNTIME = f"python{sys.version_info.major}.{sys.version_info.minor}"
HOST_ARCH = {"x86_64": "x86_64", "aarch64": "arm64"}[os.uname().machine]
OTHER_ARCH = "arm64" if HOST_ARCH == "x86_64" else "x86_64"
BUILT_IN_SERVICES = {"dynamodb", "secretsmanager", "ssm"}


def _parse(argv: List[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="cachelayer")
    register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def _build(argv: List[str]) -> Dict[str, Any]:
    """Run ``cachelayer layer build`` in-process; return its exit code and output."""
    out, err = io.StringIO(), io.StringIO()
    code = run_build(_parse(["layer", "build", *argv]), out=out, err=err)
    return {"code": code, "out": out.getvalue(), "err": err.getvalue()}


def _sha(out: str) -> str:
    return next(line.split()[-1] for line in out.splitlines() if "sha256:" in line)


# -- one build of each kind per session ----------------------------------------------------------


@pytest.fixture(scope="session")
def host_layer(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    """A layer for this machine's Python and arch, with the third-party identity provider."""
    out = tmp_path_factory.mktemp("host-layer") / "layer.zip"
    result = _build(
        ["--runtime", HOST_RUNTIME, "--arch", HOST_ARCH, "--with", str(IDENTITY), "-o", str(out)]
    )
    assert result["code"] == 0, result["err"]
    unzipped = out.parent / "unzipped"
    with zipfile.ZipFile(out) as zf:
        zf.extractall(unzipped)
    # extractall drops modes: restore them from the zip, as Lambda does.
    with zipfile.ZipFile(out) as zf:
        for info in zf.infolist():
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                os.chmod(unzipped / info.filename, mode)
    return {"zip": out, "dir": unzipped, **result}


@pytest.fixture(scope="session")
def other_arch_layer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A layer for the other architecture, as a directory."""
    out = tmp_path_factory.mktemp("other-arch") / "layer"
    result = _build(["--runtime", "python3.12", "--arch", OTHER_ARCH, "-o", str(out)])
    assert result["code"] == 0, result["err"]
    return out


class TestTargets:
    def test_unknown_runtime_names_the_choices(self) -> None:
        """An unknown runtime is refused with the list of supported ones."""
        with pytest.raises(LayerBuildError, match=r"python3\.8.*python3\.9, python3\.10"):
            Target.parse("python3.8", "x86_64")

    def test_architecture_alias_is_explained(self) -> None:
        """``aarch64`` is refused with a pointer to Lambda's name for it."""
        with pytest.raises(LayerBuildError, match="Lambda calls it arm64"):
            Target.parse("python3.12", "aarch64")

    def test_platform_tags_follow_the_runtime_glibc(self) -> None:
        """python3.12 (AL2023) accepts manylinux up to glibc 2.34; python3.11 (AL2) up to 2.26."""
        new = Target.parse("python3.12", "arm64").platforms
        old = Target.parse("python3.11", "x86_64").platforms
        assert new[0] == "manylinux_2_34_aarch64" and new[-1] == "manylinux2014_aarch64"
        assert old[0] == "manylinux_2_26_x86_64" and "manylinux_2_28_x86_64" not in old

    def test_cli_reports_a_bad_runtime_without_building(self) -> None:
        """The command exits 2 with a one-line error for an unknown runtime."""
        result = _build(["--runtime", "python2.7", "-o", "/tmp/never.zip"])
        assert result["code"] == 2 and "unknown runtime 'python2.7'" in result["err"]


class TestReproducibleZip:
    def _tree(self, root: Path) -> Path:
        (root / "extensions").mkdir(parents=True)
        launcher = root / "extensions" / "cachelayer"
        launcher.write_text("#!/bin/sh\n")
        launcher.chmod(0o700)
        (root / "cachelayer" / "pkg").mkdir(parents=True)
        (root / "cachelayer" / "pkg" / "b.py").write_text("b = 1\n")
        (root / "cachelayer" / "pkg" / "a.py").write_text("a = 1\n")
        (root / "cachelayer" / "pkg" / "a.py").chmod(0o600)
        return root

    def test_same_tree_same_bytes_whatever_the_mtimes(self, tmp_path: Path) -> None:
        """Two zips of equal trees with different mtimes are byte-identical."""
        one, two = self._tree(tmp_path / "one"), self._tree(tmp_path / "two")
        os.utime(two / "cachelayer" / "pkg" / "a.py", (1e9, 1e9))
        archive.write_zip(one, tmp_path / "1.zip")
        archive.write_zip(two, tmp_path / "2.zip")
        assert (tmp_path / "1.zip").read_bytes() == (tmp_path / "2.zip").read_bytes()

    def test_entries_sorted_with_fixed_modes_and_times(self, tmp_path: Path) -> None:
        """Entries are sorted, dated 1980-01-01, 0755 for executables and dirs, else 0644."""
        archive.write_zip(self._tree(tmp_path / "t"), tmp_path / "t.zip")
        with zipfile.ZipFile(tmp_path / "t.zip") as zf:
            infos = zf.infolist()
        names = [i.filename for i in infos]
        assert names == sorted(names)
        modes = {i.filename: stat.S_IMODE(i.external_attr >> 16) for i in infos}
        assert modes["extensions/cachelayer"] == 0o755
        assert modes["cachelayer/pkg/a.py"] == 0o644
        assert modes["cachelayer/pkg/"] == 0o755
        assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}

    def test_source_date_epoch_sets_the_timestamp(self) -> None:
        """SOURCE_DATE_EPOCH (UTC) becomes the entries' time, to 2-second resolution."""
        assert archive.zip_timestamp({"SOURCE_DATE_EPOCH": "1700000001"}) == (
            2023,
            11,
            14,
            22,
            13,
            20,
        )
        with pytest.raises(LayerBuildError, match="SOURCE_DATE_EPOCH"):
            archive.zip_timestamp({"SOURCE_DATE_EPOCH": "yesterday"})

    def test_wheel_of_installed_cachelayer_is_stable(self, tmp_path: Path) -> None:
        """The wheel of the installed cachelayer is byte-stable and carries its entry points."""
        one = wheels.wheel_of_installed("cachelayer", "cachelayer", tmp_path / "1")
        two = wheels.wheel_of_installed("cachelayer", "cachelayer", tmp_path / "2")
        assert one.read_bytes() == two.read_bytes()
        with zipfile.ZipFile(one) as zf:
            eps = zf.read(
                f"cachelayer-{one.name.split('-')[1]}.dist-info/entry_points.txt"
            ).decode()
            assert not [n for n in zf.namelist() if n.endswith(".pyc")]
        assert "[cachelayer]" in eps and "ssm" in eps


class TestPrune:
    def _site(self, root: Path) -> Path:
        data = root / "botocore" / "data"
        for svc in ("ssm", "s3", "ec2", "sts"):
            (data / svc / "2014-11-06").mkdir(parents=True)
            (data / svc / "2014-11-06" / "service-2.json.gz").write_bytes(b"x" * 10)
            (data / svc / "2014-11-06" / "examples-1.json").write_text("{}")
        for f in (
            "endpoints.json",
            "partitions.json",
            "_retry.json",
            "sdk-default-configuration.json",
        ):
            (data / f).write_text("{}")
        (root / "boto3" / "data" / "s3").mkdir(parents=True)
        (root / "boto3" / "data" / "s3" / "resources-1.json").write_text("{}")
        (root / "boto3" / "__pycache__").mkdir()
        (root / "boto3" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"")
        (root / "dep" / "tests").mkdir(parents=True)
        (root / "dep" / "tests" / "test_x.py").write_text("")
        (root / "dep" / "mod.c").write_text("")
        (root / "bin").mkdir()
        (root / "bin" / "jp.py").write_text("#!/some/venv/python\n")
        info = root / "dep-1.0.dist-info"
        info.mkdir()
        (info / "direct_url.json").write_text('{"url": "file:///tmp/xyz/dep.whl"}')
        (info / "RECORD").write_text(
            "dep/tests/test_x.py,,\n../../bin/jp.py,,\ndep-1.0.dist-info/direct_url.json,,\n"
            "dep-1.0.dist-info/RECORD,,\n"
        )
        return root

    def test_keeps_only_declared_models_and_botocore_data_files(self, tmp_path: Path) -> None:
        """Only the declared services' models stay, plus endpoints/partitions/retry data."""
        site = self._site(tmp_path)
        report = prune.prune(site, {"ssm", "sts"})
        assert report.services_kept == ["ssm", "sts"] and report.services_removed == 2
        data = site / "botocore" / "data"
        assert sorted(p.name for p in data.iterdir()) == sorted(
            [
                "_retry.json",
                "endpoints.json",
                "partitions.json",
                "sdk-default-configuration.json",
                "ssm",
                "sts",
            ]
        )
        assert not list(data.rglob("examples-1.json"))
        assert not (site / "boto3" / "data").exists()

    def test_drops_caches_tests_sources_scripts_and_fixes_records(self, tmp_path: Path) -> None:
        """Caches, tests, C sources, bin/ and direct_url.json go; RECORD lists what stays."""
        site = self._site(tmp_path)
        prune.prune(site, {"ssm"})
        assert not list(site.rglob("__pycache__")) and not (site / "dep" / "tests").exists()
        assert not (site / "dep" / "mod.c").exists() and not (site / "bin").exists()
        assert not (site / "dep-1.0.dist-info" / "direct_url.json").exists()
        assert (site / "dep-1.0.dist-info" / "RECORD").read_text() == "dep-1.0.dist-info/RECORD,,\n"

    def test_unknown_service_is_an_error_with_a_suggestion(self, tmp_path: Path) -> None:
        """A provider declaring a service botocore lacks fails the build, suggesting close names."""
        site = self._site(tmp_path)
        with pytest.raises(LayerBuildError, match=r"'ssms'.*did you mean ssm"):
            prune.prune(site, {"ssms"})


class TestPipErrors:
    def test_missing_wheel_names_package_and_platform(self) -> None:
        """pip's "no matching distribution" becomes an error naming the package and target."""
        lines = [
            "ERROR: Could not find a version that satisfies the requirement uvloop==0.19.0 "
            "(from cachelayer==0.1.0) (from versions: 0.21.0, 0.22.1)",
            "ERROR: No matching distribution found for uvloop==0.19.0",
        ]
        err = translate_failure(
            lines, what="installing", target=Target.parse("python3.13", "arm64")
        )
        text = str(err)
        assert "no wheel of uvloop==0.19.0 (needed by cachelayer==0.1.0)" in text
        assert "python3.13 on arm64" in text and "aarch64" in text and "0.21.0, 0.22.1" in text


@pytest.mark.slow
class TestBuiltLayer:
    def test_bytecode_for_the_target_runs_from_opt_without_timestamps(
        self, host_layer: Dict[str, Any]
    ) -> None:
        """The host-Python layer ships unchecked-hash .pyc of its own version beside every module
        (no pip-era caches), recording /opt paths, so a read-only /opt needs no compile."""
        import importlib.util
        import marshal

        tag = sys.implementation.cache_tag
        with zipfile.ZipFile(host_layer["zip"]) as zf:
            names = set(zf.namelist())
            pycs = [n for n in names if n.endswith(".pyc")]
            assert pycs and all(f".{tag}.pyc" in n for n in pycs)
            for source in ("cachelayer/cachelayer/core/cache.py", "cachelayer/botocore/client.py"):
                folder, _, module = source.rpartition("/")
                pyc = f"{folder}/__pycache__/{module[:-3]}.{tag}.pyc"
                assert pyc in names, pyc
                data = zf.read(pyc)
                assert data[:4] == importlib.util.MAGIC_NUMBER
                assert int.from_bytes(data[4:8], "little") == 0b01  # hash-based, unchecked
                code = marshal.loads(data[16:])
                assert code.co_filename == "/opt/" + source

    def test_startup_caches_come_with_the_layer(self, host_layer: Dict[str, Any]) -> None:
        """The layer ships its startup caches made for its Python (a read-only /opt could never
        write them): the extension's startup imports from the layer take their modules from
        the bundle (the layer's own: the runtime's standard library is Lambda's), and compile
        no regular expression and no attrs method."""
        tag = sys.implementation.cache_tag
        site = host_layer["dir"] / "cachelayer"
        cache = site / "cachelayer" / "__pycache__"
        assert (cache / f"attrs-methods.{tag}.marshal").is_file()
        assert (cache / f"re-programs.{tag}.marshal").is_file()
        assert (cache / f"startup-modules.{tag}.bundle").is_file()
        assert "modules bundled" in host_layer["err"] + host_layer["out"]
        startup = (
            "import sys; sys.path.insert(0, sys.argv[1]); from cachelayer import startup_cache; "
            "c = startup_cache.install(modules=True); import cachelayer.extension, "
            "cachelayer.core.app, cachelayer.server; from cachelayer import plugins; "
            "plugins.discover(); import json; print(json.dumps([c.modules.served, "
            "c.modules.refused, sorted(c.modules.index), c.programs.compiled, c.methods.hits, "
            "c.methods.compiled, cachelayer.server.__file__]))"
        )
        done = subprocess.run(
            [sys.executable, "-I", "-S", "-B", "-c", startup, str(site)],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        served, refused, index, programs, hits, compiled, server = json.loads(done.stdout)
        assert served >= 60 and refused == 0 and programs == 0
        assert all(n.split(".")[0] not in ("json", "asyncio", "email") for n in index)
        assert hits >= 40 and compiled == 0
        assert server == str(site / "cachelayer" / "server" / "__init__.py")

    def test_layout_modes_and_private_packages(self, host_layer: Dict[str, Any]) -> None:
        """The zip holds an executable extensions/cachelayer and packages under cachelayer/ only."""
        with zipfile.ZipFile(host_layer["zip"]) as zf:
            infos = {i.filename: i for i in zf.infolist()}
        assert stat.S_IMODE(infos["extensions/cachelayer"].external_attr >> 16) == 0o755
        tops = {name.split("/", 1)[0] for name in infos}
        assert tops == {"extensions", "cachelayer"}  # nothing in python/ (/opt/python)
        assert not [n for n in infos if n.endswith("direct_url.json")]
        for pkg in (
            "cachelayer/cachelayer/__init__.py",
            "cachelayer/boto3/__init__.py",
            "cachelayer/uvloop/__init__.py",
            "cachelayer/httptools/__init__.py",
            "cachelayer/cachelayer_identity/__init__.py",
        ):
            assert pkg in infos, pkg

    def test_dist_info_keeps_entry_points(self, host_layer: Dict[str, Any]) -> None:
        """dist-info survives: built-in and third-party entry points are found in the layer."""
        from importlib import metadata

        site = str(host_layer["dir"] / "cachelayer")
        eps = {
            ep.name
            for d in metadata.distributions(path=[site])
            for ep in d.entry_points
            if ep.group == "cachelayer"
        }
        assert {"parameters", "secrets", "dynamodb", "identity"} <= eps

    def test_models_pruned_to_the_providers_services(self, host_layer: Dict[str, Any]) -> None:
        """botocore keeps only the models of ssm, secretsmanager, dynamodb and the plugin's sts."""
        data = host_layer["dir"] / "cachelayer" / "botocore" / "data"
        assert sorted(p.name for p in data.iterdir() if p.is_dir()) == sorted(
            BUILT_IN_SERVICES | {"sts"}
        )
        assert (data / "endpoints.json").is_file() and (data / "partitions.json").is_file()
        meta = json.loads((host_layer["dir"] / "cachelayer" / "layer.json").read_text())
        assert meta["runtime"] == HOST_RUNTIME and meta["architecture"] == HOST_ARCH
        assert set(meta["services"]) == BUILT_IN_SERVICES | {"sts"}
        assert {p["route"] for p in meta["providers"]} >= {
            "parameters",
            "secrets",
            "dynamodb",
            "identity",
        }

    def test_sizes_and_hash_are_reported(self, host_layer: Dict[str, Any]) -> None:
        """The summary shows sizes before and after pruning and the zip's sha256."""
        out = host_layer["out"]
        assert "before pruning" in out and "after pruning" in out
        assert _sha(out) == archive.sha256_of(host_layer["zip"])
        assert "[3/6]" in host_layer["err"] and "Successfully installed" in host_layer["err"]

    def test_same_inputs_give_the_same_bytes(
        self, host_layer: Dict[str, Any], tmp_path: Path
    ) -> None:
        """Building again with the same inputs gives a byte-identical zip."""
        again = tmp_path / "again.zip"
        result = _build(
            [
                "--runtime",
                HOST_RUNTIME,
                "--arch",
                HOST_ARCH,
                "--with",
                str(IDENTITY),
                "-o",
                str(again),
            ]
        )
        assert result["code"] == 0, result["err"]
        assert again.read_bytes() == host_layer["zip"].read_bytes()
        assert _sha(result["out"]) == _sha(host_layer["out"])

    def test_other_architecture_carries_its_own_machine_code(self, other_arch_layer: Path) -> None:
        """A layer for the other arch, built here, holds .so files for that arch (ELF e_machine)."""
        sos = list(other_arch_layer.rglob("*.so"))
        assert len(sos) >= 3  # uvloop, httptools, pyyaml
        for so in sos:
            header = so.read_bytes()[:20]
            assert header[:4] == b"\x7fELF"
            assert int.from_bytes(header[18:20], "little") == ELF_MACHINES[OTHER_ARCH], so

    def test_package_without_entry_point_is_refused(self, tmp_path: Path) -> None:
        """A --with package declaring no 'cachelayer' entry point fails the build, saying so."""
        result = _build(
            [
                "--runtime",
                HOST_RUNTIME,
                "--with",
                str(FIXTURES / "no-entry-point"),
                "-o",
                str(tmp_path / "x.zip"),
            ]
        )
        assert result["code"] == 2
        assert (
            "no-entry-point" in result["err"]
            and "no entry point in the 'cachelayer' group" in result["err"]
        )
        assert not (tmp_path / "x.zip").exists()
        assert not list((FIXTURES / "no-entry-point").glob("*.egg-info"))  # built from a copy


class TestExtras:
    def test_unknown_extra_is_refused_before_any_install(self, tmp_path: Path) -> None:
        """--extra names one of cachelayer's own extras; another name fails at once, listing them."""
        result = _build(
            ["--runtime", HOST_RUNTIME, "--extra", "nope", "-o", str(tmp_path / "x.zip")]
        )
        assert result["code"] == 2
        assert "--extra nope" in result["err"] and "shared" in result["err"]
        assert "[1/6]" not in result["err"]  # refused before preparing wheels
        assert not (tmp_path / "x.zip").exists()

    @pytest.mark.slow
    def test_shared_extra_ships_the_tiers_client_and_cipher(self, tmp_path: Path) -> None:
        """--extra shared puts redis-py and cryptography in the layer, importable from it with
        the layer's packages alone (what `cache: shared:` needs in Lambda)."""
        out = tmp_path / "layer"
        result = _build(
            ["--runtime", HOST_RUNTIME, "--arch", HOST_ARCH, "--extra", "shared", "-o", str(out)]
        )
        assert result["code"] == 0, result["err"]
        site = out / "cachelayer"
        assert (site / "redis").is_dir() and (site / "cryptography").is_dir()
        probe = (
            "import sys; sys.path.insert(0, sys.argv[1]); "
            "import redis, cryptography.hazmat.primitives.ciphers.aead as aead; "
            "import cachelayer.shared.redis_store; "
            "print(redis.__file__.startswith(sys.argv[1]), aead.__file__.startswith(sys.argv[1]))"
        )
        answer = subprocess.run(
            [sys.executable, "-I", "-S", "-c", probe, str(site)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert answer.returncode == 0, answer.stderr
        assert answer.stdout.split() == ["True", "True"]


@pytest.mark.slow
class TestLayerUnderLambda:
    @pytest.fixture()
    def function(self, host_layer: Dict[str, Any], aws: str, tmp_path: Path) -> Iterator[Any]:
        """The example Python function with the built layer, under the local emulator."""
        from cachelayer.local.emulator import LocalLambda

        seed_sample(aws)
        port = free_port()
        env = dict(aws_environment(aws))
        env.update(
            {
                "CACHE_EXTENSION_CONFIG": str(tmp_path / "config.yaml"),
                "CACHE_EXTENSION_INIT_STARTUP": "true",
                "CACHE_EXTENSION_PORT": str(port),
                "CACHE_EXTENSION_PYTHON": sys.executable,
            }
        )
        (tmp_path / "config.yaml").write_text(
            (ROOT / "examples" / "functions" / "python" / "config.yaml").read_text()
        )
        with LocalLambda(
            extensions_dir=host_layer["dir"] / "extensions",
            handler="app.handler",
            handler_dir=ROOT / "examples" / "functions" / "python",
            env=env,
        ) as fn:
            yield fn, aws, port

    def test_reads_all_sources_with_no_upstream_call_after_init(self, function: Any) -> None:
        """With init startup on, values stay right after AWS forgets them: served from cache."""
        fn, endpoint, _port = function
        report = fn.start()
        assert report.ok, (report, fn.log("cachelayer"))
        # Wipe AWS: any upstream call from now on would fail or find nothing.
        urllib.request.urlopen(
            urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")
        ).read()
        for _ in range(2):
            result = fn.invoke({})
            assert result.ok, (result.error, fn.log("cachelayer"))
            body = result.response
            assert body["errors"] == {}, fn.log("cachelayer")
            assert body["values"]["parameter"] == SAMPLE_PARAMETER_VALUE
            assert body["values"]["secret"] == SAMPLE_SECRET_VALUE
            assert body["values"]["item"]["data"] == "DynamoDB sample data"

    def test_third_party_provider_is_served_from_the_layer(self, function: Any) -> None:
        """The --with identity provider answers /identity from the built layer (STS via moto)."""
        fn, _endpoint, port = function
        assert fn.start().ok, fn.log("cachelayer")
        token = "testing-session-token"
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/identity?name=account",
            headers={"X-Aws-Parameters-Secrets-Token": token},
        )
        # Between invocations the environment is frozen, as Lambda's is: thaw it to read.
        with fn.thawed(), urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.read().decode() == "123456789012"


@pytest.mark.slow
class TestPublish:
    def test_publishes_with_the_builds_runtime_and_arch(
        self, host_layer: Dict[str, Any], aws: str
    ) -> None:
        """publish reads layer.json from the zip and prints the new LayerVersionArn."""
        import boto3

        out, err = io.StringIO(), io.StringIO()
        args = _parse(
            [
                "layer",
                "publish",
                str(host_layer["zip"]),
                "--name",
                "cachelayer-test",
                "--region",
                "us-west-2",
            ]
        )
        assert run_publish(args, out=out, err=err) == 0, err.getvalue()
        arn = out.getvalue().strip()
        assert arn.startswith("arn:aws:lambda:us-west-2:") and arn.endswith(
            ":layer:cachelayer-test:1"
        )
        client = boto3.client("lambda", region_name="us-west-2")
        got = client.get_layer_version(LayerName="cachelayer-test", VersionNumber=1)
        assert got["CompatibleRuntimes"] == [HOST_RUNTIME]
        assert got["CompatibleArchitectures"] == [HOST_ARCH]
        assert got["Content"]["CodeSize"] == host_layer["zip"].stat().st_size


class TestPublishErrors:
    def test_a_zip_not_built_by_cachelayer_is_refused(self, tmp_path: Path) -> None:
        """A zip without cachelayer/layer.json is refused before any AWS call."""
        bad = tmp_path / "other.zip"
        with zipfile.ZipFile(bad, "w") as zf:
            zf.writestr("python/x.py", "")
        with pytest.raises(LayerBuildError, match="not made by `cachelayer layer build`"):
            read_layer_metadata(bad)

    def test_bad_layer_name_is_refused(self, tmp_path: Path) -> None:
        """A layer name Lambda would reject is refused with the rule."""
        with pytest.raises(LayerBuildError, match="1-140 letters"):
            publish_layer(tmp_path, name="bad name!", client=None)
