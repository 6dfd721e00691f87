"""The two ceilings a bridge is measured against, each one Python process on nats-py.

core:      subscribe to the ingest subject and count what arrives (core NATS publish -> subscribe,
           no decode, no JetStream): no bridge ingests faster than this on the same rig.
jetstream: publish prepared output documents (decoded and encoded beforehand, so publishing is
           all that is measured) to JetStream with per-message acks and Nats-Msg-Id, through the
           fast bridge's publisher: the best publish-only rate of per-message acks from one process.

Both print "ready" when set up. `core` then counts until --count messages arrived or none came
for --stall seconds; `jetstream` waits for a line on stdin, publishes, and waits for every ack.
Each ends with one JSON line; wall-clock times are ns, cpu_s is this process's CPU after "ready".

    python -m bench.ceilings core --url nats://127.0.0.1:4222 --count 40000
    python -m bench.ceilings jetstream --url nats://127.0.0.1:4223 --count 40000 < go
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from typing import Any

import nats
from nats.aio.msg import Msg

from bench import codec
from bench.fast_bridge import INGEST_PENDING_BYTES, INGEST_PENDING_MSGS, AckedPublisher
from bench.messages import INGEST_SUBJECT, INPUTS, STREAM_TOPIC, load_template, make_request_id, sender_name

ACK_WAIT_S = 60.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("ceiling", choices=("core", "jetstream"))
    parser.add_argument("--url", required=True)
    parser.add_argument("--count", type=int, required=True, help="messages to receive / publish")
    parser.add_argument("--subject", default=INGEST_SUBJECT, help="core: the subject to count")
    parser.add_argument(
        "--stall", type=float, default=5.0, help="core: give up after this long without a message"
    )
    parser.add_argument(
        "--input", default="registration_1k", choices=sorted(INPUTS), help="jetstream: message input"
    )
    parser.add_argument("--senders", type=int, default=1000, help="jetstream: distinct sender identities")
    return parser.parse_args(argv)


async def core(args: argparse.Namespace) -> dict[str, Any]:
    nc = await nats.connect(args.url, name="bench-ceiling-core")
    received = 0
    last_ns = 0
    all_arrived = asyncio.Event()

    async def count(_msg: Msg) -> None:
        nonlocal received, last_ns
        received += 1
        last_ns = time.time_ns()
        if received >= args.count:
            all_arrived.set()

    subscription = await nc.subscribe(
        args.subject,
        cb=count,
        pending_msgs_limit=INGEST_PENDING_MSGS,
        pending_bytes_limit=INGEST_PENDING_BYTES,
    )
    await nc.flush()
    print("ready", flush=True)
    cpu_start = time.process_time()
    seen = -1
    while not all_arrived.is_set() and received != seen:
        seen = received
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_arrived.wait(), args.stall)
    cpu_s = time.process_time() - cpu_start
    await subscription.unsubscribe()
    await nc.close()
    return {"received": received, "last_ns": last_ns, "cpu_s": cpu_s}


def prepared_messages(input_name: str, count: int, senders: int) -> list[tuple[str, bytes, str]]:
    template = load_template(input_name)
    prepared = []
    for seq in range(count):
        envelope = codec.decode(template.render(sender_name(seq % senders), make_request_id("c", seq, 0)))
        prepared.append(
            (codec.subject(STREAM_TOPIC, envelope), codec.encode(envelope), codec.message_id(envelope))
        )
    return prepared


async def jetstream(args: argparse.Namespace) -> dict[str, Any]:
    prepared = prepared_messages(args.input, args.count, args.senders)
    nc = await nats.connect(
        args.url, name="bench-ceiling-jetstream", pending_size=8 * 1024 * 1024, skip_subject_validation=True
    )
    publisher = AckedPublisher(nc)
    await publisher.start()
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    cpu_start = time.process_time()
    first_ns = time.time_ns()
    for subject, body, msg_id in prepared:
        await publisher.publish(subject, body, msg_id)
    await publisher.drain(timeout=ACK_WAIT_S)
    cpu_s = time.process_time() - cpu_start
    unacknowledged = len(publisher.in_flight)
    await nc.close()
    return {
        "published": len(prepared),
        "first_ns": first_ns,
        "cpu_s": cpu_s,
        "unacknowledged": unacknowledged,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:  # the faster event loop when installed, as the runtime and the fast bridge use it
        import uvloop

        run = uvloop.run
    except ImportError:
        run = asyncio.run
    result = run(core(args) if args.ceiling == "core" else jetstream(args))
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
