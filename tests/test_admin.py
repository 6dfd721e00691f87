"""jetstream.admin in process against a real nats-server: create, up to date, update in place,
refuse what JetStream cannot change, status."""

from __future__ import annotations

import dataclasses

import nats

from choria_broker_adapters.devtools.natsserver import NatsServer
from choria_broker_adapters.jetstream.admin import (
    apply_stream,
    jetstream_api_level,
    stream_info,
    stream_status,
)
from choria_broker_adapters.jetstream.plan import Action, DesiredStream, for_server

WEEK = 7 * 86400.0


def wanted(**changes: object) -> DesiredStream:
    stream = DesiredStream(
        name="ADMIN_TEST",
        subjects=("admin.test.>",),
        max_age=WEEK,
        storage="file",
        num_replicas=1,
        max_msgs_per_subject=-1,
        duplicate_window=120.0,
        adapters=("nodes",),
    )
    return dataclasses.replace(stream, **changes)  # type: ignore[arg-type]


async def test_setup_creates_then_finds_it_up_to_date_then_updates_and_refuses(
    jetstream_server: NatsServer,
) -> None:
    nc = await nats.connect(jetstream_server.url)
    try:
        level = await jetstream_api_level(nc)
        assert level is not None and level >= 1
        stream = for_server(wanted(), level)

        dry = await apply_stream(nc, stream, dry_run=True)
        assert (dry.change.action, dry.ok) == (Action.CREATE, True)
        assert await stream_info(nc, "ADMIN_TEST") is None  # a dry run changes nothing

        created = await apply_stream(nc, stream)
        assert (created.change.action, created.ok) == (Action.CREATE, True)
        assert (await stream_info(nc, "ADMIN_TEST"))["config"]["subjects"] == ["admin.test.>"]  # type: ignore[index]

        again = await apply_stream(nc, stream)
        assert again.change.action is Action.UP_TO_DATE

        longer = for_server(wanted(max_age=2 * WEEK), level)
        updated = await apply_stream(nc, longer)
        assert (updated.change.action, updated.ok) == (Action.UPDATE, True)
        info = await stream_info(nc, "ADMIN_TEST")
        assert info is not None and info["config"]["max_age"] == int(2 * WEEK * 1e9)

        refused = await apply_stream(nc, for_server(wanted(max_age=2 * WEEK, storage="memory"), level))
        assert (refused.change.action, refused.ok) == (Action.REFUSE, False)
        info = await stream_info(nc, "ADMIN_TEST")
        assert info is not None and info["config"]["storage"] == "file"  # nothing was changed

        await nc.publish("admin.test.node1", b"x")
        await nc.flush()
        status = await stream_status(nc, "ADMIN_TEST")
        assert status is not None and status.name == "ADMIN_TEST"
        assert await stream_status(nc, "NO_SUCH_STREAM") is None
    finally:
        await nc.close()
