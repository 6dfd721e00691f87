"""Reliability under faults, clustering and hostile input (issue 8).

Every test runs real nats-server processes on loopback and the runtime through its CLI,
generates its own load, and checks counts: what went in is either stored exactly once in
JetStream or counted under a named drop reason. Loads are sized for a whole-file run of a
few minutes on two busy cores; each test prints its measured figures (run with -s to see).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import nats
import pytest

from choria_broker_adapters.adapters.counters import DROP_REASONS
from choria_broker_adapters.devtools.natsserver import NatsServer
from tests.reliability_support import (
    ADAPTER,
    Expectation,
    Runtime,
    adapter_keys,
    add_stream,
    cluster_nodes,
    hostile_mix,
    ids,
    memory_kib,
    payloads,
    publish,
    small_fleet,
    small_registration,
    start_runtime,
    stored_documents,
    stored_ids,
    stream_state,
)
from tests.runtime_support import wait_until

pytestmark = pytest.mark.slow

MiB = 1024 * 1024


@pytest.fixture
def servers(nats_server_factory: Callable[..., NatsServer]) -> tuple[NatsServer, NatsServer]:
    """(Choria network: plain core NATS, JetStream server)."""
    return nats_server_factory(jetstream=False), nats_server_factory(jetstream=True)


@pytest.fixture
def runtimes() -> Iterator[list[Runtime]]:
    """Runtimes a test started; any still running afterwards is killed and its log checked."""
    started: list[Runtime] = []
    yield started
    for runtime in started:
        runtime.process.close()
    for runtime in started:
        assert "Traceback" not in runtime.process.log_text(), runtime.process.log_path


# The fault tests run with both publishers (stream.publish); batched needs a stream with allow_batched.
PUBLISH_MODES = pytest.mark.parametrize("publish_mode", ["acked", "batched"])


def stream_options(publish_mode: str) -> dict[str, Any]:
    return {"allow_batched": True} if publish_mode == "batched" else {}


async def wait_publishing(runtime: Runtime, publish_mode: str, workers: int = 4) -> None:
    """Wait until every stream worker publishes the way the test wants (shown in /choria/)."""

    async def chosen() -> bool:
        adapter = await runtime.adapter()
        return adapter["publish_mode"] == publish_mode and adapter[f"{publish_mode}_publishers"] == workers

    await wait_until(chosen, 30, f"{workers} {publish_mode} publishers")


def drops(counts: dict[str, int]) -> dict[str, int]:
    return {reason: counts[f"dropped_{reason}"] for reason in DROP_REASONS if counts[f"dropped_{reason}"]}


def assert_stored_exactly_once(stored: list[tuple[str, str]], expected: set[tuple[str, str]]) -> None:
    repeated = [key for key, times in Counter(stored).items() if times > 1]
    assert not repeated, f"{len(repeated)} messages stored more than once, e.g. {repeated[:3]}"
    missing = expected - set(stored)
    assert not missing, f"{len(missing)} of {len(expected)} messages not stored, e.g. {sorted(missing)[:3]}"
    assert set(stored) == expected


# -- 1. JetStream SIGKILLed and restarted -----------------------------------------------------


@PUBLISH_MODES
async def test_jetstream_sigkill_and_restart_stores_every_message_exactly_once(
    servers: tuple[NatsServer, NatsServer], runtimes: list[Runtime], tmp_path: Path, publish_mode: str
) -> None:
    choria, jetstream = servers
    await add_stream(jetstream.url, "REL_KILL", **stream_options(publish_mode))
    # queue_len holds the ~3 s the publishers cannot drain (2,000 msgs/s) with room to spare.
    runtime = start_runtime(
        tmp_path,
        "runtime",
        middleware=choria.address,
        adapter=adapter_keys(
            jetstream.address, queue_len=20000, stream__ack_timeout="2s", stream__publish=publish_mode
        ),
    )
    runtimes.append(runtime)
    await runtime.wait_subscribed(4)
    await wait_publishing(runtime, publish_mode)
    pid = runtime.pid
    messages = small_fleet(16000, tag="kill")
    outage = {}

    async def kill_and_restart() -> None:
        started = time.monotonic()
        await asyncio.to_thread(jetstream.kill)
        await asyncio.sleep(1.5)
        await asyncio.to_thread(jetstream.start)
        outage["seconds"] = time.monotonic() - started

    elapsed = await publish(choria.url, payloads(messages), rate=2000, at={4000: kill_and_restart})
    counts = await runtime.wait_settled(90)
    stored = await stored_ids(jetstream.url, "REL_KILL")
    info = await stream_state(jetstream.url, "REL_KILL")
    print(
        f"\nJetStream SIGKILL: {len(messages)} sent in {elapsed:.1f}s, outage {outage['seconds']:.1f}s, "
        f"counts {counts}"
    )

    assert runtime.alive() and runtime.pid == pid, "the runtime must ride out the outage without a restart"
    assert counts["received"] == len(messages), "the Choria network stayed up: every message was ingested"
    assert not drops(counts)
    assert counts["retries"] > 0, "the kill did not interrupt publishing: the test proved nothing"
    assert_stored_exactly_once(stored, ids(messages))
    assert info.state.messages == len(messages)


# -- 2. three-node cluster, stream leader killed ------------------------------------------------


@PUBLISH_MODES
async def test_cluster_stream_leader_killed_loses_nothing_and_publishing_resumes(
    nats_server_factory: Callable[..., NatsServer], runtimes: list[Runtime], tmp_path: Path, publish_mode: str
) -> None:
    choria = nats_server_factory(jetstream=False)
    nodes = cluster_nodes(nats_server_factory, 3, name="relc")
    urls = [node.url for node in nodes]
    await add_stream(urls, "REL_R3", num_replicas=3, **stream_options(publish_mode))
    runtime = start_runtime(
        tmp_path,
        "runtime",
        middleware=choria.address,
        # stream.servers lists every node: the client fails over to a live one on its own.
        adapter=adapter_keys(
            ",".join(node.address for node in nodes),
            queue_len=20000,
            stream__ack_timeout="2s",
            stream__publish=publish_mode,
        ),
    )
    runtimes.append(runtime)
    await runtime.wait_subscribed(4)
    await wait_publishing(runtime, publish_mode)
    messages = small_fleet(8000, tag="cluster")
    killed: dict[str, str] = {}

    async def kill_leader() -> None:
        leader = (await stream_state(urls, "REL_R3")).cluster.leader
        node = next(node for node in nodes if node.name == leader)
        killed["name"] = leader
        await asyncio.to_thread(node.kill)

    elapsed = await publish(choria.url, payloads(messages), rate=1000, at={2500: kill_leader})
    survivors = [node.url for node in nodes if node.name != killed["name"]]

    async def new_leader() -> bool:
        try:
            leader = (await stream_state(survivors, "REL_R3")).cluster.leader
        except Exception:
            return False
        return leader not in (None, killed["name"])

    await wait_until(new_leader, 30, "a new stream leader")
    counts = await runtime.wait_settled(90)
    stored = await stored_ids(survivors, "REL_R3")
    info = await stream_state(survivors, "REL_R3")
    print(
        f"\ncluster: {len(messages)} sent in {elapsed:.1f}s, leader {killed['name']} killed, "
        f"new leader {info.cluster.leader}, counts {counts}"
    )

    assert counts["received"] == len(messages)
    assert not drops(counts)
    assert counts["retries"] > 0, "the kill did not interrupt a publish: the test proved nothing"
    assert_stored_exactly_once(stored, ids(messages))
    assert info.state.messages == len(messages)

    # Publishing goes on through the new leader: a later batch is stored in full.
    later = small_fleet(500, tag="newleader")
    await publish(choria.url, payloads(later), rate=1000)
    counts = await runtime.wait_settled(30)
    assert counts["received"] == counts["stored"] == len(messages) + len(later)
    assert_stored_exactly_once(await stored_ids(survivors, "REL_R3"), ids(messages) | ids(later))
    assert (await stream_state(survivors, "REL_R3")).cluster.leader not in (None, killed["name"])


# -- 3. Choria network (ingest) server restarted ---------------------------------------------------


async def test_ingest_server_restart_reconnects_and_resumes_within_seconds(
    servers: tuple[NatsServer, NatsServer], runtimes: list[Runtime], tmp_path: Path
) -> None:
    choria, jetstream = servers
    await add_stream(jetstream.url, "REL_INGEST")
    runtime = start_runtime(
        tmp_path, "runtime", middleware=choria.address, adapter=adapter_keys(jetstream.address)
    )
    runtimes.append(runtime)
    await runtime.wait_subscribed(4)
    before = small_fleet(2000, tag="before")
    await publish(choria.url, payloads(before), rate=4000)
    await runtime.wait_settled(30)

    await asyncio.to_thread(choria.stop)
    await asyncio.to_thread(choria.start)
    restarted = time.monotonic()
    # Core NATS drops what is published while nobody is subscribed: probe until one is ingested.
    probes = 0
    while (await runtime.counts())["received"] == len(before):
        assert time.monotonic() - restarted < 15, "ingest did not resume within 15s of the restart"
        await publish(choria.url, [small_registration(f"probe{probes}.example.net", "0" * 32).payload])
        probes += 1
        await asyncio.sleep(0.1)
    resumed_after = time.monotonic() - restarted
    await runtime.wait_subscribed(4, timeout=15)

    after = small_fleet(2000, tag="after")
    await publish(choria.url, payloads(after), rate=4000)
    counts = await runtime.wait_settled(30)
    stored = set(await stored_ids(jetstream.url, "REL_INGEST"))
    print(
        f"\ningest restart: resumed {resumed_after:.2f}s after the restart ({probes} probes), counts {counts}"
    )

    assert resumed_after < 10
    assert ids(before) | ids(after) <= stored
    assert not drops(counts)


# -- 4. two runtime processes in one queue group ------------------------------------------------------


@PUBLISH_MODES
async def test_two_runtimes_one_sigtermed_mid_flow_lose_nothing(
    servers: tuple[NatsServer, NatsServer], runtimes: list[Runtime], tmp_path: Path, publish_mode: str
) -> None:
    choria, jetstream = servers
    await add_stream(jetstream.url, "REL_TERM", **stream_options(publish_mode))
    keys = adapter_keys(
        jetstream.address, ingest__workers=2, stream__workers=2, queue_len=20000, stream__publish=publish_mode
    )
    stopping = start_runtime(tmp_path, "stopping", middleware=choria.address, adapter=keys, identity="a1")
    staying = start_runtime(tmp_path, "staying", middleware=choria.address, adapter=keys, identity="a2")
    runtimes += [stopping, staying]
    await stopping.wait_subscribed(2)
    await staying.wait_subscribed(2)
    await wait_publishing(stopping, publish_mode, 2)
    await wait_publishing(staying, publish_mode, 2)
    messages = small_fleet(12000, tag="term")
    exit_code: dict[str, int] = {}

    async def terminate() -> None:
        exit_code["stopping"] = await asyncio.to_thread(stopping.process.terminate, 30)

    await publish(choria.url, payloads(messages), rate=3000, at={4000: terminate})
    counts = await staying.wait_settled(60)
    stored = await stored_ids(jetstream.url, "REL_TERM")
    summary = re.search(
        r"Adapter registration stopped: (\d+) received, (\d+) stored", stopping.process.log_text()
    )
    print(f"\nSIGTERM: stopped runtime {summary and summary.groups()}, other runtime {counts}")

    assert exit_code["stopping"] == 0
    assert summary is not None and int(summary[1]) > 0 and summary[1] == summary[2]
    assert "shutdown_timeout" not in stopping.process.log_text()
    assert 0 < counts["received"] < len(messages), "both runtimes must have shared the flow"
    assert_stored_exactly_once(stored, ids(messages))


async def test_two_runtimes_publishing_batches_into_one_stream_ride_out_a_jetstream_restart(
    servers: tuple[NatsServer, NatsServer], runtimes: list[Runtime], tmp_path: Path
) -> None:
    """Batches of two processes share the stream (the server splits its flow interval between
    them); JetStream is stopped for seconds and started again mid-flow: every message once."""
    choria, jetstream = servers
    await add_stream(jetstream.url, "REL_SHARED", allow_batched=True)
    keys = adapter_keys(
        jetstream.address, ingest__workers=2, stream__workers=2, queue_len=20000, stream__publish="auto"
    )
    first = start_runtime(tmp_path, "first", middleware=choria.address, adapter=keys, identity="a1")
    second = start_runtime(tmp_path, "second", middleware=choria.address, adapter=keys, identity="a2")
    runtimes += [first, second]
    for runtime in (first, second):
        await runtime.wait_subscribed(2)
        await wait_publishing(runtime, "batched", 2)
    messages = small_fleet(12000, tag="shared")
    outage: dict[str, float] = {}

    async def stop_and_start() -> None:
        started = time.monotonic()
        await asyncio.to_thread(jetstream.stop)
        await asyncio.sleep(2)
        await asyncio.to_thread(jetstream.start)
        outage["seconds"] = time.monotonic() - started

    await publish(choria.url, payloads(messages), rate=3000, at={4000: stop_and_start})
    counts = [await runtime.wait_settled(60) for runtime in (first, second)]
    stored = await stored_ids(jetstream.url, "REL_SHARED")
    print(f"\nshared stream, JetStream stopped {outage['seconds']:.1f}s: counts {counts}")

    assert all(count["received"] > 0 for count in counts), "both runtimes must have shared the flow"
    assert sum(count["received"] for count in counts) == len(messages)
    assert sum(count["stored"] for count in counts) == len(messages)
    assert not any(drops(count) for count in counts)
    assert sum(count["retries"] for count in counts) > 0, "the outage interrupted no batch: it proved nothing"
    assert_stored_exactly_once(stored, ids(messages))
    for runtime in (first, second):
        adapter = await runtime.adapter()
        assert (adapter["publish_mode"], adapter["batched_publishers"]) == ("batched", 2)


async def test_two_runtimes_one_sigkilled_loses_exactly_what_it_held(
    servers: tuple[NatsServer, NatsServer],
    nats_server_factory: Callable[..., NatsServer],
    runtimes: list[Runtime],
    tmp_path: Path,
) -> None:
    """The victim publishes to a server without JetStream, so everything it takes stays held
    (queue and windows, retried within the budget): at the SIGKILL it holds a known, non-zero
    amount, and exactly that is lost; the survivor then takes the whole flow."""
    choria, jetstream = servers
    no_jetstream = nats_server_factory(jetstream=False)
    await add_stream(jetstream.url, "REL_KILLRT")
    victim = start_runtime(
        tmp_path,
        "victim",
        middleware=choria.address,
        adapter=adapter_keys(
            no_jetstream.address,
            ingest__workers=2,
            stream__workers=2,
            stream__max_pending=100,
            queue_len=5000,
        ),
        identity="a1",
    )
    survivor = start_runtime(
        tmp_path,
        "survivor",
        middleware=choria.address,
        adapter=adapter_keys(jetstream.address, ingest__workers=2, stream__workers=2, queue_len=20000),
        identity="a2",
    )
    runtimes += [victim, survivor]
    await victim.wait_subscribed(2)
    await survivor.wait_subscribed(2)
    before = small_fleet(2000, tag="sigkill")
    await publish(choria.url, payloads(before), rate=2000)

    async def all_ingested() -> bool:
        return (await victim.counts())["received"] + (await survivor.counts())["received"] == len(before)

    await wait_until(all_ingested, 30, "both runtimes to ingest every message")
    await survivor.wait_settled(30)
    held = await victim.counts()
    assert held["stored"] == 0 and not drops(held), held
    assert held["received"] > 0, "the victim held nothing at the kill: the test would prove nothing"
    await asyncio.to_thread(victim.process.kill)

    lost = ids(before) - set(await stored_ids(jetstream.url, "REL_KILLRT"))
    after = small_fleet(2000, tag="afterkill")
    await publish(choria.url, payloads(after), rate=2000)

    async def survivor_took_all() -> bool:
        return (await survivor.counts())["received"] == len(before) - held["received"] + len(after)

    await wait_until(survivor_took_all, 30, "the survivor to take the whole flow")
    counts = await survivor.wait_settled(30)
    stored = await stored_ids(jetstream.url, "REL_KILLRT")
    print(f"\nSIGKILL: victim held {held['received']}, lost {len(lost)} of {len(before)}; survivor {counts}")

    assert len(lost) == held["received"], "the loss is exactly what the victim held"
    assert_stored_exactly_once(stored, (ids(before) - lost) | ids(after))


# -- 5. JetStream unavailable for longer than the retry budget ------------------------------------


# Per-message acks only: in batched mode the messages of a batch in flight when the server goes
# away are counted `unconfirmed` (they may have been stored) rather than `publish`, and which
# of them end where is timing-dependent, so the exact split this test asserts does not hold
# there. Issue 15 leaves a batched variant with its own exact oracle open.
@pytest.mark.parametrize("publish_mode", ["acked"])
async def test_jetstream_down_past_retry_budget_drops_counted_then_recovers(
    servers: tuple[NatsServer, NatsServer], runtimes: list[Runtime], tmp_path: Path, publish_mode: str
) -> None:
    choria, jetstream = servers
    await add_stream(jetstream.url, "REL_BUDGET", **stream_options(publish_mode))
    runtime = start_runtime(
        tmp_path,
        "runtime",
        middleware=choria.address,
        adapter=adapter_keys(
            jetstream.address,
            stream__retry_budget="2s",
            stream__ack_timeout="1s",
            stream__publish=publish_mode,
        ),
    )
    runtimes.append(runtime)
    await runtime.wait_subscribed(4)
    await wait_publishing(runtime, publish_mode)
    first, during, later = (small_fleet(300, tag=tag) for tag in ("first", "during", "later"))
    await publish(choria.url, payloads(first))
    await runtime.wait_settled(30)

    await asyncio.to_thread(jetstream.stop)
    await publish(choria.url, payloads(during))

    labels = f'identity="adapter1.example.net",name="{ADAPTER}",reason="publish"'
    series = f"choria_adapter_dropped_msgs{{{labels}}}"

    async def all_dropped() -> bool:  # read from the exposition itself, as a scraper sees it
        return f"{series} {float(len(during))}" in await runtime.prometheus()

    await wait_until(all_dropped, 30, "the publish drops in the Prometheus exposition")
    assert runtime.alive()
    log = runtime.process.log_text()
    drop_line = next(line for line in log.splitlines() if "Could not publish to JetStream" in line)
    assert re.search(
        r"JetStream choria\.node_metadata\.during\d{7}\.example\.net after \d+ attempt", drop_line
    )
    assert "discarding: not connected to NATS" in drop_line
    assert re.search(r"subject=choria\.node_metadata\.during\d+\.example\.net reason=", drop_line)

    await asyncio.to_thread(jetstream.start)

    async def reconnected() -> bool:
        return (await runtime.adapter())["stream_connected"] == 4

    await wait_until(reconnected, 30, "the stream workers to reconnect")
    await publish(choria.url, payloads(later))
    counts = await runtime.wait_settled(30, received=len(first) + len(during) + len(later))
    stored = await stored_ids(jetstream.url, "REL_BUDGET")
    print(f"\nretry budget: counts {counts}\n  log: {drop_line}")

    assert counts["dropped_publish"] == len(during)
    assert drops(counts) == {"publish": len(during)}
    assert_stored_exactly_once(stored, ids(first) | ids(later))


# -- 5b. JetStream frozen (SIGSTOP) past the retry budget, the connection up -------------------------


async def test_jetstream_frozen_past_retry_budget_late_acks_count_as_stored(
    servers: tuple[NatsServer, NatsServer], runtimes: list[Runtime], tmp_path: Path
) -> None:
    """Publishes given up while JetStream is frozen are stored once it thaws: counted stored, not dropped."""
    choria, jetstream = servers
    await add_stream(jetstream.url, "REL_FROZEN")
    budget, freeze = 2.0, 3.5
    runtime = start_runtime(
        tmp_path,
        "runtime",
        middleware=choria.address,
        adapter=adapter_keys(
            jetstream.address, queue_len=20000, stream__retry_budget="2s", stream__ack_timeout="1s"
        ),
    )
    runtimes.append(runtime)
    await runtime.wait_subscribed(4)
    messages = small_fleet(2000, tag="frozen")
    frozen: dict[str, float] = {}

    async def freeze_jetstream() -> None:
        assert jetstream.pid is not None
        os.kill(jetstream.pid, signal.SIGSTOP)
        started = time.monotonic()
        try:
            await asyncio.sleep(freeze)
        finally:
            os.kill(jetstream.pid, signal.SIGCONT)
        frozen["seconds"] = time.monotonic() - started

    await publish(choria.url, payloads(messages), rate=2000, at={500: freeze_jetstream})
    counts = await runtime.wait_settled(60)
    stored = await stored_ids(jetstream.url, "REL_FROZEN")
    print(f"\nJetStream frozen {frozen['seconds']:.1f}s (budget {budget}s): counts {counts}")

    assert frozen["seconds"] > budget, "the freeze must outlast the retry budget"
    assert counts["late_acks"] > 0, "no publish was given up during the freeze: the test proved nothing"
    assert counts["received"] == counts["stored"] == len(messages)
    assert not drops(counts)
    assert_stored_exactly_once(stored, ids(messages))


async def test_sigterm_with_jetstream_down_and_windows_full_counts_every_held_message(
    servers: tuple[NatsServer, NatsServer], runtimes: list[Runtime], tmp_path: Path
) -> None:
    """Each stream worker blocked on a full window holds a message; shutdown counts it too."""
    choria, jetstream = servers
    await add_stream(jetstream.url, "REL_HELD")
    workers, window, queue_len, sent = 10, 10, 50, 200
    runtime = start_runtime(
        tmp_path,
        "runtime",
        middleware=choria.address,
        adapter=adapter_keys(
            jetstream.address,
            stream__workers=workers,
            stream__max_pending=window,
            queue_len=queue_len,
            shutdown_grace="1s",
        ),
    )
    runtimes.append(runtime)
    await runtime.wait_subscribed(4)

    async def stream_connected() -> bool:
        return (await runtime.adapter())["stream_connected"] == workers

    await wait_until(stream_connected, 30, "every stream worker connected")
    await asyncio.to_thread(jetstream.stop)
    await publish(choria.url, payloads(small_fleet(sent, tag="held")))

    async def all_taken() -> bool:
        counts = await runtime.counts()
        return counts["received"] + counts["dropped_queue_full"] == sent

    await wait_until(all_taken, 30, "every message received or counted")

    async def windows_full_and_workers_holding() -> bool:
        # Every window full, and each stream worker holds one more message, waiting for room.
        state = await runtime.adapter()
        held = state["counts"]["received"] - state["queued"] - state["in_flight"]
        return state["in_flight"] == workers * window and held == workers

    await wait_until(windows_full_and_workers_holding, 30, "full windows and a message in each worker's hand")
    counts = await runtime.counts()
    holding = counts["received"]
    assert counts["dropped_queue_full"] == sent - holding > 0
    assert runtime.process.terminate() == 0
    summary = re.search(
        r"Adapter registration stopped: (\d+) received, (\d+) stored, \d+ duplicates, drops (.*?)\"",
        runtime.process.log_text(),
    )
    assert summary is not None
    assert int(summary[1]) == holding and int(summary[2]) == 0
    assert summary[3] == str({"queue_full": sent - holding, "shutdown_timeout": holding})


# -- 6. burst ----------------------------------------------------------------------------------------

BURST = 100_000
# Documented for bursts: a queue as long as the largest burst the fleet can send at once.
BURST_QUEUE_LEN = 100_000


@cache
def burst_messages() -> tuple[bytes, ...]:
    return tuple(payloads(small_fleet(BURST, tag="burst")))


async def test_burst_with_a_burst_sized_queue_loses_nothing(
    servers: tuple[NatsServer, NatsServer], runtimes: list[Runtime], tmp_path: Path
) -> None:
    choria, jetstream = servers
    await add_stream(jetstream.url, "REL_BURST")
    runtime = start_runtime(
        tmp_path,
        "runtime",
        middleware=choria.address,
        adapter=adapter_keys(jetstream.address, queue_len=BURST_QUEUE_LEN),
    )
    runtimes.append(runtime)
    await runtime.wait_subscribed(4)
    idle_rss = memory_kib(runtime.pid)
    elapsed = await publish(choria.url, burst_messages())
    counts = await runtime.wait_settled(120)
    info = await stream_state(jetstream.url, "REL_BURST")
    peak = memory_kib(runtime.pid, "VmHWM")
    print(
        f"\nburst: {BURST} x {len(burst_messages()[0])} B sent in {elapsed:.2f}s "
        f"({BURST / elapsed:,.0f}/s); runtime RSS idle {idle_rss / 1024:.0f} MiB, "
        f"peak (VmHWM) {peak / 1024:.0f} MiB; counts {counts}"
    )

    assert not drops(counts)
    assert counts["received"] == counts["stored"] == BURST
    assert info.state.messages == BURST


async def test_burst_with_the_default_queue_counts_every_drop(
    servers: tuple[NatsServer, NatsServer], runtimes: list[Runtime], tmp_path: Path
) -> None:
    choria, jetstream = servers
    await add_stream(jetstream.url, "REL_BURST_DEFAULT")
    runtime = start_runtime(
        tmp_path, "runtime", middleware=choria.address, adapter=adapter_keys(jetstream.address)
    )
    runtimes.append(runtime)
    await runtime.wait_subscribed(4)
    elapsed = await publish(choria.url, burst_messages())

    async def all_accounted() -> bool:
        counts = await runtime.counts()
        return counts["received"] + counts["dropped_queue_full"] + counts["dropped_slow_consumer"] >= BURST

    # Core NATS may lose messages before the runtime sees them (server-side slow consumer);
    # then this wait fails: such a loss is neither stored nor counted.
    await wait_until(all_accounted, 120, "every burst message to be received or counted")
    counts = await runtime.wait_settled(120)
    info = await stream_state(jetstream.url, "REL_BURST_DEFAULT")
    print(f"\nburst, queue_len 1000: sent in {elapsed:.2f}s; counts {counts}; stored {info.state.messages}")

    assert set(drops(counts)) <= {"queue_full", "slow_consumer"}
    assert info.state.messages == counts["stored"] == counts["received"]
    assert info.state.messages + counts["dropped_queue_full"] + counts["dropped_slow_consumer"] == BURST


# -- 7. hostile input flood ---------------------------------------------------------------------------

FLOOD = 100_000
FLOOD_RATE = 12_000  # msgs/s: fast enough to be a flood, paced so RSS measures leaks, not backlog
WARMUP = 6_000
HUGE_EACH = 4  # near-max valid and random payloads, each
# RSS may grow this much over the warm-up figure: allocator fragmentation after 1 MiB messages.
RSS_MARGIN_KIB = 32 * 1024


async def test_hostile_flood_every_valid_stored_every_bad_counted_rss_flat(
    nats_server_factory: Callable[..., NatsServer], runtimes: list[Runtime], tmp_path: Path
) -> None:
    choria = nats_server_factory(jetstream=False, max_payload=MiB)
    jetstream = nats_server_factory(jetstream=True, max_payload=MiB)
    await add_stream(jetstream.url, "REL_FLOOD")
    runtime = start_runtime(
        tmp_path,
        "runtime",
        middleware=choria.address,
        adapter=adapter_keys(jetstream.address, queue_len=FLOOD),
    )
    runtimes.append(runtime)
    await runtime.wait_subscribed(4)

    warm_mix = hostile_mix(WARMUP, seed=7, tag="warm", huge=1, huge_size=MiB)
    flood_mix = hostile_mix(FLOOD, seed=8, tag="flood", huge=HUGE_EACH, huge_size=MiB)
    warmup, flood, kinds = warm_mix.payloads, flood_mix.payloads, flood_mix.kinds
    # The oracle for what the test made valid is what it generated; the project's decoder only
    # classifies the random, truncated and mutated inputs, whose validity is not known by construction.
    generated_valid = {**warm_mix.valid, **flood_mix.valid}
    expected = Expectation()
    for payload in (*warmup, *flood):
        expected.add(payload)
    assert max(len(payload) for payload in flood) > MiB - 1024

    await publish(choria.url, warmup, rate=FLOOD_RATE)
    await runtime.wait_settled(60)
    rss_warm = memory_kib(runtime.pid)
    elapsed = await publish(choria.url, flood, rate=FLOOD_RATE)
    counts = await runtime.wait_settled(120)
    await asyncio.sleep(1)
    rss_after = memory_kib(runtime.pid)
    info = await stream_state(jetstream.url, "REL_FLOOD")
    documents = await stored_documents(jetstream.url, "REL_FLOOD")
    print(
        f"\nflood: {len(flood)} messages {dict(Counter(kinds))} in {elapsed:.1f}s; RSS after warm-up "
        f"{rss_warm / 1024:.0f} MiB, after flood {rss_after / 1024:.0f} MiB, peak "
        f"{memory_kib(runtime.pid, 'VmHWM') / 1024:.0f} MiB; counts {counts}"
    )

    not_exact = [key for key, body in generated_valid.items() if documents.get(key) != [body]]
    assert not not_exact, (
        f"{len(not_exact)} of {len(generated_valid)} generated-valid messages not stored once "
        f"byte-exact, e.g. {not_exact[:3]}"
    )
    assert counts["dropped_internal"] == 0
    assert "Internal error" not in runtime.process.log_text()
    total = len(warmup) + len(flood)
    assert counts["dropped_decode"] == expected.drops["decode"]
    assert counts["dropped_subject"] == expected.drops["subject"]
    assert counts["dropped_encode"] == expected.drops["encode"]
    assert counts["received"] == counts["stored"] == expected.publishable
    assert counts["received"] + sum(expected.drops.values()) == total
    assert set(drops(counts)) <= {"decode", "subject", "encode"}
    assert info.state.messages == len(expected.stored_ids)
    assert rss_after <= rss_warm + RSS_MARGIN_KIB


# -- 8. senders crafted to escape their subject ---------------------------------------------------------

ESCAPING_SENDERS = ["a.>", ">", "*", "a.*.b", "a b", "", "a..b", ".a", "a.", "a\tb", "a\nb", "a\x00b"]


async def test_senders_that_would_escape_their_subject_never_reach_jetstream(
    servers: tuple[NatsServer, NatsServer], runtimes: list[Runtime], tmp_path: Path
) -> None:
    choria, jetstream = servers
    # A stream capturing everything: if a crafted subject were published, it would be stored.
    nc_url = jetstream.url

    nc = await nats.connect(nc_url)
    await nc.jetstream().add_stream(name="REL_ALL", subjects=["choria.>"])
    await nc.close()
    runtime = start_runtime(
        tmp_path, "runtime", middleware=choria.address, adapter=adapter_keys(jetstream.address)
    )
    runtimes.append(runtime)
    await runtime.wait_subscribed(4)
    bad = [small_registration(sender, f"{index:032x}") for index, sender in enumerate(ESCAPING_SENDERS)]
    good = small_fleet(20, tag="good")
    await publish(choria.url, payloads([*bad, *good]))
    counts = await runtime.wait_settled(30)
    stored = await stored_ids(jetstream.url, "REL_ALL")
    info = await stream_state(jetstream.url, "REL_ALL")

    assert counts["dropped_subject"] == len(bad)
    assert drops(counts) == {"subject": len(bad)}
    assert info.state.messages == len(good)
    assert_stored_exactly_once(stored, ids(good))
    assert "Cannot form a safe subject, discarding" in runtime.process.log_text()


# -- 9. secrets never appear in logs or check output ------------------------------------------------------

PASSWORD = "Rel1ability-S3cret-pa55"
# Shaped like a real .creds file; neither value is a working key.
CREDS_SEED = "SUAIBDPBAUTWCWBKIO6XHQNINK5FWJW4OHLXC3HQ2KFE4PEJUA44CNHTAA"
CREDS_JWT = "eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.eyJyZWxpYWJpbGl0eSI6InRlc3QifQ.c2ln"
SECRETS = (PASSWORD, CREDS_SEED, CREDS_JWT)


CHECK_COMMAND = (sys.executable, "-m", "choria_broker_adapters", "check", "--disable-tls")


def check_outputs(config: Path) -> dict[str, str]:
    """stdout+stderr of `check` and `check --json` for a config (both must accept it)."""
    outputs = {}
    for flags in ((), ("--json",)):
        done = subprocess.run(
            [*CHECK_COMMAND, "--config", str(config), *flags],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        outputs[f"check {' '.join(flags)}"] = done.stdout + done.stderr
    return outputs


def assert_no_secret(outputs: dict[str, str]) -> None:
    for name, text in outputs.items():
        for secret in SECRETS:
            assert secret not in text, f"a secret appears in the {name} output"


async def test_nats_password_never_appears_in_debug_logs_or_check_output(
    nats_server_factory: Callable[..., NatsServer], runtimes: list[Runtime], tmp_path: Path
) -> None:
    server = nats_server_factory(
        jetstream=True, extra_config=f'authorization {{ user: choria, password: "{PASSWORD}" }}'
    )
    nc = await nats.connect(server.url, user="choria", password=PASSWORD)
    await nc.jetstream().add_stream(name="REL_AUTH", subjects=["choria.node_metadata.>"])
    await nc.close()
    runtime = start_runtime(
        tmp_path,
        "password",
        middleware=server.address,
        adapter=adapter_keys(server.address),
        extra=f"plugin.nats.user = choria\nplugin.nats.pass = {PASSWORD}\n",
        args=("--disable-tls", "--debug"),
    )
    runtimes.append(runtime)
    await runtime.wait_subscribed(4)
    messages = small_fleet(10, tag="auth")
    nc = await nats.connect(server.url, user="choria", password=PASSWORD)
    for payload in payloads(messages):
        await nc.publish("mcollective.broadcast.agent.registration", payload)
    await nc.flush()
    await nc.close()
    counts = await runtime.wait_settled(30)
    # A server restart makes every connection report a disconnect and reconnect with the password.
    await asyncio.to_thread(server.restart)
    await runtime.wait_subscribed(4)
    assert runtime.process.terminate() == 0

    outputs = {"runtime log": runtime.process.log_text(), **check_outputs(runtime.config)}
    assert counts["stored"] == len(messages), "the runtime did not log in with the password"
    assert "plugin.nats.user" in outputs["check "] and "plugin.nats.pass" in outputs["check --json"]
    assert "NATS connection disconnected" in outputs["runtime log"]
    assert_no_secret(outputs)


async def test_credentials_file_contents_never_appear_in_logs_or_check_output(
    nats_server_factory: Callable[..., NatsServer], runtimes: list[Runtime], tmp_path: Path
) -> None:
    """The server wants a user and password, so it refuses the credentials file's JWT: the
    runtime keeps retrying and says why, never subscribes, stops cleanly on SIGTERM, and no
    output shows what the file holds."""
    server = nats_server_factory(
        jetstream=True, extra_config=f'authorization {{ user: choria, password: "{PASSWORD}" }}'
    )
    creds = tmp_path / "choria.creds"
    creds.write_text(
        f"-----BEGIN NATS USER JWT-----\n{CREDS_JWT}\n------END NATS USER JWT------\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{CREDS_SEED}\n------END USER NKEY SEED------\n"
    )
    runtime = start_runtime(
        tmp_path,
        "credentials",
        middleware=server.address,
        adapter=adapter_keys(server.address, ingest__workers=1, stream__workers=1),
        extra=f"plugin.nats.credentials = {creds}\n",
        args=("--disable-tls", "--debug"),
    )
    runtimes.append(runtime)
    refusal = (
        f"cannot connect to {server.url}: authorization violation: "
        "the server rejected the NATS user/password or credentials; retrying in"
    )

    def refused_and_retried(text: str, side: str) -> bool:
        # The server closes the connection right after its -ERR, so a round may also end in a
        # connection reset; the refusal itself must be reported, and retrying must go on.
        lines = [line for line in text.splitlines() if f"side={side}" in line]
        return any(refusal in line for line in lines) and any("(attempt 3)" in line for line in lines)

    async def refused_twice() -> bool:
        text = runtime.process.log_text()
        return refused_and_retried(text, "ingest") and refused_and_retried(text, "stream")

    await wait_until(refused_twice, 30, "the runtime to report the refused credentials")
    adapter = await runtime.adapter()
    assert (adapter["ingest_connected"], adapter["stream_connected"]) == (0, 0)
    assert runtime.process.terminate() == 0
    outputs = {"runtime log": runtime.process.log_text(), **check_outputs(runtime.config)}
    assert "Subscribed to" not in outputs["runtime log"]
    assert "Traceback" not in outputs["runtime log"]
    assert "Adapter registration stopped: 0 received, 0 stored" in outputs["runtime log"]
    assert str(creds) in outputs["check --json"]
    assert_no_secret(outputs)
