"""Decode and encode for the reference bridges.

The bridges should spend exactly the same decode/encode work as the runtime, so they use the
project's own functions (`choria_broker_adapters.codec.protocol.decode`, `output.encode_output`,
`output.output_subject`, `output.message_id`). Should those fail to import, a small local
stand-in handles what the benchmark sends (v1 requests) with the same output bytes;
`IMPLEMENTATION` says which one is in use, and the harness reports it.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any, NamedTuple

OUTPUT_PROTOCOL = "choria:adapters:choria_streams:output:1"


class BenchEnvelope(NamedTuple):
    data: str
    sender: str
    time: int
    requestid: str


class BenchDecodeError(ValueError):
    pass


def _local_decode(body: bytes) -> BenchEnvelope:
    """Stand-in for protocol.decode in request mode: v1 transport -> secure request -> request."""
    try:
        transport = json.loads(body)
        if transport.get("protocol") != "choria:transport:1":
            raise BenchDecodeError("not a v1 transport")
        secure = json.loads(base64.b64decode(transport["data"], validate=True))
        if secure.get("protocol") != "choria:secure:request:1":
            raise BenchDecodeError("not a v1 secure request")
        request = json.loads(secure["message"])
        envelope = request["envelope"]
        return BenchEnvelope(
            request["message"], envelope["senderid"], envelope["time"], envelope["requestid"]
        )
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise BenchDecodeError(str(error)) from error


def _go_time(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _local_encode(envelope: BenchEnvelope) -> bytes:
    """Stand-in for output.encode_output: Go json.Marshal style, HTML-safe escaping."""
    document: dict[str, Any] = {
        "protocol": OUTPUT_PROTOCOL,
        "data": envelope.data,
        "sender": envelope.sender,
        "time": _go_time(envelope.time),
        "requestid": envelope.requestid,
    }
    text = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
    for raw, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(raw, escaped)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029").encode()


def _local_subject(topic: str, envelope: BenchEnvelope) -> str:
    return topic.replace("%s", envelope.sender)


def _local_message_id(envelope: BenchEnvelope) -> str:
    return f"{envelope.sender}.{envelope.requestid}"


def _project_codec() -> tuple[Any, Any, Any, Any, tuple[type[Exception], ...]] | str:
    """The project's decode/encode functions, or why they cannot be used."""
    try:
        from choria_broker_adapters.codec import output, protocol
    except Exception as error:  # missing, or mid-edit in a shared tree: use the stand-in
        return f"{type(error).__name__}: {error}"

    def decode(body: bytes) -> Any:
        return protocol.decode(body, protocol="request", security_provider="puppet")

    def encode(envelope: Any) -> bytes:
        return output.encode_output(envelope, adapter_type="jetstream")

    def subject(topic: str, envelope: Any) -> str:
        return output.output_subject(topic, envelope.sender)

    return decode, encode, subject, output.message_id, (protocol.DecodeError, output.OutputError)


_project = _project_codec()
if isinstance(_project, str):
    decode: Any = _local_decode
    encode: Any = _local_encode
    subject: Any = _local_subject
    message_id: Any = _local_message_id
    # what the bridges catch: a message that cannot be decoded or encoded is dropped
    DecodeError: tuple[type[Exception], ...] = (BenchDecodeError,)
    IMPLEMENTATION = f"bench-local stand-in (project protocol/output modules unusable: {_project})"
else:
    decode, encode, subject, message_id, DecodeError = _project
    IMPLEMENTATION = (
        "choria_broker_adapters.codec.protocol.decode + output.encode_output/output_subject/message_id"
    )
