"""codec.registration: stored adapter documents decoded to what each node registered."""

from __future__ import annotations

import base64
import datetime
import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from choria_broker_adapters.codec import jsonfast
from choria_broker_adapters.codec.registration import (
    KIND_FILE_CONTENT,
    KIND_INVENTORY,
    KIND_UNREADABLE,
    MAX_INFLATED_BYTES,
    decode_stored,
    parse_time,
)

EXAMPLES = Path(__file__).parent / "data" / "protocol" / "examples"
EXAMPLE_AGENTS = ("choria_util", "discovery", "rpcutil")
EXAMPLE_CLASSES = ("role::web", "profile::base")
EXAMPLE_FACTS = {
    "os": {"family": "RedHat", "release": {"major": "9"}},
    "networking": {"fqdn": "node1.example.net"},
}
WHEN = datetime.datetime(2023, 11, 14, 22, 13, 20, tzinfo=datetime.UTC)


def stored(payload: Any, *, sender: str = "n1", time: str = "2023-11-14T22:13:20Z") -> bytes:
    """An adapter output document around `payload` (a dict is serialised, a str kept as is)."""
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return json.dumps(
        {
            "protocol": "choria:adapters:jetstream:output:1",
            "data": data,
            "sender": sender,
            "time": time,
            "requestid": "r1",
        }
    ).encode()


def zcontent(value: Any) -> str:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return base64.b64encode(gzip.compress(raw)).decode()


INVENTORY = {
    "agents": [{"name": "rpcutil", "version": "1"}, {"name": "package"}],
    "classes": ["role::db", "choria"],
    "facts": {"role": "db", "os": {"family": "Debian"}},
    "collectives": ["mcollective", "eu"],
}


@pytest.mark.parametrize(
    ("example", "collectives"),
    [
        ("v1_registration_inventory_plain", ("mcollective",)),
        ("v1_registration_inventory_gzip", ("mcollective",)),
        ("v2_registration_inventory_gzip", ("choria",)),
    ],
)
def test_reference_inventory_examples(example: str, collectives: tuple[str, ...]) -> None:
    decoded = decode_stored((EXAMPLES / example / "expected_output.json").read_bytes())
    assert decoded.problem is None
    assert decoded.kind == KIND_INVENTORY
    assert decoded.protocol == "choria:registration:inventorycontent:1"
    assert decoded.sender == "node1.example.net"
    assert decoded.time is not None and decoded.time.replace(microsecond=0) == WHEN
    assert decoded.inventory is not None
    assert decoded.inventory.agents == EXAMPLE_AGENTS
    assert decoded.inventory.classes == EXAMPLE_CLASSES
    assert decoded.inventory.facts == EXAMPLE_FACTS
    assert decoded.inventory.collectives == collectives


def test_reference_file_content_example() -> None:
    path = EXAMPLES / "v1_registration_filecontent_insecure" / "expected_output.json"
    decoded = decode_stored(path.read_bytes())
    assert decoded.problem is None
    assert decoded.kind == KIND_FILE_CONTENT
    assert decoded.inventory is None
    assert decoded.file is not None
    assert decoded.file.path == "/etc/choria/registration.json"
    assert decoded.file.mtime == 1699990000
    assert decoded.file.size == len(b'{"hostname":"node1.example.net","roles":["web"]}\n')


# (case, payload, expected kind, expected agents, expected classes)
READABLE = [
    (
        "plain content",
        {"protocol": "choria:registration:inventorycontent:1", "content": INVENTORY},
        KIND_INVENTORY,
        ("rpcutil", "package"),
        ("role::db", "choria"),
    ),
    (
        "gzip zcontent",
        {"protocol": "choria:registration:inventorycontent:1", "zcontent": zcontent(INVENTORY)},
        KIND_INVENTORY,
        ("rpcutil", "package"),
        ("role::db", "choria"),
    ),
    (
        "old agent names as strings",
        {
            "protocol": "choria:registration:inventorycontent:1",
            "content": {**INVENTORY, "agents": ["a", "b"]},
        },
        KIND_INVENTORY,
        ("a", "b"),
        ("role::db", "choria"),
    ),
    (
        "missing lists are empty",
        {"protocol": "choria:registration:inventorycontent:1", "content": {}},
        KIND_INVENTORY,
        (),
        (),
    ),
    (
        "file content gzip",
        {
            "protocol": "choria:registration:filecontent:1",
            "file": "/f",
            "mtime": 5,
            "zcontent": zcontent(b"abc"),
        },
        KIND_FILE_CONTENT,
        None,
        None,
    ),
    (
        "unknown registration protocol",
        {"protocol": "choria:registration:custom:2", "anything": 1},
        "custom",
        None,
        None,
    ),
    ("unknown protocol shape", {"protocol": "io.example.thing"}, "io.example.thing", None, None),
]


@pytest.mark.parametrize(
    ("payload", "kind", "agents", "classes"),
    [case[1:] for case in READABLE],
    ids=[case[0] for case in READABLE],
)
def test_readable_payloads(payload: Any, kind: str, agents: Any, classes: Any) -> None:
    decoded = decode_stored(stored(payload))
    assert decoded.problem is None
    assert decoded.kind == kind
    assert decoded.protocol == payload["protocol"]
    if agents is None:
        assert decoded.inventory is None
    else:
        assert decoded.inventory is not None
        assert (decoded.inventory.agents, decoded.inventory.classes) == (agents, classes)


