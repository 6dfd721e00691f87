"""A shortcut for the common, well-formed Choria message (decode's hot path).

Almost every message an adapter sees was written by a Choria client or server: every layer
has exactly the lower-case keys, every value has the expected type, the filter is empty. For
such a message the general decoder's case folding, schema walk and Go field decode all agree
and boil down to a handful of type checks, done here inline, in one function per mode.

The contract that keeps this safe: these functions either return the Envelope the general
path would return for the same already-parsed transport, or None as soon as anything is
unusual (a case-variant or unknown key, a null, a wrong type, bad base64, an invalid inner
document, a non-empty filter that fails its checks, ...). They never raise DecodeError: on
None the caller runs the general path, which produces the result and every error message.
Each layer is fully checked before the next is parsed, so a `NeedPrecise` from the loader
(propagated unchanged) happens exactly where the general path would meet it.

With `keep` the Envelope also carries the secure layer's signature material (SecureLayer);
without it nothing more is built than before, so the unverified path costs the same.
"""

from __future__ import annotations

import binascii
from collections.abc import Callable
from typing import Any

from choria_broker_adapters.codec.jsonfast import JSONInvalid
from choria_broker_adapters.codec.protocol import v1, v2
from choria_broker_adapters.codec.protocol.filter import check_filter_schema, decode_filter, is_empty_filter
from choria_broker_adapters.codec.protocol.gotypes import INT64_MAX, INT64_MIN
from choria_broker_adapters.codec.protocol.model import (
    V1_REQUEST,
    V1_SECURE_REPLY,
    V1_SECURE_REQUEST,
    V1_TRANSPORT,
    V2_REQUEST,
    V2_SECURE_REPLY,
    V2_SECURE_REQUEST,
    V2_TRANSPORT,
    DecodeError,
    Envelope,
    HeaderLayout,
    SecureLayer,
)

# load(data, strict_numbers) -> parsed JSON, raising JSONInvalid or NeedPrecise.
Loader = Callable[[bytes | str, bool], Any]
HeadersCheck = Callable[[Any], bool]

_TRANSPORT_FIELDS = frozenset({"protocol", "data", "headers"})
# A Go string field takes a string or null (type() of a parsed JSON value, so no subclasses).
_OPTIONAL_STRING = frozenset({str, type(None)})
NANOS = v1.NANOS

# Parsed JSON values only ever hold exact str/int/list/dict instances (or the precise parser's
# dict subclass, hence isinstance for objects), so `type(x) is str` is the schema's "string"
# and `type(x) is int` its "integer" minus the floats a schema would accept (bool is excluded
# too): those rare forms go to the general path. Comparing a parsed value with a protocol id
# using `==` is exact for the same reason.


def _plain_headers(headers: Any, layout: HeaderLayout) -> bool:
    """check_headers would accept these headers, and they have only exact field names."""
    if not isinstance(headers, dict) or not headers.keys() <= layout.fields:
        return False
    for name in layout.strings:
        if type(headers.get(name)) not in _OPTIONAL_STRING:
            return False
    if not _plain_string_triples(headers.get(layout.trail)):
        return False
    federation = headers.get("federation")
    if federation is None:
        return True
    if not isinstance(federation, dict) or not federation.keys() <= layout.federation_fields:
        return False
    for name in layout.federation_strings:
        if type(federation.get(name)) not in _OPTIONAL_STRING:
            return False
    return _plain_string_list(federation.get(layout.federation_targets))


def _plain_v1_headers(headers: Any) -> bool:
    return _plain_headers(headers, v1.HEADERS)


def _plain_v2_headers(headers: Any) -> bool:
    return _plain_headers(headers, v2.HEADERS)


def _plain_string_triples(value: Any) -> bool:
    """Go's [][3]string accepts this value (null, or arrays of strings/nulls)."""
    if value is None:
        return True
    if type(value) is not list:
        return False
    for triple in value:
        if type(triple) is not list:
            return False
        # Elements past the third are skipped unchecked by Go.
        for element in triple[:3]:
            if type(element) not in _OPTIONAL_STRING:
                return False
    return True


