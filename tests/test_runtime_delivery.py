"""Delivery through the runtime: queue groups, graceful stop, JetStream outages and mutual TLS."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import nats
import pytest

from choria_broker_adapters.devtools.fleet import REGISTRATION_SUBJECT, fleet
from choria_broker_adapters.devtools.natsserver import NatsServer, free_port
from tests.runtime_support import (
    RuntimeProcess,
    broker_conf,
    logged,
    publish_paced,
    stored_request_ids,
    stream_count,
    wait_until,
)
from tests.tlsutil import make_pki

STREAM = "CHORIA_NODE_DATA"


def adapter(jetstream: NatsServer, **overrides: object) -> dict[str, object]:
    keys: dict[str, object] = {
        "type": "jetstream",
        "ingest.topic": REGISTRATION_SUBJECT,
        "ingest.protocol": "request",
        "ingest.workers": 2,
        "stream.topic": "choria.node_metadata.%s",
        "stream.servers": jetstream.address,
        "stream.workers": 2,
    }
    keys.update(overrides)
    return keys


async def create_stream(jetstream: NatsServer, **tls: object) -> None:
    nc = await nats.connect(jetstream.url, **tls)
    await nc.jetstream().add_stream(name=STREAM, subjects=["choria.node_metadata.>"])
    await nc.close()


async def subscribed(runtime: RuntimeProcess, count: int = 1) -> None:
    async def ready() -> bool:
        return runtime.log_text().count(f"Subscribed to {REGISTRATION_SUBJECT}") >= count

    await wait_until(ready, 30, f"{count} ingest subscription(s)")


async def wait_stored(js_url: str, count: int, timeout: float = 60) -> None:
    """Wait until the stream holds `count` messages (read them once the runtimes have exited,
    so that a duplicate stored late cannot be missed)."""
    nc = await nats.connect(js_url)
    js = nc.jetstream()

    async def enough() -> bool:
        return await stream_count(js, STREAM) >= count

    try:
        await wait_until(enough, timeout, f"{count} stored messages")
    finally:
        await nc.close()


async def all_stored(js_url: str) -> list[tuple[str, str]]:
    nc = await nats.connect(js_url)
    try:
        return await stored_request_ids(nc.jetstream(), STREAM)
    finally:
        await nc.close()


def received_all(stats_port: int, total: int) -> Callable[[], Awaitable[bool]]:
    """A wait_until condition: the runtime's /choria/ counts `total` messages received."""

    async def received() -> bool:
        def fetch() -> int:
            with urllib.request.urlopen(f"http://127.0.0.1:{stats_port}/choria/", timeout=5) as reply:
                return sum(a["counts"]["received"] for a in json.loads(reply.read())["adapters"])

        try:
            return await asyncio.to_thread(fetch) == total
        except OSError:
            return False

    return received


@pytest.fixture
def servers(nats_server_factory: Callable[..., NatsServer]) -> tuple[NatsServer, NatsServer]:
    return nats_server_factory(jetstream=False), nats_server_factory(jetstream=True)


async def test_two_processes_in_one_queue_group_store_each_message_once(
    servers: tuple[NatsServer, NatsServer], tmp_path: Path
) -> None:
    choria, jetstream = servers
    config = tmp_path / "broker.conf"
    config.write_text(broker_conf(middleware=choria.address, adapters={"node_data": adapter(jetstream)}))
    await create_stream(jetstream)
    first = RuntimeProcess(config, log_path=tmp_path / "first.log")
    second = RuntimeProcess(config, log_path=tmp_path / "second.log")
    try:
        await subscribed(first, 2)
        await subscribed(second, 2)
        registrations = list(fleet(300, rounds=5))
        await publish_paced(choria.url, REGISTRATION_SUBJECT, [r.payload for r in registrations], rate=3000)
        await wait_stored(jetstream.url, len(registrations))
        assert first.terminate() == 0 and second.terminate() == 0
        stored = await all_stored(jetstream.url)
        assert Counter(stored) == Counter((r.sender, r.request_id) for r in registrations)
    finally:
        first.close()
        second.close()
    # both processes took a share of the queue group
    for runtime in (first, second):
        received = int(runtime.log_text().rsplit("Adapter node_data stopped: ", 1)[1].split(" received")[0])
        assert 0 < received < len(registrations)


