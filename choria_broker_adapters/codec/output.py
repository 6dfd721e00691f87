"""The adapter output document, its subject and its JetStream message id (docs/protocol.md).

    encode_output(envelope, adapter_type=...) -> bytes   byte-identical to Go's json.Marshal
    output_subject(topic, sender) -> str                 every "%s" replaced, unsafe senders refused
    message_id(envelope) -> str                          Nats-Msg-Id for de-duplication

Document: `{"protocol":..,"data":..,"sender":..,"time":..,"requestid":..}`, compact, no trailing
newline. `data` is the payload as a JSON string (not base64), with Go's escaping: `<`, `>`,
`&`, U+2028 and U+2029 as `\\uXXXX`, and each byte that is not valid UTF-8 as `\\ufffd`.
`time` is RFC 3339 UTC with nanoseconds, trailing zeros trimmed; years outside 0-9999 are
refused as Go's marshalling refuses them.

`protocol` follows the adapter type: `jetstream` writes `choria:adapters:jetstream:output:1`
(the documented JetStream format and its schema), `choria_streams` writes
`choria:adapters:choria_streams:output:1` (what the current Go broker writes for both).
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache

from choria_broker_adapters.codec import jsonfast
from choria_broker_adapters.codec.protocol import Envelope
from choria_broker_adapters.core.adapter_types import output_protocol
from choria_broker_adapters.core.subjects import node_subject

NANOS = 1_000_000_000
# 0000-01-01T00:00:00Z and 9999-12-31T23:59:59Z in Unix seconds: Go's time.MarshalJSON range.
MIN_SECONDS = -62167219200
MAX_SECONDS = 253402300799

# A message id made of the raw sender and request id is kept readable up to this length.
MAX_READABLE_MESSAGE_ID = 200


class OutputError(Exception):
    """The envelope cannot be published; `reason` says why in a few words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _civil_from_days(days: int) -> tuple[int, int, int]:
    # Proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's algorithm);
    # unlike datetime it reaches year 0.
    days += 719468
    era = days // 146097
    day_of_era = days - era * 146097
    year_of_era = (day_of_era - day_of_era // 1460 + day_of_era // 36524 - day_of_era // 146096) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    month_index = (5 * day_of_year + 2) // 153
    day = day_of_year - (153 * month_index + 2) // 5 + 1
    month = month_index + 3 if month_index < 10 else month_index - 9
    year = year_of_era + era * 400 + (1 if month <= 2 else 0)
    return year, month, day


@lru_cache(maxsize=4096)
def _format_seconds(seconds: int) -> str:
    days, second_of_day = divmod(seconds, 86400)
    year, month, day = _civil_from_days(days)
    hour, rest = divmod(second_of_day, 3600)
    minute, second = divmod(rest, 60)
    return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}"


def format_time(nanoseconds: int) -> str:
    """Go's RFC3339Nano rendering of a UTC instant; OutputError outside years 0-9999."""
    seconds, fraction = divmod(nanoseconds, NANOS)  # floor: -1 ns is 23:59:59.999999999
    if not MIN_SECONDS <= seconds <= MAX_SECONDS:
        raise OutputError("time is outside years 0-9999 (milliseconds sent as seconds?)")
    if fraction:
        return f"{_format_seconds(seconds)}.{fraction:09d}".rstrip("0") + "Z"
    return _format_seconds(seconds) + "Z"


# Byte values, not one-byte strings: `int in bytes` is a bare memchr, several times faster
# than a substring search for a one-byte needle, and this runs on every document.
_LESS_THAN, _GREATER_THAN, _AMPERSAND = b"<>&"


def _go_escape(document: bytes) -> bytes:
    # The characters Go escapes beyond what orjson/json write can only occur inside string
    # values, so replacing them in the whole document is safe; UTF-8 is self-synchronising,
    # so the U+2028/U+2029 byte sequences cannot match across character boundaries.
    if _LESS_THAN in document:
        document = document.replace(b"<", b"\\u003c")
    if _GREATER_THAN in document:
        document = document.replace(b">", b"\\u003e")
    if _AMPERSAND in document:
        document = document.replace(b"&", b"\\u0026")
    # isascii() is a fast C scan; a two-byte substring search is not.
    if not document.isascii() and b"\xe2\x80" in document:
        document = document.replace(b"\xe2\x80\xa8", b"\\u2028").replace(b"\xe2\x80\xa9", b"\\u2029")
    return document


def _stdlib_document(fields: dict[str, str]) -> bytes:
    text = json.dumps(fields, ensure_ascii=False, separators=(",", ":"))
    if not text.isascii():
        # Lone surrogates here are the invalid bytes of a v2 payload (surrogateescape) or
        # lone surrogates of a caller's str: Go writes \ufffd once per byte.
        text = jsonfast.SURROGATES.sub("\\\\ufffd", text)
    return text.encode("utf-8")


def encode_output(envelope: Envelope, *, adapter_type: str) -> bytes:
    """The exact bytes the Go adapter publishes for this envelope (protocol after the type).

    Raises OutputError when the time cannot be rendered (years outside 0-9999), and
    ValueError for an unknown adapter type."""
    protocol = output_protocol(adapter_type)
    time_text = format_time(envelope.time)
    try:
        data = envelope.message.decode("utf-8")
        clean = True
    except UnicodeDecodeError:
        data = envelope.message.decode("utf-8", "surrogateescape")
        clean = False
    fields = {
        "protocol": protocol,
        "data": data,
        "sender": envelope.sender,
        "time": time_text,
        "requestid": envelope.request_id,
    }
    fast = jsonfast.orjson
    if fast is not None and clean:
        try:
            document = fast.dumps(fields)
        except TypeError:  # lone surrogates in sender/request id (only from hand-made envelopes)
            document = _stdlib_document(fields)
    else:
        document = _stdlib_document(fields)
    return _go_escape(document)


def output_subject(topic: str, sender: str) -> str:
    """`topic` with every "%s" replaced by `sender`, refusing subjects NATS would misread.

    The Go broker substitutes blindly; here a sender that would create an empty token, a
    wildcard (`*`, `>`), whitespace or control characters, or an over-long subject raises
    OutputError instead of publishing to a wildcard or broken subject."""
    subject, problem = node_subject(topic, sender)
    if problem:
        who = f"sender {sender!r}" if "%s" in topic else f"topic {topic!r}"
        raise OutputError(f"{who} makes an unsafe subject: {problem}")
    return subject


def _is_readable(text: str) -> bool:
    return text.isascii() and text.isprintable() and " " not in text


def message_id(envelope: Envelope) -> str:
    """Nats-Msg-Id for JetStream de-duplication: sender and request id together.

    Replies to one request share the request id across nodes, so the sender is part of it.
    The form `<len(sender)>:<sender>:<request id>` is unambiguous and readable; when that
    would be long or not plain printable ASCII (unsafe in a header) the id is
    `sha256:<hex digest of the same text>`. Always printable ASCII, at most 200 bytes."""
    sender = envelope.sender
    request_id = envelope.request_id
    readable = f"{len(sender)}:{sender}:{request_id}"
    if len(readable) <= MAX_READABLE_MESSAGE_ID and _is_readable(readable):
        return readable
    digest = hashlib.sha256(readable.encode("utf-8", "surrogatepass")).hexdigest()
    return f"sha256:{digest}"
