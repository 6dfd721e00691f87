"""`decode`: explain what the adapter does with one raw message (publish where, or why not)."""

from __future__ import annotations

import argparse
import sys
from typing import BinaryIO

from choria_broker_adapters.codec.output import (
    OutputError,
    encode_output,
    format_time,
    message_id,
    output_subject,
)
from choria_broker_adapters.codec.protocol import DecodeError, decode
from choria_broker_adapters.codec.verify import (
    ENFORCE,
    OFF,
    VERIFY_MODES,
    Trust,
    TrustError,
    Verdict,
    Verifier,
    load_ca_bundle,
    parse_issuer_key,
)
from choria_broker_adapters.core.adapter_types import type_names
from choria_broker_adapters.core.choices import (
    INGEST_PROTOCOLS,
    SECURITY_PROVIDERS,
    UNSUPPORTED_SECURITY_PROVIDERS,
    protocol_version_for,
)
from choria_broker_adapters.core.exits import EXIT_FAILURE, EXIT_OK, EXIT_USAGE

NAME = "decode"
HELP = "decode one raw Choria message: print the subject and document it becomes, or why it is dropped"
DESCRIPTION = """\
Read one raw NATS message body (as captured from the ingest subject) from FILE, or standard
input when FILE is "-" or missing, and decode it exactly as an adapter would.

If it would be published, print two lines: the output subject (the topic with every %s
replaced by the sender), then the output document byte for byte as it would be published,
so it can be diffed against a stored message. Otherwise print the reason to standard error
and exit with status 1.

examples:
  nats sub --raw mcollective.broadcast.agent.registration --count 1 > msg.json
  choria-broker-adapters decode msg.json
  choria-broker-adapters decode --protocol reply --topic 'choria.replies.%s' msg.json
  choria-broker-adapters decode --security-provider choria --type jetstream - < v2msg.json
  choria-broker-adapters decode --verify enforce --verify-ca /etc/puppetlabs/puppet/ssl/certs/ca.pem msg.json
  choria-broker-adapters decode --security-provider choria --verify enforce --issuer choria=<hex> msg.json

With --verify warn or enforce the verdict ("verify: verified" or "verify: failed: <reason>")
is printed on standard error, as ingest.verify would decide; under enforce a message that
does not verify is discarded.

exit status: 0 the message would be published, 1 it would be discarded (reason on stderr),
2 usage error (including unreadable --verify-ca or a bad --issuer)
"""

# decode reads any Go broker's messages, including those of providers `run` does not support.
DECODABLE_PROVIDERS = (*SECURITY_PROVIDERS, *UNSUPPORTED_SECURITY_PROVIDERS)
DEFAULT_TOPIC = "choria.node_metadata.%s"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--protocol",
        choices=INGEST_PROTOCOLS,
        default="request",
        help="the adapter's ingest.protocol: registration messages are requests (default: %(default)s)",
    )
    parser.add_argument(
        "--security-provider",
        choices=DECODABLE_PROVIDERS,
        default="puppet",
        help="plugin.security.provider: choria decodes protocol v2, the others v1 (default: %(default)s)",
    )
    parser.add_argument(
        "--type",
        choices=type_names(),
        default="choria_streams",
        help="the adapter type, which names the output protocol (default: %(default)s)",
    )
    parser.add_argument(
        "--topic",
        default=DEFAULT_TOPIC,
        help="the adapter's stream.topic, %%s is replaced by the sender (default: %(default)s)",
    )
    parser.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        help="also show the decoded sender, request id, time and message id on standard error",
    )
    parser.add_argument(
        "--verify",
        choices=VERIFY_MODES,
        default=OFF,
        help="the adapter's ingest.verify: check the signature and print the verdict (default: %(default)s)",
    )
    parser.add_argument(
        "--verify-ca",
        metavar="FILE",
        help="CA bundle (PEM) that v1 certificates must chain to, as ingest.verify_ca",
    )
    parser.add_argument(
        "--issuer",
        action="append",
        default=[],
        metavar="NAME=HEX",
        help="a trusted v2 token issuer and its hex ed25519 public key, as "
        "plugin.security.issuer.NAME.public (repeatable)",
    )
    parser.add_argument("file", nargs="?", default="-", metavar="FILE", help='the raw message, "-" for stdin')


