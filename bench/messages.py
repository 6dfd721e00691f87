"""Benchmark input: the shared v1 registration examples, one distinct message per publish.

Every message gets its own sender identity (so output subjects differ, as on a real network)
and its own request id. The request id carries the publish phase, a sequence number and the
wall-clock publish time in nanoseconds, so end-to-end latency can be computed from the stored
output document alone, with no cooperation from the bridge under test.

Pure module: the template is built once from the example files; producing a message is a few
byte joins and one base64 encoding, cheap enough for an unpaced publisher.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "tests" / "data" / "protocol" / "examples"

# name used on the command line and in reports -> example directory
INPUTS: dict[str, str] = {
    "registration_1k": "v1_registration_filecontent_insecure",
    "inventory_gzip": "v1_registration_inventory_gzip",
}

INGEST_SUBJECT = "mcollective.broadcast.agent.registration"
STREAM_TOPIC = "choria.node_metadata.%s"
STREAM_SUBJECTS = "choria.node_metadata.>"

REQUEST_ID_LENGTH = 32  # the v1 request schema demands exactly 32 characters
_SEQ_DIGITS = 11
_TIME_DIGITS = REQUEST_ID_LENGTH - 1 - _SEQ_DIGITS

_SENDER_SLOT = b"\x00SENDER\x00"
_REQUEST_ID_SLOT = b"\x00REQUESTID\x00"


def sender_name(index: int) -> str:
    """The identity of simulated node `index`."""
    return f"node{index:05d}.bench.example.net"


def make_request_id(phase: str, seq: int, time_ns: int) -> str:
    """32 characters: one phase letter, an 11-digit sequence, a 20-digit Unix time in ns."""
    if len(phase) != 1:
        raise ValueError(f"phase must be one character, got {phase!r}")
    if not 0 <= seq < 10**_SEQ_DIGITS or not 0 <= time_ns < 10**_TIME_DIGITS:
        raise ValueError(f"sequence {seq} or time {time_ns} does not fit the request id")
    return f"{phase}{seq:0{_SEQ_DIGITS}d}{time_ns:0{_TIME_DIGITS}d}"


@dataclass(frozen=True)
class Stamp:
    phase: str
    seq: int
    time_ns: int


def parse_request_id(request_id: str) -> Stamp | None:
    """The stamp inside a benchmark request id, or None for anything else."""
    if len(request_id) != REQUEST_ID_LENGTH or not request_id[1:].isdigit():
        return None
    return Stamp(request_id[0], int(request_id[1 : 1 + _SEQ_DIGITS]), int(request_id[1 + _SEQ_DIGITS :]))


@dataclass(frozen=True)
class MessageTemplate:
    """A wire message split around its sender and request id."""

    name: str
    transport_prefix: bytes  # transport JSON up to and including the opening quote of "data"
    transport_suffix: bytes  # from the closing quote of "data" to the end
    secure_parts: tuple[bytes, ...]  # secure-layer JSON split at the slots
    slot_order: tuple[str, ...]  # "sender" / "requestid", in the order the slots appear

    def render(self, sender: str, request_id: str) -> bytes:
        values = {"sender": sender.encode(), "requestid": request_id.encode()}
        pieces = [self.secure_parts[0]]
        for slot, part in zip(self.slot_order, self.secure_parts[1:], strict=True):
            pieces.append(values[slot])
            pieces.append(part)
        secure = b"".join(pieces)
        return b"".join((self.transport_prefix, base64.b64encode(secure), self.transport_suffix))


def build_template(name: str, wire: bytes) -> MessageTemplate:
    """Split a v1 request transport message so sender and request id can be substituted."""
    transport = json.loads(wire)
    data_b64 = transport["data"].encode()
    prefix, found, suffix = wire.partition(data_b64)
    if not found:
        raise ValueError(f"{name}: transport data not found verbatim in the wire message")
    secure_bytes = base64.b64decode(data_b64)
    request = json.loads(json.loads(secure_bytes)["message"])
    envelope = request["envelope"]
    old_sender = envelope["senderid"].encode()
    old_request_id = envelope["requestid"].encode()
    # the request travels as a JSON string inside the secure layer: its quotes are escaped
    sender_field = b'\\"senderid\\":\\"' + old_sender + b'\\"'
    request_id_field = b'\\"requestid\\":\\"' + old_request_id + b'\\"'
    for field in (sender_field, request_id_field):
        if secure_bytes.count(field) != 1:
            raise ValueError(f"{name}: expected exactly one {field!r} in the secure layer")
    secure_bytes = secure_bytes.replace(sender_field, b'\\"senderid\\":\\"' + _SENDER_SLOT + b'\\"')
    secure_bytes = secure_bytes.replace(request_id_field, b'\\"requestid\\":\\"' + _REQUEST_ID_SLOT + b'\\"')
    order = sorted(
        (("sender", secure_bytes.index(_SENDER_SLOT)), ("requestid", secure_bytes.index(_REQUEST_ID_SLOT))),
        key=lambda item: item[1],
    )
    first, second = (
        (_SENDER_SLOT, _REQUEST_ID_SLOT) if order[0][0] == "sender" else (_REQUEST_ID_SLOT, _SENDER_SLOT)
    )
    head, _, rest = secure_bytes.partition(first)
    middle, _, tail = rest.partition(second)
    return MessageTemplate(
        name=name,
        transport_prefix=prefix,
        transport_suffix=suffix,
        secure_parts=(head, middle, tail),
        slot_order=(order[0][0], order[1][0]),
    )


def load_template(input_name: str, examples: Path = EXAMPLES) -> MessageTemplate:
    directory = INPUTS.get(input_name)
    if directory is None:
        raise ValueError(f"unknown input {input_name!r}; choose from {', '.join(INPUTS)}")
    return build_template(input_name, (examples / directory / "wire.transport.json").read_bytes().strip())