def _plain_string_list(value: Any) -> bool:
    """Go's []string accepts this value (null, or an array of strings/nulls)."""
    if value is None:
        return True
    if type(value) is not list:
        return False
    return all(type(element) in _OPTIONAL_STRING for element in value)


def _plain_base64(value: Any) -> bytes | None:
    """A []byte field's bytes, or None where the general path must decide (including CR/LF,
    which Go skips but strict mode refuses)."""
    if type(value) is not str:
        return b"" if value is None else None
    if not value:
        return b""
    try:
        return binascii.a2b_base64(value, strict_mode=True)
    except (binascii.Error, ValueError):
        return None


def _transport_data(transport: dict[str, Any], protocol: str, plain_headers: HeadersCheck) -> bytes | None:
    """The secure layer's bytes of a plain transport, or None if anything is unusual."""
    if not transport.keys() <= _TRANSPORT_FIELDS or transport.get("protocol") != protocol:
        return None
    # A null `headers` decodes but crashes Go later: the general path discards it.
    if "headers" in transport and not plain_headers(transport["headers"]):
        return None
    data = transport.get("data")
    # Empty data is not JSON: the general path words that.
    if type(data) is not str or not data:
        return None
    return _plain_base64(data)


def v1_request(transport: dict[str, Any], load: Loader, keep: bool = False) -> Envelope | None:
    """decode() of a parsed v1 transport in request mode, or None: use the general path."""
    data = _transport_data(transport, V1_TRANSPORT, _plain_v1_headers)
    if data is None:
        return None

    try:
        secure = load(data, True)
    except JSONInvalid:
        return None
    # The schema requires all four fields; with no other key they are also Go's fields.
    if not isinstance(secure, dict) or secure.keys() != v1.SECURE_REQUEST_FIELDS:
        return None
    if secure["protocol"] != V1_SECURE_REQUEST:
        return None
    inner = secure["message"]
    signature = secure["signature"]
    pubcert = secure["pubcert"]
    if not (type(inner) is str and inner and type(signature) is str and signature):
        return None
    if type(pubcert) is not str or not pubcert:
        return None

    try:
        request = load(inner, True)
    except JSONInvalid:
        return None
    if not isinstance(request, dict) or request.keys() != v1.REQUEST_FIELDS:
        return None
    if request["protocol"] != V1_REQUEST:
        return None
    message = request["message"]
    envelope = request["envelope"]
    if type(message) is not str or not message:
        return None
    if not isinstance(envelope, dict) or envelope.keys() != v1.REQUEST_ENVELOPE_FIELDS:
        return None
    request_id = envelope["requestid"]
    sender = envelope["senderid"]
    caller = envelope["callerid"]
    collective = envelope["collective"]
    agent = envelope["agent"]
    ttl = envelope["ttl"]
    seconds = envelope["time"]
    if not (
        type(request_id) is str
        and len(request_id) == 32
        and type(sender) is str
        and type(caller) is str
        and caller
        and type(collective) is str
        and collective
        and type(agent) is str
        and agent
        and type(ttl) is int
        and 30 <= ttl <= INT64_MAX
        and type(seconds) is int
        and INT64_MIN <= seconds <= INT64_MAX
    ):
        return None
    filter_value = envelope["filter"]
    if not is_empty_filter(filter_value):
        try:
            check_filter_schema(filter_value, "request: envelope.filter")
            decode_filter(filter_value, "request: envelope.filter")
        except DecodeError:
            return None  # the general path words the error
    if keep:
        secure_layer = SecureLayer(
            1,
            True,
            inner.encode("utf-8", "surrogatepass"),
            signature,
            pubcert,
            transport_sender=_header(transport, "mc_sender"),
        )
        return Envelope(message.encode("utf-8"), sender, seconds * NANOS, request_id, secure_layer)
    return Envelope(message.encode("utf-8"), sender, seconds * NANOS, request_id)


