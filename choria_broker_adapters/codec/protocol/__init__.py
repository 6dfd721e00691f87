"""Decode a Choria message as the Go broker's stream adapters do (docs/protocol.md).

    decode(payload, protocol="request", security_provider="puppet") -> Envelope

walks transport -> secure request/reply -> request/reply and returns the four values the
output document is made of, or raises DecodeError with a short reason. Nothing else escapes,
whatever bytes a NATS peer sends; the inputs that crash the Go broker (`"headers": null`,
a v1 reply's `"envelope": null`, a v1 secure request re-labelled as v2) are DecodeErrors too.

Deliberate differences from Go, all on the side of discarding junk rather than crashing:
nesting deeper than Python's recursion limit (about 1000, Go allows 10000) is discarded, and
repeated keys are only type-checked in their winning occurrence (see `gotypes`).
"""

from __future__ import annotations

from typing import Any

from choria_broker_adapters.codec import jsonfast
from choria_broker_adapters.codec.jsonfast import JSONInvalid, NeedPrecise
from choria_broker_adapters.codec.protocol import fastpath, v1, v2
from choria_broker_adapters.codec.protocol.gotypes import go_bytes, go_object, go_string, struct_fields
from choria_broker_adapters.codec.protocol.model import (
    V1_SECURE_REPLY,
    V1_SECURE_REQUEST,
    V1_TRANSPORT,
    V2_SECURE_REPLY,
    V2_SECURE_REQUEST,
    V2_TRANSPORT,
    DecodeError,
    Envelope,
    SecureLayer,
    normalise_protocol,
)
from choria_broker_adapters.core.choices import protocol_version_for

__all__ = ["DecodeError", "Envelope", "SecureLayer", "decode"]

_TRANSPORT_FIELDS = frozenset({"protocol", "data", "headers"})
_PROTOCOL_FIELD = frozenset({"protocol"})

# The shortcut for well-formed v1 messages (see fastpath); False runs every message through the
# general path, which is how the shortcut is checked against it.
USE_FAST_PATH = True
# (request mode, accepted protocol version) -> its fast path
_SHORTCUTS = {
    (True, 1): fastpath.v1_request,
    (False, 1): fastpath.v1_reply,
    (True, 2): fastpath.v2_request,
    (False, 2): fastpath.v2_reply,
}


def _fast_load(data: bytes | str, strict_numbers: bool) -> Any:
    # orjson refuses exactly the inputs that need Go-specific care; see jsonfast.
    try:
        return jsonfast.orjson.loads(data)
    except (ValueError, RecursionError):
        raise NeedPrecise from None


def _precise_load(data: bytes | str, strict_numbers: bool) -> Any:
    return jsonfast.loads_precise(data, strict_numbers=strict_numbers)


def _parse(load: Any, data: bytes | str, strict_numbers: bool, layer: str) -> Any:
    try:
        return load(data, strict_numbers)
    except JSONInvalid as exc:
        if not data:
            raise DecodeError(f"{layer}: empty, not JSON") from None
        raise DecodeError(f"{layer}: not valid JSON ({exc})") from None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _decode(payload: bytes, request_mode: bool, accepted_version: int, load: Any, keep: bool) -> Envelope:
    try:
        transport = load(payload, False)
    except JSONInvalid:
        raise DecodeError("transport: not JSON, so not a Choria transport message") from None
    if not isinstance(transport, dict):
        raise DecodeError("transport: not a JSON object, so not a Choria transport message")
    if USE_FAST_PATH:
        envelope = _SHORTCUTS[request_mode, accepted_version](transport, load, keep)
        if envelope is not None:
            return envelope
    fields = struct_fields(transport, _TRANSPORT_FIELDS)
    protocol = fields.get("protocol")
    if protocol == V1_TRANSPORT:
        version = 1
    elif protocol == V2_TRANSPORT:
        version = 2
    else:
        raise DecodeError(f"transport: unknown transport protocol {_short(protocol)}")

    data = go_bytes(fields.get("data"), "transport: data")
    headers_null = False
    headers = None
    if "headers" in fields:
        headers = go_object(fields["headers"], "transport: headers")
        if headers is None:
            headers_null = True  # decodes, but crashes Go later: discarded below
        elif version == 1:
            v1.check_headers(headers)
        else:
            v2.check_headers(headers)

    if version != accepted_version:
        if version == 1:
            raise DecodeError("transport: version 1 protocol requires an x509 security provider (not choria)")
        raise DecodeError("transport: version 2 protocol requires the choria (ed25519+jwt) security provider")

    if request_mode:
        envelope, secure = _request(data, version, load)
    else:
        envelope, secure = _reply(data, version, load)
    if headers_null:
        raise DecodeError("transport: headers is null (this crashes the Go broker)")
    if keep:
        return _with_secure_layer(envelope, secure, version, request_mode, headers)
    return envelope


