"""codec.nodelist: rows, filters, staleness, text and the go-choria inventory file (no server)."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from choria_broker_adapters.codec import nodelist
from choria_broker_adapters.codec.nodelist import Filters, NodeRow
from choria_broker_adapters.codec.registration import Inventory

SCHEMA = json.loads((Path(__file__).parent / "data" / "discovery" / "inventory_file.json").read_text())
NOW = datetime.datetime(2026, 12, 2, 12, 0, 0, tzinfo=datetime.UTC)
FACTS = {
    "os": {"family": "RedHat", "release": {"major": "9"}},
    "role": "web",
    "cpus": 4,
    "virtual": False,
    "disks": ["sda", "sdb"],
    "dotted.name": "x",
}
WEB = Inventory(agents=("rpcutil",), classes=("role::web", "profile::base"), facts=FACTS, collectives=("mc",))


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "-"),
        (-3, "future"),
        (0, "0s"),
        (59.9, "59s"),
        (60, "1m"),
        (192, "3m12s"),
        (7500, "2h5m"),
        (3 * 86400 + 4 * 3600 + 59, "3d4h"),
        (86400, "1d"),
    ],
)
def test_format_age(seconds: float | None, text: str) -> None:
    assert nodelist.format_age(seconds) == text


@pytest.mark.parametrize(
    ("filters", "matches"),
    [
        (Filters(), True),
        (Filters(classes=("role::web",)), True),
        (Filters(classes=("role::db",)), False),
        (Filters(classes=("role::web", "profile::base")), True),
        (Filters(classes=("role::web", "nope")), False),
        (Filters(classes=("/^profile::/",)), True),
        (Filters(classes=("/^base/",)), False),
        (Filters(facts=(("role", "web"),)), True),
        (Filters(facts=(("os.family", "RedHat"),)), True),
        (Filters(facts=(("os.release.major", "9"),)), True),
        (Filters(facts=(("os.family", "Debian"),)), False),
        (Filters(facts=(("cpus", "4"),)), True),
        (Filters(facts=(("virtual", "false"),)), True),
        (Filters(facts=(("disks.1", "sdb"),)), True),
        (Filters(facts=(("dotted.name", "x"),)), True),
        (Filters(facts=(("missing", ""),)), False),
        (Filters(facts=(("os.family", "/^Red/"),)), True),
        (Filters(classes=("role::web",), facts=(("role", "db"),)), False),
    ],
)
def test_filters(filters: Filters, matches: bool) -> None:
    assert filters.matches(WEB) is matches


def test_filters_never_match_a_node_without_inventory() -> None:
    assert Filters(classes=("/./",)).matches(None) is False
    assert Filters().matches(None) is True


@pytest.mark.parametrize(
    ("text", "parsed"),
    [("os.family=RedHat", ("os.family", "RedHat")), ("a=b=c", ("a", "b=c")), ("empty=", ("empty", ""))],
)
def test_parse_fact_filter(text: str, parsed: tuple[str, str]) -> None:
    assert nodelist.parse_fact_filter(text) == parsed


@pytest.mark.parametrize("text", ["novalue", "=x", ""])
def test_parse_fact_filter_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="FACT=VALUE"):
        nodelist.parse_fact_filter(text)


def test_broken_regex_is_refused() -> None:
    with pytest.raises(ValueError, match="not a valid regular expression"):
        nodelist.validate_pattern("/(/")


def row(identity: str, age: float | None, kind: str = "inventorycontent") -> NodeRow:
    moment = None if age is None else NOW - datetime.timedelta(seconds=age)
    return NodeRow(identity, f"s.{identity}", 1, moment, kind, "", 1, 2, None)


def test_staleness_and_summary() -> None:
    rows = [row("a", 10), row("b", 1000), row("c", None, "unreadable")]
    assert [r.is_stale(NOW, 900) for r in rows] == [False, True, True]
    summary = nodelist.summarise(rows, NOW, 900)
    assert (summary.nodes, summary.stale, summary.unreadable) == (3, 2, 1)
    assert (summary.newest, summary.oldest) == (rows[0].time, rows[1].time)
    assert nodelist.summarise(rows, NOW, None).stale is None
    assert nodelist.summary_line(summary, NOW, 900) == (
        "nodes 3, stale 2 (older than 15m), unreadable 1, newest 2026-12-02T11:59:50Z (10s ago), "
        "oldest 2026-12-02T11:43:20Z (16m40s ago)"
    )
    empty = nodelist.summarise([], NOW, None)
    assert (
        nodelist.summary_line(empty, NOW, None) == "nodes 0, stale - (no --stale given), newest -, oldest -"
    )


def test_table_lines_align() -> None:
    lines = nodelist.table_lines([row("a.example.net", 10), row("b", None, "unreadable")], NOW)
    assert lines == [
        "IDENTITY       LAST REGISTRATION     AGE  PROTOCOL          AGENTS  CLASSES",
        "a.example.net  2026-12-02T11:59:50Z  10s  inventorycontent  1       2",
        "b              -                     -    unreadable        1       2",
    ]


def test_identity_comes_from_sender_then_subject() -> None:
    document = json.dumps({"protocol": "choria:adapters:jetstream:output:1", "data": "{}", "sender": "web1"})
    assert nodelist.node_row("p.other", 1, None, document.encode(), subject_prefix="p.").identity == "web1"
    assert (
        nodelist.node_row("p.web2.example", 1, None, b"junk", subject_prefix="p.").identity == "web2.example"
    )


def test_discovery_file_is_sorted_and_valid() -> None:
    other = Inventory(agents=(), classes=(), facts={}, collectives=())
    document = nodelist.discovery_file([("z", WEB), ("a", other)])
    jsonschema.validate(document, SCHEMA)
    assert document == {
        "$schema": "https://choria.io/schemas/choria/discovery/v1/inventory_file.json",
        "nodes": [
            {"name": "a", "collectives": [], "facts": {}, "classes": [], "agents": []},
            {
                "name": "z",
                "collectives": ["mc"],
                "facts": FACTS,
                "classes": ["role::web", "profile::base"],
                "agents": ["rpcutil"],
            },
        ],
    }


@pytest.mark.parametrize(
    "broken",
    [
        {"nodes": []},
        {
            "$schema": "https://choria.io/schemas/choria/discovery/v1/inventory_file.json",
            "nodes": [{"name": "x"}],
        },
        {"$schema": "other", "nodes": []},
    ],
)
def test_schema_file_rejects_broken_documents(broken: dict[str, Any]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCHEMA)


@pytest.mark.parametrize("backend", ["default", "stdlib"])
def test_json_text_is_the_same_with_either_backend(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from choria_broker_adapters.cli.nodes import json_text
    from choria_broker_adapters.codec import jsonfast

    if backend == "stdlib":
        monkeypatch.setattr(jsonfast, "orjson", None)
    document = {"nodes": [{"name": "ü", "facts": {"big": 2**70, "list": [1, {"a": None}], "empty": {}}}]}
    assert json_text(document) == json.dumps(document, indent=2, ensure_ascii=False) + "\n"
