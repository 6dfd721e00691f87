"""`check` and `run` compare the connections a configuration needs with the open-files limit."""

from __future__ import annotations

import re
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from choria_broker_adapters.devtools.natsserver import NatsServer
from choria_broker_adapters.process.limits import (
    RESERVED_DESCRIPTORS,
    DescriptorNeed,
    limit_verdict,
)
from tests.runtime_support import broker_conf, wait_until

UNLIMITED = resource.RLIM_INFINITY
EXIT_CONFIG = 78


@pytest.mark.parametrize(
    ("connections", "soft", "hard", "fits", "can_raise"),
    [
        (100, 1024, 1024, True, False),
        (1024 - RESERVED_DESCRIPTORS, 1024, 1024, True, False),
        (1024 - RESERVED_DESCRIPTORS + 1, 1024, 4096, False, True),
        (1200, 1024, 1024, False, False),
        (1200, 1024, UNLIMITED, False, True),
        (10**6, UNLIMITED, UNLIMITED, True, False),
    ],
)
def test_limit_verdict(connections: int, soft: int, hard: int, fits: bool, can_raise: bool) -> None:
    verdict = limit_verdict(DescriptorNeed({"a": connections}), soft, hard)
    assert (verdict.fits, verdict.can_raise) == (fits, can_raise)
    assert f"{connections} NATS connection(s) (a {connections})" in verdict.message


def many_adapters(tmp_path: Path, server: NatsServer, adapters: int, workers: int) -> Path:
    path = tmp_path / "broker.conf"
    path.write_text(
        broker_conf(
            middleware=server.address,
            adapters={
                f"a{index:02d}": {
                    "type": "choria_streams",
                    "ingest.topic": f"choria.in.{index}",
                    "ingest.workers": workers,
                    "stream.topic": f"choria.out{index}.%s",
                    "stream.servers": server.address,
                    "stream.workers": workers,
                }
                for index in range(adapters)
            },
        )
    )
    return path


def cli(command: str, config: Path, soft: int, hard: int) -> subprocess.CompletedProcess[str]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return subprocess.run(
        [sys.executable, "-m", "choria_broker_adapters", command, "--config", str(config), "--disable-tls"],
        capture_output=True,
        text=True,
        timeout=30,
        preexec_fn=limit,
    )


def test_thirty_adapters_of_forty_workers_under_1024_files(
    core_nats_server: NatsServer, tmp_path: Path
) -> None:
    config = many_adapters(tmp_path, core_nats_server, adapters=30, workers=20)  # 40 connections each
    needed = 30 * 40 + RESERVED_DESCRIPTORS
    checked = cli("check", config, 1024, 1024)
    assert checked.returncode == 0
    assert "run would refuse to start here" in checked.stdout + checked.stderr
    assert f"{needed} open files" in checked.stdout + checked.stderr

    ran = cli("run", config, 1024, 1024)
    assert ran.returncode == EXIT_CONFIG
    assert "needs 1200 NATS connection(s) (a00 40, a01 40" in ran.stderr
    assert f"{needed} open files, more than the open-files limit of 1024 (hard limit 1024)" in ran.stderr
    assert "LimitNOFILE" in ran.stderr
    assert "Traceback" not in ran.stdout + ran.stderr
    # Refused before connecting: no adapter line was logged.
    assert "Starting" not in ran.stdout + ran.stderr


def test_check_is_quiet_when_the_limit_suffices(core_nats_server: NatsServer, tmp_path: Path) -> None:
    config = many_adapters(tmp_path, core_nats_server, adapters=2, workers=2)
    checked = cli("check", config, 1024, 1024)
    assert checked.returncode == 0
    assert "open files" not in checked.stdout + checked.stderr


async def test_run_raises_the_soft_limit_when_the_hard_limit_suffices(
    core_nats_server: NatsServer, tmp_path: Path
) -> None:
    config = many_adapters(tmp_path, core_nats_server, adapters=2, workers=50)  # 200 + reserve > 256

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 1024))

    log_path = tmp_path / "run.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "choria_broker_adapters", "run", "--config", str(config), "--disable-tls"],
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=limit,
        )
    try:

        async def running() -> bool:
            return log_path.read_text().count("Subscribed to choria.in.") == 100

        await wait_until(running, 30, "every ingest worker subscribed")
        limits = Path(f"/proc/{process.pid}/limits").read_text()
        assert re.search(r"Max open files\s+1024\s+1024", limits), limits
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
        assert "Too many open files" not in log_path.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
