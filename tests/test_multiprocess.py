"""`run --processes N`: the pure helpers, then the CLI with real nats-servers (shares, restart, stop)."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nats
import pytest

from choria_broker_adapters.adapters.counters import AdapterCounters, Snapshot, WorkerMetrics, merge_snapshots
from choria_broker_adapters.core.log import adapter_logger
from choria_broker_adapters.devtools.fleet import REGISTRATION_SUBJECT, fleet
from choria_broker_adapters.devtools.natsserver import NatsServer, free_port
from choria_broker_adapters.process import logs
from choria_broker_adapters.process.multiprocess import (
    LineReader,
    describe_exit,
    parse_child,
    parse_processes,
    restart_delay,
    sum_adapter_states,
)
from choria_broker_adapters.process.stats import Metrics
from tests.runtime_support import RuntimeProcess, broker_conf, publish_paced, stored_request_ids, wait_until

STREAM = "CHORIA_MULTI"

# ---------------------------------------------------------------- pure helpers


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1", 1), ("2", 2), (" 3 ", 3), ("auto", os.cpu_count() or 1), ("AUTO", os.cpu_count() or 1)],
)
def test_processes_option(text: str, expected: int) -> None:
    assert parse_processes(text) == expected


def test_processes_zero_means_one_per_core() -> None:
    assert parse_processes("0") == max(1, os.cpu_count() or 1)


@pytest.mark.parametrize("text", ["", "two", "-1", "1.5"])
def test_processes_option_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="number of processes"):
        parse_processes(text)


@pytest.mark.parametrize(("text", "expected"), [("1:5", (1, 5)), ("12:30", (12, 30))])
def test_child_option(text: str, expected: tuple[int, int]) -> None:
    assert parse_child(text) == expected


@pytest.mark.parametrize("text", ["0:5", "1", "1:", ":5", "a:b", "-1:3"])
def test_child_option_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="INDEX:FD"):
        parse_child(text)


@pytest.mark.parametrize(
    ("returncode", "expected"),
    [(0, "exit status 0"), (1, "exit status 1"), (-9, "killed by SIGKILL"), (-15, "killed by SIGTERM")],
)
def test_describe_exit(returncode: int, expected: str) -> None:
    assert describe_exit(returncode) == expected


@pytest.mark.parametrize(("failures", "delay"), [(0, 1.0), (1, 2.0), (3, 8.0), (5, 30.0), (99, 30.0)])
def test_restart_backoff_grows_and_is_capped(failures: int, delay: float) -> None:
    assert restart_delay(failures) == delay


@pytest.mark.parametrize(
    ("chunks", "lines"),
    [
        ([b'{"a":1}\n'], [b'{"a":1}']),
        ([b'{"a"', b":1}\n{", b'"b":2}\n'], [b'{"a":1}', b'{"b":2}']),
        ([b"partial"], []),
        ([b"\n\n"], []),
    ],
)
def test_line_reader_reassembles_lines_split_across_reads(chunks: list[bytes], lines: list[bytes]) -> None:
    reader = LineReader()
    assert [line for chunk in chunks for line in reader.feed(chunk)] == lines


def test_snapshot_survives_json_and_sums_per_label_set() -> None:
    one = Snapshot(
        workers={("a.0", "input"): WorkerMetrics(5, 0, 1, 500, 0.5, 5)},
        adapters={"a": AdapterCounters(retries=2)},
        gauges={"choria_adapter_queue_length": {"a": 3.0}},
    )
    one.adapters["a"].dropped["decode"] = 1
    two = Snapshot.from_json(json.loads(json.dumps(one.to_json())))
    assert two == one
    total = merge_snapshots([one, two])
    assert total.workers == {("a.0", "input"): WorkerMetrics(10, 0, 2, 1000, 1.0, 10)}
    assert total.adapters["a"].retries == 4 and total.adapters["a"].dropped["decode"] == 2
    assert total.gauges == {"choria_adapter_queue_length": {"a": 6.0}}


def test_metrics_export_children_and_keep_counts_of_replaced_children() -> None:
    metrics = Metrics("id")
    metrics.worker("a.0", "input").received = 1
    metrics.queue_capacity.labels("a", "id").set(1000)
    metrics.peers[1] = Snapshot(
        workers={("a.0", "input"): WorkerMetrics(received=10)},
        gauges={"choria_adapter_queue_capacity": {"a": 1000.0}},
    )
    text = metrics.exposition().decode()
    assert 'choria_adapter_received_msgs{identity="id",name="a.0",role="input"} 11.0' in text
    assert 'choria_adapter_queue_capacity{identity="id",name="a"} 2000.0' in text
    metrics.retire_peer(1)  # the child died: its counts stay, its queue is gone
    text = metrics.exposition().decode()
    assert 'choria_adapter_received_msgs{identity="id",name="a.0",role="input"} 11.0' in text
    assert 'choria_adapter_queue_capacity{identity="id",name="a"} 1000.0' in text


def test_adapter_states_are_summed_per_adapter() -> None:
    state = {"name": "a", "type": "jetstream", "ingest_connected": 2, "queued": 1, "counts": {"received": 4}}
    other = {"name": "b", "type": "jetstream", "ingest_connected": 1, "queued": 0, "counts": {"received": 1}}
    assert sum_adapter_states([[state, other], [state]]) == [
        {"name": "a", "type": "jetstream", "ingest_connected": 4, "queued": 2, "counts": {"received": 8}},
        {"name": "b", "type": "jetstream", "ingest_connected": 1, "queued": 0, "counts": {"received": 1}},
    ]


@pytest.mark.parametrize(
    ("index", "expected"), [(None, 'msg="hello" component='), (3, 'msg="hello" process=3 component=')]
)
def test_log_lines_carry_the_process_index_not_the_pid(index: int | None, expected: str) -> None:
    logger = logging.getLogger(logs.ROOT_LOGGER)
    saved = (list(logger.handlers), logger.propagate, logger.level)
    output = io.StringIO()
    try:
        logs.configure("stdout", "info", stream=output, process_index=index)
        adapter_logger("a").info("hello")
    finally:
        logger.handlers[:], logger.propagate, logger.level = saved
    assert expected in output.getvalue()


# ---------------------------------------------------------------- the CLI with real servers


@pytest.fixture
def servers(nats_server_factory: Callable[..., NatsServer]) -> tuple[NatsServer, NatsServer]:
    return nats_server_factory(jetstream=False), nats_server_factory(jetstream=True)


def start_runtime(servers: tuple[NatsServer, NatsServer], tmp_path: Path, stats_port: int) -> RuntimeProcess:
    choria, jetstream = servers
    config = tmp_path / "broker.conf"
    config.write_text(
        broker_conf(
            middleware=choria.address,
            adapters={
                "multi": {
                    "type": "jetstream",
                    "ingest.topic": REGISTRATION_SUBJECT,
                    "ingest.protocol": "request",
                    "ingest.workers": 2,
                    "stream.topic": "choria.node_metadata.%s",
                    "stream.servers": jetstream.address,
                    "stream.workers": 2,
                    "queue_len": 20000,
                }
            },
            extra=f"plugin.choria.stats_port = {stats_port}\n",
        )
    )
    return RuntimeProcess(
        config, log_path=tmp_path / "runtime.log", args=("--disable-tls", "--processes", "2")
    )


def get(port: int, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return bytes(response.read())


def status(port: int) -> dict[str, Any]:
    try:
        return dict(json.loads(get(port, "/choria/")))
    except OSError:
        return {}


def metric_total(port: int, metric: str, role: str) -> float:
    lines = get(port, "/choria/prometheus").decode().splitlines()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in lines
        if line.startswith(metric + "{") and f'role="{role}"' in line
    )


def all_subscribed(port: int) -> bool:
    processes = status(port).get("processes", [])
    return len(processes) == 2 and all(
        p["running"] and p["adapters"] and p["adapters"][0]["ingest_connected"] == 2 for p in processes
    )


async def stored(url: str) -> list[tuple[str, str]]:
    nc = await nats.connect(url)
    try:
        return await stored_request_ids(nc.jetstream(), STREAM)
    finally:
        await nc.close()


async def count_stored(url: str) -> int:
    nc = await nats.connect(url)
    try:
        return (await nc.jetstream().stream_info(STREAM)).state.messages
    finally:
        await nc.close()


async def add_stream(url: str) -> None:
    nc = await nats.connect(url)
    await nc.jetstream().add_stream(name=STREAM, subjects=["choria.node_metadata.>"])
    await nc.close()


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")


async def test_two_processes_share_the_flow_survive_a_child_crash_and_stop_cleanly(
    servers: tuple[NatsServer, NatsServer], tmp_path: Path
) -> None:
    choria, jetstream = servers
    await add_stream(jetstream.url)
    port = free_port()
    runtime = start_runtime(servers, tmp_path, port)
    batch = 3000
    try:
        await wait_until(lambda: _true(all_subscribed(port)), 30, "both processes subscribed")

        first = [message.payload for message in fleet(batch, domain="one.example.net")]
        await publish_paced(choria.url, REGISTRATION_SUBJECT, first)
        await wait_until(lambda: _equals(count_stored(jetstream.url), batch), 30, f"{batch} stored")
        # The children report once a second: wait until the totals include them.
        await wait_until(
            lambda: _true(metric_total(port, "choria_adapter_received_msgs", "input") == batch),
            10,
            "totals",
        )
        assert metric_total(port, "choria_adapter_published_msgs", "output") == batch
        shares = [p["adapters"][0]["counts"]["received"] for p in status(port)["processes"]]
        assert sum(shares) == batch and all(share > 0 for share in shares), shares

        child = status(port)["processes"][1]
        os.kill(child["pid"], signal.SIGKILL)
        await wait_until(lambda: _true("killed by SIGKILL" in runtime.log_text()), 10, "the crash logged")
        await wait_until(lambda: _true(all_subscribed(port)), 30, "the child restarted and subscribed")
        restarted = status(port)["processes"][1]
        assert restarted["pid"] != child["pid"] and restarted["restarts"] == 1

        second = [message.payload for message in fleet(batch, domain="two.example.net")]
        await publish_paced(choria.url, REGISTRATION_SUBJECT, second)
        # SIGTERM right away: what the processes received is drained before they exit.
        assert runtime.terminate() == 0
        assert process_gone(restarted["pid"])
        ids = await stored(jetstream.url)
        assert len(ids) == len(set(ids)) == 2 * batch
    finally:
        runtime.close()
    log = runtime.log_text()
    assert "Traceback" not in log
    assert "Process 1 (pid" in log and "ended unexpectedly (killed by SIGKILL); restarting it" in log
    assert "process=1 " in log and "process=0 " in log


async def test_children_stop_when_the_parent_is_killed(
    servers: tuple[NatsServer, NatsServer], tmp_path: Path
) -> None:
    _, jetstream = servers
    await add_stream(jetstream.url)
    port = free_port()
    runtime = start_runtime(servers, tmp_path, port)
    try:
        await wait_until(lambda: _true(all_subscribed(port)), 30, "both processes subscribed")
        child_pid = status(port)["processes"][1]["pid"]
        runtime.kill()
        await wait_until(lambda: _true(process_gone(child_pid)), 15, "the child to stop")
    finally:
        runtime.close()
    assert "process=1 " in runtime.log_text()


async def _true(value: bool) -> bool:
    return value


async def _equals(count: Any, expected: int) -> bool:
    return int(await count) == expected


def test_config_error_exits_78_before_starting_any_process(tmp_path: Path) -> None:
    config = tmp_path / "broker.conf"
    config.write_text("plugin.choria.adapters = a\nplugin.choria.adapter.a.type = kafka\n")
    runtime = RuntimeProcess(
        config, log_path=tmp_path / "runtime.log", args=("--disable-tls", "--processes", "2")
    )
    assert runtime.wait(30) == 78
    assert "unknown adapter type 'kafka'" in runtime.log_text()
    assert "Started process" not in runtime.log_text()