def _header(transport: dict[str, Any], name: str) -> str:
    """A header already checked to be a string or null (plain headers), as a string."""
    headers = transport.get("headers")
    return (headers.get(name) or "") if headers else ""


def v1_reply(transport: dict[str, Any], load: Loader, keep: bool = False) -> Envelope | None:
    """decode() of a parsed v1 transport in reply mode, or None: use the general path."""
    data = _transport_data(transport, V1_TRANSPORT, _plain_v1_headers)
    if data is None:
        return None

    try:
        secure = load(data, False)
    except JSONInvalid:
        return None
    # Replies are not schema-checked: only Go's field types matter.
    if not isinstance(secure, dict) or not secure.keys() <= v1.SECURE_REPLY_FIELDS:
        return None
    # An absent protocol leaves Go's default; the reply inside must be v1 too.
    if secure.get("protocol", V1_SECURE_REPLY) != V1_SECURE_REPLY:
        return None
    inner = secure.get("message")
    if type(inner) is not str or not inner or type(secure.get("hash")) not in _OPTIONAL_STRING:
        return None

    try:
        reply = load(inner, False)
    except JSONInvalid:
        return None
    if not isinstance(reply, dict) or not reply.keys() <= v1.REPLY_FIELDS:
        return None
    message = reply.get("message")
    envelope = reply.get("envelope")
    if type(message) is not str or type(reply.get("protocol")) not in _OPTIONAL_STRING:
        return None
    # An absent or null envelope is handled (differently) by the general path.
    if not isinstance(envelope, dict) or not envelope.keys() <= v1.REPLY_ENVELOPE_FIELDS:
        return None
    request_id = envelope.get("requestid")
    sender = envelope.get("senderid")
    seconds = envelope.get("time")
    if not (
        type(request_id) is str
        and type(sender) is str
        and type(envelope.get("agent")) in _OPTIONAL_STRING
        and type(seconds) is int
        and INT64_MIN <= seconds <= INT64_MAX
    ):
        return None
    if keep:
        secure_layer = SecureLayer(
            1,
            False,
            inner.encode("utf-8", "surrogatepass"),
            "",
            "",
            digest=secure.get("hash") or "",
            transport_sender=_header(transport, "mc_sender"),
        )
        return Envelope(message.encode("utf-8"), sender, seconds * NANOS, request_id, secure_layer)
    return Envelope(message.encode("utf-8"), sender, seconds * NANOS, request_id)


_V2_SECURE_REQUEST_REQUIRED = frozenset({"protocol", "request", "signature", "caller"})
_V2_REQUEST_REQUIRED = v2.REQUEST_FIELDS - {"filter"}


