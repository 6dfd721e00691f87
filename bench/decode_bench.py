#!/usr/bin/env python3
"""Decode + encode (+ verify) micro-benchmark over the reference examples.

For each example in tests/data/protocol/examples this decodes the raw message and encodes the
output document (plus, in the "full" column, the output subject and the Nats-Msg-Id) in a
loop on one core, with orjson and with the standard library alone, and prints messages per
second. The "verified" column decodes with the secure layer kept, verifies the signature
against the examples' keys (ingest.verify = enforce; certificate chains and tokens come from
the verifier's cache after the first message, as in a running adapter) and encodes; "ratio"
is that rate over the unverified decode+encode rate.
Rates are per CPU-second of this process (time.process_time), best of --repeat runs,
so other load on the machine disturbs them less than wall-clock figures would.

    .venv/bin/python bench/decode_bench.py                 # both JSON backends
    .venv/bin/python bench/decode_bench.py --backend orjson --seconds 0.5 --json
    .venv/bin/python bench/decode_bench.py --general-path   # without the well-formed shortcut

Targets: at least 40,000 msgs/s per core for the v1 registration example (issue 3), and
10,000 verified v1 registrations/s per core (issue 14).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from choria_broker_adapters.codec import jsonfast, protocol
from choria_broker_adapters.codec.output import encode_output, message_id, output_subject
from choria_broker_adapters.codec.protocol import decode
from choria_broker_adapters.codec.verify import Trust, Verifier, load_ca_bundle, parse_issuer_key

EXAMPLES = Path(__file__).resolve().parent.parent / "tests" / "data" / "protocol" / "examples"
TARGET_EXAMPLE = "v1_registration_inventory_plain"
TARGET_RATE = 40_000
VERIFIED_TARGET_RATE = 10_000
KEYS = EXAMPLES / "keys"


def example_verifier() -> Verifier:
    """A verifier trusting the examples' CA and issuer."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    seed = bytes.fromhex((KEYS / "issuer.seed").read_text().strip())
    issuer = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw().hex()
    return Verifier(Trust(ca=load_ca_bundle(KEYS / "ca.pem"), issuers={"choria": parse_issuer_key(issuer)}))


TOPIC = "choria.node_metadata.%s"


def load_examples() -> list[tuple[str, bytes, str, str]]:
    examples = []
    for directory in sorted(EXAMPLES.iterdir()):
        layers_file = directory / "layers.json"
        if not layers_file.exists():
            continue
        layers = json.loads(layers_file.read_text())
        provider = "choria" if layers["broker_security_technology"] == "ed25519+jwt" else "puppet"
        wire = (directory / "wire.transport.json").read_bytes()
        examples.append((directory.name, wire, layers["adapter_ingest_protocol"], provider))
    return examples


def rate(work: Callable[[], object], seconds: float, repeat: int) -> float:
    """Best messages per CPU-second over `repeat` runs of about `seconds` each."""
    batch = 200
    start = time.process_time()
    for _ in range(batch):
        work()
    per_message = max((time.process_time() - start) / batch, 1e-7)
    count = max(batch, int(seconds / per_message))
    best = 0.0
    for _ in range(repeat):
        start = time.process_time()
        for _ in range(count):
            work()
        elapsed = time.process_time() - start
        best = max(best, count / elapsed if elapsed > 0 else 0.0)
    return best


def measure(backend: str, seconds: float, repeat: int) -> list[dict[str, object]]:
    saved = jsonfast.orjson
    if backend == "stdlib":
        jsonfast.orjson = None
    elif jsonfast.orjson is None:
        raise SystemExit("orjson is not installed (pip install 'choria-broker-adapters[fast]')")
    try:
        rows = []
        verifier = example_verifier()
        for name, wire, protocol, provider in load_examples():

            def decode_encode(
                wire: bytes = wire, protocol: str = protocol, provider: str = provider
            ) -> bytes:
                envelope = decode(wire, protocol=protocol, security_provider=provider)
                return encode_output(envelope, adapter_type="choria_streams")

            def full(
                wire: bytes = wire, protocol: str = protocol, provider: str = provider
            ) -> tuple[str, str, bytes]:
                envelope = decode(wire, protocol=protocol, security_provider=provider)
                document = encode_output(envelope, adapter_type="choria_streams")
                return output_subject(TOPIC, envelope.sender), message_id(envelope), document

            def verified(
                wire: bytes = wire, protocol: str = protocol, provider: str = provider
            ) -> bytes | None:
                envelope = decode(wire, protocol=protocol, security_provider=provider, keep_secure=True)
                if not verifier.verify(envelope).verified:
                    return None
                return encode_output(envelope, adapter_type="choria_streams")

            plain_rate = rate(decode_encode, seconds, repeat)
            verified_rate = rate(verified, seconds, repeat)
            rows.append(
                {
                    "backend": backend,
                    "example": name,
                    "bytes": len(wire),
                    "decode_encode_msgs_per_s": round(plain_rate),
                    "full_msgs_per_s": round(rate(full, seconds, repeat)),
                    "verified_msgs_per_s": round(verified_rate),
                    "verdict": str(
                        verifier.verify(
                            decode(wire, protocol=protocol, security_provider=provider, keep_secure=True)
                        )
                    ),
                    "verified_ratio": round(verified_rate / plain_rate, 3) if plain_rate else 0.0,
                }
            )
        return rows
    finally:
        jsonfast.orjson = saved


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=("both", "orjson", "stdlib"), default="both")
    parser.add_argument("--seconds", type=float, default=1.0, help="CPU seconds per run (default 1)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure, the best is kept (default 3)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    parser.add_argument(
        "--general-path",
        action="store_true",
        help="decode every message with the general Go-compatible path, skipping the fast path "
        "for well-formed messages (to see what the shortcut gains)",
    )
    args = parser.parse_args()
    if args.general_path:
        protocol.USE_FAST_PATH = False

    backends = ["orjson", "stdlib"] if args.backend == "both" else [args.backend]
    if args.backend == "both" and jsonfast.orjson is None:
        backends = ["stdlib"]
    rows = [row for backend in backends for row in measure(backend, args.seconds, args.repeat)]
    if args.json:
        target = {
            "example": TARGET_EXAMPLE,
            "msgs_per_s": TARGET_RATE,
            "verified_msgs_per_s": VERIFIED_TARGET_RATE,
        }
        print(json.dumps({"target": target, "results": rows}))
        return 0
    print(
        f"{'backend':8} {'example':40} {'bytes':>6} {'decode+encode/s':>16} {'+subject+msgid/s':>17} "
        f"{'verified/s':>11} {'ratio':>6}  verdict"
    )
    for row in rows:
        mark = ""
        if row["example"] == TARGET_EXAMPLE:
            met = row["decode_encode_msgs_per_s"] >= TARGET_RATE  # type: ignore[operator]
            verified_met = row["verified_msgs_per_s"] >= VERIFIED_TARGET_RATE  # type: ignore[operator]
            mark = (
                f"  (targets 40,000: {'met' if met else 'MISSED'}; "
                f"10,000 verified: {'met' if verified_met else 'MISSED'})"
            )
        print(
            f"{row['backend']:8} {row['example']:40} {row['bytes']:>6} "
            f"{row['decode_encode_msgs_per_s']:>16,} {row['full_msgs_per_s']:>17,} "
            f"{row['verified_msgs_per_s']:>11,} {row['verified_ratio']:>6}  {row['verdict']}{mark}"
        )
    print("rates are per CPU-second of one process (one core), best of", args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
