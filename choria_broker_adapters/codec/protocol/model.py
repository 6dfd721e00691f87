"""The decoder's result and error types and the Choria protocol identifiers
(docs/protocol.md, Protocol identifiers)."""

from __future__ import annotations

from dataclasses import dataclass

V1_TRANSPORT = "choria:transport:1"
V1_SECURE_REQUEST = "choria:secure:request:1"
V1_REQUEST = "choria:request:1"
V1_SECURE_REPLY = "choria:secure:reply:1"
V1_REPLY = "choria:reply:1"
V2_TRANSPORT = "io.choria.protocol.v2.transport"
V2_SECURE_REQUEST = "io.choria.protocol.v2.secure_request"
V2_REQUEST = "io.choria.protocol.v2.request"
V2_SECURE_REPLY = "io.choria.protocol.v2.secure_reply"
V2_REPLY = "io.choria.protocol.v2.reply"
UNKNOWN_PROTOCOL = "io.choria.protocol.unknown"

KNOWN_PROTOCOLS = frozenset(
    {
        V1_TRANSPORT,
        V1_SECURE_REQUEST,
        V1_REQUEST,
        V1_SECURE_REPLY,
        V1_REPLY,
        V2_TRANSPORT,
        V2_SECURE_REQUEST,
        V2_REQUEST,
        V2_SECURE_REPLY,
        V2_REPLY,
    }
)


def normalise_protocol(value: str) -> str:
    """Go maps every protocol string it does not know to one "unknown" id."""
    return value if value in KNOWN_PROTOCOLS else UNKNOWN_PROTOCOL


@dataclass(frozen=True, slots=True)
class SecureLayer:
    """What signature verification needs from the secure layer; kept only when asked for.

    version:    1 or 2 (the secure layer's protocol version).
    request:    a secure request (True) or a secure reply (False).
    signed:     the exact bytes the signature and hash cover: v1 the UTF-8 bytes of the secure
                `message` text, v2 the base64-decoded `request` / `reply` bytes.
    signature:  the `signature` field as sent (base64 text; "" when absent).
    credential: v1 request `pubcert` (PEM or "insecure..."), v2 request `caller` JWT, v2
                reply `sender` JWT; "" for a v1 reply.
    signer:     v2 request `signer` JWT (delegated signing), else "".
    digest:     the reply `hash` field as sent (base64 text), else "".
    transport_sender: the transport header naming the publisher (v1 `mc_sender`, v2 `sender`).
    """

    version: int
    request: bool
    signed: bytes
    signature: str
    credential: str
    signer: str = ""
    digest: str = ""
    transport_sender: str = ""


@dataclass(frozen=True, slots=True)
class Envelope:
    """The four values the adapter takes from a decoded Choria message.

    message:    the inner payload bytes (the output's `data`); v1 payloads are UTF-8 text,
                v2 payloads arbitrary bytes.
    sender:     the sender identity (v1 envelope.senderid, v2 sender); may be "".
    time:       Unix time in **nanoseconds** as an unbounded int (v1 seconds x 10**9, v2 as
                sent). It may lie outside years 0-9999; `output.encode_output` then refuses it,
                as Go's marshalling does.
    request_id: the request id (v1 envelope.requestid, v2 id / request); may be "".
    secure:     the secure layer's signature material, only when decode(keep_secure=True).
    """

    message: bytes
    sender: str
    time: int
    request_id: str
    secure: SecureLayer | None = None


class DecodeError(Exception):
    """Any rejected input. `reason` is short and human, e.g.
    "secure request: data is not base64"."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class HeaderLayout:
    """Where one protocol version keeps the same header values under its own names."""

    fields: frozenset[str]
    strings: tuple[str, str]  # optional strings: reply subject, sender
    trail: str  # [][3]string of servers seen
    federation_fields: frozenset[str]
    federation_strings: tuple[str, str]  # optional strings: request id, reply subject
    federation_targets: str  # []string
