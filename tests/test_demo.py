"""The demo's summary says honestly which way each duration went."""

from __future__ import annotations

from cachelayer.demo import comparison


class TestComparison:
    def test_longer_init_is_said_to_be_longer(self) -> None:
        """When the extension adds init time, the summary says how much, in those words."""
        cached = {"init": 340.0, "cold": 7.5, "warm_avg": 4.0}
        direct = {"init": 230.0, "cold": 11.5, "warm_avg": 8.0}
        text = "\n".join(comparison(cached, direct))
        assert "init 1.48x, cold 0.65x, warm avg 0.50x" in text
        assert "Init is 110.0 ms LONGER through the extension (340.0 vs 230.0 ms)." in text
        assert "The cold invocation is 4.0 ms shorter through the extension" in text

    def test_shorter_init_is_said_to_be_shorter(self) -> None:
        """A shorter init is reported as shorter, never as a gain it is not."""
        text = "\n".join(
            comparison(
                {"init": 100.0, "cold": 20.0, "warm_avg": 9.0},
                {"init": 150.0, "cold": 10.0, "warm_avg": 8.0},
            )
        )
        assert "Init is 50.0 ms shorter" in text
        assert "The cold invocation is 10.0 ms LONGER" in text
