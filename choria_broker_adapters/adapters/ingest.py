"""The ingest side of a Choria Streams adapter: queue-subscribe, decode (and verify), then hand
each message to a free publisher or the work queue; stopping interest and draining on stop."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from nats.aio.msg import Msg

from choria_broker_adapters.adapters.work import (
    PENDING_BYTES_LIMIT,
    PENDING_MSGS_LIMIT,
    UNSUBSCRIBE_LINGER,
    VERIFIED_HEADERS,
    IngestWorker,
    Queued,
    stop_interest_keep_handling,
)
from choria_broker_adapters.codec.protocol import DecodeError
from choria_broker_adapters.codec.verify import ENFORCE, WARN
from choria_broker_adapters.core.errors import describe_exception
from choria_broker_adapters.core.log import RateLimitedWarning, adapter_logger


class IngestSide:
    """Methods of `StreamsAdapter` (adapters.choria_streams), which holds their state."""

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

    async def _drain_ingest(self, worker: IngestWorker, deadline: float) -> None:
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

    async def _stop_interest(self, worker: IngestWorker) -> None:
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

    async def _run_ingest_worker(self, worker: IngestWorker) -> None:
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

    def _ingest_handler(self, worker: IngestWorker) -> Callable[[Msg], Any]:
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
