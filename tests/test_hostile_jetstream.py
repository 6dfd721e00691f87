"""Permanent JetStream refusals are dropped at once, transient failures retried (issue 12, point 3).

The replies in the table are what nats-server 2.15 answers (captured from a real server:
limits with discard new, max_msg_size, expected-stream and expected-sequence headers, a
sealed stream), plus the transient ones the publisher must keep retrying. The runtime tests
use per-message acknowledgements (`stream.publish = acked`), the publisher this classifier
drives.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import nats
import pytest
from nats.js.api import DiscardPolicy

from choria_broker_adapters.devtools.natsserver import NatsServer
from choria_broker_adapters.jetstream.replies import interpret_ack, permanent_refusal
from tests.reliability_support import (
    Runtime,
    adapter_keys,
    add_stream,
    ids,
    payloads,
    publish,
    small_fleet,
    small_registration,
    start_runtime,
    stored_ids,
)
from tests.runtime_support import wait_until

STREAM = "CHORIA_NODE_DATA"


def api_error(code: int, err_code: int, description: str) -> bytes:
    return b'{"error":{"code":%d,"err_code":%d,"description":"%s"},"stream":"S","seq":0}' % (
        code,
        err_code,
        description.encode(),
    )


@pytest.mark.parametrize(
    ("reply", "headers", "refusal"),
    [
        # permanent
        (api_error(503, 10077, "maximum messages exceeded"), None, "stream_full"),
        (api_error(503, 10077, "maximum bytes exceeded"), None, "stream_full"),
        (api_error(503, 10077, "maximum messages per subject exceeded"), None, "stream_full"),
        (api_error(400, 10054, "message size exceeds maximum allowed"), None, "rejected"),
        (api_error(400, 10060, "expected stream does not match"), None, "rejected"),
        (api_error(400, 10071, "wrong last sequence: 0"), None, "rejected"),
        (api_error(400, 10070, "wrong last msg ID: x"), None, "rejected"),
        (api_error(400, 10109, "invalid operation on sealed stream"), None, "rejected"),
        # transient
        (b"", {"Status": "503"}, None),  # no responders: no stream, or JetStream down
        (b"", {"Status": "408", "Description": "Request Timeout"}, None),
        (api_error(503, 10008, "JetStream system temporarily unavailable"), None, None),
        (api_error(500, 10009, "JetStream cluster can not handle request"), None, None),
        (api_error(503, 10023, "insufficient resources"), None, None),
        (api_error(500, 10047, "insufficient storage resources available"), None, None),
        (api_error(503, 10077, "error opening msg block file"), None, None),  # a store failure, not a limit
        (b'{"error":{"code":400,"description":"no stream matches subject"}}', None, None),
        (b'{"error":{"code":400}}', None, None),
        (b'{"error":"odd"}', None, None),
        (b"not json", None, None),
        (b'{"stream":"S","seq":1}', None, None),  # stored
    ],
)
def test_reply_classification(reply: bytes, headers: dict[str, str] | None, refusal: str | None) -> None:
    verdict = interpret_ack(reply, headers, "a.b")
    assert verdict.refusal == refusal
    if refusal is not None:
        assert not verdict.stored
        assert "not retried" in (verdict.reason or "")


@pytest.mark.parametrize(
    ("error", "refusal"),
    [
        ({"err_code": 10054}, "rejected"),
        ({"code": 400, "err_code": 10077, "description": "Maximum Messages Exceeded"}, "stream_full"),
        ({"code": 503}, None),
        (None, None),
        ("text", None),
    ],
)
def test_permanent_refusal(error: object, refusal: str | None) -> None:
    assert permanent_refusal(error) == refusal


@pytest.fixture
def runtimes() -> Iterator[list[Runtime]]:
    started: list[Runtime] = []
    yield started
    for runtime in started:
        runtime.process.close()
    for runtime in started:
        assert "Traceback" not in runtime.process.log_text(), runtime.process.log_path


async def test_a_full_stream_with_discard_new_drops_at_once_without_retries(
    nats_server_factory: Callable[..., NatsServer], tmp_path: Path, runtimes: list[Runtime]
) -> None:
    capacity, sent = 100, 400
    choria = nats_server_factory(jetstream=False)
    jetstream = nats_server_factory(jetstream=True)
    await add_stream(jetstream.url, STREAM, max_msgs=capacity, discard=DiscardPolicy.NEW)
    runtime = start_runtime(
        tmp_path,
        "full",
        middleware=choria.address,
        # A 30 s budget and a small window: retrying refusals would hold the window for the
        # whole test and push the later messages into queue_full.
        adapter=adapter_keys(
            jetstream.address,
            stream__workers=2,
            stream__max_pending=16,
            stream__retry_budget=30,
            queue_len=50,
        ),
    )
    runtimes.append(runtime)
    await runtime.wait_subscribed(4)
    messages = small_fleet(sent, tag="full")
    started = time.monotonic()
    await publish(choria.url, payloads(messages), rate=2000)

    async def settled() -> bool:
        counts = await runtime.counts()
        return counts["stored"] + counts["dropped_stream_full"] == sent

    await wait_until(settled, 15, "every message stored or dropped as stream_full")
    elapsed = time.monotonic() - started
    counts = await runtime.counts()
    stored = await stored_ids(jetstream.url, STREAM)
    assert counts["stored"] == capacity
    assert counts["dropped_stream_full"] == sent - capacity
    assert counts["dropped_queue_full"] == counts["dropped_publish"] == 0
    assert counts["retries"] == 0
    assert len(stored) == capacity and not [k for k, n in Counter(stored).items() if n > 1]
    assert set(stored) <= ids(messages)
    assert (await runtime.adapter())["in_flight"] == 0
    log = runtime.process.log_text()
    assert "the stream is full and discards new messages; not retried" in log
    # One line for the first refusal, then the limiter's summaries: never one per message.
    assert log.count("Could not publish to JetStream") <= 3
    print(f"\n{sent} sent into a {capacity}-message stream: settled in {elapsed:.2f}s, 0 retries")


async def test_a_message_over_the_stream_max_msg_size_is_rejected_at_once(
    nats_server_factory: Callable[..., NatsServer], tmp_path: Path, runtimes: list[Runtime]
) -> None:
    choria = nats_server_factory(jetstream=False)
    jetstream = nats_server_factory(jetstream=True)
    # Room for the small documents (about 1 KiB) but not for these larger ones.
    await add_stream(jetstream.url, STREAM, max_msg_size=1500)
    runtime = start_runtime(
        tmp_path, "msgsize", middleware=choria.address, adapter=adapter_keys(jetstream.address)
    )
    runtimes.append(runtime)
    await runtime.wait_subscribed(4)
    small = small_fleet(30, tag="s")
    large = [
        small_registration(f"large{i:03d}.example.net", f"{i:032d}", body=json.dumps({"blob": "x" * 2000}))
        for i in range(20)
    ]
    await publish(choria.url, payloads(small + large))

    async def settled() -> bool:
        counts = await runtime.counts()
        return counts["stored"] + counts["dropped_rejected"] == 50

    await wait_until(settled, 10, "every message stored or rejected")
    counts = await runtime.counts()
    assert (counts["stored"], counts["dropped_rejected"], counts["retries"]) == (30, 20, 0)
    assert sorted(await stored_ids(jetstream.url, STREAM)) == sorted(ids(small))
    assert "message size exceeds maximum allowed" in runtime.process.log_text()


async def create_batched_stream(url: str, **limits: object) -> None:
    nc = await nats.connect(url)
    try:
        config = {
            "name": STREAM,
            "subjects": ["choria.node_metadata.>"],
            "retention": "limits",
            "storage": "file",
            "num_replicas": 1,
            "allow_batched": True,
            **limits,
        }
        reply = await nc.request(f"$JS.API.STREAM.CREATE.{STREAM}", json.dumps(config).encode(), timeout=5)
        assert b'"error"' not in reply.data, reply.data
    finally:
        await nc.close()


async def test_a_full_stream_refuses_batched_publishes_at_once_too(
    nats_server_factory: Callable[..., NatsServer], tmp_path: Path, runtimes: list[Runtime]
) -> None:
    """Fast-ingest batches: JetStream names the message it refused; only that one is dropped."""
    capacity, sent = 100, 400
    choria = nats_server_factory(jetstream=False)
    jetstream = nats_server_factory(jetstream=True)
    await create_batched_stream(jetstream.url, max_msgs=capacity, discard="new")
    runtime = start_runtime(
        tmp_path,
        "fullbatch",
        middleware=choria.address,
        adapter=adapter_keys(
            jetstream.address, stream__workers=2, stream__retry_budget=30, stream__publish="batched"
        ),
    )
    runtimes.append(runtime)
    await runtime.wait_subscribed(4)
    messages = small_fleet(sent, tag="fullbatch")
    started = time.monotonic()
    await publish(choria.url, payloads(messages), rate=2000)

    async def settled() -> bool:
        counts = await runtime.counts()
        return counts["stored"] + counts["dropped_stream_full"] == sent

    await wait_until(settled, 15, "every message stored or dropped as stream_full")
    elapsed = time.monotonic() - started
    counts = await runtime.counts()
    stored = await stored_ids(jetstream.url, STREAM)
    assert counts["stored"] == capacity
    assert counts["dropped_stream_full"] == sent - capacity
    assert counts["dropped_publish"] == counts["dropped_unconfirmed"] == counts["dropped_queue_full"] == 0
    assert len(stored) == capacity and set(stored) <= ids(messages)
    assert "batched" in runtime.process.log_text()
    print(f"\n{sent} sent into a {capacity}-message batched stream: settled in {elapsed:.2f}s")


async def test_a_publish_the_server_denies_is_dropped_at_once_as_rejected(
    nats_server_factory: Callable[..., NatsServer], tmp_path: Path, runtimes: list[Runtime]
) -> None:
    """Deny-write: publish permissions refuse some subjects; those are not retried."""
    choria = nats_server_factory(jetstream=False)
    jetstream = nats_server_factory(
        jetstream=True,
        extra_config=(
            "authorization { users = [ {user: adapter, password: s3cret, permissions: "
            '{publish: {deny: ["choria.node_metadata.*.denied.>"]}}} ] }'
        ),
    )
    url = f"nats://adapter:s3cret@{jetstream.address}"
    await add_stream(url, STREAM)
    runtime = start_runtime(
        tmp_path,
        "denied",
        middleware=choria.address,
        adapter=adapter_keys(jetstream.address, stream__publish="acked", stream__retry_budget=30),
        extra="plugin.nats.user = adapter\nplugin.nats.pass = s3cret\n",
    )
    runtimes.append(runtime)
    await runtime.wait_subscribed(4)
    allowed = small_fleet(40, tag="ok")
    denied = [small_registration(f"n{i:04d}.denied.example.net", f"{i:032d}") for i in range(20)]
    await publish(choria.url, payloads(allowed + denied))

    async def settled() -> bool:
        counts = await runtime.counts()
        return counts["stored"] + counts["dropped_rejected"] == 60

    await wait_until(settled, 10, "every message stored or rejected")
    counts = await runtime.counts()
    assert (counts["stored"], counts["dropped_rejected"], counts["retries"]) == (40, 20, 0)
    assert counts["dropped_publish"] == counts["dropped_unconfirmed"] == 0
    assert sorted(await stored_ids(url, STREAM)) == sorted(ids(allowed))
    assert "(permissions); not retried" in runtime.process.log_text()