def _verifier(args: argparse.Namespace) -> Verifier | str:
    """The verifier the options describe, or what is wrong with them."""
    issuers = {}
    for item in args.issuer:
        name, equals, text = item.partition("=")
        if not equals or not name:
            return f"--issuer {item!r}: expected NAME=HEX"
        try:
            issuers[name] = parse_issuer_key(text)
        except TrustError as error:
            return f"--issuer {name}: {error.reason}"
    ca = ()
    if args.verify_ca:
        try:
            ca = load_ca_bundle(args.verify_ca)
        except TrustError as error:
            return f"--verify-ca: {error.reason}"
    if protocol_version_for(args.security_provider) == 1 and not ca:
        return "--verify needs --verify-ca FILE to verify version 1 messages"
    if protocol_version_for(args.security_provider) == 2 and not issuers:
        return "--verify needs --issuer NAME=HEX to verify version 2 messages"
    return Verifier(Trust(ca=ca, issuers=issuers))


def _read(path: str) -> bytes:
    if path == "-":
        stream: BinaryIO | None = getattr(sys.stdin, "buffer", None)
        return stream.read() if stream is not None else sys.stdin.read().encode("utf-8", "surrogateescape")
    with open(path, "rb") as handle:
        return handle.read()


def _write_stdout(data: bytes) -> None:
    sys.stdout.flush()
    binary = getattr(sys.stdout, "buffer", None)
    if binary is not None:
        binary.write(data)
        binary.flush()
    else:  # a text-only stream (embedding): the document is always valid UTF-8
        sys.stdout.write(data.decode("utf-8"))


def run(args: argparse.Namespace) -> int:
    try:
        payload = _read(args.file)
    except OSError as error:
        print(f"cannot read {args.file}: {error.strerror or error}", file=sys.stderr)
        return EXIT_FAILURE
    verifier = None
    if args.verify != OFF:
        built = _verifier(args)
        if isinstance(built, str):
            print(built, file=sys.stderr)
            return EXIT_USAGE
        verifier = built
    try:
        envelope = decode(
            payload,
            protocol=args.protocol,
            security_provider=args.security_provider,
            keep_secure=verifier is not None,
        )
    except DecodeError as error:
        print(f"discarded at input: {error.reason}", file=sys.stderr)
        return EXIT_FAILURE
    if verifier is not None:
        verdict: Verdict = verifier.verify(envelope)
        if verdict.verified:
            print("verify: verified", file=sys.stderr)
        else:
            print(f"verify: failed ({verdict.kind}): {verdict.reason}", file=sys.stderr)
            if args.verify == ENFORCE:
                print(f"discarded as unverified: {verdict.reason}", file=sys.stderr)
                return EXIT_FAILURE
    if args.verbose:
        try:
            time_text = format_time(envelope.time)
        except OutputError:
            time_text = f"{envelope.time} ns (outside years 0-9999)"
        print(
            f"sender={envelope.sender!r} requestid={envelope.request_id!r} time={time_text} "
            f"message_bytes={len(envelope.message)} message_id={message_id(envelope)}",
            file=sys.stderr,
        )
    try:
        document = encode_output(envelope, adapter_type=args.type)
        subject = output_subject(args.topic, envelope.sender)
    except OutputError as error:
        print(f"discarded at output: {error.reason}", file=sys.stderr)
        return EXIT_FAILURE
    _write_stdout(subject.encode("utf-8") + b"\n" + document + b"\n")
    return EXIT_OK
