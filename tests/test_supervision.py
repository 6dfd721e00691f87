"""Worker supervision: a worker that raises loses nothing uncounted and is restarted.

The adapter runs in-process against real nats-servers; faults come in through its seams (the
connection factory, the decoder, the publisher factory), each on a marked message or call, so
the expected counts are exact.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from choria_broker_adapters.adapters.choria_streams import StreamsAdapter
from choria_broker_adapters.codec.protocol import decode
from choria_broker_adapters.config.settings import load_settings
from choria_broker_adapters.devtools.natsserver import NatsServer
from choria_broker_adapters.jetstream.publisher import AckedPublisher
from choria_broker_adapters.process.stats import Metrics
from choria_broker_adapters.transport.connect import connect_with_backoff
from tests.reliability_support import (
    ADAPTER,
    adapter_keys,
    add_stream,
    ids,
    payloads,
    publish,
    small_fleet,
    small_registration,
    stored_ids,
)
from tests.runtime_support import broker_conf, wait_until

POISON_DECODE = "poison-decode.example.net"
POISON_PUBLISH = "poison-publish.example.net"


class InjectedFault(Exception):
    pass


class FaultyPublisher(AckedPublisher):
    """Raises, as a bug would, when asked to publish the marked message (before taking it)."""

    faults = 0

    async def publish(self, subject: str, body: bytes, msg_id: str) -> None:
        if POISON_PUBLISH in msg_id:
            FaultyPublisher.faults += 1
            raise InjectedFault("publisher fault on the marked message")
        await super().publish(subject, body, msg_id)


@pytest.fixture
def servers(nats_server_factory: Callable[..., NatsServer]) -> tuple[NatsServer, NatsServer]:
    return nats_server_factory(jetstream=False), nats_server_factory(jetstream=True)


async def test_failing_workers_count_the_message_they_held_and_restart(
    servers: tuple[NatsServer, NatsServer], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    choria, jetstream = servers
    await add_stream(jetstream.url, "SUPERVISED")
    config = tmp_path / "broker.conf"
    config.write_text(
        broker_conf(
            middleware=choria.address,
            adapters={ADAPTER: adapter_keys(jetstream.address, ingest__workers=2, stream__workers=2)},
        )
    )
    settings = load_settings(config, environ={})
    connect_faults: list[str] = []

    async def faulty_connect(options: dict[str, Any], **kwargs: Any) -> Any:
        # The first connection of ingest worker 0 and of stream worker 0 fails with a bug.
        name = options["name"]
        first_of_worker_0 = name.endswith(f"{ADAPTER}.0") or name.startswith(f"{ADAPTER}_0-")
        if first_of_worker_0 and name not in connect_faults:
            connect_faults.append(name)
            raise InjectedFault(f"connection factory fault for {name}")
        return await connect_with_backoff(options, **kwargs)

    decode_faults: list[bytes] = []

    def faulty_decode(data: bytes, **kwargs: Any) -> Any:
        envelope = decode(data, **kwargs)
        if envelope.sender == POISON_DECODE:
            decode_faults.append(data)
            raise InjectedFault("decoder fault on the marked message")
        return envelope

    FaultyPublisher.faults = 0
    metrics = Metrics(settings.identity)
    adapter = StreamsAdapter(
        settings.adapters[ADAPTER],
        settings,
        metrics,
        disable_tls=True,
        connect=faulty_connect,
        decode_message=faulty_decode,
        publisher_factory=FaultyPublisher,
    )
    caplog.set_level(logging.INFO, logger="choria_broker_adapters")
    await adapter.start()
    try:

        async def all_running() -> bool:
            state = adapter.state()
            return state.ingest_connected == 2 and state.stream_connected == 2

        await wait_until(all_running, 30, "every worker running after its restart")
        assert len(connect_faults) == 2
        assert adapter.state().counts["restarts_ingest"] == 1
        assert adapter.state().counts["restarts_stream"] == 1

        good = small_fleet(50, tag="supervised")
        poison = [small_registration(POISON_DECODE, "d" * 32), small_registration(POISON_PUBLISH, "p" * 32)]
        await publish(choria.url, payloads([*good[:25], *poison, *good[25:]]))

        async def settled() -> bool:
            state = adapter.state()
            counts = state.counts
            return (
                counts["stored"] == len(good)
                and counts["dropped_internal"] == 2
                and counts["restarts_stream"] == 2
                and state.stream_connected == 2
                and state.in_flight == 0
            )

        await wait_until(settled, 30, "the good messages stored, the marked ones counted")
    finally:
        await adapter.stop()

    counts = adapter.state().counts
    assert len(decode_faults) == 1 and FaultyPublisher.faults == 1, "each fault hit exactly once"
    # The decoder fault happens before a message counts as received, the publisher's after.
    assert counts["received"] == len(good) + 1
    assert counts["stored"] == len(good)
    assert {key: value for key, value in counts.items() if key.startswith("dropped_") and value} == {
        "dropped_internal": 2
    }
    assert counts["restarts_ingest"] == 1 and counts["restarts_stream"] == 2
    stored = await stored_ids(jetstream.url, "SUPERVISED")
    assert sorted(stored) == sorted(ids(good))

    text = metrics.exposition().decode()
    labels = f'identity="{settings.identity}",name="{ADAPTER}"'
    assert f'choria_adapter_worker_restarts{{{labels},side="ingest"}} 1.0' in text
    assert f'choria_adapter_worker_restarts{{{labels},side="stream"}} 2.0' in text
    assert f'choria_adapter_dropped_msgs{{{labels},reason="internal"}} 2.0' in text
    log = caplog.text
    assert log.count("failed (InjectedFault: connection factory fault") == 2
    assert "Internal error handling a message on the ingest side, discarding it: InjectedFault" in log


async def test_status_reports_a_failed_worker_as_not_connected(
    servers: tuple[NatsServer, NatsServer], tmp_path: Path
) -> None:
    """A stream worker whose connection factory keeps failing is never reported connected."""
    choria, jetstream = servers
    config = tmp_path / "broker.conf"
    config.write_text(
        broker_conf(
            middleware=choria.address,
            adapters={ADAPTER: adapter_keys(jetstream.address, ingest__workers=1, stream__workers=1)},
        )
    )
    settings = load_settings(config, environ={})

    async def broken_connect(options: dict[str, Any], **kwargs: Any) -> Any:
        if options["name"].startswith(f"{ADAPTER}_0-"):
            raise InjectedFault("always")
        return await connect_with_backoff(options, **kwargs)

    adapter = StreamsAdapter(
        settings.adapters[ADAPTER],
        settings,
        Metrics(settings.identity),
        disable_tls=True,
        connect=broken_connect,
    )
    await adapter.start()
    try:

        async def restarted_twice() -> bool:
            return adapter.state().counts["restarts_stream"] == 2 and adapter.state().ingest_connected == 1

        await wait_until(restarted_twice, 30, "two restarts of the failing stream worker")
        assert adapter.state().stream_connected == 0
    finally:
        await adapter.stop(grace=1)
