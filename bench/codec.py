"""Decode and encode for the reference bridges.

The bridges should spend exactly the same decode/encode work as the runtime, so they use the
project's own functions (`choria_broker_adapters.protocol` and `.output`) when those exist.
Until they land, a small local stand-in handles what the benchmark sends (v1 requests) with
the same output bytes; `IMPLEMENTATION` says which one is in use, and the harness reports it.
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


decode = _local_decode
encode = _local_encode
subject = _local_subject
message_id = _local_message_id
DecodeError: type[Exception] = BenchDecodeError
IMPLEMENTATION = "bench-local stand-in (project protocol/output modules not available yet)"
