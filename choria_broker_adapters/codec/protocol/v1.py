"""Protocol version 1 layers (docs/protocol.md, Version 1; docs/protocol.md, Schema checks).

Only the transport `data` is base64; the secure layers carry the inner JSON as strings.
Secure request and request are checked against the rules of go-choria's embedded schemas
(hand-written here: a general JSON-schema library is far too slow per message), then decoded
with Go's field types.
"""

from __future__ import annotations

from typing import Any

from choria_broker_adapters.codec.protocol import gotypes
from choria_broker_adapters.codec.protocol.filter import check_filter_schema, decode_filter
from choria_broker_adapters.codec.protocol.gotypes import (
    go_int64,
    go_object,
    go_string,
    missing_keys,
    schema_integer,
    struct_fields,
)
from choria_broker_adapters.codec.protocol.model import (
    V1_REQUEST,
    V1_SECURE_REPLY,
    V1_SECURE_REQUEST,
    DecodeError,
    Envelope,
    HeaderLayout,
)

NANOS = 1_000_000_000

HEADER_FIELDS = frozenset({"reply-to", "mc_sender", "seen-by", "federation"})
FEDERATION_FIELDS = frozenset({"req", "reply-to", "target"})
SECURE_REQUEST_FIELDS = frozenset({"protocol", "message", "signature", "pubcert"})
REQUEST_FIELDS = frozenset({"protocol", "message", "envelope"})
REQUEST_ENVELOPE_FIELDS = frozenset(
    {"requestid", "senderid", "callerid", "collective", "agent", "ttl", "time", "filter"}
)
SECURE_REPLY_FIELDS = frozenset({"protocol", "message", "hash"})
REPLY_FIELDS = frozenset({"protocol", "message", "envelope"})
REPLY_ENVELOPE_FIELDS = frozenset({"requestid", "senderid", "agent", "time"})
_SECURE_REQUEST_REQUIRED = frozenset({"protocol", "message", "signature", "pubcert"})
_REQUEST_REQUIRED = frozenset({"protocol", "message", "envelope"})


HEADERS = HeaderLayout(
    frozenset(HEADER_FIELDS),
    ("reply-to", "mc_sender"),
    "seen-by",
    frozenset(FEDERATION_FIELDS),
    ("req", "reply-to"),
    "target",
)


def check_headers(headers: dict[str, Any]) -> None:
    gotypes.check_headers(headers, HEADERS)


def secure_request(doc: Any) -> tuple[str, str]:
    """Schema-check and decode a v1 secure request: (its protocol, the request JSON text)."""
    where = "secure request:"
    if not isinstance(doc, dict):
        raise DecodeError(f"{where} not a JSON object")
    if not doc.keys() >= _SECURE_REQUEST_REQUIRED:
        missing = missing_keys(doc, ("protocol", "message", "signature", "pubcert"))
        raise DecodeError(f"{where} missing properties: {missing}")
    if doc["protocol"] != V1_SECURE_REQUEST or type(doc["protocol"]) is not str:
        raise DecodeError(f"{where} protocol is not {V1_SECURE_REQUEST}")
    for key in ("message", "signature", "pubcert"):
        value = doc[key]
        if type(value) is not str or not value:
            raise DecodeError(f"{where} {key} is not a non-empty string")
    fields = struct_fields(doc, SECURE_REQUEST_FIELDS)
    protocol = go_string(fields.get("protocol"), "secure request: protocol")
    message = go_string(fields.get("message"), "secure request: message")
    go_string(fields.get("signature"), "secure request: signature")
    go_string(fields.get("pubcert"), "secure request: pubcert")
    return protocol, message


