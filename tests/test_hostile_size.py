"""Oversized output never closes a stream connection (issue 12, point 2).

nats-py compares only the payload with the server's max_payload; the server counts headers
and payload together and closes a connection that goes over. The adapter checks both before
publishing (dropping under `encode` with the sizes), and a connection a server closes after an
-ERR reconnects instead of staying closed.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator

import nats
import pytest

from choria_broker_adapters.codec.output import encode_output, message_id
from choria_broker_adapters.codec.protocol import decode
from choria_broker_adapters.devtools.natsserver import NatsServer
from choria_broker_adapters.jetstream.replies import MSG_ID_HEADER, header_block_size, oversize_reason
from choria_broker_adapters.transport.connect import GuardedClient, ServerClosedError
from tests.reliability_support import (
    Message,
    Runtime,
    adapter_keys,
    add_stream,
    ids,
    payloads,
    publish,
    small_fleet,
    small_registration,
    start_runtime,
    stored_ids,
)
from tests.runtime_support import wait_until

STREAM = "CHORIA_NODE_DATA"
JETSTREAM_MAX_PAYLOAD = 8 * 1024
STREAM_WORKERS = 3


@pytest.mark.parametrize(
    ("headers", "wire"),
    [
        ({MSG_ID_HEADER: "abc"}, b"NATS/1.0\r\nNats-Msg-Id: abc\r\n\r\n"),
        ({MSG_ID_HEADER: "x" * 200}, b"NATS/1.0\r\nNats-Msg-Id: " + b"x" * 200 + b"\r\n\r\n"),
        ({"A": "1", "Bb": "22"}, b"NATS/1.0\r\nA: 1\r\nBb: 22\r\n\r\n"),
        ({}, b"NATS/1.0\r\n\r\n"),
    ],
)
def test_header_block_size_is_what_goes_on_the_wire(headers: dict[str, str], wire: bytes) -> None:
    assert header_block_size(headers) == len(wire)


@pytest.mark.parametrize(
    ("body", "headers", "limit", "reason"),
    [
        (100, 30, 130, None),
        (
            100,
            30,
            129,
            "output of 100 bytes plus 30 bytes of headers is 130 bytes, over the JetStream "
            "server's max_payload of 129 bytes",
        ),
        (0, 0, 0, None),
        (
            1_048_576,
            40,
            1_048_576,
            "output of 1048576 bytes plus 40 bytes of headers is 1048616 bytes, "
            "over the JetStream server's max_payload of 1048576 bytes",
        ),
    ],
)
def test_oversize_reason(body: int, headers: int, limit: int, reason: str | None) -> None:
    assert oversize_reason(body, headers, limit) == reason


async def test_a_connection_the_server_closes_after_an_error_reconnects(
    nats_server_factory: Callable[..., NatsServer],
) -> None:
    server = nats_server_factory(jetstream=False, max_payload=1024)
    events: list[Exception] = []

    async def error_cb(exc: Exception) -> None:
        events.append(exc)

    nc = GuardedClient()
    await nc.connect(server.url, error_cb=error_cb, reconnect_time_wait=0.05, max_reconnect_attempts=-1)
    received: list[bytes] = []
    try:

        async def collect(msg) -> None:  # type: ignore[no-untyped-def]
            received.append(msg.data)

        await nc.subscribe("t.>", cb=collect)
        await nc.flush()
        # Payload under the limit (nats-py lets it through), headers take it over.
        await nc.publish("t.big", b"x" * 1000, headers={"H": "v" * 100})
        started = time.monotonic()

        async def reconnected() -> bool:
            return any(isinstance(e, ServerClosedError) for e in events) and nc.is_connected and nc.reading

        await wait_until(reconnected, 5, "the reconnection after the server closed the connection", 0.02)
        await nc.flush(timeout=2)
        await nc.publish("t.after", b"after")
        await nc.flush(timeout=2)

        async def got_it() -> bool:
            return received == [b"after"]

        await wait_until(got_it, 5, "a message after the reconnection", 0.02)
        assert not nc.is_closed
        assert "maximum payload violation" in str(next(e for e in events if isinstance(e, ServerClosedError)))
        print(f"\nreconnected and delivering {time.monotonic() - started:.2f}s after the violation")
    finally:
        await nc.close()


def registration_with_output_size(sender: str, rid: str, low: int, high: int) -> Message:
    """A registration whose output document is between `low` and `high` bytes.

    The output grows linearly with the inventory, so two probes give a first guess, then
    single steps find the range."""

    def build(blob: int) -> tuple[Message, int]:
        message = small_registration(sender, rid, body=json.dumps({"blob": "x" * blob}))
        envelope = decode(message.payload, protocol="request", security_provider="puppet")
        return message, len(encode_output(envelope, adapter_type="choria_streams"))

    base, grown = build(0)[1], build(1000)[1]
    blob = max(0, int((low - base) * 1000 / (grown - base)))
    for _ in range(200):
        message, size = build(blob)
        if low <= size <= high:
            return message
        blob += 1 if size < low else -1
    raise AssertionError(f"no blob size gives an output of {low}..{high} bytes")


def headers_for(message: Message) -> int:
    envelope = decode(message.payload, protocol="request", security_provider="puppet")
    return header_block_size({MSG_ID_HEADER: message_id(envelope)})


@pytest.fixture
def runtimes() -> Iterator[list[Runtime]]:
    started: list[Runtime] = []
    yield started
    for runtime in started:
        runtime.process.close()
    for runtime in started:
        assert "Traceback" not in runtime.process.log_text(), runtime.process.log_path


async def test_output_over_the_jetstream_max_payload_is_dropped_and_the_stream_side_stays_up(
    nats_server_factory: Callable[..., NatsServer], tmp_path, runtimes: list[Runtime]
) -> None:
    choria = nats_server_factory(jetstream=False)  # the default 1 MiB max_payload
    jetstream = nats_server_factory(jetstream=True, max_payload=JETSTREAM_MAX_PAYLOAD)
    await add_stream(jetstream.url, STREAM)
    runtime = start_runtime(
        tmp_path,
        "size",
        middleware=choria.address,
        adapter=adapter_keys(jetstream.address, ingest__workers=2, stream__workers=STREAM_WORKERS),
    )
    runtimes.append(runtime)
    await runtime.wait_subscribed(2)

    # Documents just under max_payload whose Nats-Msg-Id header takes them over (what closed
    # a connection before), and ordinary documents well over it.
    probe = small_registration("edge999.example.net", "9" * 32)
    edge_headers = headers_for(probe)
    edge = [
        registration_with_output_size(
            f"edge{i:03d}.example.net",
            f"{i:032d}",
            JETSTREAM_MAX_PAYLOAD - edge_headers + 1,
            JETSTREAM_MAX_PAYLOAD,
        )
        for i in range(10)
    ]
    assert all(headers_for(m) == edge_headers for m in edge)
    big = [
        registration_with_output_size(
            f"big{i:03d}.example.net", f"{i:032d}", 3 * JETSTREAM_MAX_PAYLOAD, 10**6
        )
        for i in range(10)
    ]
    good_before = small_fleet(50, tag="before")
    good_after = small_fleet(50, tag="after")
    await publish(choria.url, payloads(good_before + edge + big + good_after))

    async def settled() -> bool:
        counts = await runtime.counts()
        return (
            counts["stored"] + counts["dropped_encode"] >= 120 and (await runtime.adapter())["in_flight"] == 0
        )

    await wait_until(settled, 20, "every message stored or dropped")
    status = await runtime.adapter()
    counts = status["counts"]
    assert status["stream_connected"] == STREAM_WORKERS, status
    assert counts["stored"] == 100
    assert counts["dropped_encode"] == 20
    assert counts["dropped_publish"] == 0
    assert (counts["reconnects_stream"], counts["restarts_stream"]) == (0, 0)
    assert sorted(await stored_ids(jetstream.url, STREAM)) == sorted(ids(good_before + good_after))
    log = runtime.process.log_text()
    assert f"over the JetStream server's max_payload of {JETSTREAM_MAX_PAYLOAD} bytes" in log
    assert f"plus {edge_headers} bytes of headers" in log


async def test_nats_py_alone_lets_headers_take_a_message_over_max_payload(
    nats_server_factory: Callable[..., NatsServer],
) -> None:
    """Why the adapter checks: nats-py only compares the payload, and the server closes the
    connection for good (a plain client does not reconnect after this error)."""
    server = nats_server_factory(jetstream=False, max_payload=1024)
    closed = asyncio.Event()

    async def closed_cb() -> None:
        closed.set()

    nc = await nats.connect(server.url, closed_cb=closed_cb, max_reconnect_attempts=-1)
    await nc.publish("t.big", b"x" * 1000, headers={"H": "v" * 100})
    await asyncio.wait_for(closed.wait(), 5)
    assert nc.is_closed
