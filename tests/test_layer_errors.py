"""What `cachelayer layer build` says when it is asked for the impossible."""

from __future__ import annotations

from pathlib import Path

import pytest

from cachelayer.layer_builder.errors import LayerBuildError
from cachelayer.layer_builder.installer import Pip, install_args
from cachelayer.layer_builder.targets import Target


def pip_install(tmp_path: Path, requirement: str) -> str:
    target = Target.parse("python3.12", "x86_64")
    args = [*install_args(target, tmp_path / "site"), "--no-deps", requirement]
    with pytest.raises(LayerBuildError) as info:
        Pip(lambda line: None).run(args, what="--with " + requirement, cwd=tmp_path, target=target)
    return str(info.value)


@pytest.mark.slow
class TestUnknownPackage:
    def test_package_that_does_not_exist_is_not_found(self, tmp_path: Path) -> None:
        """A --with name the index does not know is "not found", not a runtime/arch problem."""
        message = pip_install(tmp_path, "cachelayer-no-such-provider-7f3a==1.0")
        assert "'cachelayer-no-such-provider-7f3a' was not found on the package index" in message
        assert "wheel" not in message and "x86_64" not in message

    def test_package_without_wheels_still_blames_the_wheels(self, tmp_path: Path) -> None:
        """A package that exists but publishes no wheel (pycrypto: source only) is told apart."""
        message = pip_install(tmp_path, "pycrypto==2.6.1")
        assert "no wheel of pycrypto==2.6.1" in message and "python3.12 on x86_64" in message


def build(*argv: str) -> tuple:
    """Run `cachelayer layer build ARGV`; return (exit code, stdout, stderr)."""
    import argparse
    import io

    from cachelayer.layer_builder.cli import register

    parser = argparse.ArgumentParser(prog="cachelayer")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["layer", "build", *argv])
    out, err = io.StringIO(), io.StringIO()
    code = args.func(args, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


class TestOutputSuffix:
    @pytest.mark.parametrize("name", ["layer.tar.gz", "layer.tgz", "layer.tar", "layer.7z"])
    def test_other_archive_suffix_is_refused(self, tmp_path: Path, name: str) -> None:
        """-o with an archive suffix other than .zip is refused at once, suggesting .zip."""
        code, _, err = build("--runtime", "python3.12", "-o", str(tmp_path / name))
        assert code == 2
        assert "Lambda layers are zip files" in err and "layer.zip" in err
        assert not (tmp_path / name).exists()


class TestPythonForBytecode:
    def test_interpreter_of_another_version_is_refused_before_building(
        self, tmp_path: Path
    ) -> None:
        """--python naming an interpreter of another version stops at once, naming both."""
        import sys

        other = "3.12" if sys.version_info[:2] != (3, 12) else "3.13"
        code, _, err = build(
            "--runtime", f"python{other}", "--python", sys.executable, "-o", str(tmp_path / "l.zip")
        )
        assert code == 2
        mine = "{}.{}".format(*sys.version_info[:2])
        assert f"is Python {mine}, but python{other} needs bytecode of Python {other}" in err

    def test_missing_interpreter_is_refused(self, tmp_path: Path) -> None:
        """--python that does not exist says it cannot run it."""
        code, _, err = build(
            "--runtime",
            "python3.12",
            "--python",
            str(tmp_path / "nope"),
            "-o",
            str(tmp_path / "l.zip"),
        )
        assert code == 2 and "cannot run it" in err

    def test_named_interpreter_compiles_the_bytecode(self, tmp_path: Path) -> None:
        """The builder compiles with the interpreter --python names (here a symlink to this
        one under another name, as a python3.X outside PATH would be)."""
        import os
        import sys

        from cachelayer.layer_builder.build import BuildRequest, LayerBuilder

        version = "{}.{}".format(*sys.version_info[:2])
        link = tmp_path / "bin" / "my-python"
        link.parent.mkdir()
        os.symlink(sys.executable, link)
        stage = tmp_path / "stage"
        site = stage / "cachelayer"
        site.mkdir(parents=True)
        (site / "mod.py").write_text("X = 1\n")
        lines: list = []
        request = BuildRequest(
            target=Target.parse(f"python{version}", "x86_64"),
            output=tmp_path / "l.zip",
            python=str(link),
        )
        LayerBuilder(lines.append)._compile(request, stage, site)
        assert any(f"with {link}" in line for line in lines)
        assert list((site / "__pycache__").glob("mod.cpython-*.pyc"))