async def test_sigterm_with_a_full_queue_stores_everything_and_exits_0(
    servers: tuple[NatsServer, NatsServer], tmp_path: Path
) -> None:
    choria, jetstream = servers
    config = tmp_path / "broker.conf"
    stats_port = free_port()
    config.write_text(
        broker_conf(
            middleware=choria.address,
            adapters={
                "node_data": adapter(
                    jetstream, queue_len=2000, shutdown_grace="60s", **{"stream.ack_timeout": "1s"}
                )
            },
            extra=f"plugin.choria.stats_port = {stats_port}\n",
        )
    )
    await create_stream(jetstream)
    runtime = RuntimeProcess(config, log_path=tmp_path / "runtime.log")
    try:
        await subscribed(runtime, 2)
        jetstream.stop()  # publishing stalls: messages pile up in the queue and the in-flight window
        registrations = list(fleet(400, rounds=3))
        await publish_paced(choria.url, REGISTRATION_SUBJECT, [r.payload for r in registrations])
        await wait_until(
            received_all(stats_port, len(registrations)),
            30,
            "every message received while JetStream is down",
        )
        runtime.process.terminate()  # SIGTERM while nothing can be confirmed
        await wait_until(logged(runtime, "Stopping adapter node_data: draining"), 10, "the drain to start")
        assert runtime.process.poll() is None, "the runtime must wait for the queue within shutdown_grace"
        jetstream.start()
        assert await asyncio.to_thread(runtime.wait, 60) == 0
        await wait_stored(jetstream.url, len(registrations))
        stored = await all_stored(jetstream.url)
        assert Counter(stored) == Counter((r.sender, r.request_id) for r in registrations)
    finally:
        runtime.close()
    log = runtime.log_text()
    assert "Stopping: received SIGTERM" in log
    assert f"{len(registrations)} received, {len(registrations)} stored" in log
    assert "Traceback" not in log


async def test_jetstream_stopped_mid_flow_loses_and_duplicates_nothing(
    servers: tuple[NatsServer, NatsServer], tmp_path: Path
) -> None:
    choria, jetstream = servers
    config = tmp_path / "broker.conf"
    config.write_text(
        broker_conf(
            middleware=choria.address,
            adapters={"node_data": adapter(jetstream, **{"stream.ack_timeout": "1s"})},
        )
    )
    await create_stream(jetstream)
    runtime = RuntimeProcess(config, log_path=tmp_path / "runtime.log")
    try:
        await subscribed(runtime, 2)
        registrations = list(fleet(500, rounds=4))
        payloads = [r.payload for r in registrations]

        async def outage() -> None:
            await asyncio.sleep(0.7)
            await asyncio.to_thread(jetstream.stop)
            await asyncio.sleep(3)
            await asyncio.to_thread(jetstream.start)

        await asyncio.gather(publish_paced(choria.url, REGISTRATION_SUBJECT, payloads, rate=1000), outage())
        await wait_stored(jetstream.url, len(registrations), timeout=90)
        assert runtime.terminate() == 0
        counts = Counter(await all_stored(jetstream.url))
        assert not [key for key, seen in counts.items() if seen > 1], "duplicates stored"
        assert counts == Counter((r.sender, r.request_id) for r in registrations)
    finally:
        runtime.close()
    assert "Traceback" not in runtime.log_text()