def v2_request(transport: dict[str, Any], load: Loader, keep: bool = False) -> Envelope | None:
    """decode() of a parsed v2 transport in request mode, or None: use the general path."""
    data = _transport_data(transport, V2_TRANSPORT, _plain_v2_headers)
    if data is None:
        return None

    try:
        secure = load(data, True)
    except JSONInvalid:
        return None
    if not isinstance(secure, dict):
        return None
    keys = secure.keys()
    # Schema-required fields present, and no key other than Go's exact field names.
    if not (keys >= _V2_SECURE_REQUEST_REQUIRED and keys <= v2.SECURE_REQUEST_FIELDS):
        return None
    if secure["protocol"] != V2_SECURE_REQUEST:
        return None
    encoded = secure["request"]
    signature = secure["signature"]
    caller = secure["caller"]
    if not (type(encoded) is str and encoded and type(signature) is str and signature):
        return None
    if type(caller) is not str or not caller or type(secure.get("signer", "")) is not str:
        return None
    inner = _plain_base64(encoded)
    if inner is None or _plain_base64(signature) is None:
        return None

    try:
        request = load(inner, True)
    except JSONInvalid:
        return None
    if not isinstance(request, dict):
        return None
    keys = request.keys()
    if not (keys == v2.REQUEST_FIELDS or keys == _V2_REQUEST_REQUIRED):
        return None
    if request["protocol"] != V2_REQUEST:
        return None
    encoded_message = request["message"]
    request_id = request["id"]
    sender = request["sender"]
    caller = request["caller"]
    collective = request["collective"]
    agent = request["agent"]
    ttl = request["ttl"]
    nanoseconds = request["time"]
    if not (
        type(encoded_message) is str
        and encoded_message
        and type(request_id) is str
        and request_id
        and type(sender) is str
        and sender
        and type(caller) is str
        and caller
        and type(collective) is str
        and collective
        and type(agent) is str
        and agent
        and type(ttl) is int
        and 1 <= ttl <= INT64_MAX
        # The schema allows up to 2**64-1, Go's int64 field only up to INT64_MAX.
        and type(nanoseconds) is int
        and 1 <= nanoseconds <= INT64_MAX
    ):
        return None
    filter_value = request.get("filter")
    if filter_value is not None and not is_empty_filter(filter_value):
        try:
            check_filter_schema(filter_value, "request: filter")
            decode_filter(filter_value, "request: filter")
        except DecodeError:
            return None  # the general path words the error
    elif filter_value is None and "filter" in request:
        return None  # null is not an object: the schema check words it
    message = _plain_base64(encoded_message)
    if message is None:
        return None
    if keep:
        secure_layer = SecureLayer(
            2,
            True,
            inner,
            signature,
            secure["caller"],
            signer=secure.get("signer", ""),
            transport_sender=_header(transport, "sender"),
        )
        return Envelope(message, sender, nanoseconds, request_id, secure_layer)
    return Envelope(message, sender, nanoseconds, request_id)


def v2_reply(transport: dict[str, Any], load: Loader, keep: bool = False) -> Envelope | None:
    """decode() of a parsed v2 transport in reply mode, or None: use the general path."""
    data = _transport_data(transport, V2_TRANSPORT, _plain_v2_headers)
    if data is None:
        return None

    try:
        secure = load(data, False)
    except JSONInvalid:
        return None
    if not isinstance(secure, dict) or not secure.keys() <= v2.SECURE_REPLY_FIELDS:
        return None
    # An absent protocol leaves Go's default; the reply inside must be v2 too.
    if secure.get("protocol", V2_SECURE_REPLY) != V2_SECURE_REPLY:
        return None
    encoded = secure.get("reply")
    if type(encoded) is not str or not encoded:
        return None
    if type(secure.get("hash")) not in _OPTIONAL_STRING or type(secure.get("sender")) not in _OPTIONAL_STRING:
        return None
    inner = _plain_base64(encoded)
    if inner is None or _plain_base64(secure.get("signature")) is None:
        return None

    try:
        reply = load(inner, False)
    except JSONInvalid:
        return None
    if not isinstance(reply, dict) or not reply.keys() <= v2.REPLY_FIELDS:
        return None
    request_id = reply.get("request")
    sender = reply.get("sender")
    nanoseconds = reply.get("time")
    if not (
        type(request_id) is str
        and type(sender) is str
        and type(reply.get("protocol")) in _OPTIONAL_STRING
        and type(reply.get("agent")) in _OPTIONAL_STRING
        and type(nanoseconds) is int
        and INT64_MIN <= nanoseconds <= INT64_MAX
    ):
        return None
    message = _plain_base64(reply.get("message"))
    if message is None:
        return None
    if keep:
        secure_layer = SecureLayer(
            2,
            False,
            inner,
            secure.get("signature") or "",
            secure.get("sender") or "",
            digest=secure.get("hash") or "",
            transport_sender=_header(transport, "sender"),
        )
        return Envelope(message, sender, nanoseconds, request_id, secure_layer)
    return Envelope(message, sender, nanoseconds, request_id)
