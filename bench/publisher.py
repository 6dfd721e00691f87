"""External load publisher: Choria registration messages onto core NATS, unpaced or paced.

Run as its own process so its CPU is not charged to the bridge under test:

    python -m bench.publisher --url nats://127.0.0.1:4222 --input registration_1k --count 20000
    python -m bench.publisher --url nats://127.0.0.1:4222 --count 30000 --rate 10000 --phase p

Each message has a distinct sender (cycling over --senders identities) and a request id that
stamps phase, sequence and, when paced, the wall-clock time just before the publish (see
bench.messages); unpaced messages are rendered before the first publish and stamped 0.
On exit it prints one JSON line: published, bytes, first_ns, last_ns (wall clock, ns).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import nats

from bench.messages import INGEST_SUBJECT, INPUTS, load_template, make_request_id, sender_name

# How often (in messages) an unpaced publisher yields so the client's flusher can write.
_UNPACED_YIELD_EVERY = 500
# The paced publisher wakes this often and sends what is due; the stamp is taken per message.
_PACED_TICK_S = 0.0005


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", required=True, help="core NATS server (the Choria network)")
    parser.add_argument("--subject", default=INGEST_SUBJECT)
    parser.add_argument("--input", default="registration_1k", choices=sorted(INPUTS))
    parser.add_argument("--count", type=int, required=True, help="messages to publish")
    parser.add_argument("--rate", type=float, default=0.0, help="messages per second; 0 = unpaced")
    parser.add_argument("--senders", type=int, default=1000, help="distinct sender identities")
    parser.add_argument("--phase", default="c", help="one letter stamped into every request id")
    parser.add_argument("--first-seq", type=int, default=0)
    return parser.parse_args(argv)


async def publish(args: argparse.Namespace) -> dict[str, int]:
    template = load_template(args.input)
    senders = [sender_name(index) for index in range(args.senders)]
    nc = await nats.connect(args.url, name="bench-publisher", pending_size=8 * 1024 * 1024)
    total_bytes = 0
    first_ns = last_ns = 0
    try:
        if args.rate > 0:
            started = time.monotonic()
            for offset in range(args.count):
                delay = started + offset / args.rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(max(delay, _PACED_TICK_S))
                seq = args.first_seq + offset
                now_ns = time.time_ns()
                body = template.render(senders[seq % len(senders)], make_request_id(args.phase, seq, now_ns))
                await nc.publish(args.subject, body)
                total_bytes += len(body)
                first_ns = first_ns or now_ns
                last_ns = now_ns
        else:
            # Unpaced, only the first publish time counts, so the messages are rendered first
            # (stamped 0) and the loop does nothing but publish: the publisher is not the limit.
            bodies = [
                template.render(senders[seq % len(senders)], make_request_id(args.phase, seq, 0))
                for seq in range(args.first_seq, args.first_seq + args.count)
            ]
            first_ns = time.time_ns()
            for offset, body in enumerate(bodies):
                if offset % _UNPACED_YIELD_EVERY == 0:
                    await asyncio.sleep(0)
                await nc.publish(args.subject, body)
                total_bytes += len(body)
            last_ns = time.time_ns()
        await nc.flush(timeout=60)
    finally:
        await nc.close()
    return {"published": args.count, "bytes": total_bytes, "first_ns": first_ns, "last_ns": last_ns}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = asyncio.run(publish(args))
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
