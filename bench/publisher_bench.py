#!/usr/bin/env python3
"""Publish-only throughput of AckedPublisher against a self-started nats-server.

    .venv/bin/python bench/publisher_bench.py [--messages 100000] [--size 1024]
        [--max-pending 512 --max-pending 2048] [--uvloop] [--storage file|memory]

Every message waits for its JetStream acknowledgement (with a unique Nats-Msg-Id); the
figure is messages acknowledged per second, from the first publish to the last ack, and the
stream's message count is checked against what was sent.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import nats

from choria_broker_adapters.devtools.natsserver import NatsServer
from choria_broker_adapters.jetstream.publisher import AckedPublisher


async def run_once(
    url: str, stream: str, messages: int, body: bytes, max_pending: int, storage: str
) -> float:
    nc = await nats.connect(url, pending_size=64 * 1024 * 1024)
    js = nc.jetstream()
    await js.add_stream(name=stream, subjects=[f"{stream.lower()}.>"], storage=storage)
    publisher = AckedPublisher(nc, max_pending=max_pending, name=stream)
    await publisher.start()
    subject_prefix = f"{stream.lower()}.node"
    started = time.perf_counter()
    for number in range(messages):
        await publisher.publish(f"{subject_prefix}{number % 100}", body, f"bench-{number}")
    unconfirmed = await publisher.flush(120)
    elapsed = time.perf_counter() - started
    stored = (await js.stream_info(stream)).state.messages
    await publisher.close()
    await nc.close()
    if unconfirmed or stored != messages or publisher.dropped:
        raise SystemExit(f"lost messages: {unconfirmed=} {stored=} dropped={publisher.dropped}")
    return messages / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--max-pending", type=int, action="append", dest="windows")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--storage", choices=["file", "memory"], default="file")
    parser.add_argument("--uvloop", action="store_true")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        uvloop.install()
    body = b"x" * args.size
    with NatsServer(jetstream=True) as server:
        run = 0
        for window in args.windows or [512]:
            rates = []
            for _ in range(args.repeat):
                run += 1
                # A fresh stream per run: deleting and re-creating one is unreliable
                # (docs/jetstream.md, Re-created streams).
                rates.append(
                    asyncio.run(
                        run_once(server.url, f"BENCH{run}", args.messages, body, window, args.storage)
                    )
                )
            rates.sort()
            print(
                f"max_pending={window:5d} messages={args.messages} size={args.size} storage={args.storage} "
                f"uvloop={args.uvloop}: median {rates[len(rates) // 2]:,.0f} msgs/s "
                f"(runs: {', '.join(f'{rate:,.0f}' for rate in rates)})"
            )


if __name__ == "__main__":
    main()
