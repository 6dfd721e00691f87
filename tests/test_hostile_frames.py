"""Malformed NATS frames from a hostile peer never silence an ingest worker (issue 12, point 1).

A raw socket publishes frames no Choria client sends (non-UTF-8 subjects, reply subjects and
status lines, header blocks shorter than their NATS/1.0 line) to a real nats-server; the
server routes them to the runtime's ingest workers like any other message. Every frame
carries a valid registration, so each one's fate is known from what the test generated:
frames nats-py can build are stored, frames it cannot are counted as `malformed_frame`.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Iterator

import nats
import nats.errors
import pytest
from nats.aio.client import Client
from prometheus_client.parser import text_string_to_metric_families

from choria_broker_adapters.devtools.fleet import REGISTRATION_SUBJECT
from choria_broker_adapters.devtools.natsserver import NatsServer
from choria_broker_adapters.transport.connect import (
    GuardedClient,
    MalformedFrameError,
    ReadLoopFailedError,
    event_callbacks,
)
from tests.reliability_support import (
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
WORKERS = 3
# How long valid traffic may take to be stored after the last malformed frame.
RESUME_WITHIN_S = 5.0


def pub(payload: bytes, *, subject: bytes = REGISTRATION_SUBJECT.encode(), reply: bytes = b"") -> bytes:
    reply_part = b" " + reply if reply else b""
    return b"PUB %s%s %d\r\n%s\r\n" % (subject, reply_part, len(payload), payload)


def hpub(headers: bytes, payload: bytes, *, subject: bytes = REGISTRATION_SUBJECT.encode()) -> bytes:
    return b"HPUB %s %d %d\r\n%s%s\r\n" % (
        subject,
        len(headers),
        len(headers) + len(payload),
        headers,
        payload,
    )


# (name, frame builder for a payload, what happens to the registration it carries)
FRAMES: list[tuple[str, Callable[[bytes], bytes], str]] = [
    ("reply subject not UTF-8", lambda p: pub(p, reply=b"_INBOX.\xff\xfe"), "malformed_frame"),
    ("subject not UTF-8", lambda p: pub(p, subject=b"mcollective.broadcast.agent.\xff"), "malformed_frame"),
    ("header block shorter than NATS/1.0", lambda p: hpub(b"NAT", p), "malformed_frame"),
    ("header block is only NATS/1.0", lambda p: hpub(b"NATS/1.0", p), "malformed_frame"),
    ("status not UTF-8", lambda p: hpub(b"NATS/1.0 \xff\xff\xff\r\n\r\n", p), "malformed_frame"),
    ("status description not UTF-8", lambda p: hpub(b"NATS/1.0 503 \xff\r\n\r\n", p), "malformed_frame"),
    ("header value not UTF-8", lambda p: hpub(b"NATS/1.0\r\nA: \xff\r\n\r\n", p), "stored"),
    ("header line without colon", lambda p: hpub(b"NATS/1.0\r\nnocolon\r\n\r\n", p), "stored"),
]


def raw_publish(address: tuple[str, int], frames: list[bytes]) -> None:
    """Send frames on a plain socket and wait for the server's PONG, so all were processed."""
    with socket.create_connection(address, timeout=10) as sock:
        sock.recv(65536)  # INFO
        sock.sendall(b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"protocol":1}\r\n')
        sock.sendall(b"".join(frames) + b"PING\r\n")
        received = b""
        while b"PONG\r\n" not in received:
            chunk = sock.recv(65536)
            assert chunk, f"server closed the raw connection: {received!r}"
            received += chunk
        assert b"-ERR" not in received, received


@pytest.fixture
def runtimes() -> Iterator[list[Runtime]]:
    started: list[Runtime] = []
    yield started
    for runtime in started:
        runtime.process.close()
    for runtime in started:
        assert "Traceback" not in runtime.process.log_text(), runtime.process.log_path


async def test_malformed_frames_over_a_raw_socket_never_silence_ingestion(
    nats_server_factory: Callable[..., NatsServer], tmp_path, runtimes: list[Runtime]
) -> None:
    choria = nats_server_factory(jetstream=False)
    jetstream = nats_server_factory(jetstream=True)
    await add_stream(jetstream.url, STREAM)
    runtime = start_runtime(
        tmp_path,
        "frames",
        middleware=choria.address,
        adapter=adapter_keys(
            jetstream.address,
            ingest__workers=WORKERS,
            stream__workers=2,
            # A wildcard, so that a subject that is not UTF-8 reaches the workers too.
            ingest__topic="mcollective.broadcast.agent.>",
        ),
    )
    runtimes.append(runtime)
    await runtime.wait_subscribed(WORKERS)

    # Several copies of every frame, so that with random queue-group routing every worker is
    # hit (unguarded, the fatal kinds would leave no worker reading).
    copies = 4
    frames: list[bytes] = []
    expected_stored: set[tuple[str, str]] = set()
    expected_malformed = 0
    for kind, (_name, build, fate) in enumerate(FRAMES):
        for copy in range(copies):
            message = small_registration(f"frame{kind}-{copy}.example.net", f"{kind:04d}{copy:028d}")
            frames.append(build(message.payload))
            if fate == "stored":
                expected_stored.add((message.sender, message.request_id))
            elif fate == "malformed_frame":
                expected_malformed += 1
    await asyncio.to_thread(raw_publish, (choria.host, choria.port), frames)
    sent_at = time.monotonic()

    # /choria/ tells the truth: every worker is connected and reading.
    status = await runtime.adapter()
    assert status["ingest_connected"] == WORKERS, status

    valid = small_fleet(60, tag="after")
    await publish(choria.url, payloads(valid))
    expected_stored |= ids(valid)

    async def settled() -> bool:
        counts = await runtime.counts()
        return counts["stored"] == len(expected_stored) and counts["dropped_malformed_frame"] == (
            expected_malformed
        )

    await wait_until(settled, RESUME_WITHIN_S, "valid traffic stored after the malformed frames")
    resumed_after = time.monotonic() - sent_at
    counts = await runtime.counts()
    assert sorted(await stored_ids(jetstream.url, STREAM)) == sorted(expected_stored)
    assert counts["received"] == len(expected_stored)
    assert counts["dropped_malformed_frame"] == expected_malformed
    assert counts["dropped_decode"] == 0
    # No read loop died, so no worker needed a restart or a reconnection.
    assert (counts["restarts_ingest"], counts["reconnects_ingest"]) == (0, 0)
    status = await runtime.adapter()
    assert status["ingest_connected"] == WORKERS, status
    dropped = {
        sample.labels["reason"]: sample.value
        for family in text_string_to_metric_families(await runtime.prometheus())
        for sample in family.samples
        if family.name == "choria_adapter_dropped_msgs"
    }
    assert dropped["malformed_frame"] == expected_malformed
    log = runtime.process.log_text()
    assert "Received a malformed NATS message" in log
    print(f"\n{len(frames)} hostile frames, 60 valid after them: all settled {resumed_after:.2f}s after")


