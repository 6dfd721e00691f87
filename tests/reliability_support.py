"""Helpers for the reliability tests: small messages, runtime status, stored ids, RSS, load.

Everything here talks to real processes (nats-server, the runtime through its CLI); the tests
in test_reliability.py compose these into fault scenarios.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from choria_broker_adapters.codec.output import OutputError, encode_output, message_id, output_subject
from choria_broker_adapters.codec.protocol import DecodeError, decode
from choria_broker_adapters.devtools.fleet import REGISTRATION_SUBJECT, registration_message, request_id
from choria_broker_adapters.devtools.natsserver import NatsServer, free_port
from tests.runtime_support import RuntimeProcess, broker_conf, wait_until

ADAPTER = "registration"
STREAM_TOPIC = "choria.node_metadata.%s"
STREAM_SUBJECTS = ["choria.node_metadata.>"]


# -- messages ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    sender: str
    request_id: str
    payload: bytes


def small_registration(sender: str, rid: str, *, body: str = '{"ok":true}', sent_at: int = 0) -> Message:
    """A valid v1 registration (~700 bytes) with a tiny inventory: fleet.py's layering, less JSON."""
    sent_at = sent_at or int(time.time())
    return Message(sender, rid, registration_message(sender, rid, sent_at=sent_at, payload=body))


def small_fleet(count: int, *, tag: str, first: int = 0) -> list[Message]:
    """`count` valid registrations, each from its own sender with its own request id.

    `tag` goes into every sender so that messages of different phases of a test never share
    a Nats-Msg-Id."""
    now = int(time.time())
    return [
        small_registration(f"{tag}{index:07d}.example.net", request_id(index, 0), sent_at=now)
        for index in range(first, first + count)
    ]


def payloads(messages: Iterable[Message]) -> list[bytes]:
    return [message.payload for message in messages]


def ids(messages: Iterable[Message]) -> set[tuple[str, str]]:
    return {(message.sender, message.request_id) for message in messages}


@dataclass
class Expectation:
    """What the runtime must do with a batch of raw payloads, worked out with the project's codec.

    Tests use this as the oracle for inputs whose validity is not known by construction
    (randomly mutated transports): decode → subject → encode, exactly the runtime's steps."""

    stored_ids: set[str] = field(default_factory=set)  # distinct Nats-Msg-Ids expected in the stream
    publishable: int = 0  # messages that reach a JetStream publish (duplicates included)
    drops: dict[str, int] = field(default_factory=lambda: {"decode": 0, "subject": 0, "encode": 0})

    def add(self, payload: bytes, *, adapter_type: str = "choria_streams") -> str:
        """Classify one payload; returns "stored" or the drop reason."""
        try:
            envelope = decode(payload, protocol="request", security_provider="puppet")
        except DecodeError:
            self.drops["decode"] += 1
            return "decode"
        try:
            output_subject(STREAM_TOPIC, envelope.sender)
        except OutputError:
            self.drops["subject"] += 1
            return "subject"
        try:
            encode_output(envelope, adapter_type=adapter_type)
        except OutputError:
            self.drops["encode"] += 1
            return "encode"
        self.publishable += 1
        self.stored_ids.add(message_id(envelope))
        return "stored"


def expected_document(sender: str, rid: str, body: str, sent_at: int, *, adapter_type: str) -> bytes:
    """The output document the runtime must store for a registration this test generated, built
    from the generated fields alone (not with the project's codec). Valid for the plain-ASCII
    senders and bodies without `<`, `>`, `&` that the generators make."""
    assert body.isascii() and not set("<>&") & set(body + sender)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(sent_at))
    document = {
        "protocol": f"choria:adapters:{adapter_type}:output:1",
        "data": body,
        "sender": sender,
        "time": stamp,
        "requestid": rid,
    }
    return json.dumps(document, separators=(",", ":")).encode()


@dataclass
class HostileMix:
    """A flood's payloads, what kind each is, and the generated-valid ones' expected documents."""

    payloads: list[bytes]
    kinds: list[str]
    valid: dict[tuple[str, str], bytes]  # (sender, request id) -> expected stored document