def test_file_content_size_and_metadata() -> None:
    decoded = decode_stored(
        stored(
            {
                "protocol": "choria:registration:filecontent:1",
                "file": "/f",
                "mtime": 5,
                "zcontent": zcontent(b"abc"),
            }
        )
    )
    assert decoded.file is not None
    assert (decoded.file.path, decoded.file.mtime, decoded.file.size) == ("/f", 5, 3)


BOMB = base64.b64encode(gzip.compress(b"\0" * (MAX_INFLATED_BYTES + 1))).decode()

# (case, stored bytes, the problem reported)
UNREADABLE = [
    ("not json", b"\x00garbage{", "the stored message is not JSON"),
    ("json array", b"[1,2]", "the stored message is not a JSON object"),
    (
        "not an output document",
        json.dumps({"protocol": "x", "data": "{}"}).encode(),
        "the stored message is not an adapter output document",
    ),
    (
        "data not a string",
        json.dumps({"protocol": "choria:adapters:jetstream:output:1", "data": 5}).encode(),
        "data is not a string",
    ),
    ("data not json", stored("{nope"), "data is not JSON"),
    ("data json list", stored("[]"), "data is not a JSON object"),
    ("no protocol", stored({"content": {}}), "data has no registration protocol"),
    (
        "neither content nor zcontent",
        stored({"protocol": "choria:registration:inventorycontent:1"}),
        "inventory registration has neither content nor zcontent",
    ),
    (
        "zcontent not base64",
        stored({"protocol": "choria:registration:inventorycontent:1", "zcontent": "@@@"}),
        "zcontent is not valid base64",
    ),
    (
        "zcontent not ascii",
        stored({"protocol": "choria:registration:inventorycontent:1", "zcontent": "ü"}),
        "zcontent is not valid base64",
    ),
    (
        "zcontent not gzip",
        stored(
            {
                "protocol": "choria:registration:inventorycontent:1",
                "zcontent": base64.b64encode(b"plain").decode(),
            }
        ),
        "zcontent is not gzip data",
    ),
    (
        "zcontent truncated",
        stored(
            {
                "protocol": "choria:registration:inventorycontent:1",
                "zcontent": base64.b64encode(gzip.compress(b"{}" * 100)[:-12]).decode(),
            }
        ),
        "zcontent is truncated gzip data",
    ),
    (
        "zcontent not json",
        stored({"protocol": "choria:registration:inventorycontent:1", "zcontent": zcontent(b"not json")}),
        "zcontent does not inflate to JSON",
    ),
    (
        "zcontent bomb",
        stored({"protocol": "choria:registration:inventorycontent:1", "zcontent": BOMB}),
        f"zcontent inflates to more than {MAX_INFLATED_BYTES} bytes",
    ),
    (
        "content not object",
        stored({"protocol": "choria:registration:inventorycontent:1", "content": "x"}),
        "inventory content is not a JSON object",
    ),
    (
        "facts not object",
        stored({"protocol": "choria:registration:inventorycontent:1", "content": {"facts": []}}),
        "inventory facts is not a JSON object",
    ),
    (
        "classes not strings",
        stored({"protocol": "choria:registration:inventorycontent:1", "content": {"classes": [1]}}),
        "inventory classes is not a list of strings",
    ),
    (
        "agent without name",
        stored(
            {"protocol": "choria:registration:inventorycontent:1", "content": {"agents": [{"version": "1"}]}}
        ),
        "inventory agents has an entry without a name",
    ),
    (
        "file content not base64",
        stored({"protocol": "choria:registration:filecontent:1", "content": "%%"}),
        "file content is not valid base64",
    ),
]


@pytest.mark.parametrize(
    ("document", "problem"), [case[1:] for case in UNREADABLE], ids=[case[0] for case in UNREADABLE]
)
@pytest.mark.parametrize("json_backend", ["default", "stdlib"])
def test_unreadable_documents_are_reported_not_raised(
    document: bytes, problem: str, json_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if json_backend == "stdlib":
        monkeypatch.setattr(jsonfast, "orjson", None)
    decoded = decode_stored(document)
    assert decoded.kind == KIND_UNREADABLE
    assert decoded.problem == problem
    assert decoded.inventory is None


def test_unreadable_payload_keeps_sender_and_time() -> None:
    decoded = decode_stored(stored("{nope", sender="web1", time="2026-01-02T03:04:05.123456789Z"))
    assert decoded.kind == KIND_UNREADABLE
    assert decoded.sender == "web1"
    assert decoded.time == datetime.datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=datetime.UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2023-11-14T22:13:20Z", WHEN),
        ("2023-11-14T23:13:20+01:00", WHEN),
        ("2023-11-14T22:13:20.000000001Z", WHEN),
        ("2023-11-14T22:13:20", None),  # no zone: not RFC 3339
        ("yesterday", None),
        ("", None),
        (1700000000, None),
        (None, None),
    ],
)
def test_parse_time(text: Any, expected: datetime.datetime | None) -> None:
    assert parse_time(text) == expected
