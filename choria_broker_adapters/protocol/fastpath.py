"""A shortcut for the common, well-formed protocol v1 message (decode's hot path).

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
"""

from __future__ import annotations

import binascii
from collections.abc import Callable
from typing import Any

from choria_broker_adapters.jsonfast import JSONInvalid
from choria_broker_adapters.protocol import v1
from choria_broker_adapters.protocol.filter import check_filter_schema, decode_filter, is_empty_filter
from choria_broker_adapters.protocol.gotypes import INT64_MAX, INT64_MIN
from choria_broker_adapters.protocol.model import (
    V1_REQUEST,
    V1_SECURE_REPLY,
    V1_SECURE_REQUEST,
    V1_TRANSPORT,
    DecodeError,
    Envelope,
)

# load(data, strict_numbers) -> parsed JSON, raising JSONInvalid or NeedPrecise.
Loader = Callable[[bytes | str, bool], Any]

_TRANSPORT_FIELDS = frozenset({"protocol", "data", "headers"})
# A Go string field takes a string or null (type() of a parsed JSON value, so no subclasses).
_OPTIONAL_STRING = frozenset({str, type(None)})
NANOS = v1.NANOS

# Parsed JSON values only ever hold exact str/int/list/dict instances (or the precise parser's
# dict subclass, hence isinstance for objects), so `type(x) is str` is the schema's "string"
# and `type(x) is int` its "integer" minus the floats a schema would accept (bool is excluded
# too): those rare forms go to the general path. Comparing a parsed value with a protocol id
# using `==` is exact for the same reason.


def _plain_v1_headers(headers: Any) -> bool:
    """v1.check_headers would accept these headers, and they have only exact field names."""
    if not isinstance(headers, dict) or not headers.keys() <= v1.HEADER_FIELDS:
        return False
    if type(headers.get("reply-to")) not in _OPTIONAL_STRING:
        return False
    if type(headers.get("mc_sender")) not in _OPTIONAL_STRING:
        return False
    seen_by = headers.get("seen-by")
    if seen_by is not None:
        if type(seen_by) is not list:
            return False
        for hop in seen_by:
            # Go decodes [][3]string: extra elements are skipped unchecked.
            if type(hop) is not list or any(type(element) not in _OPTIONAL_STRING for element in hop[:3]):
                return False
    federation = headers.get("federation")
    if federation is not None:
        if not isinstance(federation, dict) or not federation.keys() <= v1.FEDERATION_FIELDS:
            return False
        if type(federation.get("req")) not in _OPTIONAL_STRING:
            return False
        if type(federation.get("reply-to")) not in _OPTIONAL_STRING:
            return False
        targets = federation.get("target")
        if targets is not None and (
            type(targets) is not list or any(type(target) not in _OPTIONAL_STRING for target in targets)
        ):
            return False
    return True


def _v1_transport_data(transport: dict[str, Any]) -> bytes | None:
    """The secure layer's bytes of a plain v1 transport, or None if anything is unusual."""
    if not transport.keys() <= _TRANSPORT_FIELDS or transport.get("protocol") != V1_TRANSPORT:
        return None
    # A null `headers` decodes but crashes Go later: the general path discards it.
    if "headers" in transport and not _plain_v1_headers(transport["headers"]):
        return None
    data = transport.get("data")
    if type(data) is not str or not data:
        return None
    try:
        # Strict mode refuses CR/LF, which Go skips: such data takes the general path.
        return binascii.a2b_base64(data, strict_mode=True)
    except (binascii.Error, ValueError):
        return None


def v1_request(transport: dict[str, Any], load: Loader) -> Envelope | None:
    """decode() of a parsed v1 transport in request mode, or None: use the general path."""
    data = _v1_transport_data(transport)
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
    return Envelope(message.encode("utf-8"), sender, seconds * NANOS, request_id)


def v1_reply(transport: dict[str, Any], load: Loader) -> Envelope | None:
    """decode() of a parsed v1 transport in reply mode, or None: use the general path."""
    data = _v1_transport_data(transport)
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
    return Envelope(message.encode("utf-8"), sender, seconds * NANOS, request_id)