def _with_secure_layer(
    envelope: Envelope, secure: Any, version: int, request_mode: bool, headers: Any
) -> Envelope:
    """The envelope with its SecureLayer, read from the already decoded layers with Go's field
    matching (so it agrees with the fast path, which only sees exact field names)."""
    if version == 1:
        header_fields = struct_fields(headers, v1.HEADER_FIELDS) if headers else {}
        transport_sender = go_string(header_fields.get("mc_sender"), "transport: headers.mc_sender")
    else:
        header_fields = struct_fields(headers, v2.HEADER_FIELDS) if headers else {}
        transport_sender = go_string(header_fields.get("sender"), "transport: headers.sender")
    if secure is None:  # a null secure reply decodes as an empty one
        secure = {}
    layer: SecureLayer
    if request_mode and version == 1:
        fields = struct_fields(secure, v1.SECURE_REQUEST_FIELDS)
        layer = SecureLayer(
            1,
            True,
            _text(fields, "message").encode("utf-8", "surrogatepass"),
            _text(fields, "signature"),
            _text(fields, "pubcert"),
            transport_sender=transport_sender,
        )
    elif request_mode:
        fields = struct_fields(secure, v2.SECURE_REQUEST_FIELDS)
        layer = SecureLayer(
            2,
            True,
            go_bytes(fields.get("request"), "secure request: request"),
            _text(fields, "signature"),
            _text(fields, "caller"),
            signer=_text(fields, "signer"),
            transport_sender=transport_sender,
        )
    elif version == 1:
        fields = struct_fields(secure, v1.SECURE_REPLY_FIELDS)
        layer = SecureLayer(
            1,
            False,
            _text(fields, "message").encode("utf-8", "surrogatepass"),
            "",
            "",
            digest=_text(fields, "hash"),
            transport_sender=transport_sender,
        )
    else:
        fields = struct_fields(secure, v2.SECURE_REPLY_FIELDS)
        layer = SecureLayer(
            2,
            False,
            go_bytes(fields.get("reply"), "secure reply: reply"),
            _text(fields, "signature"),
            _text(fields, "sender"),
            digest=_text(fields, "hash"),
            transport_sender=transport_sender,
        )
    return Envelope(envelope.message, envelope.sender, envelope.time, envelope.request_id, layer)


def _text(fields: dict[str, Any], name: str) -> str:
    value = fields.get(name)
    return value if type(value) is str else ""


def _request(data: bytes, version: int, load: Any) -> tuple[Envelope, Any]:
    secure = _parse(load, data, True, "secure request")
    inner: bytes | str
    if version == 1:
        secure_protocol, inner = v1.secure_request(secure)
    else:
        secure_protocol, inner = v2.secure_request(secure)
    if secure_protocol == V1_SECURE_REQUEST:
        decode_request = v1.request
    elif secure_protocol == V2_SECURE_REQUEST and version == 2:
        decode_request = v2.request
    elif secure_protocol == V2_SECURE_REQUEST:
        raise DecodeError(
            "secure request: a v1 secure request re-labelled as v2 (this crashes the Go broker)"
        )
    else:
        raise DecodeError(
            f"secure request: cannot decode a request of protocol {normalise_protocol(secure_protocol)}"
        )
    return decode_request(_parse(load, inner, True, "request")), secure


def _reply(data: bytes, version: int, load: Any) -> tuple[Envelope, Any]:
    secure = _parse(load, data, False, "secure reply")
    inner: bytes | str
    if version == 1:
        secure_protocol, inner = v1.secure_reply(secure)
    else:
        secure_protocol, inner = v2.secure_reply(secure)
    # The inner reply follows the secure reply's own protocol, not the transport version.
    if secure_protocol == V1_SECURE_REPLY:
        decode_reply = v1.reply
    elif secure_protocol == V2_SECURE_REPLY:
        decode_reply = v2.reply
    else:
        raise DecodeError(
            f"secure reply: cannot decode a reply of protocol {normalise_protocol(secure_protocol)}"
        )
    return decode_reply(_parse(load, inner, False, "reply")), secure


def decode(
    payload: bytes, *, protocol: str = "request", security_provider: str = "puppet", keep_secure: bool = False
) -> Envelope:
    """Decode one NATS message body.

    protocol: the adapter's ingest.protocol; exactly "request" selects request decoding,
        anything else reply decoding (as the Go broker does).
    security_provider: plugin.security.provider; "choria" decodes protocol v2 only, every
        other provider protocol v1 only.
    keep_secure: also return the secure layer's signature material in `Envelope.secure`
        (for verification); the four output values are the same either way.
    Raises DecodeError (with `.reason`) for anything that is not published.
    """
    if not isinstance(payload, bytes):
        payload = bytes(payload)
    request_mode = protocol == "request"
    accepted_version = protocol_version_for(security_provider)
    try:
        if jsonfast.orjson is not None:
            try:
                return _decode(payload, request_mode, accepted_version, _fast_load, keep_secure)
            except NeedPrecise:
                pass
        return _decode(payload, request_mode, accepted_version, _precise_load, keep_secure)
    except DecodeError:
        raise
    except Exception as exc:  # a decoder bug must cost one message, never a worker
        raise DecodeError(f"internal decoder error ({type(exc).__name__}); message discarded") from exc
