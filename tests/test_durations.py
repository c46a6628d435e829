"""Go duration and boolean syntax, checked against the cases of Go's own test suite."""

from __future__ import annotations

import pytest

from cachelayer.core.durations import (
    BOOL_SPELLINGS,
    format_duration,
    format_duration_ns,
    parse_bool,
    parse_duration,
    parse_duration_ns,
)

NS = 1
US = 1000 * NS
MS = 1000 * US
S = 1000 * MS
M = 60 * S
H = 60 * M

# Go's src/time/time_test.go parseDurationTests, verbatim.
GO_VALID = [
    ("0", 0),
    ("5s", 5 * S),
    ("30s", 30 * S),
    ("1478s", 1478 * S),
    ("-5s", -5 * S),
    ("+5s", 5 * S),
    ("-0", 0),
    ("+0", 0),
    ("5.0s", 5 * S),
    ("5.6s", 5 * S + 600 * MS),
    ("5.s", 5 * S),
    (".5s", 500 * MS),
    ("1.0s", 1 * S),
    ("1.00s", 1 * S),
    ("1.004s", 1 * S + 4 * MS),
    ("1.0040s", 1 * S + 4 * MS),
    ("100.00100s", 100 * S + 1 * MS),
    ("10ns", 10 * NS),
    ("11us", 11 * US),
    ("12\u00b5s", 12 * US),
    ("12\u03bcs", 12 * US),
    ("13ms", 13 * MS),
    ("14s", 14 * S),
    ("15m", 15 * M),
    ("16h", 16 * H),
    ("3h30m", 3 * H + 30 * M),
    ("10.5s4m", 4 * M + 10 * S + 500 * MS),
    ("-2m3.4s", -(2 * M + 3 * S + 400 * MS)),
    ("1h2m3s4ms5us6ns", 1 * H + 2 * M + 3 * S + 4 * MS + 5 * US + 6 * NS),
    ("39h9m14.425s", 39 * H + 9 * M + 14 * S + 425 * MS),
    ("52763797000ns", 52763797000 * NS),
    ("0.3333333333333333333h", 20 * M),
    ("9007199254740993ns", (1 << 53) + 1),
    ("9223372036854775807ns", (1 << 63) - 1),
    ("9223372036854775.807us", (1 << 63) - 1),
    ("9223372036s854ms775us807ns", (1 << 63) - 1),
    ("-9223372036854775808ns", -(1 << 63)),
    ("-9223372036854775.808us", -(1 << 63)),
    ("-9223372036s854ms775us808ns", -(1 << 63)),
    ("-2562047h47m16.854775808s", -(1 << 63)),
    ("0.100000000000000000000h", 6 * M),
    ("0.830103483285477580700h", 49 * M + 48 * S + 372539827 * NS),
]

# Go's parseDurationErrorTests (those expressible as Python str): input, quoted form in the error.
GO_INVALID = [
    ("", '""'),
    ("3", '"3"'),
    ("-", '"-"'),
    ("s", '"s"'),
    (".", '"."'),
    ("-.", '"-."'),
    (".s", '".s"'),
    ("+.s", '"+.s"'),
    ("1d", '"1d"'),
    ("\ufffd", '"\\xef\\xbf\\xbd"'),
    ("\ufffd hello \ufffd world", '"\\xef\\xbf\\xbd hello \\xef\\xbf\\xbd world"'),
    ("9223372036854775810ns", '"9223372036854775810ns"'),
    ("9223372036854775808ns", '"9223372036854775808ns"'),
    ("-9223372036854775809ns", '"-9223372036854775809ns"'),
    ("9223372036854776us", '"9223372036854776us"'),
    ("3000000h", '"3000000h"'),
    ("9223372036854775.808us", '"9223372036854775.808us"'),
    ("9223372036854ms775us808ns", '"9223372036854ms775us808ns"'),
]

# Go's durationTests for Duration.String().
GO_STRINGS = [
    ("0s", 0),
    ("1ns", 1 * NS),
    ("1.1\u00b5s", 1100 * NS),
    ("2.2ms", 2200 * US),
    ("3.3s", 3300 * MS),
    ("4m5s", 4 * M + 5 * S),
    ("4m5.001s", 4 * M + 5001 * MS),
    ("5h6m7.001s", 5 * H + 6 * M + 7001 * MS),
    ("8m0.000000001s", 8 * M + 1 * NS),
    ("2562047h47m16.854775807s", (1 << 63) - 1),
    ("-2562047h47m16.854775808s", -(1 << 63)),
]


