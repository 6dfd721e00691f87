"""The minimal fast bridge: the least code that still decodes, encodes and publishes with
JetStream acknowledgements and Nats-Msg-Id, with many publishes in flight at once.

Acknowledgements are handled here rather than by nats-py: every publish carries a reply
subject `<inbox prefix>.<token>` and one wildcard subscription on the prefix collects the
acks (docs/jetstream.md, Own acknowledgement inbox): no per-message future and semaphore
wait_for, the visible costs of js.publish_async. A full window blocks the ingest callback, so the surplus of
a burst waits in the subscription's pending queue, whose limits are raised deliberately.
An ack with an error body or a status header (e.g. 503 no responders), or no ack within the
timeout, means publish again with the same Nats-Msg-Id (JetStream drops the duplicate).

    python -m bench.fast_bridge --ingest-url nats://127.0.0.1:4222 --stream-url nats://127.0.0.1:4223
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

from bench import codec
from bench.messages import INGEST_SUBJECT, STREAM_TOPIC

MAX_IN_FLIGHT = 2000
ACK_TIMEOUT_S = 5.0
# A burst waits in nats-py's pending queue while the window is full: allow a big one.
INGEST_PENDING_MSGS = 1_000_000
INGEST_PENDING_BYTES = 1024 * 1024 * 1024


class AckedPublisher:
    def __init__(self, nc: Client, max_in_flight: int = MAX_IN_FLIGHT, ack_timeout: float = ACK_TIMEOUT_S):
        self.nc = nc
        self.max_in_flight = max_in_flight
        self.ack_timeout = ack_timeout
        self.prefix = nc.new_inbox()
        self.in_flight: dict[str, tuple[str, bytes, dict[str, str], float]] = {}
        self.next_token = 0
        self.has_room = asyncio.Event()
        self.has_room.set()

    async def start(self) -> None:
        await self.nc.subscribe(
            self.prefix + ".*", cb=self._on_ack, pending_msgs_limit=0, pending_bytes_limit=0
        )
        asyncio.get_running_loop().create_task(self._resend_overdue())

    async def publish(self, subject: str, body: bytes, msg_id: str) -> None:
        while len(self.in_flight) >= self.max_in_flight:
            self.has_room.clear()
            await self.has_room.wait()
        await self._send(subject, body, {"Nats-Msg-Id": msg_id})

    async def _send(self, subject: str, body: bytes, headers: dict[str, str]) -> None:
        token = str(self.next_token)
        self.next_token += 1
        self.in_flight[token] = (subject, body, headers, time.monotonic())
        await self.nc.publish(subject, body, reply=f"{self.prefix}.{token}", headers=headers)

    async def _on_ack(self, msg: Msg) -> None:
        entry = self.in_flight.pop(msg.subject[len(self.prefix) + 1 :], None)
        if entry is None:
            return  # a late ack for something already re-sent
        if (msg.headers and msg.headers.get("Status")) or b'"error"' in msg.data:
            await self._send(*entry[:3])
        elif len(self.in_flight) < self.max_in_flight:
            self.has_room.set()

    async def _resend_overdue(self) -> None:
        while True:
            await asyncio.sleep(self.ack_timeout / 2)
            deadline = time.monotonic() - self.ack_timeout
            # dicts keep insertion order, so the oldest sends come first
            overdue = []
            for token, entry in self.in_flight.items():
                if entry[3] > deadline:
                    break
                overdue.append(token)
            for token in overdue:
                subject, body, headers, _ = self.in_flight.pop(token)
                await self._send(subject, body, headers)

    async def drain(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.01)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ingest-url", required=True)
    parser.add_argument("--stream-url", required=True)
    parser.add_argument("--ingest-subject", default=INGEST_SUBJECT)
    parser.add_argument("--topic", default=STREAM_TOPIC)
    parser.add_argument("--max-in-flight", type=int, default=MAX_IN_FLIGHT)
    return parser.parse_args(argv)


async def bridge(args: argparse.Namespace) -> None:
    ingest = await nats.connect(args.ingest_url, name="bench-fast-ingest")
    # subjects come from output_subject, which already refuses unsafe ones: skip the regex check
    stream = await nats.connect(
        args.stream_url, name="bench-fast-stream", pending_size=8 * 1024 * 1024, skip_subject_validation=True
    )
    publisher = AckedPublisher(stream, args.max_in_flight)
    await publisher.start()

    async def handle(msg: Msg) -> None:
        try:
            envelope = codec.decode(msg.data)
            subject, body = codec.subject(args.topic, envelope), codec.encode(envelope)
        except codec.DecodeError:
            return
        await publisher.publish(subject, body, codec.message_id(envelope))

    await ingest.subscribe(
        args.ingest_subject,
        queue="nats_ingest_bench",
        cb=handle,
        pending_msgs_limit=INGEST_PENDING_MSGS,
        pending_bytes_limit=INGEST_PENDING_BYTES,
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await ingest.drain()
    await publisher.drain(timeout=10)
    await stream.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:  # the ceiling: the faster event loop when installed, as the runtime does
        import uvloop

        run = uvloop.run
    except ImportError:
        run = asyncio.run
    run(bridge(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
