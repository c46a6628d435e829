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
