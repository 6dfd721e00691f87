"""The naive bridge: what a user would write in twenty lines.

Subscribe, decode, `await js.publish(...)` one message at a time, each waiting for its
JetStream acknowledgement. Correct (acknowledged, de-duplicated by Nats-Msg-Id) but bounded by
one round trip per message. nats-py's default subscription limits are kept, as a user would.

    python -m bench.naive_bridge --ingest-url nats://127.0.0.1:4222 --stream-url nats://127.0.0.1:4223
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import nats
from nats.aio.msg import Msg

from bench import codec
from bench.messages import INGEST_SUBJECT, STREAM_TOPIC


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ingest-url", required=True)
    parser.add_argument("--stream-url", required=True)
    parser.add_argument("--ingest-subject", default=INGEST_SUBJECT)
    parser.add_argument("--topic", default=STREAM_TOPIC)
    return parser.parse_args(argv)


async def bridge(args: argparse.Namespace) -> None:
    ingest = await nats.connect(args.ingest_url, name="bench-naive-ingest")
    stream = await nats.connect(args.stream_url, name="bench-naive-stream")
    js = stream.jetstream()

    async def handle(msg: Msg) -> None:
        try:
            envelope = codec.decode(msg.data)
            subject, body = codec.subject(args.topic, envelope), codec.encode(envelope)
        except codec.DecodeError:
            return
        await js.publish(subject, body, headers={"Nats-Msg-Id": codec.message_id(envelope)})

    await ingest.subscribe(args.ingest_subject, queue="nats_ingest_bench", cb=handle)

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await ingest.drain()
    await stream.drain()


def main(argv: list[str] | None = None) -> int:
    asyncio.run(bridge(parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
