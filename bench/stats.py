"""Pure helpers of the benchmark: percentiles, medians, /proc parsing, JetStream metadata."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values (fraction in (0, 1])."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    rank = math.ceil(fraction * len(sorted_values))
    return float(sorted_values[rank - 1])


def median_or_none(values: Sequence[float | None]) -> float | None:
    """Median of the values that were measured; None when none were."""
    present = [value for value in values if value is not None]
    return float(statistics.median(present)) if present else None


def cpu_ticks_from_stat(stat_text: str) -> int:
    """utime + stime (clock ticks) from the text of /proc/<pid>/stat.

    The command name (field 2) is in parentheses and may contain spaces, so fields are
    counted after the last ')': field 3 (state) is index 0, utime (14) index 11, stime index 12.
    """
    fields = stat_text[stat_text.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


def status_kib(status_text: str, key: str) -> int | None:
    """A `kB` value such as VmHWM or VmRSS from the text of /proc/<pid>/status."""
    for line in status_text.splitlines():
        name, _, value = line.partition(":")
        if name == key:
            return int(value.split()[0])
    return None


def stored_time_ns(reply_subject: str) -> int:
    """The stream's stored timestamp (ns) from a JetStream delivery's reply subject.

    $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending>            (9 tokens)
    $JS.ACK.<domain>.<hash>.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending>.<rand>
    """
    tokens = reply_subject.split(".")
    if len(tokens) == 9 and tokens[:2] == ["$JS", "ACK"]:
        return int(tokens[7])
    if len(tokens) >= 12 and tokens[:2] == ["$JS", "ACK"]:
        return int(tokens[9])
    raise ValueError(f"not a JetStream delivery reply subject: {reply_subject!r}")


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator
