"""Output encoding, subject and message id (choria_broker_adapters.codec.output).

Schema validation and the `time` mismatch (docs/protocol.md, Output schema): the published adapter
output schemas declare `time` an integer ("Unix time") while Go, and we, write an RFC 3339
string. Every document is validated twice: against the schema as published, asserting the
*only* error is at `time` (so the mismatch stays visible and nothing else can fail silently),
and against a copy whose `time` is `{"type": "string", "pattern": <RFC3339Nano UTC>}`, which
must pass with no errors.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from choria_broker_adapters.codec import jsonfast
from choria_broker_adapters.codec.output import (
    OutputError,
    encode_output,
    format_time,
    message_id,
    output_protocol,
    output_subject,
)
from choria_broker_adapters.codec.protocol import Envelope, decode
from choria_broker_adapters.core.subjects import MAX_SUBJECT_BYTES

DATA = Path(__file__).parent / "data" / "protocol"
SCHEMAS = DATA / "schemas" / "choria" / "adapters"
EXAMPLES = sorted(path for path in (DATA / "examples").iterdir() if (path / "layers.json").exists())
ORJSON = jsonfast.orjson
RFC3339_NANO_UTC = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{0,8}[1-9])?Z$"
NANOS = 10**9


@pytest.fixture(params=["orjson", "stdlib"])
def json_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "orjson" and ORJSON is None:
        pytest.skip("orjson not installed")
    monkeypatch.setattr(jsonfast, "orjson", ORJSON if request.param == "orjson" else None)
    yield request.param


def schema_validators(adapter_type: str) -> tuple[jsonschema.Draft4Validator, jsonschema.Draft4Validator]:
    published = json.loads((SCHEMAS / adapter_type / "v1" / "output.json").read_text())
    corrected = copy.deepcopy(published)
    corrected["properties"]["time"] = {"type": "string", "pattern": RFC3339_NANO_UTC}
    return jsonschema.Draft4Validator(published), jsonschema.Draft4Validator(corrected)


def assert_valid_output(document: bytes, adapter_type: str) -> None:
    published, corrected = schema_validators(adapter_type)
    value = json.loads(document)
    assert [list(error.path) for error in published.iter_errors(value)] == [["time"]]
    assert list(corrected.iter_errors(value)) == []
    assert list(value) == ["protocol", "data", "sender", "time", "requestid"]


def envelope(message: bytes = b"{}", sender: str = "n1", time: int = 0, request_id: str = "r") -> Envelope:
    return Envelope(message, sender, time, request_id)


# --- protocol string per type -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("adapter_type", "protocol"),
    [
        ("jetstream", "choria:adapters:jetstream:output:1"),
        ("choria_streams", "choria:adapters:choria_streams:output:1"),
    ],
)
def test_output_protocol(adapter_type: str, protocol: str) -> None:
    assert output_protocol(adapter_type) == protocol
    document = encode_output(envelope(), adapter_type=adapter_type)
    assert document.startswith(b'{"protocol":"' + protocol.encode() + b'","data":')


def test_unknown_adapter_type_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="nats_stream"):
        output_protocol("nats_stream")


@pytest.mark.parametrize("adapter_type", ["jetstream", "choria_streams"])
@pytest.mark.parametrize("example", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_examples_validate_against_the_output_schema(
    example: Path, adapter_type: str, json_backend: str
) -> None:
    layers = json.loads((example / "layers.json").read_text())
    provider = "choria" if layers["broker_security_technology"] == "ed25519+jwt" else "puppet"
    decoded = decode(
        (example / "wire.transport.json").read_bytes(),
        protocol=layers["adapter_ingest_protocol"],
        security_provider=provider,
    )
    document = encode_output(decoded, adapter_type=adapter_type)
    assert_valid_output(document, adapter_type)
    expected = (example / "expected_output.json").read_bytes()
    # Only the protocol string differs between the two types.
    assert document.replace(b"choria:adapters:jetstream:", b"choria:adapters:choria_streams:") == expected


# --- time -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("nanoseconds", "text"),
    [
        (0, "1970-01-01T00:00:00Z"),
        (1700000000 * NANOS, "2023-11-14T22:13:20Z"),
        (-1 * NANOS, "1969-12-31T23:59:59Z"),
        (-1, "1969-12-31T23:59:59.999999999Z"),
        (253402300799 * NANOS, "9999-12-31T23:59:59Z"),
        (253402300799 * NANOS + 999999999, "9999-12-31T23:59:59.999999999Z"),
        (-62167219200 * NANOS, "0000-01-01T00:00:00Z"),
        (1700000000123456789, "2023-11-14T22:13:20.123456789Z"),
        (1700000000120000000, "2023-11-14T22:13:20.12Z"),
        (1700000000000001000, "2023-11-14T22:13:20.000001Z"),
        (1700000001000000000, "2023-11-14T22:13:21Z"),
        (1700000000, "1970-01-01T00:00:01.7Z"),  # v2 seconds sent by mistake
        (951782400 * NANOS, "2000-02-29T00:00:00Z"),  # leap day
        (-(2**63), "1677-09-21T00:12:43.145224192Z"),
        (2**63 - 1, "2262-04-11T23:47:16.854775807Z"),
    ],
)
def test_format_time(nanoseconds: int, text: str) -> None:
    assert format_time(nanoseconds) == text
    assert re.match(RFC3339_NANO_UTC, text)


@pytest.mark.parametrize(
    "nanoseconds",
    [
        253402300800 * NANOS,
        1700000000000 * NANOS,
        -62167219201 * NANOS,
        -62167219200 * NANOS - 1,
        (2**63 - 1) * NANOS,
    ],
)
def test_time_outside_years_0_to_9999_is_refused(nanoseconds: int, json_backend: str) -> None:
    with pytest.raises(OutputError, match="9999"):
        encode_output(envelope(time=nanoseconds), adapter_type="choria_streams")


# --- string escaping --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "data"),
    [
        (b'{"a":"<b>&\xe2\x80\xa8\xc3\xa9"}', r'"{\"a\":\"\u003cb\u003e\u0026\u2028é\"}"'),
        ("\u2029".encode(), r'"\u2029"'),
        (b"\x08\x0c\n\r\t\x01\x1f\x7f/", '"\\b\\f\\n\\r\\t\\u0001\\u001f\x7f/"'),
        (b'"\\', r'"\"\\"'),
        (b"\\u003c", r'"\\u003c"'),  # escaping nests
        ("\ufffd".encode(), '"\ufffd"'),  # a real U+FFFD stays raw
        (b"a\xffb", r'"a\ufffdb"'),  # each invalid byte is written as the escape
        (b"\xe2\x82", r'"\ufffd\ufffd"'),
        (b"\xed\xa0\x80", r'"\ufffd\ufffd\ufffd"'),
        (b"\xf4\x90\x80\x80", r'"\ufffd\ufffd\ufffd\ufffd"'),  # above U+10FFFF
        ("\U0001f600".encode(), '"\U0001f600"'),
        (b"", '""'),
    ],
)
def test_data_escaping_matches_go(message: bytes, data: str, json_backend: str) -> None:
    document = encode_output(envelope(message=message), adapter_type="choria_streams")
    assert document == (
        b'{"protocol":"choria:adapters:choria_streams:output:1","data":'
        + data.encode()
        + b',"sender":"n1","time":"1970-01-01T00:00:00Z","requestid":"r"}'
    )
    assert_valid_output(document, "choria_streams")


def test_sender_and_request_id_are_escaped_too(json_backend: str) -> None:
    document = encode_output(envelope(sender="<a&b>", request_id='"\n'), adapter_type="jetstream")
    assert b'"sender":"\\u003ca\\u0026b\\u003e"' in document
    assert b'"requestid":"\\"\\n"' in document


@pytest.mark.skipif(ORJSON is None, reason="compares the orjson and stdlib paths")
@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=64) | st.text(max_size=64).map(lambda text: text.encode("utf-8", "surrogatepass")),
    st.text(max_size=16),
    st.text(max_size=16),
    st.integers(min_value=-62167219200 * NANOS, max_value=253402300799 * NANOS + NANOS - 1),
    st.sampled_from(["jetstream", "choria_streams"]),
)
def test_orjson_and_stdlib_write_identical_bytes(
    message: bytes, sender: str, request_id: str, time: int, adapter_type: str
) -> None:
    value = Envelope(message, sender, time, request_id)
    saved = jsonfast.orjson
    try:
        jsonfast.orjson = ORJSON
        fast = encode_output(value, adapter_type=adapter_type)
        jsonfast.orjson = None
        stdlib = encode_output(value, adapter_type=adapter_type)
    finally:
        jsonfast.orjson = saved
    assert fast == stdlib
    text = fast.decode("utf-8")  # always valid UTF-8
    assert not any(char in text for char in "<>&\u2028\u2029")
    assert_valid_output(fast, adapter_type)


# --- subject ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic", "sender", "subject"),
    [
        ("choria.node_metadata.%s", "node1.example.net", "choria.node_metadata.node1.example.net"),
        ("%s.%s", "a", "a.a"),  # every occurrence
        ("x.%%s", "a", "x.%a"),  # plain replacement, no format processing
        ("fixed.subject", "anything at all", "fixed.subject"),  # no %s: the sender is not used
        ("reg.%s", "n\u00f6de-1_x", "reg.n\u00f6de-1_x"),  # UTF-8 is fine
        ("reg.%s", "a" * 253, "reg." + "a" * 253),
    ],
)
def test_output_subject(topic: str, sender: str, subject: str) -> None:
    assert output_subject(topic, sender) == subject


@pytest.mark.parametrize(
    ("topic", "sender", "problem"),
    [
        ("reg.%s", "", "empty token"),
        ("reg.%s", "a.>", "wildcard"),
        ("reg.%s", ">", "wildcard"),
        ("reg.%s", "*", "wildcard"),
        ("reg.%s", "a.*.b", "wildcard"),
        ("reg.%s", "a*b", "wildcard"),
        ("reg.%s", "node 1", "whitespace"),
        ("reg.%s", "node\t1", "whitespace"),
        ("reg.%s", "node\r\n1", "whitespace"),
        ("reg.%s", "node\x00", "whitespace"),
        ("reg.%s", "node\u00a0x", "whitespace"),
        ("reg.%s", "node\u2028x", "whitespace"),
        ("reg.%s", ".node", "empty token"),
        ("reg.%s", "node.", "empty token"),
        ("reg.%s", "a..b", "empty token"),
        ("%s", "", "is empty"),
        ("reg.%s", "a" * MAX_SUBJECT_BYTES, "longer than"),
        ("bad..topic", "n1", "empty token"),
    ],
)
def test_unsafe_subjects_are_refused(topic: str, sender: str, problem: str) -> None:
    with pytest.raises(OutputError) as caught:
        output_subject(topic, sender)
    assert problem in caught.value.reason
    assert ("sender" in caught.value.reason) == ("%s" in topic)


# --- message id -------------------------------------------------------------------------------


def test_message_id_is_readable_for_ordinary_ids() -> None:
    value = envelope(sender="node1.example.net", request_id="c8c2d5b3ab8b4a5d9c1f4f0b9f2f3e61")
    assert message_id(value) == "17:node1.example.net:c8c2d5b3ab8b4a5d9c1f4f0b9f2f3e61"


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("a.b", "c"), ("a", "b.c")),
        (("a:b", "c"), ("a", "b:c")),
        (("1:a", "b"), ("1", "a:b")),
        (("n1", "r1"), ("n2", "r1")),  # replies from two nodes to one request
        (("n1", "r1"), ("n1", "r2")),
        (("", ""), ("", ":")),
    ],
)
def test_message_ids_differ_when_sender_or_request_id_differ(
    first: tuple[str, str], second: tuple[str, str]
) -> None:
    assert message_id(envelope(sender=first[0], request_id=first[1])) != message_id(
        envelope(sender=second[0], request_id=second[1])
    )


@settings(max_examples=300, deadline=None)
@given(st.text(), st.text(), st.text(), st.text())
def test_message_id_is_a_safe_stable_injective_header_value(
    sender: str, request_id: str, other_sender: str, other_request_id: str
) -> None:
    one = message_id(envelope(sender=sender, request_id=request_id, time=1))
    # Stable: the same sender and request id give the same id whatever else differs.
    assert one == message_id(Envelope(b"other", sender, 2, request_id))
    assert len(one) <= 200
    assert one.isascii() and one.isprintable() and " " not in one
    if (sender, request_id) != (other_sender, other_request_id):
        assert one != message_id(envelope(sender=other_sender, request_id=other_request_id))
