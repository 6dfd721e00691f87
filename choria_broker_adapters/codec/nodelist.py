"""One row per node from its latest stored registration, and the go-choria inventory file.

Pure: the JetStream layer fetches the messages, this module turns them into what `nodes`
prints (rows, a summary, filters, staleness) and what `nodes export` writes (the discovery
file of go-choria's `inventory` method, docs/inventory.md). No I/O, no clock: `now` is passed in.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from choria_broker_adapters.codec.registration import (
    KIND_INVENTORY,
    KIND_UNREADABLE,
    Inventory,
    StoredRegistration,
    decode_stored,
)

INVENTORY_FILE_SCHEMA = "https://choria.io/schemas/choria/discovery/v1/inventory_file.json"


@dataclass(frozen=True, slots=True)
class NodeRow:
    """A node as its latest stored message describes it.

    `time` is when the adapter received the registration (the document's `time`), or when
    JetStream stored it if the document does not say. `inventory` is kept only when asked for.
    """

    identity: str
    subject: str
    sequence: int
    time: datetime.datetime | None
    kind: str
    protocol: str
    agents: int | None
    classes: int | None
    problem: str | None
    stored_messages: int = 1
    inventory: Inventory | None = None

    def age(self, now: datetime.datetime) -> float | None:
        return None if self.time is None else (now - self.time).total_seconds()

    def is_stale(self, now: datetime.datetime, stale_after: float) -> bool:
        """Older than `stale_after` seconds; a node without any time counts as stale."""
        age = self.age(now)
        return age is None or age > stale_after


def identity_of(subject: str, subject_prefix: str) -> str:
    """The node identity in a node subject (`choria.node_metadata.web1.example.net` → `web1.example.net`)."""
    if subject_prefix and subject.startswith(subject_prefix):
        return subject[len(subject_prefix) :]
    return subject


def node_row(
    subject: str,
    sequence: int,
    stored_at: datetime.datetime | None,
    data: bytes,
    *,
    subject_prefix: str = "",
    stored_messages: int = 1,
    keep_inventory: bool = False,
) -> NodeRow:
    """The row for one latest message; unreadable documents give a row with `problem` set."""
    decoded: StoredRegistration = decode_stored(data)
    inventory = decoded.inventory
    return NodeRow(
        identity=decoded.sender or identity_of(subject, subject_prefix),
        subject=subject,
        sequence=sequence,
        time=decoded.time or stored_at,
        kind=decoded.kind,
        protocol=decoded.protocol,
        agents=None if inventory is None else len(inventory.agents),
        classes=None if inventory is None else len(inventory.classes),
        problem=decoded.problem,
        stored_messages=stored_messages,
        inventory=inventory if keep_inventory else None,
    )


# --------------------------------------------------------------------------- filters


@dataclass(frozen=True)
class Filters:
    """`--filter-class` and `--filter-fact`: all must match; `/.../` is a regular expression."""

    classes: tuple[str, ...] = ()
    facts: tuple[tuple[str, str], ...] = ()

    @property
    def empty(self) -> bool:
        return not self.classes and not self.facts

    def matches(self, inventory: Inventory | None) -> bool:
        if self.empty:
            return True
        if inventory is None:
            return False
        return all(_class_matches(wanted, inventory.classes) for wanted in self.classes) and all(
            _fact_matches(path, wanted, inventory.facts) for path, wanted in self.facts
        )


def parse_fact_filter(text: str) -> tuple[str, str]:
    """`os.family=RedHat` → (`os.family`, `RedHat`); ValueError when there is no `=` or name."""
    name, separator, value = text.partition("=")
    if not separator or not name.strip():
        raise ValueError(f"{text!r} is not FACT=VALUE (e.g. os.family=RedHat)")
    return name.strip(), value


def _regex(pattern: str) -> re.Pattern[str] | None:
    if len(pattern) >= 2 and pattern.startswith("/") and pattern.endswith("/"):
        return re.compile(pattern[1:-1])
    return None


def validate_pattern(text: str) -> str:
    """`text` unchanged, or ValueError naming a broken `/regular expression/`."""
    try:
        _regex(text)
    except re.error as error:
        raise ValueError(f"{text!r} is not a valid regular expression: {error}") from None
    return text


def _class_matches(wanted: str, classes: Sequence[str]) -> bool:
    pattern = _regex(wanted)
    if pattern is None:
        return wanted in classes
    return any(pattern.search(name) for name in classes)


def fact_text(value: Any) -> str:
    """A fact value as filters compare it: strings as they are, everything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def lookup_fact(facts: Mapping[str, Any], path: str) -> tuple[bool, Any]:
    """(found, value) of a fact, the whole name first, then dotted into nested objects."""
    if path in facts:
        return True, facts[path]
    value: Any = facts
    for part in path.split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return False, None
    return True, value


def _fact_matches(path: str, wanted: str, facts: Mapping[str, Any]) -> bool:
    found, value = lookup_fact(facts, path)
    if not found:
        return False
    pattern = _regex(wanted)
    text = fact_text(value)
    return text == wanted if pattern is None else bool(pattern.search(text))


# --------------------------------------------------------------------------- summary and text


@dataclass(frozen=True)
class Summary:
    nodes: int
    stale: int | None
    unreadable: int
    newest: datetime.datetime | None
    oldest: datetime.datetime | None


def summarise(rows: Iterable[NodeRow], now: datetime.datetime, stale_after: float | None) -> Summary:
    rows = list(rows)
    times = [row.time for row in rows if row.time is not None]
    return Summary(
        nodes=len(rows),
        stale=None if stale_after is None else sum(row.is_stale(now, stale_after) for row in rows),
        unreadable=sum(row.kind == KIND_UNREADABLE for row in rows),
        newest=max(times, default=None),
        oldest=min(times, default=None),
    )


def format_age(seconds: float | None) -> str:
    """`45s`, `3m12s`, `2h5m`, `3d4h`: two units at most, whole seconds; `-` when unknown."""
    if seconds is None:
        return "-"
    if seconds < 0:
        return "future"
    remaining = int(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, remaining = divmod(remaining, size)
        if count or (unit == "s" and not parts):
            parts.append(f"{count}{unit}")
    return "".join(parts[:2])


def format_time(moment: datetime.datetime | None) -> str:
    return "-" if moment is None else moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_time(moment: datetime.datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(datetime.UTC).isoformat().replace("+00:00", "Z")


HEADER = ("IDENTITY", "LAST REGISTRATION", "AGE", "PROTOCOL", "AGENTS", "CLASSES")


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def table_lines(rows: Sequence[NodeRow], now: datetime.datetime) -> list[str]:
    """The listing as aligned text lines, header first; an unreadable row ends with its reason."""
    cells = [
        (
            row.identity,
            format_time(row.time),
            format_age(row.age(now)),
            row.kind,
            _count(row.agents),
            _count(row.classes),
            "" if row.problem is None else f"({row.problem})",
        )
        for row in rows
    ]
    widths = [max(len(HEADER[i]), *(len(line[i]) for line in cells)) for i in range(len(HEADER))]
    lines = []
    for line in [(*HEADER, ""), *cells]:
        text = "  ".join(cell.ljust(widths[i]) if i < len(widths) else cell for i, cell in enumerate(line))
        lines.append(text.rstrip())
    return lines


def summary_line(summary: Summary, now: datetime.datetime, stale_after: float | None) -> str:
    def when(moment: datetime.datetime | None) -> str:
        if moment is None:
            return "-"
        return f"{format_time(moment)} ({format_age((now - moment).total_seconds())} ago)"

    if summary.stale is None:
        stale = "stale - (no --stale given)"
    else:
        stale = f"stale {summary.stale} (older than {format_age(stale_after)})"
    unreadable = f", unreadable {summary.unreadable}" if summary.unreadable else ""
    return (
        f"nodes {summary.nodes}, {stale}{unreadable}, newest {when(summary.newest)}, "
        f"oldest {when(summary.oldest)}"
    )


def row_document(row: NodeRow, now: datetime.datetime, stale_after: float | None) -> dict[str, Any]:
    return {
        "identity": row.identity,
        "subject": row.subject,
        "sequence": row.sequence,
        "time": iso_time(row.time),
        "age_seconds": None if row.time is None else round(row.age(now) or 0.0, 3),
        "protocol": row.kind,
        "registration_protocol": row.protocol or None,
        "agents": row.agents,
        "classes": row.classes,
        "stale": None if stale_after is None else row.is_stale(now, stale_after),
        "stored_messages": row.stored_messages,
        "problem": row.problem,
    }


def summary_document(summary: Summary, stale_after: float | None) -> dict[str, Any]:
    return {
        "nodes": summary.nodes,
        "stale": summary.stale,
        "stale_after_seconds": stale_after,
        "unreadable": summary.unreadable,
        "newest": iso_time(summary.newest),
        "oldest": iso_time(summary.oldest),
    }


# --------------------------------------------------------------------------- discovery file


def discovery_node(identity: str, inventory: Inventory) -> dict[str, Any]:
    """One `nodes` entry of the inventory file, in the order go-choria's struct declares them."""
    return {
        "name": identity,
        "collectives": list(inventory.collectives),
        "facts": dict(inventory.facts),
        "classes": list(inventory.classes),
        "agents": list(inventory.agents),
    }


def discovery_file(nodes: Iterable[tuple[str, Inventory]]) -> dict[str, Any]:
    """The go-choria inventory discovery document for (identity, inventory) pairs, sorted by name."""
    return {
        "$schema": INVENTORY_FILE_SCHEMA,
        "nodes": [discovery_node(identity, inventory) for identity, inventory in sorted(nodes, key=_first)],
    }


def _first(pair: tuple[str, Inventory]) -> str:
    return pair[0]


def is_inventory(row: NodeRow) -> bool:
    return row.kind == KIND_INVENTORY and row.inventory is not None
