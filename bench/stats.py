"""Pure helpers of the benchmark: percentiles, medians, /proc parsing, JetStream metadata, rates."""

from __future__ import annotations

import calendar
import json
import math
import statistics
import time
from collections.abc import Sequence
from typing import Any


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


def rfc3339_ns(text: str) -> int:
    """Unix time in ns of a UTC RFC 3339 timestamp as JetStream writes it (up to 9 fraction digits)."""
    if not text.endswith("Z"):
        raise ValueError(f"expected a UTC timestamp ending in Z, got {text!r}")
    whole, _, fraction = text[:-1].partition(".")
    if len(fraction) > 9 or (fraction and not fraction.isdigit()):
        raise ValueError(f"bad fraction of a second in {text!r}")
    seconds = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S"))
    return seconds * 1_000_000_000 + int(fraction.ljust(9, "0") or 0)


def per_10k(value: float | None, messages: int) -> float | None:
    """`value` (CPU seconds) per 10,000 messages; None when nothing was measured."""
    if value is None or messages <= 0:
        return None
    return value * 10_000 / messages


def relative_rate(capacity_msgs_per_s: float, fraction: float) -> float:
    """The paced rate: a fraction of a measured capacity, rounded to 10 msgs/s (at least 10)."""
    return max(10.0, round(capacity_msgs_per_s * fraction, -1))


def publish_modes(document: Any) -> list[str]:
    """The publish modes ("batched"/"acked") a /choria/ status document names, sorted, unique.

    Searched by value anywhere under a key mentioning "publish", so the figure does not depend on
    where in the document the runtime reports it.
    """
    found: set[str] = set()

    def visit(node: Any, under_publish: bool) -> None:
        if isinstance(node, dict):
            for name, value in node.items():
                visit(value, under_publish or "publish" in str(name))
        elif isinstance(node, list):
            for item in node:
                visit(item, under_publish)
        elif isinstance(node, str) and under_publish and node in PUBLISH_MODES:
            found.add(node)

    visit(document, False)
    return sorted(found)


PUBLISH_MODES = ("acked", "batched")


_REQUEST_ID_KEY = b'"requestid":"'


def request_id_of(document: bytes) -> str:
    """The request id of a stored output document. Its value is the last key's (the documented
    key order) and a stamp is plain ASCII, so a search from the right reads it without parsing
    the whole document; anything else is left to the JSON parser."""
    start = document.rfind(_REQUEST_ID_KEY) + len(_REQUEST_ID_KEY)
    end = document.find(b'"', start)
    if start >= len(_REQUEST_ID_KEY) and end == len(document) - 2 and document.endswith(b'"}'):
        return document[start:end].decode("ascii", errors="replace")
    requestid: str = json.loads(document)["requestid"]
    return requestid
