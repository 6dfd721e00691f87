"""The statistics endpoint in process: its routes, and clients that are malformed, slow or large."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from choria_broker_adapters.process import stats
from choria_broker_adapters.process.stats import Metrics, StatsServer


@pytest.fixture
async def server(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[StatsServer]:
    monkeypatch.setattr(stats, "REQUEST_DEADLINE", 0.5)
    metrics = Metrics("adapter1.example.net")
    metrics.worker("nodes.0", "input").received = 7
    running = StatsServer(metrics, "127.0.0.1", 0, lambda: {"adapters": [{"name": "nodes"}]})
    await running.start()
    yield running
    await running.close()


async def exchange(server: StatsServer, request: bytes, *, read_timeout: float = 5.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(request)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), read_timeout)
    finally:
        writer.close()


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def body_of(response: bytes) -> bytes:
    return response.split(b"\r\n\r\n", 1)[1]


async def test_routes(server: StatsServer) -> None:
    document = await exchange(server, b"GET /choria/ HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(document) == 200
    assert json.loads(body_of(document))["adapters"] == [{"name": "nodes"}]
    metrics = await exchange(server, b"GET /choria/prometheus?x=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    families = {family.name: family for family in text_string_to_metric_families(body_of(metrics).decode())}
    [sample] = [s for s in families["choria_adapter_received_msgs"].samples if s.labels["name"] == "nodes.0"]
    assert sample.value == 7
    head = await exchange(server, b"HEAD /choria/ HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(head) == 200 and body_of(head) == b""
    assert status_of(await exchange(server, b"GET /choria HTTP/1.1\r\nHost: x\r\n\r\n")) == 301
    assert status_of(await exchange(server, b"GET /elsewhere HTTP/1.1\r\nHost: x\r\n\r\n")) == 404
    assert status_of(await exchange(server, b"DELETE /choria/ HTTP/1.1\r\nHost: x\r\n\r\n")) == 405
    assert status_of(await exchange(server, b"GET /choria/ HTTP/1.0\r\n\r\n")) == 200


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /choria/ HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 needs a Host header
        (b"GET /choria/ HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 400),
        (b"GET /choria/ HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n", 431),
        (b"POST /choria/ HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789", 413),
        (b"GET /choria/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 413),
    ],
)
async def test_malformed_and_large_requests_get_an_error_status(
    server: StatsServer, request_bytes: bytes, status: int
) -> None:
    assert status_of(await exchange(server, request_bytes)) == status
    assert status_of(await exchange(server, b"GET /choria/ HTTP/1.1\r\nHost: x\r\n\r\n")) == 200


async def test_a_slow_client_is_cut_off_and_others_are_served_meanwhile(server: StatsServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /choria/ HTTP/1.1\r\n")  # and never the rest
    await writer.drain()
    started = time.monotonic()
    assert status_of(await exchange(server, b"GET /choria/ HTTP/1.1\r\nHost: x\r\n\r\n")) == 200
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed without an answer
    assert time.monotonic() - started < 3
    writer.close()


async def test_a_client_that_goes_away_changes_nothing(server: StatsServer) -> None:
    _reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.close()
    await writer.wait_closed()
    assert status_of(await exchange(server, b"GET /choria/ HTTP/1.1\r\nHost: x\r\n\r\n")) == 200
