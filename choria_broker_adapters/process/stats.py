"""Prometheus metrics with the Go broker's names, and the `/choria/` HTTP endpoint.

Series and labels follow go-choria broker/adapter/stats (config/SPEC.md section 6):
`choria_adapter_{received_msgs,errors,bytes,time}{name="NAME.<i>",role,identity}`,
`choria_adapter_queue_{length,capacity}{name="NAME",identity}`. Unlike the Go broker,
`choria_adapter_published_msgs` counts JetStream acknowledgements, and what could not be
stored is counted by reason in `choria_adapter_dropped_msgs`.

Counters are exposed under their bare names (`# TYPE choria_adapter_received_msgs counter`,
no `_total`), as the Go client library writes the text format: prometheus-client's own text
writer appends `_total` to every counter, so `text_exposition` writes the format itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import resource
from collections.abc import Callable, Iterator
from dataclasses import asdict, astuple, dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from choria_broker_adapters import __version__
from choria_broker_adapters.codec.verify import FAILURE_KINDS

log = logging.getLogger("choria_broker_adapters.process.stats")

# Why a message was not stored. Each is a label value of choria_adapter_dropped_msgs.
DROP_REASONS = (
    "decode",
    "subject",
    "encode",
    "queue_full",
    "publish",
    "unconfirmed",
    "shutdown_timeout",
    "slow_consumer",
    "internal",
    "malformed_frame",
    "unverified",
    "rejected",
    "stream_full",
)
# The two kinds of worker a supervisor restarts; label values of choria_adapter_worker_restarts.
WORKER_SIDES = ("ingest", "stream")


@dataclass(slots=True)
class WorkerMetrics:
    """One worker's counters as plain numbers: the hot path adds to attributes, and the
    collector turns them into the Go broker's series only when Prometheus scrapes. (Labelled
    prometheus_client children cost a lock per update: about a tenth of the runtime's CPU.)"""

    received: int = 0
    published: int = 0
    errors: int = 0
    bytes: int = 0
    time_sum: float = 0.0
    time_count: int = 0

    def observe(self, seconds: float) -> None:
        self.time_sum += seconds
        self.time_count += 1


@dataclass(slots=True)
class AdapterCounters:
    """Per-adapter counts that are not per worker: retries, duplicates, drops by reason,
    worker restarts by side (a crashed worker, or a connection that stopped reading while it
    still looked connected) and NATS reconnections by side."""

    retries: int = 0
    duplicates: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    restarts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(WORKER_SIDES, 0))
    reconnects: dict[str, int] = field(default_factory=lambda: dict.fromkeys(WORKER_SIDES, 0))
    late_acks: int = 0  # given up after the retry budget, acknowledged by JetStream later
    # ingest.verify: messages that verified, and those that did not by failure kind
    verified: int = 0
    unverified: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FAILURE_KINDS, 0))


