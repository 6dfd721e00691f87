"""AckedPublisher and helpers: the ack classification table, then real nats-server behaviour."""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import signal
from collections.abc import AsyncIterator, Callable

import nats
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig

from choria_broker_adapters.devtools.natsserver import NatsServer
from choria_broker_adapters.jetstream.publisher import AckedPublisher, backoff_delay, stream_for_subject
from choria_broker_adapters.jetstream.replies import (
    PublishOutcome,
    PublishResult,
    interpret_ack,
    no_stream_reason,
)
from tests.runtime_support import wait_until

_stream_numbers = itertools.count(1)

# ---------------------------------------------------------------------------------------------
# pure logic


@pytest.mark.parametrize(
    ("data", "headers", "stored", "duplicate", "seq", "reason_contains"),
    [
        (b'{"stream":"S","seq":7}', None, True, False, 7, None),
        (b'{"stream":"S","seq":7,"duplicate":true}', None, True, True, 7, None),
        (b'{"stream":"S","domain":"hub","seq":1}', {}, True, False, 1, None),
        (b"", {"Status": "503"}, False, False, None, "no JetStream stream captures a.b"),
        (b"", {"Status": "503"}, False, False, None, "choria-broker-adapters streams setup"),
        (b"", {"Status": "408", "Description": "Request Timeout"}, False, False, None, "408 Request Timeout"),
        (
            b'{"error":{"code":503,"err_code":10039,"description":"jetstream not enabled"}}',
            None,
            False,
            False,
            None,
            "JetStream error 503/10039: jetstream not enabled",
        ),
        (
            b'{"error":{"code":400,"description":"no stream matches subject"}}',
            None,
            False,
            False,
            None,
            "no JetStream stream captures a.b",
        ),
        (b'{"error":"odd"}', None, False, False, None, "JetStream error: odd"),
        (b"", None, False, False, None, "empty reply"),
        (b"not json", None, False, False, None, "unparseable"),
        (b"[1,2]", None, False, False, None, "unexpected"),
        (b'{"seq":3}', None, False, False, None, "names no stream"),
    ],
)
def test_interpret_ack(
    data: bytes,
    headers: dict[str, str] | None,
    stored: bool,
    duplicate: bool,
    seq: int | None,
    reason_contains: str | None,
) -> None:
    verdict = interpret_ack(data, headers, "a.b")
    assert (verdict.stored, verdict.duplicate, verdict.seq) == (stored, duplicate, seq)
    if reason_contains is None:
        assert verdict.reason is None
    else:
        assert verdict.reason is not None and reason_contains in verdict.reason