class TestParseDuration:
    @pytest.mark.parametrize(("text", "ns"), GO_VALID)
    def test_go_valid_cases(self, text: str, ns: int) -> None:
        """Every valid case of Go's test suite parses to the same nanoseconds."""
        assert parse_duration_ns(text) == ns

    @pytest.mark.parametrize(("text", "quoted"), GO_INVALID)
    def test_go_invalid_cases(self, text: str, quoted: str) -> None:
        """Every invalid case of Go's test suite is refused, quoting the input as Go does."""
        with pytest.raises(ValueError) as info:
            parse_duration_ns(text)
        assert str(info.value).startswith("time: ")
        assert f"duration {quoted}" in str(info.value)

    @pytest.mark.parametrize(
        ("text", "seconds"),
        [("30s", 30.0), ("3m", 180.0), ("1h30m", 5400.0), ("500ms", 0.5), ("1.5h", 5400.0)],
    )
    def test_seconds(self, text: str, seconds: float) -> None:
        """parse_duration returns seconds as a float, for the SPEC's examples."""
        assert parse_duration(text) == seconds

    def test_missing_unit_message(self) -> None:
        """A bare number gets Go's message plus a hint showing valid spellings."""
        with pytest.raises(
            ValueError, match=r"^time: missing unit in duration \"30\"; write e\.g\. 30s, 5m, 1h30m"
        ):
            parse_duration("30")

    def test_unknown_unit_message(self) -> None:
        """An unknown unit is named in the message, as Go does, plus the list of units."""
        with pytest.raises(
            ValueError,
            match=r'^time: unknown unit "d" in duration "3d";.*units: ns, us, ms, s, m, h',
        ):
            parse_duration("3d")

    def test_spaces_are_not_allowed(self) -> None:
        """Spaces are part of the unit in Go's grammar, so '1h 30m' is an unknown unit."""
        with pytest.raises(ValueError, match=r'unknown unit "h "'):
            parse_duration("1h 30m")

    def test_non_ascii_digits_are_not_digits(self) -> None:
        """Only ASCII digits count (Python's isdigit would accept Arabic-Indic digits)."""
        with pytest.raises(ValueError, match="invalid duration"):
            parse_duration("\u0663s")

    def test_negative_durations_parse(self) -> None:
        """Go accepts negative durations; rejecting them for TTLs is the caller's job."""
        assert parse_duration("-1m") == -60.0


class TestFormatDuration:
    @pytest.mark.parametrize(("text", "ns"), GO_STRINGS)
    def test_go_cases(self, text: str, ns: int) -> None:
        """Every case of Go's Duration.String test formats identically."""
        assert format_duration_ns(ns) == text

    @pytest.mark.parametrize(
        ("seconds", "text"),
        [(5400, "1h30m0s"), (0.5, "500ms"), (0, "0s"), (60, "1m0s"), (-1.5, "-1.5s")],
    )
    def test_seconds(self, seconds: float, text: str) -> None:
        """format_duration takes seconds and formats like Go."""
        assert format_duration(seconds) == text

    @pytest.mark.parametrize(("text", "ns"), GO_VALID)
    def test_round_trip(self, text: str, ns: int) -> None:
        """Formatting then parsing gives back the same nanoseconds."""
        assert parse_duration_ns(format_duration_ns(ns)) == ns


class TestParseBool:
    @pytest.mark.parametrize("text", ["1", "t", "T", "TRUE", "true", "True"])
    def test_true_spellings(self, text: str) -> None:
        """Go's true spellings are true."""
        assert parse_bool(text) is True

    @pytest.mark.parametrize("text", ["0", "f", "F", "FALSE", "false", "False"])
    def test_false_spellings(self, text: str) -> None:
        """Go's false spellings are false."""
        assert parse_bool(text) is False

    @pytest.mark.parametrize("text", ["", "yes", "no", "tRUE", " true", "2", "on"])
    def test_other_spellings_are_refused(self, text: str) -> None:
        """Anything else is refused with Go's message and the accepted spellings."""
        with pytest.raises(ValueError) as info:
            parse_bool(text)
        message = str(info.value)
        assert message.startswith("strconv.ParseBool: parsing ")
        assert "invalid syntax" in message
        assert all(spelling in message for spelling in BOOL_SPELLINGS)
