"""adapters.work.WorkQueue and core.adapter_types in process: no servers, no subprocesses."""

from __future__ import annotations

import asyncio

import pytest

from choria_broker_adapters.adapters.work import WorkQueue
from choria_broker_adapters.core.adapter_types import ADAPTER_TYPES, adapter_type, output_protocol, type_names


async def test_offer_never_waits_and_refuses_past_capacity() -> None:
    queue = WorkQueue(3)
    assert [queue.offer(item) for item in ("a", "b", "c", "d")] == [True, True, True, False]  # type: ignore[arg-type]
    assert len(queue) == 3
    assert [await queue.take() for _ in range(3)] == ["a", "b", "c"]
    assert queue.offer("e")  # type: ignore[arg-type]


async def test_take_waits_for_an_item_and_close_ends_it() -> None:
    queue = WorkQueue(2)
    waiting = asyncio.create_task(queue.take())
    await asyncio.sleep(0)
    assert not waiting.done()
    queue.offer("x")  # type: ignore[arg-type]
    assert await asyncio.wait_for(waiting, 1) == "x"
    idle = asyncio.create_task(queue.take())
    await asyncio.sleep(0)
    queue.close()
    assert await asyncio.wait_for(idle, 1) is None


async def test_a_closed_queue_still_hands_out_what_it_holds_and_drain_counts_the_rest() -> None:
    queue = WorkQueue(5)
    for item in "abc":
        queue.offer(item)  # type: ignore[arg-type]
    queue.close()
    assert await queue.take() == "a"
    assert queue.drain_remaining() == 2
    assert await queue.take() is None


@pytest.mark.parametrize(
    ("name", "protocol"),
    [
        ("choria_streams", "choria:adapters:choria_streams:output:1"),
        ("jetstream", "choria:adapters:jetstream:output:1"),
    ],
)
def test_each_registered_type_names_its_protocol_and_loads_its_class(name: str, protocol: str) -> None:
    assert output_protocol(name) == protocol
    implementation = adapter_type(name).load()
    assert implementation.__name__ == "StreamsAdapter"


def test_the_registry_lists_exactly_its_types_and_refuses_others() -> None:
    assert type_names() == sorted(ADAPTER_TYPES) == ["choria_streams", "jetstream"]
    with pytest.raises(ValueError, match="unknown adapter type 'nats_stream'"):
        output_protocol("nats_stream")
    with pytest.raises(KeyError):
        adapter_type("kafka")
