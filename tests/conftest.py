"""Shared fixtures: real nats-server processes and the project's test data."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from choria_broker_adapters.devtools.natsserver import NatsServer

DATA = Path(__file__).parent / "data"


@pytest.fixture
def data_dir() -> Path:
    return DATA


@pytest.fixture
def nats_server_factory(tmp_path: Path) -> Iterator[Callable[..., NatsServer]]:
    """Start any number of real nats-servers; all are stopped and removed after the test.

    factory(jetstream=True, **kwargs) -> started NatsServer on a free loopback port with its
    own store directory under the test's tmp_path.
    """
    servers: list[NatsServer] = []

    def start(**kwargs: Any) -> NatsServer:
        kwargs.setdefault("workdir", tmp_path / f"nats-{len(servers)}")
        kwargs["workdir"].mkdir(parents=True, exist_ok=True)
        server = NatsServer(**kwargs)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.cleanup()


@pytest.fixture
def jetstream_server(nats_server_factory: Callable[..., NatsServer]) -> NatsServer:
    """A running nats-server with JetStream on."""
    return nats_server_factory(jetstream=True)


@pytest.fixture
def core_nats_server(nats_server_factory: Callable[..., NatsServer]) -> NatsServer:
    """A running plain core-NATS server (no JetStream): the Choria network side."""
    return nats_server_factory(jetstream=False)