def hostile_mix(count: int, *, seed: int, tag: str, huge: int, huge_size: int) -> HostileMix:
    """`count` payloads mixing valid registrations, random bytes, truncated and mutated transports.

    Plus `huge` near-max payloads of each kind: valid registrations carrying a big inventory,
    and random bytes. Deterministic for a seed."""
    rng = random.Random(seed)
    now = int(time.time())
    out: list[bytes] = []
    kinds: list[str] = []
    valid: dict[tuple[str, str], bytes] = {}
    small_body = '{"ok":true}'
    for index in range(count):
        sender, rid = f"{tag}{index:07d}.example.net", request_id(index, 1)
        base = small_registration(sender, rid, sent_at=now, body=small_body).payload
        kind = ("valid", "random", "truncated", "mutated", "valid", "mutated")[index % 6]
        if kind == "valid":
            payload = base
            valid[(sender, rid)] = expected_document(
                sender, rid, small_body, now, adapter_type="choria_streams"
            )
        elif kind == "random":
            payload = rng.randbytes(rng.randint(0, 2048))
        elif kind == "truncated":
            payload = base[: rng.randrange(len(base))]
        else:
            mutated = bytearray(base)
            for _ in range(rng.randint(1, 4)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            payload = bytes(mutated)
        out.append(payload)
        kinds.append(kind)
    for index in range(huge):
        # Base64 twice over grows the inventory by ~16/9 on the wire; leave room for the layers.
        body = json.dumps({"blob": "x" * int(huge_size * 0.55)})
        sender, rid = f"{tag}huge{index:03d}.example.net", request_id(index, 2)
        big = small_registration(sender, rid, body=body, sent_at=now)
        assert len(big.payload) < huge_size, len(big.payload)
        out.append(big.payload)
        kinds.append("huge_valid")
        valid[(sender, rid)] = expected_document(sender, rid, body, now, adapter_type="choria_streams")
        out.append(rng.randbytes(huge_size - rng.randint(0, 64)))
        kinds.append("huge_random")
    # Spread the huge ones through the flood rather than at its end.
    order = list(range(len(out)))
    rng.shuffle(order)
    return HostileMix([out[i] for i in order], [kinds[i] for i in order], valid)


# -- the runtime ------------------------------------------------------------------------------


@dataclass
class Runtime:
    """A runtime subprocess with a statistics port to ask for its counts."""

    process: RuntimeProcess
    stats_port: int
    config: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.process.poll() is None

    async def status(self) -> dict[str, Any]:
        def fetch() -> dict[str, Any]:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.stats_port}/choria/", timeout=5) as reply:
                return json.loads(reply.read())

        return await asyncio.to_thread(fetch)

    async def adapter(self, name: str = ADAPTER) -> dict[str, Any]:
        status = await self.status()
        return next(a for a in status["adapters"] if a["name"] == name)

    async def counts(self, name: str = ADAPTER) -> dict[str, int]:
        return dict((await self.adapter(name))["counts"])

    async def prometheus(self) -> str:
        def fetch() -> str:
            url = f"http://127.0.0.1:{self.stats_port}/choria/prometheus"
            with urllib.request.urlopen(url, timeout=5) as reply:
                return reply.read().decode()

        return await asyncio.to_thread(fetch)

    async def wait_subscribed(self, workers: int, timeout: float = 30.0, name: str = ADAPTER) -> None:
        async def subscribed() -> bool:
            try:
                return int((await self.adapter(name))["ingest_connected"]) >= workers
            except OSError:
                return False

        await wait_until(subscribed, timeout, f"{workers} ingest subscriptions")

    async def wait_settled(
        self, timeout: float, name: str = ADAPTER, *, received: int | None = None
    ) -> dict[str, int]:
        """Wait until nothing is queued or in flight and every received message is accounted for
        (and, with `received`, until exactly that many have arrived: right after a publish the
        runtime may not have seen any of it yet, which would look settled)."""

        async def settled() -> bool:
            adapter = await self.adapter(name)
            counts = adapter["counts"]
            accounted = counts["stored"] + sum(
                counts[f"dropped_{reason}"] for reason in ("subject", "encode", "publish", "unconfirmed")
            )
            return (
                (received is None or counts["received"] == received)
                and adapter["queued"] == 0
                and adapter["in_flight"] == 0
                and adapter["unconfirmed"] == 0
                and accounted == counts["received"]
            )

        await wait_until(settled, timeout, "the runtime to settle", interval=0.25)
        return await self.counts(name)


def adapter_keys(jetstream: str, **overrides: Any) -> dict[str, Any]:
    keys: dict[str, Any] = {
        "type": "choria_streams",
        "ingest.topic": REGISTRATION_SUBJECT,
        "ingest.protocol": "request",
        "ingest.workers": 4,
        "stream.topic": STREAM_TOPIC,
        "stream.servers": jetstream,
        "stream.workers": 4,
    }
    keys.update({key.replace("__", "."): value for key, value in overrides.items()})
    return keys


