"""Signals an operator sends never kill the runtime uncounted.

SIGHUP reopens the log file (logrotate moves it away first), in every process of a
`--processes` run; SIGUSR1 and SIGUSR2 log each adapter's counts. The runtime keeps storing
throughout and SIGTERM still drains and exits 0 with every message accounted for.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from choria_broker_adapters.devtools.natsserver import NatsServer
from tests.reliability_support import (
    ADAPTER,
    Runtime,
    adapter_keys,
    add_stream,
    payloads,
    publish,
    small_fleet,
    start_runtime,
    stream_state,
)
from tests.runtime_support import wait_until


async def wait_received(runtime: Runtime, total: int) -> dict[str, int]:
    """Every message received and settled (a multi-process parent sums its children's reports)."""

    async def all_in() -> bool:
        return (await runtime.counts())["received"] == total

    await wait_until(all_in, 30, f"{total} messages received")
    return await runtime.wait_settled(30)


def lines(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def logged(path: Path, text: str, **fields: object) -> Callable[[], object]:
    async def contains() -> bool:
        return any(
            text in str(entry["msg"]) and all(entry.get(k) == v for k, v in fields.items())
            for entry in lines(path)
        )

    return contains


@pytest.fixture
def servers(nats_server_factory: Callable[..., NatsServer]) -> tuple[NatsServer, NatsServer]:
    return nats_server_factory(jetstream=False), nats_server_factory(jetstream=True)


@pytest.mark.parametrize("processes", [1, 2])
async def test_sighup_reopens_the_log_and_sigusr_logs_counts_without_losing_a_message(
    servers: tuple[NatsServer, NatsServer], tmp_path: Path, processes: int
) -> None:
    choria, jetstream = servers
    await add_stream(jetstream.url, "SIGNALS")
    logfile = tmp_path / "adapter.log"
    runtime = start_runtime(
        tmp_path,
        "runtime",
        middleware=choria.address,
        adapter=adapter_keys(jetstream.address, ingest__workers=1, stream__workers=1),
        extra=f"logfile = {logfile}\n",
        args=("--disable-tls", "--processes", str(processes)),
    )
    try:
        await runtime.wait_subscribed(processes)
        first = small_fleet(100, tag="beforehup")
        await publish(choria.url, payloads(first))
        await wait_received(runtime, len(first))

        runtime.process.process.send_signal(signal.SIGUSR1)
        await wait_until(
            logged(logfile, f"Received SIGUSR1: adapter {ADAPTER}"), 10, "the SIGUSR1 status line"
        )
        status_line = next(e["msg"] for e in lines(logfile) if "Received SIGUSR1" in str(e["msg"]))
        assert "received=100 stored=100" in str(status_line)

        rotated = tmp_path / "adapter.log.1"
        logfile.rename(rotated)
        runtime.process.process.send_signal(signal.SIGHUP)
        for index in range(processes):
            # Process 0 is the parent (its lines carry process=0 only in a multi-process run).
            fields = {"process": index} if processes > 1 else {}
            await wait_until(
                logged(logfile, "Received SIGHUP: reopened", **fields), 10, f"process {index} to reopen"
            )
        assert runtime.alive()
        runtime.process.process.send_signal(signal.SIGUSR2)
        await wait_until(logged(logfile, "Received SIGUSR2"), 10, "the SIGUSR2 status line")

        second = small_fleet(100, tag="afterhup")
        await publish(choria.url, payloads(second))
        counts = await wait_received(runtime, len(first) + len(second))
        assert runtime.alive()
        assert runtime.process.terminate() == 0
    finally:
        runtime.process.close()

    assert counts["received"] == counts["stored"] == len(first) + len(second)
    assert (await stream_state(jetstream.url, "SIGNALS")).state.messages == len(first) + len(second)
    assert not [e for e in lines(rotated) if "Received SIGHUP" in str(e["msg"])], "logged after the move"
    stopped = [str(e["msg"]) for e in lines(logfile) if f"Adapter {ADAPTER} stopped" in str(e["msg"])]
    assert len(stopped) == processes
    assert all(line.endswith("drops none") for line in stopped), stopped
