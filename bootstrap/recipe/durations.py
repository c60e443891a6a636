"""Durations as people write them in a recipe ("11h30m", "90s", "02:30:00") and back.

Accepted forms, all meaning seconds:

- a bare number: ``90``, ``1.5``, ``"90"``
- units d h m s, largest first, each at most once: ``"2d"``, ``"11h30m"``, ``"1h 30m 15s"``
- a clock: ``"HH:MM:SS"`` or ``"MM:SS"``, e.g. ``"11:30:00"``

Negative durations are refused. ``"500ms"`` is refused on purpose: nothing in a recipe needs
sub-second precision, and "m" already means minutes.
"""

from __future__ import annotations

import math
import re

ACCEPTED = "seconds (90 or 1.5), units d h m s (11h30m, 90s, 2d) or HH:MM:SS (11:30:00)"

_NUMBER = r"\d+(?:\.\d+)?"
_UNITS = re.compile(
    rf"(?:(?P<d>{_NUMBER})\s*d)?\s*(?:(?P<h>{_NUMBER})\s*h)?\s*"
    rf"(?:(?P<m>{_NUMBER})\s*m)?\s*(?:(?P<s>{_NUMBER})\s*s)?",
    re.IGNORECASE,
)
_CLOCK = re.compile(r"(?:(?P<h>\d+):)?(?P<m>\d{1,2}):(?P<s>\d{1,2}(?:\.\d+)?)")
_SECONDS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}


def parse_duration(value: str | int | float) -> float:
    """``value`` in seconds; a ValueError naming the accepted forms when it is not a duration."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"expected a duration, got {value!r}; use {ACCEPTED}")
    if isinstance(value, (int, float)):
        return _checked(float(value), value)
    text = value.strip()
    if re.fullmatch(_NUMBER, text):
        return float(text)
    clock = _CLOCK.fullmatch(text)
    if clock:
        minutes, seconds = int(clock["m"]), float(clock["s"])
        if minutes >= 60 or seconds >= 60:
            raise ValueError(f"bad duration {value!r}: minutes and seconds must be below 60")
        return int(clock["h"] or 0) * 3600.0 + minutes * 60.0 + seconds
    units = _UNITS.fullmatch(text)
    if text and units and any(units.groupdict().values()):
        return sum(float(n) * _SECONDS[u] for u, n in units.groupdict().items() if n)
    raise ValueError(f"bad duration {value!r}: use {ACCEPTED}")


def _checked(seconds: float, original: object) -> float:
    if math.isnan(seconds) or math.isinf(seconds) or seconds < 0:
        raise ValueError(f"bad duration {original!r}: expected 0 or more seconds")
    return seconds


def format_duration(seconds: float) -> str:
    """Seconds as ``"45s"``, ``"2m05s"`` or ``"1h02m03s"``; what ``parse_duration`` reads back."""
    if seconds < 0:
        return "-" + format_duration(-seconds)
    if seconds < 10 and seconds != int(seconds):
        # Under ten seconds a fraction still means something (a stop_grace of 0.5s).
        return f"{seconds:.3g}s"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"
