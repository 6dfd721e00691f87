"""The runtime end to end: real nats-servers, the CLI in a subprocess, the stream inspected."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nats
import pytest

from choria_broker_adapters.devtools.natsserver import NatsServer, free_port
from tests.runtime_support import (
    RuntimeProcess,
    broker_conf,
    example,
    logged,
    stored_messages,
    stream_count,
    wait_until,
)

VECTORS = json.loads((Path(__file__).parent / "data" / "protocol" / "vectors.json").read_text())["vectors"]
V1_EXAMPLES = {
    "request": [
        "v1_registration_inventory_plain",
        "v1_registration_inventory_gzip",
        "v1_registration_filecontent_insecure",
    ],
    "reply": ["v1_reply_rpcutil_ping"],
}
DUPLICATE_WINDOW = 0.2
REQUEST_TOPIC, REPLY_TOPIC = "mcollective.broadcast.agent.registration", "choria.reply.>"


def metric_total(text: str, metric: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(metric + "{"):
            continue
        if all(f'{key}="{value}"' in line for key, value in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/choria/prometheus", timeout=5) as response:
        return response.read().decode()


@pytest.fixture
def servers(nats_server_factory: Callable[..., NatsServer]) -> tuple[NatsServer, NatsServer]:
    return nats_server_factory(jetstream=False), nats_server_factory(jetstream=True)


async def add_stream(url: str, name: str, subjects: list[str], **config: Any) -> None:
    nc = await nats.connect(url)
    await nc.jetstream().add_stream(name=name, subjects=subjects, **config)
    await nc.close()


async def test_examples_and_vectors_arrive_byte_exact_and_discards_are_counted(
    servers: tuple[NatsServer, NatsServer], tmp_path: Path
) -> None:
    choria, jetstream = servers
    stats_port = free_port()
    config = tmp_path / "broker.conf"
    config.write_text(
        broker_conf(
            middleware=choria.address,
            adapters={
                "registration": {
                    "type": "choria_streams",
                    "ingest.topic": REQUEST_TOPIC,
                    "ingest.protocol": "request",
                    "ingest.workers": 2,
                    "stream.topic": "choria.node_metadata.%s",
                    "stream.servers": jetstream.address,
                    "stream.workers": 2,
                },
                "replies": {
                    "type": "choria_streams",
                    "ingest.topic": REPLY_TOPIC,
                    "ingest.protocol": "reply",
                    "ingest.workers": 1,
                    "stream.topic": "choria.replies.%s",
                    "stream.servers": jetstream.address,
                    "stream.workers": 1,
                },
            },
            extra=f"plugin.choria.stats_port = {stats_port}\n",
        )
    )
    # The examples and vectors share sender and request id, so they would be de-duplicated as
    # retries of one message; a short duplicate window and spaced publishes keep them apart.
    await add_stream(
        jetstream.url, "CHORIA_REGISTRATION", ["choria.node_metadata.>"], duplicate_window=DUPLICATE_WINDOW
    )
    await add_stream(jetstream.url, "CHORIA_REPLIES", ["choria.replies.>"], duplicate_window=DUPLICATE_WINDOW)
    runtime = RuntimeProcess(config, log_path=tmp_path / "runtime.log")
    try:
        # Wait for the ingest subscriptions: core NATS drops what is published before them.
        await wait_until(logged(runtime, "Subscribed to choria.reply.>"), 20, "subscriptions")
        await wait_until(logged(runtime, f"Subscribed to {REQUEST_TOPIC}"), 20, "subscriptions")

        sent = 0

        async def handled_and_window_passed() -> None:
            """Before the next message: the previous one is stored or counted, and the duplicate
            window it opened has passed (what is waited for there is time itself)."""
            await nc.flush()

            async def all_handled() -> bool:
                metrics = await asyncio.to_thread(scrape, stats_port)
                received = metric_total(metrics, "choria_adapter_received_msgs", role="input")
                refused = metric_total(metrics, "choria_adapter_errors", role="input")
                done = metric_total(metrics, "choria_adapter_published_msgs", role="output")
                done += metric_total(metrics, "choria_adapter_dropped_msgs", reason="encode")
                return received + refused == sent and done == received

            await wait_until(all_handled, 20, "the previous message to be stored or counted", interval=0.02)
            await asyncio.sleep(DUPLICATE_WINDOW)

        expected: dict[str, list[tuple[str, bytes]]] = {"CHORIA_REGISTRATION": [], "CHORIA_REPLIES": []}
        input_discards = output_discards = 0
        nc = await nats.connect(choria.url)
        for mode, names in V1_EXAMPLES.items():
            for name in names:
                wire, _, output = example(name)
                sender = json.loads(output)["sender"]
                await handled_and_window_passed()
                if mode == "request":
                    await nc.publish(REQUEST_TOPIC, wire)
                    sent += 1
                    expected["CHORIA_REGISTRATION"].append((f"choria.node_metadata.{sender}", output))
                else:
                    await nc.publish("choria.reply.x", wire)
                    sent += 1
                    expected["CHORIA_REPLIES"].append((f"choria.replies.{sender}", output))
        for vector in (v for v in VECTORS if v["security"] == "x509"):
            request = vector["ingest_protocol"] == "request"
            await handled_and_window_passed()
            await nc.publish(REQUEST_TOPIC if request else "choria.reply.vector", vector["input"].encode())
            sent += 1
            result = vector["expect"]["result"]
            if result == "publish":
                output = vector["expect"]["output"].encode()
                sender = json.loads(output)["sender"]
                stream, prefix = (
                    ("CHORIA_REGISTRATION", "choria.node_metadata")
                    if request
                    else ("CHORIA_REPLIES", "choria.replies")
                )
                expected[stream].append((f"{prefix}.{sender}", output))
            elif result == "discard_at_output":
                output_discards += 1
            else:
                input_discards += 1
        await nc.flush()
        await nc.close()

        js_conn = await nats.connect(jetstream.url)
        js = js_conn.jetstream()
        for stream, messages in expected.items():
            await wait_until(
                lambda s=stream, m=messages: _count_is(js, s, len(m)),
                20,
                f"{len(messages)} messages in {stream}",
            )
        for stream, messages in expected.items():
            assert sorted(await stored_messages(js, stream)) == sorted(messages)
        await js_conn.close()

        metrics = scrape(stats_port)
        assert metric_total(metrics, "choria_adapter_errors", role="input") == input_discards
        assert metric_total(metrics, "choria_adapter_dropped_msgs", reason="decode") == input_discards
        assert metric_total(metrics, "choria_adapter_dropped_msgs", reason="encode") == output_discards
        stored = sum(len(m) for m in expected.values())
        assert metric_total(metrics, "choria_adapter_published_msgs", role="output") == stored
        assert metric_total(metrics, "choria_adapter_received_msgs", role="input") == stored + output_discards
        assert metric_total(metrics, "choria_adapter_queue_capacity", name="registration") == 1000
        assert 'identity="adapter1.example.net"' in metrics

        with urllib.request.urlopen(f"http://127.0.0.1:{stats_port}/choria/", timeout=5) as response:
            status = json.loads(response.read())
        assert status["identity"] == "adapter1.example.net"
        assert [a["name"] for a in status["adapters"]] == ["registration", "replies"]

        assert runtime.terminate() == 0
    finally:
        runtime.close()
    log = runtime.log_text()
    assert "Traceback" not in log
    assert "Could not process message, discarding" in log
    assert re.search(r"adapter=registration side=ingest", log)


async def _count_is(js: Any, stream: str, count: int) -> bool:
    return await stream_count(js, stream) >= count


async def test_v2_examples_with_the_choria_security_provider(
    servers: tuple[NatsServer, NatsServer], tmp_path: Path
) -> None:
    choria, jetstream = servers
    config = tmp_path / "broker.conf"
    config.write_text(
        broker_conf(
            middleware=choria.address,
            adapters={
                "nodes": {
                    "type": "choria_streams",
                    "ingest.topic": REQUEST_TOPIC,
                    "ingest.protocol": "request",
                    "stream.topic": "choria.node_metadata.%s",
                    "stream.servers": jetstream.address,
                },
            },
            # The choria provider names its TLS files; --disable-tls means they are not read.
            extra="plugin.security.provider = choria\n"
            + "".join(
                f"plugin.security.choria.{role} = /unused/{role}.pem\n"
                for role in ("certificate", "key", "ca")
            ),
        )
    )
    await add_stream(jetstream.url, "NODES", ["choria.node_metadata.>"])
    runtime = RuntimeProcess(config, log_path=tmp_path / "runtime.log")
    try:
        await wait_until(logged(runtime, f"Subscribed to {REQUEST_TOPIC}"), 20, "subscriptions")
        wire, _, output = example("v2_registration_inventory_gzip")
        v1_wire, _, _ = example("v1_registration_inventory_plain")
        nc = await nats.connect(choria.url)
        await nc.publish(REQUEST_TOPIC, v1_wire)  # one provider decodes one protocol version: discarded
        await nc.publish(REQUEST_TOPIC, wire)
        await nc.flush()
        await nc.close()
        js_conn = await nats.connect(jetstream.url)
        js = js_conn.jetstream()
        await wait_until(lambda: _count_is(js, "NODES", 1), 20, "the v2 message")
        sender = json.loads(output)["sender"]
        assert await stored_messages(js, "NODES") == [(f"choria.node_metadata.{sender}", output)]
        await js_conn.close()
        assert runtime.terminate() == 0
    finally:
        runtime.close()


async def test_jetstream_adapter_type_writes_the_documented_protocol(
    servers: tuple[NatsServer, NatsServer], tmp_path: Path
) -> None:
    choria, jetstream = servers
    config = tmp_path / "broker.conf"
    config.write_text(
        broker_conf(
            middleware=choria.address,
            adapters={
                "node_data": {
                    "type": "jetstream",
                    "ingest.topic": REQUEST_TOPIC,
                    "ingest.protocol": "request",
                    "stream.topic": "choria.node_metadata.%s",
                    "stream.servers": jetstream.address,
                    "ingest.workers": 1,
                    "stream.workers": 1,
                }
            },
        )
    )
    await add_stream(jetstream.url, "CHORIA_NODE_DATA", ["choria.node_metadata.>"])
    runtime = RuntimeProcess(config, log_path=tmp_path / "runtime.log")
    try:
        await wait_until(logged(runtime, f"Subscribed to {REQUEST_TOPIC}"), 20, "subscriptions")
        wire, _, output = example("v1_registration_inventory_plain")
        nc = await nats.connect(choria.url)
        await nc.publish(REQUEST_TOPIC, wire)
        await nc.flush()
        await nc.close()
        js_conn = await nats.connect(jetstream.url)
        js = js_conn.jetstream()
        await wait_until(lambda: _count_is(js, "CHORIA_NODE_DATA", 1), 20, "one message")
        [(_, body)] = await stored_messages(js, "CHORIA_NODE_DATA")
        assert body == output.replace(
            b"choria:adapters:choria_streams:output:1", b"choria:adapters:jetstream:output:1"
        )
        await js_conn.close()
        assert runtime.terminate() == 0
    finally:
        runtime.close()


def test_config_error_exits_78_before_connecting(tmp_path: Path) -> None:
    config = tmp_path / "broker.conf"
    config.write_text("plugin.choria.adapters = a\nplugin.choria.adapter.a.type = kafka\n")
    runtime = RuntimeProcess(config, log_path=tmp_path / "runtime.log")
    assert runtime.wait(30) == 78
    assert f"{config}:2: plugin.choria.adapter.a.type: unknown adapter type 'kafka'" in runtime.log_text()


def test_missing_tls_files_exit_78_unless_disabled(tmp_path: Path) -> None:
    config = tmp_path / "broker.conf"
    config.write_text(
        broker_conf(
            middleware="127.0.0.1:1",
            adapters={"a": {"type": "jetstream", "ingest.topic": "x"}},
            extra=f"plugin.choria.ssldir = {tmp_path}/ssl\n",
        )
    )
    runtime = RuntimeProcess(config, log_path=tmp_path / "runtime.log", args=())
    assert runtime.wait(30) == 78
    assert f"{tmp_path}/ssl/certs/ca.pem does not exist" in runtime.log_text()
