"""Durations as broker.conf writes them, and as messages show them (one parser, one formatter)."""

from __future__ import annotations

import re

_GO_INTEGER = re.compile(r"[+-]?[0-9]+")
_GO_DURATION_PART = re.compile(r"([0-9]*\.?[0-9]+)(ns|us|µs|μs|ms|s|m|h)")
_NUMBER = re.compile(r"[0-9]*\.?[0-9]+")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
# Choria's own suffixes on top of Go's syntax (its config parser accepts both).
_CHORIA_UNITS = {
    "w": 7 * 86400,
    "W": 7 * 86400,
    "d": 86400,
    "D": 86400,
    "M": 30 * 86400,
    "Y": 365 * 86400,
    "y": 365 * 86400,
}
EXPECTED = "seconds (30) or a duration like 500ms, 5s, 2m, 1h, 7d, 1w"


def parse_integer(text: str) -> int:
    """A decimal integer as Go's strconv.Atoi reads it (sign and ASCII digits only)."""
    if not _GO_INTEGER.fullmatch(text):
        raise ValueError(text)
    return int(text)


def parse_duration(text: str) -> float:
    """Seconds from `30` (seconds), `1w`, `2d`, `1.5M` or Go syntax `1h30m`, `300ms`; else ValueError."""
    if text.isascii() and text.isdigit():
        return float(text)
    if text and text[-1] in _CHORIA_UNITS:
        number = text[:-1]
        if _NUMBER.fullmatch(number):
            return float(number) * _CHORIA_UNITS[text[-1]]
        raise ValueError(text)
    position, total = 0, 0.0
    for match in _GO_DURATION_PART.finditer(text):
        if match.start() != position:
            raise ValueError(text)
        total += float(match.group(1)) * _GO_UNITS[match.group(2)]
        position = match.end()
    if position != len(text) or not text:
        raise ValueError(text)
    return total


def format_duration(seconds: float) -> str:
    """Compact Go-like duration: 168h, 1h30m, 2m, 1m30s, 500ms, 0s (milliseconds are the finest unit)."""
    remaining = round(seconds * 1000)
    if remaining == 0:
        return "0s"
    parts = []
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        count, remaining = divmod(remaining, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
