"""The Choria Streams adapter (types `choria_streams` and `jetstream`).

    ingest workers ─decode─► WorkQueue (queue_len) ─► stream workers ─encode─► publisher ─► JetStream

Ingest workers queue-subscribe to `ingest.topic` in group `nats_ingest_NAME`, one NATS
connection each, decode every message and offer it to the bounded queue; a full queue drops
the message with a count and a rate-limited warning instead of blocking the NATS client into
a slow-consumer disconnect. While the queue is empty a message goes straight to a stream
worker whose window has room (an unbuffered hand-over, saving a task switch per message).
Stream workers, one connection each, encode the output document and hand it to a publisher
that retries with the same Nats-Msg-Id: `BatchPublisher` (fast-ingest batches, one flow
acknowledgement per many messages) or `AckedPublisher` (one acknowledgement per message), as
`stream.publish` and what JetStream allows decide once at start-up. Every message received is
either stored or counted under a drop reason.

Supervision: an unexpected exception while handling one message counts that message under
`internal` and the worker carries on; an exception that ends a worker (connecting,
subscribing, its publish loop) counts the message it held under `internal`, and the worker is
restarted with backoff, counted in `restarts_<side>` and `choria_adapter_worker_restarts`.
With `ingest.verify` on, ingest workers also verify each decoded message's signature
(codec.verify): `enforce` drops what fails under `unverified`, `warn` stores everything and
marks each stored message with a `Choria-Verified: true|false` header.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from typing import Any

from nats.aio.client import Client

from choria_broker_adapters.adapters.counters import Counters
from choria_broker_adapters.adapters.ingest import IngestSide
from choria_broker_adapters.adapters.publish import PublishSide
from choria_broker_adapters.adapters.work import (
    DUPLICATES_ACKED,
    DUPLICATES_BATCHED,
    RESTART_BACKOFF_INITIAL,
    RESTART_BACKOFF_MAX,
    AdapterState,
    Connect,
    Decode,
    IngestWorker,
    StreamWorker,
    WorkQueue,
    healthy,
)
from choria_broker_adapters.codec.protocol import decode
from choria_broker_adapters.codec.verify import OFF, Verifier
from choria_broker_adapters.config.settings import AdapterSettings, Settings
from choria_broker_adapters.config.trust import load_trust
from choria_broker_adapters.core.backoff import backoff_delay
from choria_broker_adapters.core.errors import describe_exception
from choria_broker_adapters.core.log import RateLimitedWarning, adapter_logger
from choria_broker_adapters.core.servers import ServerList
from choria_broker_adapters.jetstream.batching import PublishMode
from choria_broker_adapters.jetstream.publisher import Publisher
from choria_broker_adapters.transport.connect import (
    EVENT_DISCONNECTED,
    EVENT_ERROR,
    EVENT_MALFORMED_FRAME,
    EVENT_PUBLISH_DENIED,
    EVENT_READ_LOOP_FAILED,
    EVENT_RECONNECTED,
    EVENT_SERVER_ERROR,
    EVENT_SLOW_CONSUMER,
    ConnectConfigError,
    connect_options,
    connect_with_backoff,
)


class StreamsAdapter(IngestSide, PublishSide):
    """One configured adapter: its ingest workers, queue and stream workers."""

    def __init__(
        self,
        adapter: AdapterSettings,
        broker: Settings,
        metrics: Counters,
        *,
        disable_tls: bool = False,
        connect: Connect = connect_with_backoff,
        decode_message: Decode = decode,
        publisher_factory: Callable[..., Publisher] | None = None,
    ) -> None:
        """`connect`, `decode_message` and `publisher_factory` are seams for fault-injection tests.

        Without a `publisher_factory`, `stream.publish` and JetStream choose the publisher.
        """
        self.adapter = adapter
        self.broker = broker
        self.metrics = metrics
        self.disable_tls = disable_tls
        self._connect_client = connect
        self._decode = decode_message
        self._publisher_factory = publisher_factory
        self.name = adapter.name
        self.log = adapter_logger(self.name)
        self.queue = WorkQueue(adapter.queue_len)
        self._stopping = asyncio.Event()
        self._ingest_stopped = False
        self._decode_request = adapter.ingest_protocol == "request"
        self._counts = {"received": 0, "stored": 0}
        self._adapter_counts = metrics.adapter(self.name)
        metrics.queue_capacity.labels(self.name, metrics.identity).set(adapter.queue_len)
        metrics.queue_length.labels(self.name, metrics.identity).set_function(lambda: len(self.queue))
        metrics.in_flight.labels(self.name, metrics.identity).set_function(self._in_flight)
        metrics.unconfirmed.labels(self.name, metrics.identity).set_function(self._unconfirmed)
        self._ingest = [
            IngestWorker(i, f"{self.name}.{i}", metrics.worker(f"{self.name}.{i}", "input"))
            for i in range(adapter.ingest_workers)
        ]
        self._stream = [
            StreamWorker(i, f"{self.name}.{i}", metrics.worker(f"{self.name}.{i}", "output"))
            for i in range(adapter.stream_workers)
        ]
        self._ready: list[StreamWorker] = []  # stream workers whose publisher is running
        self._publish_mode: asyncio.Task[PublishMode] | None = None  # decided once, by the first worker
        self._next_ready = 0
        self._flusher: asyncio.Task[None] | None = None
        self._warn_input = RateLimitedWarning(adapter_logger(self.name, "ingest"))
        # `run` and `check` refuse unreadable trust material before anything starts.
        self.verifier = Verifier(load_trust(broker, adapter)) if adapter.ingest_verify != OFF else None
        self._warn_output = RateLimitedWarning(adapter_logger(self.name, "stream"))

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Start connecting every worker; returns at once (connections retry in the background)."""
        self.log.info(
            "Starting %s Protocol Adapter %s: %d ingest worker(s) on %s (%s), "
            "%d stream worker(s) publishing to %s",
            self.adapter.type,
            self.name,
            self.adapter.ingest_workers,
            self.adapter.ingest_topic,
            self.adapter.ingest_protocol,
            self.adapter.stream_workers,
            self.adapter.stream_topic,
        )
        if self.verifier is not None:
            if self.broker.protocol_version == 2:
                trusted = "issuers " + ", ".join(self.broker.issuers)
            else:
                trusted = "the CA bundle " + self.broker.verify_ca(self.adapter)[0]
            self.log.info(
                "Verifying message signatures (ingest.verify = %s) against %s",
                self.adapter.ingest_verify,
                trusted,
            )
        if self.adapter.publishes_via_middleware:
            self.log.info(
                "plugin.choria.adapter.%s.stream.servers not set, publishing via the middleware servers %s",
                self.name,
                ", ".join(self.broker.middleware_hosts),
            )
        self._flusher = asyncio.create_task(self._flush_warnings(), name=f"warnings {self.name}")
        for worker in self._stream:
            worker.task = self._supervised(
                lambda worker=worker: self._run_stream_worker(worker), "stream", worker
            )
        for ingest in self._ingest:
            ingest.task = self._supervised(
                lambda ingest=ingest: self._run_ingest_worker(ingest), "ingest", ingest
            )

    def _supervised(
        self,
        work: Callable[[], Coroutine[Any, Any, None]],
        side: str,
        worker: StreamWorker | IngestWorker,
    ) -> asyncio.Task[None]:
        """Run a worker, restarting it with backoff when it fails; its held message is counted."""
        log = adapter_logger(self.name, side, worker.index)

        async def supervise() -> None:
            attempt = 0
            while not self._stopping.is_set():
                started = time.monotonic()
                try:
                    await work()
                    return
                except asyncio.CancelledError:
                    if isinstance(worker, IngestWorker) or worker.failure is None:
                        raise  # stopping
                    error: BaseException = worker.failure
                except Exception as exception:
                    error = exception
                if isinstance(worker, StreamWorker):
                    worker.failure = None
                attempt = 1 if time.monotonic() - started > RESTART_BACKOFF_MAX else attempt + 1
                delay = backoff_delay(attempt, RESTART_BACKOFF_INITIAL, RESTART_BACKOFF_MAX)
                held = self._worker_failed(worker, side)
                self._adapter_counts.restarts[side] += 1
                log.error(
                    "Worker %s.%d of adapter %s failed (%s); %srestarting it in %.1fs",
                    side,
                    worker.index,
                    self.name,
                    describe_exception(error),
                    'the message it held is counted under choria_adapter_dropped_msgs{reason="internal"}; '
                    if held
                    else "",
                    delay,
                    exc_info=(type(error), error, error.__traceback__),
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)

        return asyncio.create_task(supervise(), name=f"{side} {self.name}.{worker.index}")

    async def _flush_warnings(self) -> None:
        """Report suppressed warnings even when no later warning of their kind comes."""
        while True:
            await asyncio.sleep(min(self._warn_input.interval, self._warn_output.interval) / 2)
            self._warn_input.flush(due_only=True)
            self._warn_output.flush(due_only=True)

    def _worker_failed(self, worker: StreamWorker | IngestWorker, side: str) -> bool:
        """Take a failed worker out of service; True when it held a message (counted as internal)."""
        if isinstance(worker, IngestWorker):
            worker.subscribed = False
            worker.subscription = None
            if worker.nc is not None and not worker.nc.is_closed:
                # A fresh connection on restart; closing this one ends its subscription.
                asyncio.create_task(worker.nc.close())  # noqa: RUF006 - closing needs no result
            worker.nc = None
            return False
        worker.running = False
        if worker in self._ready:
            self._ready.remove(worker)
        if worker.held is None:
            return False
        worker.held = None
        worker.metrics.errors += 1
        self._drop("internal")
        return True

    def _fail_stream_worker(self, worker: StreamWorker, error: BaseException) -> None:
        """A stream worker's publisher failed on another task's behalf: restart that worker."""
        if worker in self._ready:
            self._ready.remove(worker)
        if worker.task is not None and not worker.task.done() and worker.failure is None:
            worker.failure = error
            worker.task.cancel()

    async def stop(self, grace: float | None = None) -> None:
        """Stop ingesting, then publish and confirm what is queued within the grace period."""
        grace = self.adapter.shutdown_grace if grace is None else grace
        deadline = time.monotonic() + grace
        self._stopping.set()
        self.log.info(
            "Stopping adapter %s: draining subscriptions, %d message(s) queued", self.name, len(self.queue)
        )
        await self._stop_ingest(deadline)
        self.queue.close()
        stream_tasks = [w.task for w in self._stream if w.task]
        if stream_tasks:
            _done, pending = await asyncio.wait(stream_tasks, timeout=max(0.0, deadline - time.monotonic()))
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        unconfirmed = self.queue.drain_remaining()
        # A stream worker cancelled while waiting for room in its window holds one message.
        for worker in self._stream:
            if worker.held is not None:
                worker.held = None
                unconfirmed += 1
        for worker in self._stream:
            if worker.publisher:
                unconfirmed += await worker.publisher.flush(max(0.0, deadline - time.monotonic()))
                await worker.publisher.close()
            if worker.nc and not worker.nc.is_closed:
                with contextlib.suppress(Exception):
                    await worker.nc.close()
        if self._flusher is not None:
            self._flusher.cancel()
        if unconfirmed:
            self._drop("shutdown_timeout", unconfirmed)
            self.log.error(
                "Shutdown grace period of %.1fs ended with %d message(s) not confirmed by JetStream; "
                "they are "
                'counted under choria_adapter_dropped_msgs{reason="shutdown_timeout"}',
                grace,
                unconfirmed,
            )
        self._warn_input.flush()
        self._warn_output.flush()
        self.log.info(
            "Adapter %s stopped: %d received, %d stored, %d duplicates, drops %s",
            self.name,
            self._counts["received"],
            self._counts["stored"],
            self._adapter_counts.duplicates,
            {reason: count for reason, count in self._adapter_counts.dropped.items() if count} or "none",
        )

    def state(self) -> AdapterState:
        modes = [w.publisher.mode for w in self._stream if w.publisher]
        return AdapterState(
            name=self.name,
            type=self.adapter.type,
            verify=self.adapter.ingest_verify,
            ingest_workers=len(self._ingest),
            stream_workers=len(self._stream),
            ingest_connected=sum(1 for w in self._ingest if w.subscribed and healthy(w.nc)),
            stream_connected=sum(1 for w in self._stream if w.running and healthy(w.nc)),
            queued=len(self.queue),
            in_flight=self._in_flight(),
            publish_setting=self.adapter.stream_publish,
            publish_mode=self._decided_mode(),
            batched_publishers=modes.count(PublishMode.BATCHED),
            acked_publishers=modes.count(PublishMode.ACKED),
            duplicates_meaning=DUPLICATES_BATCHED if PublishMode.BATCHED in modes else DUPLICATES_ACKED,
            unconfirmed=self._unconfirmed(),
            counts={
                **self._counts,
                "duplicates": self._adapter_counts.duplicates,
                "retries": self._adapter_counts.retries,
                "late_acks": self._adapter_counts.late_acks,
                **{f"dropped_{reason}": count for reason, count in self._adapter_counts.dropped.items()},
                **{f"restarts_{side}": count for side, count in self._adapter_counts.restarts.items()},
                **{f"reconnects_{side}": count for side, count in self._adapter_counts.reconnects.items()},
                **(self._verify_counts() if self.verifier is not None else {}),
            },
        )

    def _decided_mode(self) -> str:
        task = self._publish_mode
        if task is None or not task.done() or task.cancelled():
            return ""
        return str(task.result())

    def _verify_counts(self) -> dict[str, int]:
        counters = self._adapter_counts
        return {
            "verified": counters.verified,
            **{f"unverified_{k}": n for k, n in counters.unverified.items()},
        }

    def _in_flight(self) -> int:
        return sum(w.publisher.in_flight for w in self._stream if w.publisher)

    def _unconfirmed(self) -> int:
        return sum(w.publisher.unconfirmed for w in self._stream if w.publisher)

    def _drop(self, reason: str, count: int = 1) -> None:
        self._adapter_counts.dropped[reason] += count

    # -- connections ------------------------------------------------------------------------

    async def _connect(
        self, servers: ServerList, connection_name: str, side: str, index: int
    ) -> Client | None:
        log = adapter_logger(self.name, side, index)
        try:
            options = connect_options(
                self.broker,
                servers=servers,
                name=connection_name,
                disable_tls=self.disable_tls,
                on_event=self._connection_event(side, index),
            )
        except ConnectConfigError as error:
            # `run` refuses such settings before starting; this guards other callers (the demo).
            log.error("Cannot connect, this worker stays idle: %s", error)
            return None
        if side == "stream":
            # output_subject already refuses unsafe subjects, so nats-py's per-publish regex is redundant.
            options["skip_subject_validation"] = True
        return await self._connect_client(options, log=log, stop_event=self._stopping)

    def _connection_event(self, side: str, index: int) -> Callable[[str, Any], None]:
        log = adapter_logger(self.name, side, index)
        warn = (self._warn_input if side == "ingest" else self._warn_output).warn
        worker = (self._ingest if side == "ingest" else self._stream)[index]
        counts = self._adapter_counts

        def on_event(kind: str, detail: Any) -> None:
            if kind == EVENT_SLOW_CONSUMER:
                self._drop("slow_consumer")
                self._warn_input.warn(
                    "slow_consumer",
                    f"NATS client dropped a message, {detail} (raise ingest.workers or queue_len)",
                )
            elif kind == EVENT_MALFORMED_FRAME:
                # Only the ingest side receives messages that could have been stored.
                if side == "ingest":
                    worker.metrics.errors += 1
                    self._drop("malformed_frame")
                warn("malformed_frame", f"Received a malformed NATS message: {detail}")
            elif kind == EVENT_READ_LOOP_FAILED:
                counts.restarts[side] += 1
                log.error("NATS connection of %s worker %s: %s", side, worker.name, detail)
            elif kind == EVENT_PUBLISH_DENIED and side == "stream":
                publisher = worker.publisher  # type: ignore[union-attr]
                refuse = getattr(publisher, "refuse_subject", None)
                if refuse is not None:
                    refuse(detail, f"the server denies publishing to {detail} (permissions); not retried")
                else:
                    warn("publish_denied", f"The server denies publishing to {detail} (permissions)")
            elif kind == EVENT_SERVER_ERROR:
                log.warning("NATS connection of %s worker %s: %s", side, worker.name, detail)
            elif kind == EVENT_RECONNECTED:
                counts.reconnects[side] += 1
                log.info("NATS connection %s", kind)
            elif kind in {EVENT_DISCONNECTED, EVENT_ERROR} and not self._stopping.is_set():
                log.warning("NATS connection %s: %s", kind, detail)
            else:
                log.info("NATS connection %s", kind)

        return on_event
