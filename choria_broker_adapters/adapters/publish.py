"""The publish side of a Choria Streams adapter: stream workers choose their publisher (fast-ingest
batches or per-message acks), encode each message and count every outcome."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import nats.errors
from nats.aio.client import Client

from choria_broker_adapters.adapters.work import (
    Queued,
    StreamWorker,
)
from choria_broker_adapters.codec.output import OutputError, encode_output, message_id, output_subject
from choria_broker_adapters.core.errors import describe_exception
from choria_broker_adapters.jetstream.admin import JetStreamAdminError, jetstream_request, stream_info
from choria_broker_adapters.jetstream.batch_publisher import BatchPublisher
from choria_broker_adapters.jetstream.batching import PublishMode, choose_publish_mode
from choria_broker_adapters.jetstream.publisher import AckedPublisher, Publisher, stream_for_subject
from choria_broker_adapters.jetstream.replies import PublishOutcome, PublishResult, message_oversize


class PublishSide:
    """Methods of `StreamsAdapter` (adapters.choria_streams), which holds their state."""

    async def _run_stream_worker(self, worker: StreamWorker) -> None:
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

    async def _publish_loop(self, worker: StreamWorker, publisher: Publisher) -> None:
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

    def _free_publisher(self) -> StreamWorker | None:
        """A connected stream worker whose acknowledgement window has room, rotating among them."""
        ready = self._ready
        for _ in range(len(ready)):
            self._next_ready = (self._next_ready + 1) % len(ready)
            worker = ready[self._next_ready]
            publisher = worker.publisher
            if publisher is not None and publisher.in_flight < publisher.max_pending:
                return worker
        return None

    async def _publish(self, worker: StreamWorker, publisher: Publisher, item: Queued) -> None:
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

    def _acked_handler(self, worker: StreamWorker) -> Callable[[], None]:
        metrics = worker.metrics
        counts = self._counts

        def on_acked() -> None:
            counts["stored"] += 1
            metrics.received += 1
            metrics.published += 1

        return on_acked

    def _result_handler(self, worker: StreamWorker) -> Callable[[PublishResult], None]:
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
