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
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from choria_broker_adapters.adapters.counters import Counters, WorkerMetrics
from choria_broker_adapters.codec.output import OutputError, encode_output, message_id, output_subject
from choria_broker_adapters.codec.protocol import DecodeError, Envelope, decode
from choria_broker_adapters.codec.verify import ENFORCE, OFF, VERIFIED_HEADER, WARN, Verifier
from choria_broker_adapters.config.settings import AdapterSettings, Settings
from choria_broker_adapters.config.trust import load_trust
from choria_broker_adapters.core.backoff import backoff_delay
from choria_broker_adapters.core.errors import describe_exception
from choria_broker_adapters.core.log import RateLimitedWarning, adapter_logger
from choria_broker_adapters.core.servers import ServerList
from choria_broker_adapters.jetstream.admin import JetStreamAdminError, jetstream_request, stream_info
from choria_broker_adapters.jetstream.batch_publisher import BatchPublisher, PublishMode, choose_publish_mode
from choria_broker_adapters.jetstream.publisher import (
    AckedPublisher,
    Publisher,
    PublishOutcome,
    PublishResult,
    message_oversize,
    stream_for_subject,
)
from choria_broker_adapters.transport.connect import (
    EVENT_DISCONNECTED,
    EVENT_ERROR,
    EVENT_MALFORMED_FRAME,
    EVENT_READ_LOOP_FAILED,
    EVENT_RECONNECTED,
    EVENT_SERVER_ERROR,
    EVENT_SLOW_CONSUMER,
    ConnectConfigError,
    GuardedClient,
    connect_options,
    connect_with_backoff,
)

# Per ingest subscription: generous so bursts queue in the client rather than being cut as
# slow-consumer drops (nats-py's defaults cost a quarter of an unpaced 200k burst here).
PENDING_MSGS_LIMIT = 1_000_000
PENDING_BYTES_LIMIT = 256 * 1024 * 1024
# How long a stopping ingest worker keeps listening after unsubscribing (see _stop_interest).
UNSUBSCRIBE_LINGER = 0.25
# Restart backoff of a failed worker (seconds): the first restart is quick, a worker that keeps
# failing is retried at most this often. A run longer than the maximum resets the backoff.
RESTART_BACKOFF_INITIAL = 0.5
RESTART_BACKOFF_MAX = 30.0

Connect = Callable[..., Awaitable[Client | None]]
Decode = Callable[..., Envelope]
# The extra headers of a message stored by a `warn` adapter, by its verdict.
VERIFIED_HEADERS = {True: {VERIFIED_HEADER: "true"}, False: {VERIFIED_HEADER: "false"}}
# A queued message: an Envelope, or (Envelope, extra headers) from a `warn` adapter.
Queued = Envelope | tuple[Envelope, dict[str, str]]


async def stop_interest_keep_handling(nc: Client, subscription: Subscription) -> None:
    """Send UNSUB for `subscription` but keep it registered, so messages still arriving reach its handler.

    nats-py's drain forgets the subscription as soon as the server answers the PING after the
    UNSUB, but a message the server routed to this queue member just before processing the
    UNSUB can still arrive after that answer and would be dropped unseen. nats-py has no public
    "unsubscribe but keep processing", so this uses its internal `_send_unsubscribe`: nats-py is
    pinned exactly in pyproject.toml, and tests/test_nats_py_contract.py fails if that call or
    its behaviour changes.
    """
    await nc._send_unsubscribe(subscription._id)
    await nc.flush(timeout=2)


