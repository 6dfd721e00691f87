"""Prometheus metrics with the Go broker's names, and the `/choria/` HTTP endpoint.

Series and labels follow go-choria broker/adapter/stats (config/SPEC.md section 6):
`choria_adapter_{received_msgs,errors,bytes,time}{name="NAME.<i>",role,identity}`,
`choria_adapter_queue_{length,capacity}{name="NAME",identity}`. Unlike the Go broker,
`choria_adapter_published_msgs` counts JetStream acknowledgements, and what could not be
stored is counted by reason in `choria_adapter_dropped_msgs`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import resource
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Summary, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from choria_broker_adapters import __version__

log = logging.getLogger("choria_broker_adapters.stats")

# Why a message was not stored. Each is a label value of choria_adapter_dropped_msgs.
DROP_REASONS = ("decode", "subject", "encode", "queue_full", "publish", "shutdown_timeout", "slow_consumer")


@dataclass(slots=True)
class WorkerMetrics:
    """The labelled series of one worker, resolved once so the hot path does no label lookups."""

    received: Any
    published: Any
    errors: Any
    bytes: Any
    time: Any


class Metrics:
    """All adapter metrics on one explicit registry (tests create a fresh one each)."""

    def __init__(self, identity: str, registry: CollectorRegistry | None = None) -> None:
        self.identity = identity
        self.registry = registry or CollectorRegistry()
        worker_labels = ("name", "role", "identity")
        adapter_labels = ("name", "identity")
        self.received = Counter(
            "choria_adapter_received_msgs",
            "Messages received by the adapter",
            worker_labels,
            registry=self.registry,
        )
        self.published = Counter(
            "choria_adapter_published_msgs",
            "Messages published and acknowledged by JetStream",
            worker_labels,
            registry=self.registry,
        )
        self.errors = Counter(
            "choria_adapter_errors",
            "Errors encountered by the adapter",
            worker_labels,
            registry=self.registry,
        )
        self.bytes = Counter(
            "choria_adapter_bytes",
            "Bytes received or published by the adapter",
            worker_labels,
            registry=self.registry,
        )
        self.time = Summary(
            "choria_adapter_time", "Time taken to handle a message", worker_labels, registry=self.registry
        )
        self.queue_length = Gauge(
            "choria_adapter_queue_length",
            "Messages in the adapter's work queue",
            adapter_labels,
            registry=self.registry,
        )
        self.queue_capacity = Gauge(
            "choria_adapter_queue_capacity",
            "Capacity of the adapter's work queue",
            adapter_labels,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "choria_adapter_in_flight_msgs",
            "Messages published and awaiting a JetStream acknowledgement",
            adapter_labels,
            registry=self.registry,
        )
        self.retries = Counter(
            "choria_adapter_retries",
            "JetStream publish attempts that were retried",
            adapter_labels,
            registry=self.registry,
        )
        self.duplicates = Counter(
            "choria_adapter_duplicate_msgs",
            "Publishes JetStream reported as duplicates of a stored message (a retry after a lost ack)",
            adapter_labels,
            registry=self.registry,
        )
        self.dropped = Counter(
            "choria_adapter_dropped_msgs",
            "Messages received but not stored, by reason",
            ("name", "reason", "identity"),
            registry=self.registry,
        )
        self.build_info = Gauge(
            "choria_build_info", "Build information", ("version", "identity"), registry=self.registry
        )
        self.build_info.labels(__version__, identity).set(1)

    def worker(self, worker_name: str, role: str) -> WorkerMetrics:
        """Series of one worker (`NAME.<i>`, role `input` or `output`), created at 0 as the Go broker does."""
        labels = (worker_name, role, self.identity)
        return WorkerMetrics(
            received=self.received.labels(*labels),
            published=self.published.labels(*labels),
            errors=self.errors.labels(*labels),
            bytes=self.bytes.labels(*labels),
            time=self.time.labels(*labels),
        )

    def drop_counter(self, adapter: str, reason: str) -> Any:
        return self.dropped.labels(adapter, reason, self.identity)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def process_summary() -> dict[str, Any]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "rss_kb": usage.ru_maxrss,
        "cpu_user_s": usage.ru_utime,
        "cpu_system_s": usage.ru_stime,
        "cpu_cores": os.cpu_count(),
        "pid": os.getpid(),
    }


class StatsServer:
    """A small asyncio HTTP server for /choria/, /choria/prometheus and /choria/metrics."""

    def __init__(
        self, metrics: Metrics, address: str, port: int, status: Callable[[], dict[str, Any]]
    ) -> None:
        self.metrics = metrics
        self.address = address
        self.port = port
        self.status = status
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.address, self.port)
        sockets = self._server.sockets or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        log.info("Statistics available on http://%s:%d/choria/", self.address, self.port)

    async def close(self) -> None:
        if self._server:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            method, path, *_ = request.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            status, content_type, body, extra = self._route(method, path.split("?", 1)[0])
            head = f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            head += "".join(f"{name}: {value}\r\n" for name, value in extra.items())
            writer.write(head.encode() + b"Connection: close\r\n\r\n" + (body if method != "HEAD" else b""))
            await writer.drain()
        except (
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            TimeoutError,
            ValueError,
            ConnectionError,
        ):
            pass
        finally:
            writer.close()

    def _route(self, method: str, path: str) -> tuple[str, str, bytes, dict[str, str]]:
        if method not in {"GET", "HEAD"}:
            return "405 Method Not Allowed", "text/plain", b"method not allowed\n", {"Allow": "GET, HEAD"}
        if path in {"/choria/prometheus", "/choria/metrics"}:
            return "200 OK", CONTENT_TYPE_LATEST, self.metrics.exposition(), {}
        if path == "/choria":
            return "301 Moved Permanently", "text/plain", b"", {"Location": "/choria/"}
        if path.startswith("/choria/"):
            document = {"version": __version__, "system": process_summary(), **self.status()}
            return "200 OK", "application/json", json.dumps(document, indent=2).encode() + b"\n", {}
        return "404 Not Found", "text/plain", b"not found; try /choria/ or /choria/prometheus\n", {}
