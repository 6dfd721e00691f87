"""What the runtime relies on in nats-py beyond its public API, checked against a real server.

`stop_interest_keep_handling` (the graceful stop of an ingest subscription) uses nats-py's
internal `Client._send_unsubscribe`. nats-py is pinned exactly; these tests fail when an
upgrade renames that call or changes what it does, so the upgrade cannot silently make the
stop lose messages.
"""

from __future__ import annotations

import asyncio
import inspect
from importlib.metadata import version

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

from choria_broker_adapters.adapters.work import stop_interest_keep_handling
from choria_broker_adapters.devtools.natsserver import NatsServer
from tests.runtime_support import wait_until


def test_nats_py_is_the_pinned_version() -> None:
    assert version("nats-py") == "2.16.0"


def test_send_unsubscribe_is_still_a_coroutine_taking_a_subscription_id() -> None:
    method = getattr(Client, "_send_unsubscribe", None)
    assert method is not None, "nats-py no longer has Client._send_unsubscribe"
    assert inspect.iscoroutinefunction(method)
    assert list(inspect.signature(method).parameters)[:2] == ["self", "sid"]


async def test_unsubscribed_member_still_handles_what_it_had_and_gets_nothing_new(
    core_nats_server: NatsServer,
) -> None:
    """After the UNSUB the server routes new messages to the other queue member only, while the
    stopping member still hands every message it had already received to its handler."""
    stopping = await nats.connect(core_nats_server.url)
    staying = await nats.connect(core_nats_server.url)
    producer = await nats.connect(core_nats_server.url)
    release = asyncio.Event()
    handled_by_stopping: list[bytes] = []
    handled_by_staying: list[bytes] = []

    async def slow(msg: Msg) -> None:
        await release.wait()  # keeps the member's messages queued inside nats-py
        handled_by_stopping.append(msg.data)

    async def fast(msg: Msg) -> None:
        handled_by_staying.append(msg.data)

    try:
        subscription = await stopping.subscribe("contract.x", queue="q", cb=slow)
        await stopping.flush()
        for number in range(20):
            await producer.publish("contract.x", f"before-{number}".encode())
        await producer.flush()

        async def all_with_stopping() -> bool:
            return subscription.pending_msgs == 19  # one is in the handler, waiting

        await wait_until(all_with_stopping, 10, "the stopping member to hold the first messages")
        await staying.subscribe("contract.x", queue="q", cb=fast)
        await staying.flush()

        await stop_interest_keep_handling(stopping, subscription)
        # Messages routed around the UNSUB may still reach the stopping member: it must handle them.
        for number in range(30):
            await producer.publish("contract.x", f"around-{number}".encode())
        await producer.flush()
        release.set()

        async def all_handled() -> bool:
            return len(handled_by_stopping) + len(handled_by_staying) == 50

        await wait_until(all_handled, 10, "every message handled by one of the members")
        # The stopping member's interest has ended: everything later goes to the other one.
        stopped_with = len(handled_by_stopping)
        for number in range(30):
            await producer.publish("contract.x", f"after-{number}".encode())
        await producer.flush()

        async def after_with_staying() -> bool:
            return len([data for data in handled_by_staying if data.startswith(b"after-")]) == 30

        await wait_until(after_with_staying, 10, "the staying member to get every later message")
        assert len(handled_by_stopping) == stopped_with
        handled = sorted(handled_by_stopping + handled_by_staying)
        sent = [
            f"{kind}-{n}".encode()
            for kind, count in (("before", 20), ("around", 30), ("after", 30))
            for n in range(count)
        ]
        assert handled == sorted(sent), "a message was lost or handled twice"
        assert {f"before-{n}".encode() for n in range(20)} <= set(handled_by_stopping)
    finally:
        for client in (stopping, staying, producer):
            await client.close()