class WorkQueue:
    """A bounded FIFO between ingest and stream workers; `offer` never waits."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: deque[Queued] = deque()
        self._not_empty = asyncio.Event()
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    def offer(self, item: Queued) -> bool:
        if len(self._items) >= self.capacity:
            return False
        self._items.append(item)
        self._not_empty.set()
        return True

    async def take(self) -> Queued | None:
        """The next item; None once the queue is closed and empty."""
        while not self._items:
            if self._closed:
                return None
            self._not_empty.clear()
            await self._not_empty.wait()
        return self._items.popleft()

    def close(self) -> None:
        self._closed = True
        self._not_empty.set()

    def drain_remaining(self) -> int:
        count = len(self._items)
        self._items.clear()
        return count


@dataclass
class _StreamWorker:
    index: int
    name: str
    metrics: WorkerMetrics
    nc: Client | None = None
    publisher: Publisher | None = None
    task: asyncio.Task[None] | None = None
    running: bool = False  # its publish loop is taking messages
    held: Queued | None = None  # taken from the queue, not yet in the publisher's window
    failure: BaseException | None = None  # set by whoever cancels the task because it failed


@dataclass
class _IngestWorker:
    index: int
    name: str
    metrics: WorkerMetrics
    nc: Client | None = None
    task: asyncio.Task[None] | None = None
    subscribed: bool = False
    subscription: Subscription | None = None


@dataclass
class AdapterState:
    """What `/choria/` reports about one adapter."""

    name: str
    type: str
    ingest_workers: int = 0
    stream_workers: int = 0
    # Workers whose connection is up and actually reading (a connected client whose read loop
    # died receives nothing, so it is not counted).
    verify: str = OFF
    ingest_connected: int = 0
    stream_connected: int = 0
    queued: int = 0
    in_flight: int = 0
    publish_setting: str = "auto"  # stream.publish
    publish_mode: str = ""  # what start-up chose: batched or acked ("" until decided)
    batched_publishers: int = 0  # stream workers publishing in batches now (others fell back)
    acked_publishers: int = 0
    duplicates_meaning: str = ""
    unconfirmed: int = 0  # given up, still listening for a late acknowledgement
    counts: dict[str, int] = field(default_factory=dict)


def _healthy(nc: Client | None) -> bool:
    """Connected and reading."""
    if nc is None or not nc.is_connected:
        return False
    return nc.reading if isinstance(nc, GuardedClient) else True


DUPLICATES_ACKED = "publishes JetStream acknowledged as duplicates of a stored Nats-Msg-Id"
DUPLICATES_BATCHED = (
    "only publishes acknowledged one by one (acked publishers); in batches JetStream skips duplicates "
    "without reporting them, so they count as stored"
)


class StreamsAdapter:
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
            _IngestWorker(i, f"{self.name}.{i}", metrics.worker(f"{self.name}.{i}", "input"))
            for i in range(adapter.ingest_workers)
        ]
        self._stream = [
            _StreamWorker(i, f"{self.name}.{i}", metrics.worker(f"{self.name}.{i}", "output"))
            for i in range(adapter.stream_workers)
        ]
        self._ready: list[_StreamWorker] = []  # stream workers whose publisher is running
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
        worker: _StreamWorker | _IngestWorker,
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
                    if isinstance(worker, _IngestWorker) or worker.failure is None:
                        raise  # stopping
                    error: BaseException = worker.failure
                except Exception as exception:
                    error = exception
                if isinstance(worker, _StreamWorker):
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

    def _worker_failed(self, worker: _StreamWorker | _IngestWorker, side: str) -> bool:
        """Take a failed worker out of service; True when it held a message (counted as internal)."""
        if isinstance(worker, _IngestWorker):
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

    def _fail_stream_worker(self, worker: _StreamWorker, error: BaseException) -> None:
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

    async def _stop_ingest(self, deadline: float) -> None:
        if self._ingest_stopped:
            return
        self._ingest_stopped = True
        for worker in self._ingest:
            if worker.task and not worker.task.done():
                worker.task.cancel()
        drains = [self._drain_ingest(w, deadline) for w in self._ingest if w.nc]
        if drains:
            await asyncio.gather(*drains)

    async def _drain_ingest(self, worker: _IngestWorker, deadline: float) -> None:
        nc = worker.nc
        if nc is None or nc.is_closed:
            return
        try:
            if nc.is_connected:
                await self._stop_interest(worker)
                await asyncio.wait_for(nc.drain(), timeout=max(0.1, deadline - time.monotonic()))
            else:
                await nc.close()
        except Exception as error:  # a drain that fails still leaves nothing to consume
            self.log.warning(
                "Ingest worker %s did not drain cleanly: %s", worker.name, describe_exception(error)
            )
            with contextlib.suppress(Exception):
                await nc.close()

    async def _stop_interest(self, worker: _IngestWorker) -> None:
        """Tell the server to stop routing to this queue member, then keep listening a moment
        (see `stop_interest_keep_handling`)."""
        subscription, nc = worker.subscription, worker.nc
        if subscription is None or nc is None:
            return
        try:
            await stop_interest_keep_handling(nc, subscription)
            await asyncio.sleep(UNSUBSCRIBE_LINGER)
        except Exception as error:  # the drain that follows still stops the subscription
            self.log.warning(
                "Ingest worker %s could not unsubscribe before draining: %s",
                worker.name,
                describe_exception(error),
            )

    def state(self) -> AdapterState:
        modes = [w.publisher.mode for w in self._stream if w.publisher]
        return AdapterState(
            name=self.name,
            type=self.adapter.type,
            verify=self.adapter.ingest_verify,
            ingest_workers=len(self._ingest),
            stream_workers=len(self._stream),
            ingest_connected=sum(1 for w in self._ingest if w.subscribed and _healthy(w.nc)),
            stream_connected=sum(1 for w in self._stream if w.running and _healthy(w.nc)),
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

    # -- ingest side --------------------------------------------------------------------------

    async def _run_ingest_worker(self, worker: _IngestWorker) -> None:
        nc = await self._connect(
            self.broker.middleware_hosts, f"choria adapter {worker.name}", "ingest", worker.index
        )
        if nc is None:
            return
        worker.nc = nc
        if self._ingest_stopped:
            await nc.close()
            return
        worker.subscription = await nc.subscribe(
            self.adapter.ingest_topic,
            queue=f"nats_ingest_{self.name}",
            cb=self._ingest_handler(worker),
            pending_msgs_limit=PENDING_MSGS_LIMIT,
            pending_bytes_limit=PENDING_BYTES_LIMIT,
        )
        worker.subscribed = True
        adapter_logger(self.name, "ingest", worker.index).info(
            "Subscribed to %s in queue group nats_ingest_%s", self.adapter.ingest_topic, self.name
        )

    def _ingest_handler(self, worker: _IngestWorker) -> Callable[[Msg], Any]:
        metrics = worker.metrics
        protocol = "request" if self._decode_request else "reply"
        provider = self.broker.security_provider
        queue = self.queue
        counts = self._counts
        warn = self._warn_input.warn
        perf_counter = time.perf_counter
        free_publisher = self._free_publisher
        publish = self._publish
        decode_message = self._decode
        verifier = self.verifier
        keep_secure = verifier is not None
        enforce = self.adapter.ingest_verify == ENFORCE
        warn_mode = self.adapter.ingest_verify == WARN
        adapter_counts = self._adapter_counts

        async def handle(msg: Msg) -> None:
            try:
                await handle_one(msg)
            except Exception as error:  # nats-py would log it and lose the message uncounted
                metrics.errors += 1
                self._drop("internal")
                self._internal_error(self._warn_input, "ingest", error, msg.subject)

        async def handle_one(msg: Msg) -> None:
            started = perf_counter()
            data = msg.data
            metrics.bytes += len(data)
            try:
                envelope = decode_message(
                    data, protocol=protocol, security_provider=provider, keep_secure=keep_secure
                )
            except DecodeError as error:
                metrics.errors += 1
                self._drop("decode")
                warn(
                    "decode",
                    f"Could not process message, discarding: {error.reason}",
                    {"subject": msg.subject, "reason": error.reason},
                )
            else:
                item: Queued = envelope
                if verifier is not None:
                    verdict = verifier.verify(envelope)
                    if verdict.verified:
                        adapter_counts.verified += 1
                    else:
                        adapter_counts.unverified[verdict.kind] += 1
                        # Keyed on the kind: a flood of spoofed senders is one rate-limited line.
                        warn(
                            f"unverified:{verdict.kind}",
                            f"Message from {envelope.sender} did not verify"
                            f"{', discarding' if enforce else ''}: {verdict.reason}",
                            {"subject": msg.subject, "sender": envelope.sender, "reason": verdict.reason},
                        )
                        if enforce:
                            metrics.errors += 1
                            self._drop("unverified")
                            metrics.observe(perf_counter() - started)
                            return
                    if warn_mode:
                        item = (envelope, VERIFIED_HEADERS[verdict.verified])
                # An idle publisher with room takes the message at once, as an unbuffered hand-over
                # would; the queue is for when every window is full (and keeps FIFO order then).
                if not queue and (stream_worker := free_publisher()) is not None:
                    metrics.received += 1
                    counts["received"] += 1
                    metrics.observe(perf_counter() - started)
                    publisher = stream_worker.publisher
                    try:
                        await publish(stream_worker, publisher, item)
                    except Exception as error:
                        # Counted as the stream side's: the message was received already.
                        stream_worker.metrics.errors += 1
                        self._drop("internal")
                        self._internal_error(self._warn_output, "stream", error, msg.subject)
                        self._fail_stream_worker(stream_worker, error)
                    return
                if queue.offer(item):
                    metrics.received += 1
                    counts["received"] += 1
                else:
                    metrics.errors += 1
                    self._drop("queue_full")
                    warn(
                        "queue_full",
                        f"Work queue is full ({queue.capacity} messages), discarding message",
                        {"reason": "queue_full"},
                    )
            metrics.observe(perf_counter() - started)

        return handle

    def _internal_error(
        self, warn: RateLimitedWarning, side: str, error: Exception, subject: str | None
    ) -> None:
        warn.warn(
            f"internal:{type(error).__name__}",
            f"Internal error handling a message on the {side} side, discarding it: "
            f"{describe_exception(error)}",
            {"subject": subject, "reason": "internal"},
        )
        adapter_logger(self.name, side).debug("Internal error detail", exc_info=error)

    # -- stream side ----------------------------------------------------------------------------

    async def _run_stream_worker(self, worker: _StreamWorker) -> None:
        servers = self.adapter.publish_servers
        if worker.nc is None or worker.nc.is_closed:
            nc = await self._connect(
                servers, f"{self.name}_{worker.index}-{id(self):x}", "stream", worker.index
            )
            if nc is None:
                return
            worker.nc = nc
            worker.publisher = None
        nc = worker.nc
        if worker.publisher is not None and not worker.publisher.closed:
            # A restart after a failed publish loop: the window and its pending messages carry on.
            await self._publish_loop(worker, worker.publisher)
            return
        if self._publish_mode is None:
            self._publish_mode = asyncio.create_task(self._decide_publish_mode(nc))
        mode = await asyncio.shield(self._publish_mode)
        factory = self._publisher_factory or (
            BatchPublisher if mode is PublishMode.BATCHED else AckedPublisher
        )
        publisher: Publisher = factory(
            nc,
            max_pending=self.adapter.stream_max_pending,
            ack_timeout=self.adapter.stream_ack_timeout,
            retry_budget=self.adapter.stream_retry_budget,
            on_result=self._result_handler(worker),
            on_acked=self._acked_handler(worker),
            name=worker.name,
        )
        await publisher.start()
        worker.publisher = publisher
        await self._publish_loop(worker, publisher)

    async def _decide_publish_mode(self, nc: Client) -> PublishMode:
        """Check that a stream captures the topic and choose batched or acked publishing; logged."""
        stream = await self._check_stream_captures(nc)
        allows: bool | None = None
        level: int | None = None
        if stream is not None and self.adapter.stream_publish == PublishMode.AUTO:
            try:
                info = await stream_info(nc, stream)
                allows = bool(info and info.get("config", {}).get("allow_batched"))
                api = (await jetstream_request(nc, "$JS.API.INFO")).get("api") or {}
                level = api.get("level") if isinstance(api.get("level"), int) else 0
            except (JetStreamAdminError, nats.errors.Error, ValueError) as error:
                self.log.warning(
                    "Could not read stream %s or the JetStream API level: %s",
                    stream,
                    describe_exception(error),
                )
        mode, why = choose_publish_mode(
            self.adapter.stream_publish, stream_allows_batches=allows, server_api_level=level
        )
        self.log.info(
            "Adapter %s publishes %s (%s)",
            self.name,
            "in fast-ingest batches" if mode is PublishMode.BATCHED else "with per-message acknowledgements",
            why,
        )
        return mode

    async def _check_stream_captures(self, nc: Client) -> str | None:
        """The stream that captures the adapter's topic (None: none, or JetStream did not say)."""
        probe = output_subject(self.adapter.stream_topic, "node.example.net")
        try:
            stream = await stream_for_subject(nc.jetstream(), probe)
        except Exception as error:  # start-up diagnostics must never stop publishing
            self.log.warning(
                "Could not ask JetStream which stream captures %s: %s", probe, describe_exception(error)
            )
            return None
        if stream is None:
            self.log.warning(
                "No JetStream stream captures %s (topic %s); messages will be retried and then dropped. "
                "Create one with `choria-broker-adapters streams setup --config %s`",
                probe,
                self.adapter.stream_topic,
                self.broker.config_file,
            )
        else:
            self.log.info("Publishing %s into JetStream stream %s", self.adapter.stream_topic, stream)
        return stream

    async def _publish_loop(self, worker: _StreamWorker, publisher: Publisher) -> None:
        worker.running = True
        if worker not in self._ready:
            self._ready.append(worker)
        take = self.queue.take
        publish = self._publish
        while (item := await take()) is not None:
            worker.held = item
            accepted = publisher.accepted
            try:
                await publish(worker, publisher, item)
                worker.held = None
            finally:
                if publisher.accepted != accepted:
                    worker.held = None  # in the window: the publisher accounts for it now
        worker.running = False

    def _free_publisher(self) -> _StreamWorker | None:
        """A connected stream worker whose acknowledgement window has room, rotating among them."""
        ready = self._ready
        for _ in range(len(ready)):
            self._next_ready = (self._next_ready + 1) % len(ready)
            worker = ready[self._next_ready]
            publisher = worker.publisher
            if publisher is not None and publisher.in_flight < publisher.max_pending:
                return worker
        return None

    async def _publish(self, worker: _StreamWorker, publisher: Publisher, item: Queued) -> None:
        """Encode one message and put it in the worker's acknowledgement window (or count why not)."""
        if type(item) is tuple:
            envelope, headers = item
        else:
            envelope, headers = item, None
        metrics = worker.metrics
        started = time.perf_counter()
        try:
            subject = output_subject(self.adapter.stream_topic, envelope.sender)
        except OutputError as error:
            metrics.errors += 1
            self._drop("subject")
            self._warn_output.warn(
                "subject",
                f"Cannot form a safe subject, discarding: {error.reason}",
                {"reason": error.reason},
            )
            return
        try:
            body = encode_output(envelope, adapter_type=self.adapter.type)
        except OutputError as error:
            metrics.errors += 1
            self._drop("encode")
            self._warn_output.warn(
                "encode",
                f"Cannot JSON encode message for publishing, discarding: {error.reason}",
                {"subject": subject, "reason": error.reason},
            )
            return
        except Exception as error:  # a bug in the encoder: this message only, the worker carries on
            metrics.errors += 1
            self._drop("internal")
            self._internal_error(self._warn_output, "stream", error, subject)
            return
        msg_id = message_id(envelope)
        nc = worker.nc
        # Checked here for either publisher: the server would close the connection instead.
        oversize = message_oversize(body, msg_id, headers, nc.max_payload) if nc is not None else None
        if oversize is not None:
            metrics.errors += 1
            self._drop("encode")
            self._warn_output.warn(
                "encode:max_payload",
                f"Cannot publish the output document, discarding: {oversize}",
                {"subject": subject, "reason": "max_payload"},
            )
            return
        metrics.bytes += len(body)
        if headers is None:
            await publisher.publish(subject, body, msg_id)
        else:
            await publisher.publish(subject, body, msg_id, headers)
        metrics.observe(time.perf_counter() - started)

    def _acked_handler(self, worker: _StreamWorker) -> Callable[[], None]:
        metrics = worker.metrics
        counts = self._counts

        def on_acked() -> None:
            counts["stored"] += 1
            metrics.received += 1
            metrics.published += 1

        return on_acked

    def _result_handler(self, worker: _StreamWorker) -> Callable[[PublishResult], None]:
        metrics = worker.metrics
        counts = self._counts
        adapter_counts = self._adapter_counts
        warn = self._warn_output.warn

        def on_result(result: PublishResult) -> None:
            if result.attempts > 1:
                adapter_counts.retries += result.attempts - 1
            if result.outcome is PublishOutcome.DROPPED:
                metrics.errors += 1
                if result.uncertain:
                    self._drop("unconfirmed")
                    warn(
                        "unconfirmed",
                        f"Gave up publishing to JetStream {result.subject} after {result.attempts} "
                        f"attempt(s) and no late acknowledgement came; JetStream may or may not have "
                        f"stored it: {result.reason}",
                        {"subject": result.subject, "reason": result.reason},
                    )
                    return
                drop_reason = result.refusal or "publish"
                self._drop(drop_reason)
                # Keyed on the kind of drop only: the reason text names the subject.
                warn(
                    f"publish:{drop_reason}",
                    f"Could not publish to JetStream {result.subject} after {result.attempts} attempt(s), "
                    f"discarding: {result.reason}",
                    {"subject": result.subject, "reason": result.reason},
                )
                return
            if result.late:
                adapter_counts.late_acks += 1
            if result.outcome is PublishOutcome.DUPLICATE:
                adapter_counts.duplicates += 1
            counts["stored"] += 1
            metrics.received += 1
            metrics.published += 1

        return on_result