class _AdapterCollector(Collector):
    """Exports the plain counters with the Go broker's names, types and labels."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        identity = self.metrics.identity
        families = {
            "received": Metric("choria_adapter_received_msgs", "Messages received by the adapter", "counter"),
            "published": Metric(
                "choria_adapter_published_msgs", "Messages published and acknowledged by JetStream", "counter"
            ),
            "errors": Metric("choria_adapter_errors", "Errors encountered by the adapter", "counter"),
            "bytes": Metric("choria_adapter_bytes", "Bytes received or published by the adapter", "counter"),
        }
        time = Metric("choria_adapter_time", "Time taken to handle a message", "summary")
        for (worker, role), counters in self.metrics.all_workers().items():
            labels = {"name": worker, "role": role, "identity": identity}
            for attribute, family in families.items():
                family.add_sample(family.name, labels, getattr(counters, attribute))
            time.add_sample("choria_adapter_time_sum", labels, counters.time_sum)
            time.add_sample("choria_adapter_time_count", labels, counters.time_count)
        yield from families.values()
        yield time

        retries = Metric("choria_adapter_retries", "JetStream publish attempts that were retried", "counter")
        duplicates = Metric(
            "choria_adapter_duplicate_msgs",
            "Publishes JetStream reported as duplicates of a stored message (a retry after a lost ack)",
            "counter",
        )
        dropped = Metric(
            "choria_adapter_dropped_msgs", "Messages received but not stored, by reason", "counter"
        )
        restarts = Metric(
            "choria_adapter_worker_restarts",
            "Workers restarted after an unexpected error or a connection that stopped reading, by side",
            "counter",
        )
        reconnects = Metric(
            "choria_adapter_reconnects", "NATS connections of workers re-established, by side", "counter"
        )
        late_acks = Metric(
            "choria_adapter_late_acks",
            "Messages given up after the retry budget that JetStream acknowledged later (counted stored)",
            "counter",
        )
        verified = Metric(
            "choria_adapter_verified_msgs", "Messages whose signature verified (ingest.verify)", "counter"
        )
        unverified = Metric(
            "choria_adapter_unverified_msgs",
            "Messages that failed verification (ingest.verify), by reason",
            "counter",
        )
        for adapter, counters in self.metrics.all_adapters().items():
            labels = {"name": adapter, "identity": identity}
            late_acks.add_sample(late_acks.name, labels, counters.late_acks)
            verified.add_sample(verified.name, labels, counters.verified)
            for reason, count in counters.unverified.items():
                unverified.add_sample(
                    unverified.name, {"name": adapter, "reason": reason, "identity": identity}, count
                )
            retries.add_sample(retries.name, labels, counters.retries)
            duplicates.add_sample(duplicates.name, labels, counters.duplicates)
            for reason, count in counters.dropped.items():
                dropped.add_sample(
                    dropped.name, {"name": adapter, "reason": reason, "identity": identity}, count
                )
            for side, count in counters.restarts.items():
                restarts.add_sample(
                    restarts.name, {"name": adapter, "side": side, "identity": identity}, count
                )
            for side, count in counters.reconnects.items():
                reconnects.add_sample(
                    reconnects.name, {"name": adapter, "side": side, "identity": identity}, count
                )
        yield from (retries, duplicates, dropped, restarts, reconnects, late_acks, verified, unverified)

        for gauge in self.metrics.gauges():
            family = GaugeMetricFamily(gauge.name, gauge.documentation, labels=["name", "identity"])
            for adapter, value in self.metrics.gauge_totals(gauge).items():
                family.add_metric([adapter, identity], value)
            yield family


def _escape_label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def text_exposition(registry: CollectorRegistry) -> bytes:
    """The Prometheus text format (0.0.4) as the Go client writes it: family names as given,
    counters without a `_total` suffix, labels sorted."""
    lines: list[str] = []
    for family in registry.collect():
        kind = "untyped" if family.type == "unknown" else family.type
        documentation = family.documentation.replace("\\", r"\\").replace("\n", r"\n")
        lines.append(f"# HELP {family.name} {documentation}")
        lines.append(f"# TYPE {family.name} {kind}")
        for sample in family.samples:
            labels = ",".join(
                f'{key}="{_escape_label_value(value)}"' for key, value in sorted(sample.labels.items())
            )
            series = f"{sample.name}{{{labels}}}" if labels else sample.name
            lines.append(f"{series} {floatToGoString(sample.value)}")
    return ("\n".join(lines) + "\n").encode()


class AdapterGauge:
    """A per-adapter gauge (`name`, `identity` labels) read at scrape time and summed over the
    processes of a multi-process runtime; the same `labels(...).set/set_function` calls as
    prometheus_client's Gauge."""

    def __init__(self, name: str, documentation: str) -> None:
        self.name = name
        self.documentation = documentation
        self._sources: dict[str, Callable[[], float]] = {}

    def labels(self, adapter: str, identity: str) -> _GaugeSource:
        return _GaugeSource(self._sources, adapter)

    def values(self) -> dict[str, float]:
        return {adapter: float(source()) for adapter, source in self._sources.items()}


class _GaugeSource:
    def __init__(self, sources: dict[str, Callable[[], float]], adapter: str) -> None:
        self._sources = sources
        self._adapter = adapter

    def set(self, value: float) -> None:
        self._sources[self._adapter] = lambda: value

    def set_function(self, function: Callable[[], float]) -> None:
        self._sources[self._adapter] = function


