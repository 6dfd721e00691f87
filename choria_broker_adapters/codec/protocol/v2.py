"""Protocol version 2 layers (docs/protocol.md, Version 2; docs/protocol.md, Schema checks).

Every nested layer and the payload are base64. Secure request and request are checked
against the rules of go-choria's embedded v2 schemas (hand-written), then decoded with Go's
field types; replies are decoded without schema.
"""

from __future__ import annotations

from typing import Any

from choria_broker_adapters.codec.protocol import gotypes
from choria_broker_adapters.codec.protocol.filter import check_filter_schema, decode_filter
from choria_broker_adapters.codec.protocol.gotypes import (
    go_bytes,
    go_int64,
    go_string,
    missing_keys,
    schema_integer,
    struct_fields,
)
from choria_broker_adapters.codec.protocol.model import (
    V2_REQUEST,
    V2_SECURE_REPLY,
    V2_SECURE_REQUEST,
    DecodeError,
    Envelope,
    HeaderLayout,
)

HEADER_FIELDS = frozenset({"reply", "sender", "trace", "federation"})
FEDERATION_FIELDS = frozenset({"request", "reply", "targets"})
SECURE_REQUEST_FIELDS = frozenset({"protocol", "request", "signature", "caller", "signer"})
REQUEST_FIELDS = frozenset(
    {"protocol", "message", "id", "sender", "caller", "collective", "agent", "ttl", "time", "filter"}
)
SECURE_REPLY_FIELDS = frozenset({"protocol", "reply", "hash", "signature", "sender"})
REPLY_FIELDS = frozenset({"protocol", "message", "request", "sender", "agent", "time"})

_SECURE_REQUEST_REQUIRED = frozenset({"protocol", "request", "signature", "caller"})
_REQUEST_REQUIRED = REQUEST_FIELDS - {"filter"}

TIME_SCHEMA_MAXIMUM = 18446744073709551615


HEADERS = HeaderLayout(
    frozenset(HEADER_FIELDS),
    ("reply", "sender"),
    "trace",
    frozenset(FEDERATION_FIELDS),
    ("request", "reply"),
    "targets",
)


def check_headers(headers: dict[str, Any]) -> None:
    gotypes.check_headers(headers, HEADERS)


def secure_request(doc: Any) -> tuple[str, bytes]:
    """Schema-check and decode a v2 secure request: (its protocol, the request JSON bytes)."""
    where = "secure request:"
    if not isinstance(doc, dict):
        raise DecodeError(f"{where} not a JSON object")
    if not doc.keys() >= _SECURE_REQUEST_REQUIRED:
        missing = missing_keys(doc, ("protocol", "request", "signature", "caller"))
        raise DecodeError(f"{where} missing properties: {missing}")
    if doc["protocol"] != V2_SECURE_REQUEST or type(doc["protocol"]) is not str:
        raise DecodeError(f"{where} protocol is not {V2_SECURE_REQUEST}")
    for key in ("request", "signature", "caller"):
        value = doc[key]
        if type(value) is not str or not value:
            raise DecodeError(f"{where} {key} is not a non-empty string")
    if "signer" in doc and type(doc["signer"]) is not str:
        raise DecodeError(f"{where} signer is not a string")
    fields = struct_fields(doc, SECURE_REQUEST_FIELDS)
    protocol = go_string(fields.get("protocol"), "secure request: protocol")
    inner = go_bytes(fields.get("request"), "secure request: request")
    go_bytes(fields.get("signature"), "secure request: signature")
    go_string(fields.get("caller"), "secure request: caller")
    go_string(fields.get("signer"), "secure request: signer")
    return protocol, inner


def _check_request_schema(doc: Any) -> None:
    where = "request:"
    if not isinstance(doc, dict):
        raise DecodeError(f"{where} not a JSON object")
    missing = missing_keys(
        doc, ("protocol", "message", "id", "sender", "caller", "collective", "agent", "ttl", "time")
    )
    if missing:
        raise DecodeError(f"{where} missing properties: {missing}")
    if doc["protocol"] != V2_REQUEST or type(doc["protocol"]) is not str:
        raise DecodeError(f"{where} protocol is not {V2_REQUEST}")
    for key in ("message", "id", "sender", "caller", "collective", "agent"):
        value = doc[key]
        if type(value) is not str or not value:
            raise DecodeError(f"{where} {key} is not a non-empty string")
    ttl = doc["ttl"]
    if not schema_integer(ttl) or ttl < 1:
        raise DecodeError(f"{where} ttl is not an integer of at least 1")
    time = doc["time"]
    if not schema_integer(time) or not 1 <= time <= TIME_SCHEMA_MAXIMUM:
        raise DecodeError(f"{where} time is not a positive integer (Unix nanoseconds)")
    if "filter" in doc:
        check_filter_schema(doc["filter"], "request: filter")


def request(doc: Any) -> Envelope:
    """Schema-check and decode a v2 request into the four output values."""
    _check_request_schema(doc)
    fields = struct_fields(doc, REQUEST_FIELDS)
    go_string(fields.get("protocol"), "request: protocol")
    message = go_bytes(fields.get("message"), "request: message")
    request_id = go_string(fields.get("id"), "request: id")
    sender = go_string(fields.get("sender"), "request: sender")
    go_string(fields.get("caller"), "request: caller")
    go_string(fields.get("collective"), "request: collective")
    go_string(fields.get("agent"), "request: agent")
    go_int64(fields.get("ttl"), "request: ttl")
    nanoseconds = go_int64(fields.get("time"), "request: time")
    decode_filter(fields.get("filter"), "request: filter")
    return Envelope(message, sender, nanoseconds, request_id)


def secure_reply(doc: Any) -> tuple[str, bytes]:
    """Decode a v2 secure reply (not schema-checked): (its protocol, the reply JSON bytes)."""
    where = "secure reply:"
    if doc is None:  # Go: unmarshalling null leaves the struct untouched
        doc = {}
    if not isinstance(doc, dict):
        raise DecodeError(f"{where} not a JSON object")
    fields = struct_fields(doc, SECURE_REPLY_FIELDS)
    if "protocol" in fields:
        protocol = go_string(fields["protocol"], "secure reply: protocol")
    else:
        protocol = V2_SECURE_REPLY
    inner = go_bytes(fields.get("reply"), "secure reply: reply")
    go_string(fields.get("hash"), "secure reply: hash")
    go_bytes(fields.get("signature"), "secure reply: signature")
    go_string(fields.get("sender"), "secure reply: sender")
    return protocol, inner


def reply(doc: Any) -> Envelope:
    """Decode a v2 reply (not schema-checked) into the four output values."""
    where = "reply:"
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise DecodeError(f"{where} not a JSON object")
    fields = struct_fields(doc, REPLY_FIELDS)
    go_string(fields.get("protocol"), "reply: protocol")
    message = go_bytes(fields.get("message"), "reply: message")
    request_id = go_string(fields.get("request"), "reply: request")
    sender = go_string(fields.get("sender"), "reply: sender")
    go_string(fields.get("agent"), "reply: agent")
    nanoseconds = go_int64(fields.get("time"), "reply: time")
    return Envelope(message, sender, nanoseconds, request_id)
