"""The nats-server fixture itself: JetStream works, restarts keep the store."""

from __future__ import annotations

import nats
import pytest
from nats.errors import NoRespondersError
from nats.js.errors import ServiceUnavailableError

from choria_broker_adapters.devtools.natsserver import NatsServer


async def test_jetstream_server_stores_and_survives_restart(jetstream_server: NatsServer) -> None:
    nc = await nats.connect(jetstream_server.url)
    js = nc.jetstream()
    await js.add_stream(name="FIXTURE", subjects=["fixture.>"])
    ack = await js.publish("fixture.one", b"hello")
    assert ack.seq == 1
    await nc.close()

    jetstream_server.kill()
    assert not jetstream_server.running
    jetstream_server.start()

    nc = await nats.connect(jetstream_server.url)
    js = nc.jetstream()
    info = await js.stream_info("FIXTURE")
    assert info.state.messages == 1
    await nc.close()


async def test_core_server_has_no_jetstream(core_nats_server: NatsServer) -> None:
    nc = await nats.connect(core_nats_server.url)
    try:
        with pytest.raises((NoRespondersError, ServiceUnavailableError)):
            await nc.jetstream().account_info()
    finally:
        await nc.close()
