"""The counters and gauges every adapter keeps, in one shape.

Plain numbers on the hot path (labelled prometheus_client children cost a lock per update);
`process.stats` turns them into the Go broker's series only when Prometheus scrapes, and a
multi-process runtime sums the children's snapshots of this same shape.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, astuple, dataclass, field, fields
from typing import Any

from choria_broker_adapters.codec.verify import FAILURE_KINDS

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


class Counters:
    """Every counter and gauge of one process's adapters: the one place they are kept. The
    adapters write them, and `/choria/`, the Prometheus collector, the demo summary and the
    multi-process snapshots all read them."""

    def __init__(self, identity: str) -> None:
        self.identity = identity
        self.workers: dict[tuple[str, str], WorkerMetrics] = {}
        self.adapters: dict[str, AdapterCounters] = {}
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

    def gauges(self) -> tuple[AdapterGauge, ...]:
        return (self.queue_length, self.queue_capacity, self.in_flight, self.unconfirmed)

    def worker(self, worker_name: str, role: str) -> WorkerMetrics:
        """Counters of one worker (`NAME.<i>`, role `input` or `output`), exported at 0 from the start."""
        return self.workers.setdefault((worker_name, role), WorkerMetrics())

    def adapter(self, name: str) -> AdapterCounters:
        return self.adapters.setdefault(name, AdapterCounters())

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
                name: _adapter_from_json(counters) for name, counters in document.get("adapters", {}).items()
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
    return copy.deepcopy(counters)


def _adapter_from_json(document: dict[str, Any]) -> AdapterCounters:
    """Counters sent by a child; a field an older child did not send keeps its default."""
    known = {item.name for item in fields(AdapterCounters)}
    values = {name: copy.deepcopy(value) for name, value in document.items() if name in known}
    counters = AdapterCounters(**values)
    for item in fields(AdapterCounters):
        default = getattr(AdapterCounters(), item.name)
        if isinstance(default, dict):  # reasons added later start at 0 rather than missing
            setattr(counters, item.name, {**default, **getattr(counters, item.name)})
    return counters