def start_runtime(
    tmp_path: Path,
    label: str,
    *,
    middleware: str,
    adapter: dict[str, Any],
    extra: str = "",
    args: tuple[str, ...] = ("--disable-tls",),
    identity: str = "adapter1.example.net",
) -> Runtime:
    stats_port = free_port()
    config = tmp_path / f"{label}.conf"
    config.write_text(
        broker_conf(
            middleware=middleware,
            adapters={ADAPTER: adapter},
            identity=identity,
            extra=f"plugin.choria.stats_port = {stats_port}\n{extra}",
        )
    )
    process = RuntimeProcess(config, log_path=tmp_path / f"{label}.log", args=args)
    return Runtime(process, stats_port, config)


# -- JetStream ------------------------------------------------------------------------------------


async def add_stream(url: str | list[str], name: str, **config: Any) -> None:
    """Create the stream, retrying while a fresh (cluster) JetStream is not ready yet."""
    nc = await nats.connect(url)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                await nc.jetstream().add_stream(name=name, subjects=STREAM_SUBJECTS, **config)
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.25)
    finally:
        await nc.close()


async def stream_state(url: str | list[str], stream: str) -> Any:
    nc = await nats.connect(url)
    try:
        return await nc.jetstream().stream_info(stream)
    finally:
        await nc.close()


async def stored_ids(url: str | list[str], stream: str) -> list[tuple[str, str]]:
    """(sender, requestid) of every stored output document, duplicates kept, via one pull consumer."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        total = (await js.stream_info(stream)).state.messages
        consumer = await js.pull_subscribe(
            "choria.node_metadata.>",
            stream=stream,
            config=ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL),
        )
        found: list[tuple[str, str]] = []
        while len(found) < total:
            for msg in await consumer.fetch(batch=2000, timeout=10):
                document = json.loads(msg.data)
                found.append((document["sender"], document["requestid"]))
        await consumer.unsubscribe()
        return found
    finally:
        await nc.close()


async def stored_documents(url: str | list[str], stream: str) -> dict[tuple[str, str], list[bytes]]:
    """Every stored output document's bytes by (sender, requestid), duplicates kept."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        total = (await js.stream_info(stream)).state.messages
        consumer = await js.pull_subscribe(
            "choria.node_metadata.>",
            stream=stream,
            config=ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL),
        )
        found: dict[tuple[str, str], list[bytes]] = {}
        seen = 0
        while seen < total:
            for msg in await consumer.fetch(batch=2000, timeout=10):
                document = json.loads(msg.data)
                found.setdefault((document["sender"], document["requestid"]), []).append(msg.data)
                seen += 1
        await consumer.unsubscribe()
        return found
    finally:
        await nc.close()


# -- load and measurement ------------------------------------------------------------------------


async def publish(
    url: str,
    messages: Sequence[bytes],
    *,
    rate: float | None = None,
    subject: str = REGISTRATION_SUBJECT,
    at: dict[int, Callable[[], Awaitable[None]]] | None = None,
) -> float:
    """Publish on core NATS, paced at `rate` msgs/s (None: as fast as the client can).

    `at` maps a message index to a fault to start (as a task) just before that message, so
    faults land mid-flow at a known point. Returns the publishing time in seconds; waits for
    the faults to finish."""
    nc = await nats.connect(url, pending_size=64 * 1024 * 1024, max_reconnect_attempts=-1)
    faults: list[asyncio.Task[None]] = []
    started = time.monotonic()
    try:
        for index, payload in enumerate(messages):
            if at and index in at:
                faults.append(asyncio.create_task(at[index]()))
            await nc.publish(subject, payload)
            if rate:
                ahead = started + (index + 1) / rate - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)
            elif index % 5000 == 4999:
                await nc.flush()  # as fast as possible, but never past the client's buffer
        await nc.flush(timeout=30)
        elapsed = time.monotonic() - started
        if faults:
            await asyncio.gather(*faults)
        return elapsed
    finally:
        await nc.close()


def memory_kib(pid: int, field_name: str = "VmRSS") -> int:
    """A memory figure from /proc/<pid>/status (VmRSS now, VmHWM the peak), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field_name} for process {pid}")


def cluster_nodes(factory: Callable[..., NatsServer], count: int, *, name: str) -> list[NatsServer]:
    """`count` nats-servers with JetStream routed into one cluster; started one after another."""
    cluster_ports = [free_port() for _ in range(count)]
    routes = ", ".join(f"nats-route://127.0.0.1:{port}" for port in cluster_ports)
    nodes = []
    for index, port in enumerate(cluster_ports):
        extra = f"cluster {{ name: {name}, listen: 127.0.0.1:{port}, routes: [{routes}] }}"
        nodes.append(factory(jetstream=True, name=f"{name}-n{index}", extra_config=extra))
    return nodes
