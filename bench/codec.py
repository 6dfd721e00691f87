"""Decode and encode for the reference bridges and the JetStream ceiling: the project's own functions.

The reference bridges spend exactly the decode/encode work the runtime spends, so a difference
in throughput comes from how each moves messages, not from how it parses them.
"""

from __future__ import annotations

from choria_broker_adapters.codec import output, protocol
from choria_broker_adapters.codec.protocol import Envelope

IMPLEMENTATION = (
    "choria_broker_adapters.codec: protocol.decode, output.encode_output/output_subject/message_id"
)
# what the bridges catch: a message that cannot be decoded or encoded is dropped
DecodeError = (protocol.DecodeError, output.OutputError)
message_id = output.message_id


def decode(body: bytes) -> Envelope:
    return protocol.decode(body, protocol="request", security_provider="puppet")


def encode(envelope: Envelope) -> bytes:
    return output.encode_output(envelope, adapter_type="jetstream")


def subject(topic: str, envelope: Envelope) -> str:
    return output.output_subject(topic, envelope.sender)