@pytest.mark.parametrize("provider", ["file", "puppet"])
async def test_mutual_tls_with_file_and_puppet_providers(
    provider: str, nats_server_factory: Callable[..., NatsServer], tmp_path: Path
) -> None:
    pki = make_pki(tmp_path / "pki")
    server = nats_server_factory(jetstream=True, extra_config=pki.nats_server_tls_block(verify_clients=True))
    if provider == "file":
        security = (
            "plugin.security.provider = file\n"
            f"plugin.security.file.certificate = {pki.client_cert}\n"
            f"plugin.security.file.key = {pki.client_key}\n"
            f"plugin.security.file.ca = {pki.ca}\n"
        )
    else:
        ssldir = pki.puppet_ssldir(tmp_path / "ssl")
        security = f"plugin.security.provider = puppet\nplugin.choria.ssldir = {ssldir}\n"
    config = tmp_path / "broker.conf"
    config.write_text(
        broker_conf(
            middleware=f"tls://{server.address}",
            identity=pki.client_name,
            adapters={"node_data": adapter(server, **{"stream.servers": f"tls://{server.address}"})},
            extra=security,
        )
    )
    import ssl

    context = ssl.create_default_context(cafile=str(pki.ca))
    context.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    await create_stream(server, tls=context)
    runtime = RuntimeProcess(config, log_path=tmp_path / "runtime.log", args=())
    try:
        await subscribed(runtime, 2)
        registrations = list(fleet(20))
        nc = await nats.connect(f"tls://{server.address}", tls=context)
        for registration in registrations:
            await nc.publish(REGISTRATION_SUBJECT, registration.payload)
        await nc.flush()
        js = nc.jetstream()

        async def stored() -> bool:
            return await stream_count(js, STREAM) == len(registrations)

        await wait_until(stored, 30, "messages over TLS")
        await nc.close()
        assert runtime.terminate() == 0
    finally:
        runtime.close()


async def test_wrong_ca_fails_with_a_clear_error(
    nats_server_factory: Callable[..., NatsServer], tmp_path: Path
) -> None:
    pki = make_pki(tmp_path / "pki")
    other = make_pki(tmp_path / "other-pki")
    server = nats_server_factory(jetstream=True, extra_config=pki.nats_server_tls_block(verify_clients=True))
    config = tmp_path / "broker.conf"
    config.write_text(
        broker_conf(
            middleware=f"tls://{server.address}",
            adapters={"node_data": adapter(server, **{"stream.servers": f"tls://{server.address}"})},
            extra=(
                "plugin.security.provider = file\n"
                f"plugin.security.file.certificate = {pki.client_cert}\n"
                f"plugin.security.file.key = {pki.client_key}\n"
                f"plugin.security.file.ca = {other.ca}\n"
            ),
        )
    )
    runtime = RuntimeProcess(config, log_path=tmp_path / "runtime.log", args=())
    try:

        async def complained() -> bool:
            return "TLS certificate verification failed" in runtime.log_text()

        await wait_until(complained, 30, "a TLS verification error in the log")
        assert runtime.process.poll() is None, "a connection failure must not stop the process"
        assert runtime.terminate() == 0
    finally:
        runtime.close()
    assert "Traceback" not in runtime.log_text()


async def test_an_adapter_that_cannot_connect_does_not_stop_the_others(
    servers: tuple[NatsServer, NatsServer], tmp_path: Path
) -> None:
    choria, jetstream = servers
    dead = f"127.0.0.1:{free_port()}"
    config = tmp_path / "broker.conf"
    config.write_text(
        broker_conf(
            middleware=choria.address,
            adapters={
                # listed first: in the Go broker a stalled adapter holds up every adapter after it
                "broken": adapter(jetstream, **{"stream.servers": dead, "ingest.topic": "broken.>"}),
                "node_data": adapter(jetstream),
            },
        )
    )
    runtime = RuntimeProcess(config, log_path=tmp_path / "runtime.log")
    try:
        await subscribed(runtime, 2)
        # no stream yet: the start-up check tells the operator how to create one
        await wait_until(logged(runtime, "No JetStream stream captures choria.node_metadata."), 20, "hint")
        assert "choria-broker-adapters streams setup --config" in runtime.log_text()
        await create_stream(jetstream)
        registrations = list(fleet(50))
        await publish_paced(choria.url, REGISTRATION_SUBJECT, [r.payload for r in registrations])
        await wait_stored(jetstream.url, len(registrations))
        await wait_until(
            logged(runtime, f"cannot connect to nats://{dead}"), 20, "the broken adapter's retries"
        )
        assert runtime.terminate() == 0
        assert len(await all_stored(jetstream.url)) == len(registrations)
    finally:
        runtime.close()
    log = runtime.log_text()
    assert "adapter=broken side=stream" in log
    assert "Traceback" not in log