class Metrics:
    """All adapter metrics on one explicit registry (tests create a fresh one each)."""

    def __init__(self, identity: str, registry: CollectorRegistry | None = None) -> None:
        self.identity = identity
        self.registry = registry or CollectorRegistry()
        self.workers: dict[tuple[str, str], WorkerMetrics] = {}
        self.adapters: dict[str, AdapterCounters] = {}
        self.registry.register(_AdapterCollector(self))
        self.queue_length = AdapterGauge(
            "choria_adapter_queue_length", "Messages in the adapter's work queue"
        )
        self.queue_capacity = AdapterGauge(
            "choria_adapter_queue_capacity", "Capacity of the adapter's work queue"
        )
        self.in_flight = AdapterGauge(
            "choria_adapter_in_flight_msgs", "Messages published and awaiting a JetStream acknowledgement"
        )
        self.unconfirmed = AdapterGauge(
            "choria_adapter_unconfirmed_msgs",
            "Messages given up after the retry budget, still listened for a late acknowledgement",
        )
        # A multi-process runtime's parent also exports its children's counters: the latest
        # snapshot of each running child, plus the final counts of children that were replaced
        # (so the summed counters never go backwards when a child restarts from zero).
        self.peers: dict[int, Snapshot] = {}
        self.retired = Snapshot()
        self.build_info = Gauge(
            "choria_build_info", "Build information", ("version", "identity"), registry=self.registry
        )
        self.build_info.labels(__version__, identity).set(1)

    def gauges(self) -> tuple[AdapterGauge, ...]:
        return (self.queue_length, self.queue_capacity, self.in_flight, self.unconfirmed)

    def worker(self, worker_name: str, role: str) -> WorkerMetrics:
        """Counters of one worker (`NAME.<i>`, role `input` or `output`), exported at 0 from the start."""
        return self.workers.setdefault((worker_name, role), WorkerMetrics())

    def adapter(self, name: str) -> AdapterCounters:
        return self.adapters.setdefault(name, AdapterCounters())

    def exposition(self) -> bytes:
        return text_exposition(self.registry)

    def snapshot(self) -> Snapshot:
        """This process's counters and gauges, to be sent to the parent process."""
        return Snapshot(
            workers={key: _copy_worker(counters) for key, counters in self.workers.items()},
            adapters={name: _copy_adapter(counters) for name, counters in self.adapters.items()},
            gauges={gauge.name: gauge.values() for gauge in self.gauges()},
        )

    def retire_peer(self, index: int) -> None:
        """A child process ended: keep its last counts (not its gauges) in the totals."""
        peer = self.peers.pop(index, None)
        if peer is not None:
            self.retired = merge_snapshots([self.retired, Snapshot(peer.workers, peer.adapters)])

    def _merged(self) -> Snapshot:
        local = Snapshot(self.workers, self.adapters)
        return merge_snapshots([local, self.retired, *self.peers.values()])

    def all_workers(self) -> dict[tuple[str, str], WorkerMetrics]:
        if not self.peers and not self.retired.workers:
            return self.workers
        return self._merged().workers

    def all_adapters(self) -> dict[str, AdapterCounters]:
        if not self.peers and not self.retired.adapters:
            return self.adapters
        return self._merged().adapters

    def gauge_totals(self, gauge: AdapterGauge) -> dict[str, float]:
        totals = gauge.values()
        for peer in self.peers.values():
            for adapter, value in peer.gauges.get(gauge.name, {}).items():
                totals[adapter] = totals.get(adapter, 0.0) + value
        return totals


@dataclass
class Snapshot:
    """Counters and gauge values of one process (or a sum of several), JSON-serialisable."""

    workers: dict[tuple[str, str], WorkerMetrics] = field(default_factory=dict)
    adapters: dict[str, AdapterCounters] = field(default_factory=dict)
    gauges: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "workers": [[name, role, *astuple(counters)] for (name, role), counters in self.workers.items()],
            "adapters": {name: asdict(counters) for name, counters in self.adapters.items()},
            "gauges": self.gauges,
        }

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Snapshot:
        return cls(
            workers={(row[0], row[1]): WorkerMetrics(*row[2:]) for row in document.get("workers", [])},
            adapters={
                name: AdapterCounters(
                    counters["retries"],
                    counters["duplicates"],
                    dict(counters["dropped"]),
                    dict(counters.get("restarts", {})),
                    dict(counters.get("reconnects", {})),
                    counters.get("late_acks", 0),
                    counters.get("verified", 0),
                    dict(counters.get("unverified", {})),
                )
                for name, counters in document.get("adapters", {}).items()
            },
            gauges={name: dict(values) for name, values in document.get("gauges", {}).items()},
        )


def merge_snapshots(snapshots: list[Snapshot]) -> Snapshot:
    """Sum counters per label set (worker names are `NAME.<i>` in every process, so the sum
    keeps the Go broker's series exactly as a single process exports them)."""
    total = Snapshot()
    for snapshot in snapshots:
        for key, worker in snapshot.workers.items():
            into = total.workers.setdefault(key, WorkerMetrics())
            into.received += worker.received
            into.published += worker.published
            into.errors += worker.errors
            into.bytes += worker.bytes
            into.time_sum += worker.time_sum
            into.time_count += worker.time_count
        for name, adapter in snapshot.adapters.items():
            target = total.adapters.setdefault(name, AdapterCounters())
            target.retries += adapter.retries
            target.late_acks += adapter.late_acks
            target.duplicates += adapter.duplicates
            for reason, count in adapter.dropped.items():
                target.dropped[reason] = target.dropped.get(reason, 0) + count
            for side, count in adapter.restarts.items():
                target.restarts[side] = target.restarts.get(side, 0) + count
            for side, count in adapter.reconnects.items():
                target.reconnects[side] = target.reconnects.get(side, 0) + count
            target.verified += adapter.verified
            for kind, count in adapter.unverified.items():
                target.unverified[kind] = target.unverified.get(kind, 0) + count
        for gauge, values in snapshot.gauges.items():
            gauge_total = total.gauges.setdefault(gauge, {})
            for adapter, value in values.items():
                gauge_total[adapter] = gauge_total.get(adapter, 0.0) + value
    return total


def _copy_worker(counters: WorkerMetrics) -> WorkerMetrics:
    return WorkerMetrics(*astuple(counters))


def _copy_adapter(counters: AdapterCounters) -> AdapterCounters:
    return AdapterCounters(
        counters.retries,
        counters.duplicates,
        dict(counters.dropped),
        dict(counters.restarts),
        dict(counters.reconnects),
        counters.late_acks,
        counters.verified,
        dict(counters.unverified),
    )


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
