"""BatchPublisher (fast-ingest batches) against real nats-servers: storage, faults, fallback.

Every test counts exactly: what the test published is stored once (read back from the
stream) and reported once through the callbacks, or reported dropped with a reason.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig

from choria_broker_adapters.devtools.natsserver import NatsServer
from choria_broker_adapters.jetstream.batch_publisher import BatchPublisher
from choria_broker_adapters.jetstream.batching import PublishMode, choose_publish_mode, requested_flow
from choria_broker_adapters.jetstream.replies import PublishOutcome, PublishResult
from tests.reliability_support import adapter_keys, add_stream, payloads, small_fleet, start_runtime
from tests.reliability_support import publish as reliability_publish
from tests.runtime_support import wait_until


async def until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    async def check() -> bool:
        return condition()

    await wait_until(check, timeout, what, interval=0.02)


BODY = b"x" * 1024

# ---------------------------------------------------------------------------------------------
# pure logic


@pytest.mark.parametrize(
    ("setting", "allows", "level", "mode", "why"),
    [
        ("acked", True, 5, PublishMode.ACKED, "stream.publish = acked"),
        ("batched", False, 1, PublishMode.BATCHED, "falls back"),
        ("auto", True, 5, PublishMode.BATCHED, "allow fast-ingest"),
        ("auto", True, 4, PublishMode.BATCHED, "allow fast-ingest"),
        ("auto", False, 5, PublishMode.ACKED, "does not allow batched"),
        ("auto", None, 5, PublishMode.ACKED, "could not learn"),
        ("auto", True, None, PublishMode.ACKED, "could not learn"),
        ("auto", False, 3, PublishMode.ACKED, "API level 3 predates"),
    ],
)
def test_publish_mode_choice(
    setting: str, allows: bool | None, level: int | None, mode: str, why: str
) -> None:
    chosen, reason = choose_publish_mode(setting, stream_allows_batches=allows, server_api_level=level)
    assert chosen is mode
    assert why in reason


@pytest.mark.parametrize(("max_pending", "flow"), [(1, 1), (4, 1), (512, 128), (2000, 500), (65536, 500)])
def test_requested_flow_leaves_room_for_several_windows(max_pending: int, flow: int) -> None:
    assert requested_flow(max_pending) == flow


# ---------------------------------------------------------------------------------------------
# real servers


@dataclass
class Outcomes:
    """What the publisher reported, per Nats-Msg-Id."""

    first_attempt: int = 0
    results: list[PublishResult] = field(default_factory=list)

    def on_acked(self) -> None:
        self.first_attempt += 1

    @property
    def stored(self) -> int:
        return self.first_attempt + sum(1 for r in self.results if r.stored)

    @property
    def dropped(self) -> list[PublishResult]:
        return [r for r in self.results if r.outcome is PublishOutcome.DROPPED]

    def settled(self) -> int:
        return self.first_attempt + len(self.results)


async def connect(url: str) -> Client:
    return await nats.connect(url, max_reconnect_attempts=-1, reconnect_time_wait=0.1, connect_timeout=2)


async def create_stream(nc: Client, name: str, subjects: list[str], *, batched: bool = True) -> None:
    await nc.jetstream().add_stream(name=name, subjects=subjects, allow_batched=batched or None)


async def stored_msg_ids(url: str, stream: str, subject: str) -> list[str]:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        total = (await js.stream_info(stream)).state.messages
        consumer = await js.pull_subscribe(
            subject, stream=stream, config=ConsumerConfig(ack_policy=AckPolicy.NONE)
        )
        found: list[str] = []
        while len(found) < total:
            for msg in await consumer.fetch(batch=2000, timeout=10):
                found.append((msg.headers or {}).get("Nats-Msg-Id", ""))
        return found
    finally:
        await nc.close()


@pytest.fixture
async def server(jetstream_server: NatsServer) -> AsyncIterator[NatsServer]:
    yield jetstream_server


def make_publisher(nc: Client, outcomes: Outcomes, **options: object) -> BatchPublisher:
    settings: dict[str, object] = {"max_pending": 2000, "ack_timeout": 5.0, "retry_budget": 30.0}
    settings.update(options)
    return BatchPublisher(
        nc,
        on_acked=outcomes.on_acked,
        on_result=outcomes.results.append,
        name="test",
        **settings,  # type: ignore[arg-type]
    )


async def test_every_message_is_stored_once_and_confirmed_by_flow_acks(server: NatsServer) -> None:
    nc = await connect(server.url)
    await create_stream(nc, "BP_PLAIN", ["bp.>"])
    outcomes = Outcomes()
    publisher = make_publisher(nc, outcomes)
    await publisher.start()
    count = 20_000
    for index in range(count):
        await publisher.publish(f"bp.n{index % 50}", BODY, f"plain-{index}")
    assert await publisher.flush(20) == 0
    stored = await stored_msg_ids(server.url, "BP_PLAIN", "bp.>")
    await publisher.close()
    await nc.close()

    assert publisher.mode is PublishMode.BATCHED
    assert outcomes.first_attempt == count and outcomes.results == []
    assert sorted(stored) == sorted(f"plain-{index}" for index in range(count))
    assert publisher.batch_failures == 0
    assert publisher.in_flight == 0


async def test_sigkill_and_restart_mid_batch_resumes_with_exact_final_count(
    nats_server_factory: Callable[..., NatsServer],
) -> None:
    server = nats_server_factory(jetstream=True)
    nc = await connect(server.url)
    await create_stream(nc, "BP_KILL", ["bp.>"])
    outcomes = Outcomes()
    publisher = make_publisher(nc, outcomes, ack_timeout=2.0)
    await publisher.start()
    count, kill_at = 60_000, 20_000
    killed = {}
    for index in range(count):
        if index == kill_at:
            killed["confirmed"] = outcomes.stored
            await asyncio.to_thread(server.kill)
            await asyncio.to_thread(server.start)
        await publisher.publish(f"bp.n{index % 50}", BODY, f"kill-{index}")
    assert await publisher.flush(40) == 0
    stored = await stored_msg_ids(server.url, "BP_KILL", "bp.>")
    await publisher.close()
    await nc.close()
    print(
        f"\nSIGKILL at {kill_at}: {killed['confirmed']} confirmed before, failures {publisher.batch_failures}"
    )

    assert killed["confirmed"] < kill_at, "every message was confirmed before the kill: nothing was mid-batch"
    assert publisher.batch_failures >= 1, "the kill did not interrupt a batch"
    repeated = [msg_id for msg_id, times in Counter(stored).items() if times > 1]
    assert not repeated, f"stored twice: {repeated[:3]}"
    assert len(stored) == count
    assert set(stored) == {f"kill-{index}" for index in range(count)}
    assert outcomes.stored == count and not outcomes.dropped


async def test_a_gap_ends_the_batch_and_the_held_messages_are_resent(server: NatsServer) -> None:
    nc = await connect(server.url)
    await create_stream(nc, "BP_GAP", ["bp.>"])
    outcomes = Outcomes()
    # A long pause: the batch must still be open when the gap is made, however slow the machine.
    publisher = make_publisher(nc, outcomes, max_pending=400, pause=5.0)
    await publisher.start()
    for index in range(1000):
        await publisher.publish("bp.gap", BODY, f"gap-{index}")
    batch = publisher._batch
    assert batch is not None and batch.state.value == "open", "no batch open to make a gap in"
    # On the publisher's own connection, so it lands right after message 1000 of the batch: a
    # sequence far ahead, which JetStream (gap=fail) answers by ending the batch. The messages
    # that follow at once reach the dead batch and must be sent again in a new one.
    await nc.publish("bp.gap", b"intruder", reply=f"{batch.reply_prefix}{batch.base + batch.sent + 50}.1.$FI")
    for index in range(1000, 2000):
        await publisher.publish("bp.gap", BODY, f"gap-{index}")
    assert await publisher.flush(20) == 0
    stored = await stored_msg_ids(server.url, "BP_GAP", "bp.>")
    await publisher.close()
    await nc.close()

    assert publisher.batch_failures == 1
    assert "JetStream missed batch messages" in (publisher.last_failure or ""), publisher.last_failure
    assert sorted(stored) == sorted(f"gap-{index}" for index in range(2000))
    assert outcomes.stored == 2000 and not outcomes.dropped
    resent = [r for r in outcomes.results if r.attempts == 2]
    assert resent, "no message was resent after the gap"


async def test_a_pause_ends_the_batch_so_held_messages_are_confirmed_and_idle_batches_never_expire(
    server: NatsServer,
) -> None:
    nc = await connect(server.url)
    await create_stream(nc, "BP_IDLE", ["bp.>"])
    outcomes = Outcomes()
    # flow 100: ten messages are never covered by a flow ack, only by ending the batch.
    publisher = make_publisher(nc, outcomes, max_pending=400, pause=0.2)
    await publisher.start()
    for index in range(10):
        await publisher.publish("bp.idle", BODY, f"idle-{index}")
    started = time.monotonic()
    await until(lambda: publisher.in_flight == 0, 5, "the paused batch to be confirmed")
    confirmed_after = time.monotonic() - started
    assert publisher._batch is None
    # Longer than JetStream keeps an idle batch: the next message must not meet a forgotten one.
    await asyncio.sleep(10.5)
    for index in range(10, 20):
        await publisher.publish("bp.idle", BODY, f"idle-{index}")
    assert await publisher.flush(5) == 0
    stored = await stored_msg_ids(server.url, "BP_IDLE", "bp.>")
    await publisher.close()
    await nc.close()

    assert confirmed_after < 2
    assert publisher.batch_failures == 0
    assert publisher.batches == 2
    assert sorted(stored) == sorted(f"idle-{index}" for index in range(20))
    assert outcomes.first_attempt == 20


async def test_a_ping_finds_a_batch_the_server_forgot_and_the_messages_are_resent(server: NatsServer) -> None:
    nc = await connect(server.url)
    await create_stream(nc, "BP_PING", ["bp.>"])
    outcomes = Outcomes()
    # No pause commit and a long ack timeout: the ping (after half of it) is what notices
    # that JetStream dropped the idle batch (after 10 s).
    publisher = make_publisher(nc, outcomes, max_pending=400, pause=60, ack_timeout=22, retry_budget=60)
    await publisher.start()
    for index in range(5):
        await publisher.publish("bp.ping", BODY, f"ping-{index}")
    await until(lambda: publisher.batch_failures >= 1, 20, "the ping to find the forgotten batch")
    assert await publisher.flush(5) == 0
    stored = await stored_msg_ids(server.url, "BP_PING", "bp.>")
    await publisher.close()
    await nc.close()

    assert publisher.batch_failures == 1
    assert "10208" in (publisher.last_failure or ""), publisher.last_failure
    assert sorted(stored) == sorted(f"ping-{index}" for index in range(5))
    assert [r.attempts for r in outcomes.results] == [2] * 5
    assert outcomes.first_attempt == 0


async def test_a_stream_without_allow_batched_falls_back_to_per_message_acks(server: NatsServer) -> None:
    nc = await connect(server.url)
    await create_stream(nc, "BP_OFF", ["bp.>"], batched=False)
    outcomes = Outcomes()
    publisher = make_publisher(nc, outcomes)
    await publisher.start()
    for index in range(3000):
        await publisher.publish("bp.off", BODY, f"off-{index}")
    assert await publisher.flush(20) == 0
    stored = await stored_msg_ids(server.url, "BP_OFF", "bp.>")
    await publisher.close()
    await nc.close()

    assert publisher.mode is PublishMode.ACKED
    assert "does not allow batched publishing (10205)" in (publisher.fallback_reason or "")
    assert sorted(stored) == sorted(f"off-{index}" for index in range(3000))
    assert outcomes.stored == 3000 and not outcomes.dropped


async def test_a_server_that_answers_a_plain_ack_gets_per_message_acks(
    nats_server_factory: Callable[..., NatsServer],
) -> None:
    """What nats-server before 2.14 does: it stores a batch message as an ordinary publish.

    A core NATS responder plays that JetStream: it records each message and answers a PubAck.
    """
    server = nats_server_factory(jetstream=False)
    responder = await nats.connect(server.url)
    received: list[str] = []

    async def old_jetstream(msg: Msg) -> None:
        received.append((msg.headers or {}).get("Nats-Msg-Id", ""))
        await msg.respond(json.dumps({"stream": "OLD", "seq": len(received)}).encode())

    await responder.subscribe("old.>", cb=old_jetstream)
    await responder.flush()
    nc = await connect(server.url)
    outcomes = Outcomes()
    publisher = make_publisher(nc, outcomes)
    await publisher.start()
    for index in range(500):
        await publisher.publish("old.node", BODY, f"old-{index}")
    assert await publisher.flush(10) == 0
    await publisher.close()
    await nc.close()
    await responder.close()

    assert publisher.mode is PublishMode.ACKED
    assert "single publish" in (publisher.fallback_reason or "")
    assert received == [f"old-{index}" for index in range(500)]
    assert outcomes.first_attempt == 500 and outcomes.results == []


async def test_no_stream_for_the_subject_drops_after_the_retry_budget_with_the_reason(
    server: NatsServer,
) -> None:
    nc = await connect(server.url)
    outcomes = Outcomes()
    publisher = make_publisher(nc, outcomes, retry_budget=1.0, ack_timeout=0.5, backoff_max=0.2)
    await publisher.start()
    for index in range(50):
        await publisher.publish("nostream.node", BODY, f"none-{index}")
    assert await publisher.flush(10) == 0
    await publisher.close()
    await nc.close()

    assert len(outcomes.dropped) == 50 and outcomes.stored == 0
    assert publisher.dropped == 50
    assert all("no JetStream stream captures nostream.node" in (r.reason or "") for r in outcomes.dropped)


# ---------------------------------------------------------------------------------------------
# the runtime's choice (stream.publish = auto)


@pytest.mark.parametrize(("allow_batched", "mode"), [(True, "batched"), (False, "acked")])
async def test_auto_chooses_by_the_stream_logs_it_and_shows_it(
    nats_server_factory: Callable[..., NatsServer], tmp_path: Path, allow_batched: bool, mode: str
) -> None:
    choria, jetstream = nats_server_factory(jetstream=False), nats_server_factory(jetstream=True)
    await add_stream(jetstream.url, "AUTO", allow_batched=allow_batched or None)
    runtime = start_runtime(
        tmp_path,
        "auto",
        middleware=choria.address,
        adapter=adapter_keys(jetstream.address, stream__workers=2),
    )
    try:
        await runtime.wait_subscribed(4)
        messages = small_fleet(500, tag="auto")
        await reliability_publish(choria.url, payloads(messages))
        counts = await runtime.wait_settled(30, received=500)
        adapter = await runtime.adapter()
    finally:
        runtime.process.terminate()
    log = runtime.process.log_text()

    assert counts["stored"] == counts["received"] == 500
    assert (adapter["publish_setting"], adapter["publish_mode"]) == ("auto", mode)
    assert adapter[f"{mode}_publishers"] == 2
    expected = (
        "in fast-ingest batches (auto:" if mode == "batched" else "with per-message acknowledgements (auto:"
    )
    assert f"Adapter registration publishes {expected}" in log
    assert "duplicates" in adapter["duplicates_meaning"]


async def test_frozen_jetstream_past_the_budget_late_acks_count_stored_and_the_rest_is_exact(
    nats_server_factory: Callable[..., NatsServer],
) -> None:
    """SIGSTOP: the connection stays up, JetStream answers nothing for longer than the budget.

    Batches given up then are still listened to; what JetStream stores after the thaw is
    reported stored (late), what was never sent is dropped as not stored, and only the rest
    is uncertain. The stream is the oracle for each of the three."""
    server = nats_server_factory(jetstream=True)
    nc = await connect(server.url)
    await create_stream(nc, "BP_FROZEN", ["bp.>"])
    outcomes = Outcomes()
    publisher = make_publisher(nc, outcomes, max_pending=400, ack_timeout=0.5, retry_budget=1.0)
    await publisher.start()
    assert server.pid is not None
    for index in range(200):
        await publisher.publish("bp.frozen", BODY, f"frozen-{index}")
    os.kill(server.pid, signal.SIGSTOP)
    try:
        for index in range(200, 600):
            await publisher.publish("bp.frozen", BODY, f"frozen-{index}")
        await until(lambda: publisher.in_flight == 0, 20, "the budget to run out")
    finally:
        os.kill(server.pid, signal.SIGCONT)
    assert await publisher.flush(20) == 0
    stored = set(await stored_msg_ids(server.url, "BP_FROZEN", "bp.>"))
    await publisher.close()
    await nc.close()

    late = [r.msg_id for r in outcomes.results if r.late]
    not_stored = [r.msg_id for r in outcomes.dropped if not r.uncertain]
    uncertain = [r.msg_id for r in outcomes.dropped if r.uncertain]
    print(f"\nfrozen: late {len(late)}, dropped {len(not_stored)}, uncertain {len(uncertain)}")
    assert late, "nothing was given up and acknowledged late: the freeze proved nothing"
    assert outcomes.settled() == 600
    assert set(late) <= stored
    assert not set(not_stored) & stored, "a message reported not stored is in the stream"
    reported_stored = {f"frozen-{index}" for index in range(600)} - set(not_stored) - set(uncertain)
    assert reported_stored <= stored
    assert publisher.late_acks == len(late)