async def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    async def check() -> bool:
        return condition()

    await wait_until(check, timeout, what, interval=0.02)


async def test_plain_nats_py_stops_reading_after_a_reply_subject_that_is_not_utf8(
    core_nats_server: NatsServer,
) -> None:
    """The upstream bug GuardedClient works around; when this fails, nats-py has fixed it."""
    received: list[bytes] = []
    nc = await nats.connect(core_nats_server.url)
    try:

        async def collect(msg) -> None:  # type: ignore[no-untyped-def]
            received.append(msg.data)

        await nc.subscribe("t.>", cb=collect)
        await nc.flush()
        await asyncio.to_thread(
            raw_publish,
            (core_nats_server.host, core_nats_server.port),
            [pub(b"bad", subject=b"t.x", reply=b"\xff")],
        )
        await wait_for(
            lambda: nc._reading_task is not None and nc._reading_task.done(), 5, "the read loop to die"
        )
        assert nc.is_connected  # ... yet it still says connected,
        await nc.flush(timeout=1)  # and flush() returns without a PING round trip
        publisher = await nats.connect(core_nats_server.url)
        await publisher.publish("t.y", b"good")
        await publisher.flush()
        await publisher.close()
        # Absence can only be shown by waiting: the good message is never read.
        await asyncio.sleep(1.0)
        assert received == []
    finally:
        await nc.close()


async def guarded_client(url: str, events: list[Exception]) -> Client:
    callbacks = event_callbacks(None)

    async def error_cb(exc: Exception) -> None:
        events.append(exc)
        await callbacks["error_cb"](exc)

    nc = GuardedClient()
    await nc.connect(url, error_cb=error_cb, reconnect_time_wait=0.05, max_reconnect_attempts=-1)
    return nc


async def test_guarded_client_drops_the_bad_frame_and_keeps_reading(core_nats_server: NatsServer) -> None:
    events: list[Exception] = []
    received: list[bytes] = []
    nc = await guarded_client(core_nats_server.url, events)
    try:

        async def collect(msg) -> None:  # type: ignore[no-untyped-def]
            received.append(msg.data)

        await nc.subscribe("t.>", cb=collect)
        await nc.flush()
        frames = [pub(b"bad", subject=b"t.x", reply=b"\xff"), pub(b"good", subject=b"t.y")]
        await asyncio.to_thread(raw_publish, (core_nats_server.host, core_nats_server.port), frames)
        await wait_for(lambda: received == [b"good"], 5, "the good message")
        await nc.flush(timeout=2)
        assert nc.reading
        assert [type(event) for event in events] == [MalformedFrameError]
        assert "reply b'\\xff'" in str(events[0])
    finally:
        await nc.close()


async def test_guarded_client_reconnects_at_once_when_its_read_loop_dies(
    core_nats_server: NatsServer,
) -> None:
    """Any other failure in the read loop (forced here) reconnects instead of going deaf."""
    events: list[Exception] = []
    received: list[bytes] = []
    nc = await guarded_client(core_nats_server.url, events)
    try:

        async def collect(msg) -> None:  # type: ignore[no-untyped-def]
            received.append(msg.data)

        await nc.subscribe("t.>", cb=collect)
        await nc.flush()
        parser = nc._ps
        real_parse = parser.parse
        failures = []

        async def failing_parse(data: bytes = b"") -> None:
            if not failures:
                failures.append(data)
                raise RuntimeError("injected parser failure")
            await real_parse(data)

        parser.parse = failing_parse  # type: ignore[method-assign]
        publisher = await nats.connect(core_nats_server.url)
        started = time.monotonic()
        await publisher.publish("t.first", b"lost-with-the-dead-loop")
        await publisher.flush()
        await wait_for(lambda: bool(failures), 5, "the injected fault to hit")
        await wait_for(lambda: nc.is_connected and nc.reading, 5, "the reconnection")
        await nc.flush(timeout=2)
        await publisher.publish("t.second", b"after")
        await publisher.flush()
        await wait_for(lambda: b"after" in received, 5, "a message after the reconnection")
        resumed = time.monotonic() - started
        await publisher.close()
        assert [type(event) for event in events] == [ReadLoopFailedError]
        assert received == [b"after"]
        assert resumed < 2.0, resumed
    finally:
        await nc.close()