@pytest.mark.parametrize(
    ("attempt", "initial", "maximum", "low", "high"),
    [
        (1, 0.05, 2.0, 0.025, 0.05),
        (2, 0.05, 2.0, 0.05, 0.1),
        (5, 0.05, 2.0, 0.4, 0.8),
        (10, 0.05, 2.0, 1.0, 2.0),
        (1000, 0.05, 2.0, 1.0, 2.0),
    ],
)
def test_backoff_delay_is_capped_exponential_with_jitter(
    attempt: int, initial: float, maximum: float, low: float, high: float
) -> None:
    rng = random.Random(attempt)
    delays = [backoff_delay(attempt, initial, maximum, rng) for _ in range(200)]
    assert all(low <= delay <= high for delay in delays)
    assert len(set(delays)) > 1  # jittered, not a constant


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_pending": 0},
        {"ack_timeout": 0},
        {"retry_budget": -1},
        {"backoff_initial": 1, "backoff_max": 0.5},
    ],
)
def test_rejects_nonsense_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        AckedPublisher(None, **kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# against a real nats-server


async def connect(server: NatsServer) -> Client:
    # Reconnect forever, quickly: the fault tests restart the server under the client.
    async def expected_while_restarting(error: Exception) -> None:
        pass

    return await nats.connect(
        server.url,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.1,
        connect_timeout=2,
        error_cb=expected_while_restarting,
    )


async def new_stream(js: JetStreamContext, **config: object) -> tuple[str, str]:
    """A uniquely named stream (never re-create a deleted name: docs/jetstream.md, Re-created streams);
    returns (name, prefix)."""
    name = f"TEST{next(_stream_numbers)}"
    prefix = name.lower()
    await js.add_stream(name=name, subjects=[f"{prefix}.>"], **config)
    return name, prefix


@pytest.fixture
async def nc(jetstream_server: NatsServer) -> AsyncIterator[Client]:
    client = await connect(jetstream_server)
    yield client
    await client.close()


async def stored_msg_ids(js: JetStreamContext, stream: str, subject: str, expected: int) -> list[str]:
    """Every Nats-Msg-Id in the stream, read back with an ephemeral pull consumer."""
    # No acks: the default explicit-ack consumer would stop after max_ack_pending messages.
    consumer = await js.pull_subscribe(
        subject, stream=stream, config=ConsumerConfig(ack_policy=AckPolicy.NONE)
    )
    ids: list[str] = []
    while len(ids) < expected:
        try:
            batch = await consumer.fetch(min(expected - len(ids), 500), timeout=2)
        except nats.errors.TimeoutError:
            break
        ids.extend((msg.headers or {}).get("Nats-Msg-Id", "") for msg in batch)
    await consumer.unsubscribe()
    return ids


def collect() -> tuple[list[PublishResult], Callable[[PublishResult], None]]:
    results: list[PublishResult] = []
    return results, results.append


async def test_every_message_acked_and_stored_once(nc: Client) -> None:
    js = nc.jetstream()
    stream, prefix = await new_stream(js)
    results, on_result = collect()
    publisher = AckedPublisher(nc, max_pending=64, on_result=on_result, name="t")
    await publisher.start()
    total = 2000
    for number in range(total):
        await publisher.publish(f"{prefix}.node{number % 7}", b"x" * 1024, f"id-{number}")
    assert await publisher.flush(10) == 0
    assert (await js.stream_info(stream)).state.messages == total
    assert (publisher.acked, publisher.duplicates, publisher.dropped) == (total, 0, 0)
    assert {result.outcome for result in results} == {PublishOutcome.ACKED}
    assert sorted(result.seq for result in results) == list(range(1, total + 1))
    assert sorted(result.msg_id for result in results) == sorted(f"id-{n}" for n in range(total))
    await publisher.close()


async def test_same_msg_id_within_duplicate_window_is_stored_once(nc: Client) -> None:
    js = nc.jetstream()
    stream, prefix = await new_stream(js, duplicate_window=60)
    results, on_result = collect()
    publisher = AckedPublisher(nc, on_result=on_result)
    await publisher.start()
    for _ in range(3):
        await publisher.publish(f"{prefix}.a", b"same", "sender-request-1")
        assert await publisher.flush(5) == 0
    await publisher.publish(f"{prefix}.a", b"other", "sender-request-2")
    assert await publisher.flush(5) == 0
    assert [result.outcome for result in results] == [
        PublishOutcome.ACKED,
        PublishOutcome.DUPLICATE,
        PublishOutcome.DUPLICATE,
        PublishOutcome.ACKED,
    ]
    assert all(result.stored for result in results)
    assert (await js.stream_info(stream)).state.messages == 2
    await publisher.close()


async def test_in_flight_never_exceeds_max_pending(nc: Client) -> None:
    js = nc.jetstream()
    stream, prefix = await new_stream(js)
    window = 8
    observed: list[int] = []
    publisher = AckedPublisher(
        nc, max_pending=window, on_result=lambda _r: observed.append(publisher.in_flight)
    )
    await publisher.start()
    for number in range(500):
        await publisher.publish(f"{prefix}.a", b"x", f"m{number}")
        observed.append(publisher.in_flight)
    assert await publisher.flush(10) == 0
    assert max(observed) == window  # the window filled (the cap was exercised) and never overflowed
    assert (await js.stream_info(stream)).state.messages == 500
    await publisher.close()


async def test_subject_without_stream_is_dropped_with_a_clear_reason(nc: Client) -> None:
    js = nc.jetstream()
    await new_stream(js)
    results, on_result = collect()
    publisher = AckedPublisher(
        nc, retry_budget=0.4, backoff_initial=0.02, backoff_max=0.1, on_result=on_result
    )
    await publisher.start()
    await publisher.publish("nostream.web1.example.net", b"x", "m1")
    assert await publisher.flush(5) == 0
    [result] = results
    assert result.outcome is PublishOutcome.DROPPED
    assert result.attempts > 1  # it was retried before giving up
    assert result.reason is not None
    assert no_stream_reason("nostream.web1.example.net") in result.reason
    assert "create one with `choria-broker-adapters streams setup`" in result.reason
    assert (publisher.dropped, publisher.retries) == (1, result.attempts - 1)
    await publisher.close()


async def test_flush_timeout_returns_unconfirmed_count_and_close_abandons_them(nc: Client) -> None:
    results, on_result = collect()
    publisher = AckedPublisher(nc, retry_budget=30, on_result=on_result)
    await publisher.start()
    for number in range(5):
        await publisher.publish("nostream.x", b"x", f"m{number}")
    assert await publisher.flush(0.3) == 5
    await publisher.close()
    assert publisher.abandoned == 5
    assert results == []
    with pytest.raises(RuntimeError, match="closed"):
        await publisher.publish("nostream.x", b"x", "late")


async def test_stream_for_subject(nc: Client) -> None:
    js = nc.jetstream()
    stream, prefix = await new_stream(js)
    assert await stream_for_subject(js, f"{prefix}.web1.example.net") == stream
    assert await stream_for_subject(js, "elsewhere.web1") is None


@pytest.mark.slow
async def test_jetstream_killed_and_restarted_mid_flow_stores_everything_exactly_once(
    jetstream_server: NatsServer,
) -> None:
    client = await connect(jetstream_server)
    js = client.jetstream()
    stream, prefix = await new_stream(js, duplicate_window=120)
    total = 3000
    publisher = AckedPublisher(
        client, max_pending=256, ack_timeout=1.0, retry_budget=60, backoff_initial=0.05, backoff_max=0.5
    )
    await publisher.start()

    async def paced_publishing() -> None:
        for number in range(total):
            await publisher.publish(f"{prefix}.n{number % 10}", b"y" * 512, f"kill-{number}")
            if number % 20 == 0:
                await asyncio.sleep(0.005)

    producer = asyncio.create_task(paced_publishing())

    async def a_third_acked() -> bool:
        return publisher.acked >= total // 3

    await wait_until(a_third_acked, 30, "a third of the messages acknowledged", interval=0.01)
    await asyncio.to_thread(jetstream_server.kill)
    await asyncio.sleep(1.0)
    assert not producer.done()  # the fault really happened mid-flow
    await asyncio.to_thread(jetstream_server.start)
    await asyncio.wait_for(producer, 60)
    assert await publisher.flush(60) == 0
    assert publisher.dropped == 0
    assert publisher.retries > 0  # messages in flight at the kill were sent again
    assert publisher.acked + publisher.duplicates == total
    assert (await js.stream_info(stream)).state.messages == total
    ids = await stored_msg_ids(js, stream, f"{prefix}.>", total)
    assert sorted(ids) == sorted(f"kill-{number}" for number in range(total))
    await publisher.close()
    await client.close()


@pytest.mark.slow
async def test_outage_longer_than_budget_drops_then_recovers(jetstream_server: NatsServer) -> None:
    client = await connect(jetstream_server)
    js = client.jetstream()
    stream, prefix = await new_stream(js)
    results, on_result = collect()
    publisher = AckedPublisher(
        client, ack_timeout=0.3, retry_budget=0.8, backoff_initial=0.05, backoff_max=0.2, on_result=on_result
    )
    await publisher.start()
    await asyncio.to_thread(jetstream_server.stop)
    for number in range(10):
        await publisher.publish(f"{prefix}.a", b"x", f"early-{number}")
    assert await publisher.flush(5) == 0
    assert [result.outcome for result in results] == [PublishOutcome.DROPPED] * 10
    assert all(result.reason for result in results)
    await asyncio.to_thread(jetstream_server.start)
    for _ in range(100):  # wait for the client's own reconnect
        if client.is_connected:
            break
        await asyncio.sleep(0.05)
    for number in range(10):
        await publisher.publish(f"{prefix}.a", b"x", f"late-{number}")
    assert await publisher.flush(5) == 0
    assert publisher.acked == 10
    assert (await js.stream_info(stream)).state.messages == 10
    await publisher.close()
    await client.close()


async def test_frozen_jetstream_given_up_then_late_ack_or_uncertain_drop(
    jetstream_server: NatsServer,
) -> None:
    """SIGSTOP JetStream past the budget: acks within the linger are stored (late), the rest are
    DROPPED as uncertain, and JetStream holds them all: the drop really is uncertain."""
    client = await connect(jetstream_server)
    js = client.jetstream()
    stream, prefix = await new_stream(js)
    results, on_result = collect()
    assert jetstream_server.pid is not None
    publishers = {
        linger: AckedPublisher(
            client,
            ack_timeout=0.3,
            retry_budget=0.8,
            backoff_initial=0.05,
            backoff_max=0.2,
            on_result=on_result,
            late_ack_linger=linger,
            name=f"linger-{linger}",
        )
        for linger in (0.2, 10.0)
    }
    for publisher in publishers.values():
        await publisher.start()
    os.kill(jetstream_server.pid, signal.SIGSTOP)
    try:
        for linger, publisher in publishers.items():
            for number in range(5):
                await publisher.publish(f"{prefix}.a", b"x", f"{linger}-{number}")
        short = publishers[0.2]
        assert await short.flush(10) == 0  # budget spent, then the short linger ended: all settled
        assert publishers[10.0].unconfirmed == 5 and publishers[10.0].in_flight == 0
    finally:
        os.kill(jetstream_server.pid, signal.SIGCONT)
    assert await publishers[10.0].flush(10) == 0
    by_publisher = {
        linger: sorted((r.outcome, r.late, r.uncertain) for r in results if r.msg_id.startswith(f"{linger}-"))
        for linger in publishers
    }
    assert by_publisher[0.2] == [(PublishOutcome.DROPPED, False, True)] * 5
    assert [(late, uncertain) for _, late, uncertain in by_publisher[10.0]] == [(True, False)] * 5
    assert all(outcome is not PublishOutcome.DROPPED for outcome, _, _ in by_publisher[10.0])
    assert publishers[10.0].late_acks == 5 and publishers[0.2].dropped == 5

    async def all_stored() -> bool:
        return (await js.stream_info(stream)).state.messages == 10

    await wait_until(all_stored, 10, "JetStream to store the thawed publishes")
    for publisher in publishers.values():
        await publisher.close()
    await client.close()


async def test_refused_publishes_are_dropped_as_certain_at_once(jetstream_server: NatsServer) -> None:
    """Every attempt refused (not connected): known not stored, no linger."""
    client = await connect(jetstream_server)
    _stream, prefix = await new_stream(client.jetstream())
    results, on_result = collect()
    publisher = AckedPublisher(client, ack_timeout=0.3, retry_budget=0.5, on_result=on_result)
    await publisher.start()
    await asyncio.to_thread(jetstream_server.stop)

    async def disconnected() -> bool:
        return not client.is_connected

    await wait_until(disconnected, 10, "the client to notice the server is gone")
    await publisher.publish(f"{prefix}.a", b"x", "refused")
    assert await publisher.flush(5) == 0
    assert publisher.unconfirmed == 0
    assert [(r.outcome, r.uncertain) for r in results] == [(PublishOutcome.DROPPED, False)]
    await publisher.close()
    await client.close()