def _check_request_schema(doc: Any) -> None:
    where = "request:"
    if not isinstance(doc, dict):
        raise DecodeError(f"{where} not a JSON object")
    if not doc.keys() >= _REQUEST_REQUIRED:
        missing = missing_keys(doc, ("protocol", "message", "envelope"))
        raise DecodeError(f"{where} missing properties: {missing}")
    if doc["protocol"] != V1_REQUEST or type(doc["protocol"]) is not str:
        raise DecodeError(f"{where} protocol is not {V1_REQUEST}")
    message = doc["message"]
    if type(message) is not str or not message:
        raise DecodeError(f"{where} message is not a non-empty string")
    envelope = doc["envelope"]
    if not isinstance(envelope, dict):
        raise DecodeError(f"{where} envelope is not an object")
    if not envelope.keys() >= REQUEST_ENVELOPE_FIELDS:
        missing = missing_keys(
            envelope, ("requestid", "senderid", "callerid", "collective", "agent", "ttl", "time", "filter")
        )
        raise DecodeError(f"{where} envelope is missing {missing}")
    request_id = envelope["requestid"]
    if type(request_id) is not str or len(request_id) != 32:
        raise DecodeError(f"{where} envelope.requestid is not a 32 character string")
    if type(envelope["senderid"]) is not str:
        raise DecodeError(f"{where} envelope.senderid is not a string")
    for key in ("callerid", "collective", "agent"):
        value = envelope[key]
        if type(value) is not str or not value:
            raise DecodeError(f"{where} envelope.{key} is not a non-empty string")
    ttl = envelope["ttl"]
    if not schema_integer(ttl) or ttl < 30:
        raise DecodeError(f"{where} envelope.ttl is not an integer of at least 30")
    if not schema_integer(envelope["time"]):
        raise DecodeError(f"{where} envelope.time is not an integer")
    check_filter_schema(envelope["filter"], "request: envelope.filter")


def request(doc: Any) -> Envelope:
    """Schema-check and decode a v1 request into the four output values."""
    _check_request_schema(doc)
    where = "request:"
    fields = struct_fields(doc, REQUEST_FIELDS)
    go_string(fields.get("protocol"), "request: protocol")
    message = go_string(fields.get("message"), "request: message")
    # A case-variant "Envelope": null after the checked key would leave Go with a nil pointer.
    envelope = go_object(fields.get("envelope"), "request: envelope")
    if envelope is None:
        raise DecodeError(f"{where} envelope is null")
    env = struct_fields(envelope, REQUEST_ENVELOPE_FIELDS)
    request_id = go_string(env.get("requestid"), "request: envelope.requestid")
    sender = go_string(env.get("senderid"), "request: envelope.senderid")
    go_string(env.get("callerid"), "request: envelope.callerid")
    go_string(env.get("collective"), "request: envelope.collective")
    go_string(env.get("agent"), "request: envelope.agent")
    go_int64(env.get("ttl"), "request: envelope.ttl")
    seconds = go_int64(env.get("time"), "request: envelope.time")
    decode_filter(env.get("filter"), "request: envelope.filter")
    return Envelope(message.encode("utf-8"), sender, seconds * NANOS, request_id)


def secure_reply(doc: Any) -> tuple[str, str]:
    """Decode a v1 secure reply (not schema-checked): (its protocol, the reply JSON text)."""
    where = "secure reply:"
    if doc is None:  # Go: unmarshalling null leaves the struct untouched
        doc = {}
    if not isinstance(doc, dict):
        raise DecodeError(f"{where} not a JSON object")
    fields = struct_fields(doc, SECURE_REPLY_FIELDS)
    if "protocol" in fields:
        protocol = go_string(fields["protocol"], "secure reply: protocol")
    else:
        protocol = V1_SECURE_REPLY
    message = go_string(fields.get("message"), "secure reply: message")
    go_string(fields.get("hash"), "secure reply: hash")
    return protocol, message


def reply(doc: Any) -> Envelope:
    """Decode a v1 reply (not schema-checked) into the four output values."""
    where = "reply:"
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise DecodeError(f"{where} not a JSON object")
    fields = struct_fields(doc, REPLY_FIELDS)
    go_string(fields.get("protocol"), "reply: protocol")
    message = go_string(fields.get("message"), "reply: message")
    if "envelope" not in fields:
        # Go pre-allocates the envelope: everything empty, time the 1970 epoch.
        return Envelope(message.encode("utf-8"), "", 0, "")
    envelope = go_object(fields["envelope"], "reply: envelope")
    if envelope is None:
        raise DecodeError(f"{where} envelope is null (this crashes the Go broker)")
    env = struct_fields(envelope, REPLY_ENVELOPE_FIELDS)
    request_id = go_string(env.get("requestid"), "reply: envelope.requestid")
    sender = go_string(env.get("senderid"), "reply: envelope.senderid")
    go_string(env.get("agent"), "reply: envelope.agent")
    seconds = go_int64(env.get("time"), "reply: envelope.time")
    return Envelope(message.encode("utf-8"), sender, seconds * NANOS, request_id)
