"""Go's duration and boolean syntax: time.ParseDuration, Duration.String, strconv.ParseBool."""

from __future__ import annotations

from typing import Dict, Tuple

__all__ = [
    "BOOL_SPELLINGS",
    "DURATION_HINT",
    "format_duration",
    "format_duration_ns",
    "parse_bool",
    "parse_duration",
    "parse_duration_ns",
]

NANOSECOND = 1
MICROSECOND = 1000 * NANOSECOND
MILLISECOND = 1000 * MICROSECOND
SECOND = 1000 * MILLISECOND
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE

# Go's unitMap: both micro spellings are accepted (U+00B5 micro sign, U+03BC Greek mu).
_UNITS: Dict[str, int] = {
    "ns": NANOSECOND,
    "us": MICROSECOND,
    "\u00b5s": MICROSECOND,
    "\u03bcs": MICROSECOND,
    "ms": MILLISECOND,
    "s": SECOND,
    "m": MINUTE,
    "h": HOUR,
}

_MAX = 1 << 63  # Go's Duration is an int64 of nanoseconds

DURATION_HINT = "write e.g. 30s, 5m, 1h30m (units: ns, us, ms, s, m, h)"

_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_FALSE = ("0", "f", "F", "FALSE", "false", "False")
BOOL_SPELLINGS: Tuple[str, ...] = _TRUE + _FALSE


def _quote(s: str) -> str:
    """Go's time.quote: double quotes, non-ASCII and control characters as \\x escapes."""
    out = ['"']
    for ch in s:
        if ord(ch) >= 0x80 or ch < " ":
            out.extend(f"\\x{b:02x}" for b in ch.encode("utf-8", "surrogatepass"))
        else:
            if ch in '"\\':
                out.append("\\")
            out.append(ch)
    out.append('"')
    return "".join(out)


def _invalid(orig: str) -> ValueError:
    return ValueError(f"time: invalid duration {_quote(orig)}; {DURATION_HINT}")


def _is_digit(ch: str) -> bool:
    # Only ASCII digits count, as in Go (str.isdigit would accept other scripts' digits).
    return "0" <= ch <= "9"


def _leading_int(s: str, orig: str) -> Tuple[int, str, bool]:
    """Go's leadingInt: ``[0-9]*`` as a number, the rest, and whether there were digits."""
    i = 0
    v = 0
    while i < len(s) and _is_digit(s[i]):
        v = v * 10 + ord(s[i]) - 48
        if v > _MAX:
            raise _invalid(orig)
        i += 1
    return v, s[i:], i > 0


def _leading_fraction(s: str) -> Tuple[int, float, str, bool]:
    """Go's leadingFraction after a period: the digits as a number, their scale, the rest, and
    whether there were digits. Digits beyond int64 precision are consumed but ignored."""
    i = 0
    f = 0
    scale = 1.0
    overflow = False
    while i < len(s) and _is_digit(s[i]):
        if not overflow:
            y = f * 10 + ord(s[i]) - 48
            if f > (_MAX - 1) // 10 or y > _MAX:
                overflow = True
            else:
                f = y
                scale *= 10
        i += 1
    return f, scale, s[i:], i > 0


def _leading_unit(s: str, orig: str) -> Tuple[int, str]:
    """The unit (everything up to the next digit or period) in nanoseconds, and the rest."""
    i = 0
    while i < len(s) and not (s[i] == "." or _is_digit(s[i])):
        i += 1
    if i == 0:
        raise ValueError(f"time: missing unit in duration {_quote(orig)}; {DURATION_HINT}")
    unit_text = s[:i]
    unit = _UNITS.get(unit_text)
    if unit is None:
        raise ValueError(
            f"time: unknown unit {_quote(unit_text)} in duration {_quote(orig)}; {DURATION_HINT}"
        )
    return unit, s[i:]


def _component(s: str, orig: str) -> Tuple[int, str]:
    """One ``<number><unit>`` of a duration in nanoseconds, and the rest of the text."""
    if not (s[0] == "." or _is_digit(s[0])):
        raise _invalid(orig)
    v, s, pre = _leading_int(s, orig)  # [0-9]*
    post = False
    f, scale = 0, 1.0
    if s and s[0] == ".":  # (\.[0-9]*)?
        f, scale, s, post = _leading_fraction(s[1:])
    if not pre and not post:  # no digits at all, e.g. ".s"
        raise _invalid(orig)
    unit, s = _leading_unit(s, orig)
    if v > _MAX // unit:
        raise _invalid(orig)
    v *= unit
    if f > 0:
        # float64 as in Go: exact to the nanosecond for fractions of hours.
        v += int(float(f) * (float(unit) / scale))
        if v > _MAX:
            raise _invalid(orig)
    return v, s


def parse_duration_ns(text: str) -> int:
    """Parse a Go duration string into integer nanoseconds, exactly as Go's ``time.ParseDuration``.

    Raises ``ValueError`` with Go's message and a hint on how to write a valid duration.
    """
    orig = text
    s = text
    neg = False
    if s and s[0] in "-+":
        neg = s[0] == "-"
        s = s[1:]
    if s == "0":  # Go's special case: a lone zero needs no unit
        return 0
    if s == "":
        raise _invalid(orig)
    total = 0
    while s:
        v, s = _component(s, orig)
        total += v
        if total > _MAX:
            raise _invalid(orig)
    if neg:
        return -total
    if total > _MAX - 1:
        raise _invalid(orig)
    return total


def parse_duration(text: str) -> float:
    """Parse a Go duration string (``30s``, ``1h30m``, ``1.5h``, ``500ms``) into seconds.

    Negative durations parse, as in Go; callers that need a TTL reject them.
    """
    return parse_duration_ns(text) / SECOND


def _fmt_frac(v: int, prec: int) -> Tuple[str, int]:
    """Go's fmtFrac: the fraction of v/10**prec without trailing zeros, and v/10**prec."""
    digits = []
    printed = False
    for _ in range(prec):
        digit = v % 10
        printed = printed or digit != 0
        if printed:
            digits.append(str(digit))
        v //= 10
    if printed:
        return "." + "".join(reversed(digits)), v
    return "", v


def format_duration_ns(ns: int) -> str:
    """Format integer nanoseconds exactly like Go's ``Duration.String()``."""
    neg = ns < 0
    u = -ns if neg else ns
    if u < SECOND:
        if u == 0:
            return "0s"
        if u < MICROSECOND:
            prec, unit = 0, "ns"
        elif u < MILLISECOND:
            prec, unit = 3, "\u00b5s"
        else:
            prec, unit = 6, "ms"
        frac, u = _fmt_frac(u, prec)
        out = f"{u}{frac}{unit}"
    else:
        frac, u = _fmt_frac(u, 9)
        out = f"{u % 60}{frac}s"
        u //= 60
        if u > 0:
            out = f"{u % 60}m{out}"
            u //= 60
            if u > 0:  # Go stops at hours because days vary in length
                out = f"{u}h{out}"
    return "-" + out if neg else out


def format_duration(seconds: float) -> str:
    """Format seconds like Go's ``Duration.String()``: ``1h30m0s``, ``500ms``, ``0s``."""
    return format_duration_ns(round(seconds * SECOND))


def parse_bool(text: str) -> bool:
    """Parse a boolean exactly as Go's ``strconv.ParseBool``; raise ``ValueError`` otherwise."""
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(
        f"strconv.ParseBool: parsing {_quote(text)}: invalid syntax; "
        f"write one of {', '.join(_TRUE)} for true or {', '.join(_FALSE)} for false"
    )
