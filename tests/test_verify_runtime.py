"""ingest.verify through the real runtime against real nats-servers.

One runtime runs three adapters on the same registration subject (each its own queue group, so
each sees every message): `enforced` (enforce), `warned` (warn) and `plain` (off). The test
publishes a correct registration and five that must not verify (another node's valid
certificate, a rogue-CA certificate, an expired certificate, a tampered message, an unsigned
registration) and checks what each stream holds, byte for byte, with which headers, and what
was counted and logged. A second test does the same for protocol v2 with issuer tokens.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nats
import pytest

from choria_broker_adapters.devtools.natsserver import NatsServer, free_port
from tests import verify_support as vs
from tests.runtime_support import RuntimeProcess, broker_conf, wait_until

TOPIC = "mcollective.broadcast.agent.registration"
ADAPTERS = {"enforced": "enforce", "warned": "warn", "plain": "off"}


@pytest.fixture
def servers(nats_server_factory: Callable[..., NatsServer]) -> tuple[NatsServer, NatsServer]:
    return nats_server_factory(jetstream=False), nats_server_factory(jetstream=True)


def get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return response.read().decode()


def metric(text: str, family: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(family + "{") and all(f'{key}="{value}"' in line for key, value in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def stored(js: Any, stream: str) -> list[tuple[str, bytes, str | None]]:
    """(subject, body, Choria-Verified header or None) of every message, in order."""
    info = await js.stream_info(stream)
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        message = await js.get_msg(stream, seq)
        out.append((message.subject, message.data, (message.headers or {}).get("Choria-Verified")))
    return out


def adapters_conf(jetstream: NatsServer, ca: Path | None) -> dict[str, dict[str, Any]]:
    adapters: dict[str, dict[str, Any]] = {}
    for name, mode in ADAPTERS.items():
        keys: dict[str, Any] = {
            "type": "choria_streams",
            "ingest.topic": TOPIC,
            "ingest.protocol": "request",
            "ingest.workers": 1,
            "ingest.verify": mode,
            "stream.topic": f"{name}.%s",
            "stream.servers": jetstream.address,
            "stream.workers": 1,
        }
        if ca is not None and mode != "off":
            keys["ingest.verify_ca"] = ca
        keys["stream.publish"] = "batched" if mode == "warn" else "acked"
        adapters[name] = keys
    return adapters


async def run_flow(
    tmp_path: Path,
    choria: NatsServer,
    jetstream: NatsServer,
    config_text: str,
    messages: list[tuple[str, bytes, bytes, str | None]],
    stats_port: int,
) -> tuple[dict[str, list[tuple[str, bytes, str | None]]], str, dict[str, Any], str]:
    """Run the runtime, publish `messages` (label, wire, expected body, failure kind or None),
    and return what each stream stored, the metrics, /choria/ and the log once all is settled."""
    config = tmp_path / "broker.conf"
    config.write_text(config_text)
    nc = await nats.connect(jetstream.url)
    js = nc.jetstream()
    for name in ADAPTERS:
        # The warned adapter publishes fast-ingest batches, the others one ack per message: the
        # Choria-Verified header must survive both publishers.
        batched = True if name == "warned" else None
        await js.add_stream(name=name.upper(), subjects=[f"{name}.>"], allow_batched=batched)
    runtime = RuntimeProcess(config, log_path=tmp_path / "runtime.log")
    try:

        async def subscribed() -> bool:
            return runtime.log_text().count(f"Subscribed to {TOPIC}") == len(ADAPTERS)

        await wait_until(subscribed, 30, "three subscriptions")
        publisher = await nats.connect(choria.url)
        for _, wire, _, _ in messages:
            await publisher.publish(TOPIC, wire)
        await publisher.flush()
        await publisher.close()
        failures = sum(1 for *_, kind in messages if kind is not None)

        async def settled() -> bool:
            counts = [(await js.stream_info(name.upper())).state.messages for name in ADAPTERS]
            text = get(stats_port, "/choria/prometheus")
            dropped = metric(text, "choria_adapter_dropped_msgs", name="enforced", reason="unverified")
            return counts == [len(messages) - failures, len(messages), len(messages)] and dropped == failures

        await wait_until(settled, 30, "every message stored or dropped")
        result = {name: await stored(js, name.upper()) for name in ADAPTERS}
        text = get(stats_port, "/choria/prometheus")
        status = json.loads(get(stats_port, "/choria/"))
    finally:
        runtime.terminate()
        await nc.close()
    return result, text, status, runtime.log_text()


def check_outcome(
    messages: list[tuple[str, bytes, bytes, str | None]],
    result: dict[str, list[tuple[str, bytes, str | None]]],
    text: str,
    status: dict[str, Any],
    log: str,
    subject_of: Callable[[str, bytes], str],
) -> None:
    good = [(label, body) for label, _, body, kind in messages if kind is None]
    # enforce: only what verified, byte-exact, no marker header
    assert result["enforced"] == [(subject_of("enforced", body), body, None) for _, body in good]
    # warn: everything, each with its verdict
    assert result["warned"] == [
        (subject_of("warned", body), body, "true" if kind is None else "false")
        for _, _, body, kind in messages
    ]
    # off: everything, exactly as before verification existed
    assert result["plain"] == [(subject_of("plain", body), body, None) for _, _, body, _ in messages]

    failures = [kind for *_, kind in messages if kind is not None]
    for name in ("enforced", "warned"):
        assert metric(text, "choria_adapter_verified_msgs", name=name) == len(good)
        for kind in set(failures):
            assert metric(text, "choria_adapter_unverified_msgs", name=name, reason=kind) == failures.count(
                kind
            )
        assert metric(text, "choria_adapter_unverified_msgs", name=name) == len(failures)
    assert metric(text, "choria_adapter_dropped_msgs", name="enforced", reason="unverified") == len(failures)
    assert metric(text, "choria_adapter_dropped_msgs", name="warned") == 0
    assert metric(text, "choria_adapter_verified_msgs", name="plain") == 0
    assert {adapter["name"]: adapter["verify"] for adapter in status["adapters"]} == ADAPTERS
    enforced = next(adapter for adapter in status["adapters"] if adapter["name"] == "enforced")
    assert enforced["counts"]["dropped_unverified"] == len(failures)
    assert enforced["counts"]["verified"] == len(good)


def v1_messages() -> list[tuple[str, bytes, bytes, str | None]]:
    p = vs.pki()
    node1 = "node1.example.net"
    cases = [
        ("correct", vs.v1_registration(p.node1, sender=node1, tag="good"), None),
        ("spoofed", vs.v1_registration(p.node2, sender=node1, tag="spoof"), "name"),
        ("rogue CA", vs.v1_registration(p.rogue_node1, sender=node1, tag="rogue"), "untrusted"),
        ("expired", vs.v1_registration(p.expired, sender="node3.example.net", tag="old"), "expired"),
        ("tampered", vs.v1_registration(p.node1, sender=node1, tag="tamper", tamper=True), "signature"),
        ("unsigned", vs.v1_registration(None, sender=node1, tag="unsigned"), "unsigned"),
    ]
    return [(label, wire, body, kind) for label, (wire, body), kind in cases]


def subject_of(prefix: str, body: bytes) -> str:
    return f"{prefix}.{json.loads(body)['sender']}"


async def test_v1_enforce_drops_what_does_not_verify_warn_marks_it_off_is_unchanged(
    servers: tuple[NatsServer, NatsServer], tmp_path: Path
) -> None:
    choria, jetstream = servers
    ca = vs.pki().write_ca(tmp_path / "ca.pem")
    stats_port = free_port()
    messages = v1_messages()
    config = broker_conf(
        middleware=choria.address,
        adapters=adapters_conf(jetstream, ca),
        extra=f"plugin.choria.stats_port = {stats_port}\n",
    )
    result, text, status, log = await run_flow(tmp_path, choria, jetstream, config, messages, stats_port)
    check_outcome(messages, result, text, status, log, subject_of)
    # Each failure is logged with the sender and the reason (one kind each, so none is suppressed).
    for reason in (
        "certificate name node2.example.net is not the sender node1.example.net",
        "certificate not issued by the configured CA",
        "certificate expired",
        "signature does not match",
        "unsigned registration",
    ):
        assert log.count(f"did not verify, discarding: {reason}") == 1, reason
    assert "Message from node3.example.net did not verify, discarding: certificate expired" in log


async def test_v2_enforce_and_warn_with_issuer_tokens(
    servers: tuple[NatsServer, NatsServer], tmp_path: Path
) -> None:
    choria, jetstream = servers
    k = vs.v2_keys()
    node1 = "node1.example.net"
    token = k.token(node1, k.node1)
    cases = [
        ("correct", vs.v2_registration(k.node1, token, sender=node1, tag="good"), None),
        (
            "spoofed",
            vs.v2_registration(k.node2, k.token("node2.example.net", k.node2), sender=node1, tag="s"),
            "name",
        ),
        (
            "rogue issuer",
            vs.v2_registration(
                k.node1, k.token(node1, k.node1, issuer=k.rogue_issuer), sender=node1, tag="r"
            ),
            "untrusted",
        ),
        ("tampered", vs.v2_registration(k.node1, token, sender=node1, tag="t", tamper=True), "signature"),
        ("unsigned", vs.v2_registration(None, token, sender=node1, tag="u"), "unsigned"),
    ]
    messages = [(label, wire, body, kind) for label, (wire, body), kind in cases]
    stats_port = free_port()
    tls = tmp_path / "unused.pem"  # the choria provider names TLS files; --disable-tls leaves them unread
    config = broker_conf(
        middleware=choria.address,
        adapters=adapters_conf(jetstream, None),
        extra=(
            f"plugin.choria.stats_port = {stats_port}\n"
            "plugin.security.provider = choria\n"
            f"plugin.security.choria.certificate = {tls}\n"
            f"plugin.security.choria.key = {tls}\n"
            f"plugin.security.choria.ca = {tls}\n"
            "plugin.security.issuer.names = choria\n"
            f"plugin.security.issuer.choria.public = {vs.public_hex(k.issuer)}\n"
        ),
    )
    result, text, status, log = await run_flow(tmp_path, choria, jetstream, config, messages, stats_port)
    check_outcome(messages, result, text, status, log, subject_of)
    assert (
        "did not verify, discarding: token identity node2.example.net is not the sender node1.example.net"
        in log
    )


async def test_run_refuses_a_verifying_adapter_without_its_ca_before_connecting(tmp_path: Path) -> None:
    config = tmp_path / "broker.conf"
    adapters = {
        "enforced": {
            "type": "choria_streams",
            "ingest.topic": TOPIC,
            "ingest.protocol": "request",
            "ingest.verify": "enforce",
            "ingest.verify_ca": tmp_path / "missing.pem",
        }
    }
    config.write_text(broker_conf(middleware="127.0.0.1:1", adapters=adapters))
    runtime = RuntimeProcess(config, log_path=tmp_path / "runtime.log")
    assert await asyncio.to_thread(runtime.wait, 30) == 78
    assert "plugin.choria.adapter.enforced.ingest.verify_ca" in runtime.log_text()
