"""The tests' clocks: ManualClock in process, FileClock across processes, and the clocked server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cachelayer.testing.clock import FileClock, ManualClock


class TestManualClock:
    def test_moves_only_when_told(self) -> None:
        """Reading it never moves it; ``advance`` adds exactly what it is given."""
        clock = ManualClock(start=5.0)
        assert (clock(), clock()) == (5.0, 5.0)
        clock.advance(1.25)
        assert clock() == 6.25


class TestFileClock:
    def test_another_reader_of_the_file_sees_every_advance(self, tmp_path: Path) -> None:
        """A clock on the same file (as in the server process) sees the test's advances, which
        add up; before any, it reads its start."""
        mover, reader = FileClock(tmp_path / "clock"), FileClock(tmp_path / "clock", start=50.0)
        assert reader() == 50.0
        mover.advance(1.5)
        mover.advance(0.25)
        assert (mover(), reader()) == (1001.75, 51.75)
        assert not (tmp_path / "clock.partial").exists()


class TestClockedServer:
    def test_without_the_clock_file_it_says_which_variable_to_set(self) -> None:
        """``python -m cachelayer.testing.clocked`` without CACHELAYER_TEST_CLOCK exits 2,
        naming the variable."""
        env = {k: v for k, v in os.environ.items() if k != "CACHELAYER_TEST_CLOCK"}
        done = subprocess.run(
            [sys.executable, "-m", "cachelayer.testing.clocked"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 2
        assert "set CACHELAYER_TEST_CLOCK" in done.stderr
