"""Operational edges give a clear error, never a traceback or a lie (issue 12, point 5)."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from choria_broker_adapters.devtools.natsserver import NatsServer, free_port
from tests.runtime_support import RuntimeProcess, broker_conf, logged, wait_until

EXIT_CONFIG = 78


def config(tmp_path: Path, server: NatsServer, *, stats_port: int = 0, name: str = "broker.conf") -> Path:
    path = tmp_path / name
    path.write_text(
        broker_conf(
            middleware=server.address,
            adapters={
                "reg": {
                    "type": "choria_streams",
                    "ingest.topic": "choria.test",
                    "stream.topic": "choria.out.%s",
                    "stream.servers": server.address,
                }
            },
            extra=f"plugin.choria.stats_port = {stats_port}\n",
        )
    )
    return path


def run_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "choria_broker_adapters", "run", "--disable-tls", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def processes() -> Iterator[list[RuntimeProcess]]:
    started: list[RuntimeProcess] = []
    yield started
    for process in started:
        process.close()


def test_stats_port_in_use_is_a_clear_error_and_exit_78(core_nats_server: NatsServer, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("--config", str(config(tmp_path, core_nats_server, stats_port=port)))
    assert result.returncode == EXIT_CONFIG, result
    assert f"cannot serve statistics on 0.0.0.0:{port}" in result.stderr or (
        f"cannot serve statistics on 127.0.0.1:{port}" in result.stderr
    ), result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_pid_file_in_a_missing_directory_is_a_clear_error(
    core_nats_server: NatsServer, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-dir" / "adapters.pid"
    result = run_cli("--config", str(config(tmp_path, core_nats_server)), "--pid", str(missing))
    assert result.returncode == EXIT_CONFIG
    assert f"cannot write the pid file {missing}: directory {missing.parent} does not exist" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


async def test_a_second_instance_refuses_a_pid_file_naming_a_live_one(
    core_nats_server: NatsServer, tmp_path: Path, processes: list[RuntimeProcess]
) -> None:
    pid_file = tmp_path / "adapters.pid"
    first = RuntimeProcess(
        config(tmp_path, core_nats_server),
        log_path=tmp_path / "first.log",
        args=("--disable-tls", "--pid", str(pid_file)),
    )
    processes.append(first)
    await wait_until(logged(first, "Subscribed to choria.test"), 30, "the first instance to run")
    assert pid_file.read_text() == f"{first.pid}\n"

    second = await asyncio.to_thread(
        run_cli, "--config", str(config(tmp_path, core_nats_server)), "--pid", str(pid_file)
    )
    assert second.returncode == EXIT_CONFIG
    assert f"names process {first.pid}, which is still running" in second.stderr
    assert pid_file.read_text() == f"{first.pid}\n"  # untouched, and not deleted by the second
    assert first.terminate() == 0
    assert not pid_file.exists()


def test_a_stale_pid_file_is_taken_over(core_nats_server: NatsServer, tmp_path: Path) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    pid_file = tmp_path / "adapters.pid"
    pid_file.write_text(f"{gone.pid}\n")
    process = RuntimeProcess(
        config(tmp_path, core_nats_server),
        log_path=tmp_path / "stale.log",
        args=("--disable-tls", "--pid", str(pid_file)),
    )
    try:
        deadline = time.monotonic() + 30
        while pid_file.read_text() != f"{process.pid}\n" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pid_file.read_text() == f"{process.pid}\n"
        assert process.terminate() == 0
        assert not pid_file.exists()
    finally:
        process.close()


# Python's own start-up (site-packages) runs before any project code and keeps the default
# signal actions; from the command line's first line on, a signal is a clean stop.
@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM])
async def test_a_stop_signal_while_starting_is_a_clean_stop(
    core_nats_server: NatsServer, tmp_path: Path, processes: list[RuntimeProcess], signal_number: int
) -> None:
    path = config(tmp_path, core_nats_server)
    for attempt, delay in enumerate((0.25, 0.4, 0.6)):
        process = RuntimeProcess(path, log_path=tmp_path / f"early{attempt}.log")
        processes.append(process)
        await asyncio.sleep(delay)  # the point is the moment of the signal
        process.process.send_signal(signal_number)
        assert process.wait(30) == 0, process.log_text()
        assert "Traceback" not in process.log_text()


async def test_a_second_sigterm_during_a_fast_stop_changes_nothing(
    core_nats_server: NatsServer, tmp_path: Path, processes: list[RuntimeProcess]
) -> None:
    stats_port = free_port()
    # From while the adapters drain to the moment the process exits.
    for attempt, gap in enumerate((0.05, 0.25, 0.28, 0.31, 0.34, 0.37, 0.4)):
        process = RuntimeProcess(
            config(tmp_path, core_nats_server, stats_port=stats_port),
            log_path=tmp_path / f"twice{attempt}.log",
        )
        processes.append(process)
        await wait_until(logged(process, "Subscribed to choria.test"), 30, "the runtime to run")
        process.process.send_signal(signal.SIGTERM)
        await asyncio.sleep(gap)
        process.process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, process.log_text()
        assert "Traceback" not in process.log_text()
