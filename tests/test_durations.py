"""core.durations: one parser and one formatter for every duration."""

from __future__ import annotations

import pytest

from choria_broker_adapters.core.durations import format_duration, parse_duration

WEEK = 7 * 24 * 3600.0


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.5, "500ms"), (90, "1m30s"), (120, "2m"), (WEEK, "168h"), (5400, "1h30m"), (3601, "1h1s")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30", 30.0),
        ("500ms", 0.5),
        ("1h30m", 5400.0),
        ("7d", 7 * 86400.0),
        ("1w", WEEK),
        ("1.5M", 45 * 86400.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5x", "1h30", "-5s", "w", "٣"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)
