"""How a batch publisher reads JetStream's answers on a batch's inbox: flow acknowledgements,
the final acknowledgement, errors, and late answers to a batch already given up
(docs/fast-ingest.md)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from nats.aio.msg import Msg

from choria_broker_adapters.codec.jsonfast import loads_trusted as _json_loads
from choria_broker_adapters.jetstream.batching import (
    BATCH_DISABLED,
    OP_END,
    Batch,
    BatchState,
    HeldMessage,
)
from choria_broker_adapters.jetstream.replies import (
    DESCRIPTION_HEADER,
    NO_RESPONDERS_STATUS,
    PERMANENT_HINTS,
    STATUS_HEADER,
    PublishOutcome,
    PublishResult,
    describe_api_error,
    no_stream_reason,
    permanent_refusal,
)

log = logging.getLogger("choria_broker_adapters.jetstream.batch_publisher")


class BatchReplies:
    """Methods of `BatchPublisher` (jetstream.batch_publisher), which holds their state."""

    def _reply_handler(self, batch: Batch) -> Callable[[Msg], Any]:
        async def on_reply(msg: Msg) -> None:
            if self._batch is not batch:
                if batch in self._lingering:
                    await self._on_late_reply(batch, msg)
                return  # otherwise a late reply to a batch already given up
            await self._on_reply(batch, msg)

        return on_reply

    async def _on_reply(self, batch: Batch, msg: Msg) -> None:
        data = msg.data
        headers = msg.headers
        if headers and headers.get(STATUS_HEADER):
            status = headers[STATUS_HEADER]
            subject = self._held[0].subject if self._held else ""
            refused = batch.state is BatchState.OPENING and batch.sent == 1
            if status == NO_RESPONDERS_STATUS:
                self._fail(batch, f"{no_stream_reason(subject)} (503 no responders)", refused=refused)
            else:
                reason = f"status {status} {headers.get(DESCRIPTION_HEADER, '')}".strip()
                self._fail(batch, reason, refused=refused)
            return
        try:
            document = _json_loads(data)
        except ValueError:
            self._fail(batch, f"unparseable JetStream reply: {data[:200]!r}")
            return
        if not isinstance(document, dict):
            self._fail(batch, f"unexpected JetStream reply: {data[:200]!r}")
            return
        kind = document.get("type")
        if kind == "ack":
            await self._on_flow_ack(batch, document)
        elif kind == "gap":
            self._fail(
                batch,
                f"JetStream missed batch messages {document.get('last_seq')}..{document.get('seq')}",
            )
        elif kind == "err":
            error = document.get("error")
            reason = describe_api_error(error, self._held[0].subject if self._held else "")
            refusal = permanent_refusal(error)
            seq = document.get("seq")
            index = seq - batch.base - 1 if isinstance(seq, int) else -1
            if refusal == "stream_full" and 0 <= index < min(batch.sent, len(self._held)):
                # Every new message would now end a batch the same way, each costing a new
                # batch and a resend of the window: per-message acks refuse each one at once.
                entry = self._held[index]
                del self._held[index]
                entry.maybe_stored = False
                self._drop(entry, f"{reason} ({PERMANENT_HINTS[refusal]})", refusal=refusal)
                await self._fall_back(batch, f"the stream refused a message as full ({reason})")
            elif refusal is not None and 0 <= index < min(batch.sent, len(self._held)):
                # JetStream names the message it refused for good: only that one is dropped,
                # at once; the batch is resent without it (what it stored before is a duplicate).
                self._fail(
                    batch,
                    f"{reason} ({PERMANENT_HINTS[refusal]})",
                    drop=self._held[index],
                    refusal=refusal,
                )
            else:
                self._fail(batch, reason)
        elif "error" in document:
            await self._on_error_ack(batch, document)
        elif "stream" in document:
            await self._on_final_ack(batch, document)
        else:
            self._fail(batch, f"unexpected JetStream reply: {data[:200]!r}")

    async def _on_flow_ack(self, batch: Batch, document: dict[str, Any]) -> None:
        seq = document.get("seq")
        interval = document.get("msgs")
        if not isinstance(seq, int) or seq < batch.base:
            return
        if isinstance(interval, int) and interval > 0:
            batch.interval = interval
        if batch.state is BatchState.OPENING:
            batch.state = BatchState.OPEN
        self._cover(batch, seq - batch.base)
        batch.quiet_since = time.monotonic()
        batch.pinged = False
        if self._batch is batch:
            await self._pump(batch)

    async def _on_final_ack(self, batch: Batch, document: dict[str, Any]) -> None:
        if document.get("batch") is None:
            # A plain acknowledgement: the server stored the first message as an ordinary
            # publish, so it does not know fast-ingest batches (before 2.14).
            self._cover(batch, 1, duplicate=document.get("duplicate") is True)
            await self._fall_back(
                batch, "JetStream acknowledged a batch message as a single publish (nats-server before 2.14)"
            )
            return
        count = document.get("count")
        covered = count - batch.base if isinstance(count, int) else 0
        self._cover(batch, min(covered, batch.sent), duplicate=document.get("duplicate") is True)
        await self._unsubscribe(batch)
        if self._batch is batch:
            self._batch = None
            if self._held:
                await self._open_batch()

    async def _on_error_ack(self, batch: Batch, document: dict[str, Any]) -> None:
        error = document["error"]
        code = error.get("err_code") if isinstance(error, dict) else None
        subject = self._held[0].subject if self._held else ""
        if code == BATCH_DISABLED:
            await self._fall_back(batch, f"the stream does not allow batched publishing ({code})")
        else:
            refused = batch.state is BatchState.OPENING and batch.sent == 1
            self._fail(batch, describe_api_error(error, subject), refused=refused)

    async def _on_late_reply(self, batch: Batch, msg: Msg) -> None:
        """A reply to a batch given up while JetStream was silent: it answers after all."""
        try:
            document = _json_loads(msg.data) if msg.data else None
        except ValueError:
            return
        if not isinstance(document, dict):
            return
        if document.get("type") == "ack" and isinstance(document.get("seq"), int):
            self._settle_late(batch, document["seq"])
            if not batch.late_commit:
                # Ending it makes JetStream report how far it got, once everything is stored.
                batch.late_commit = True
                await self._control(batch, OP_END, batch.last_seq + 1)
        elif "stream" in document and "error" not in document and isinstance(document.get("count"), int):
            self._settle_late(batch, document["count"])
            self._lingering.pop(batch, None)
            await self._unsubscribe(batch)

    def _settle_late(self, batch: Batch, covered: int) -> None:
        """Given-up messages sent as sequence <= `covered` of `batch` are stored after all."""
        for entry in [e for e in self._given_up if any(b is batch and s <= covered for b, s in e.sent_in)]:
            self._settle_given_up(entry, stored=True)

    def _settle_given_up(self, entry: HeldMessage, *, stored: bool) -> None:
        del self._given_up[entry]
        if stored:
            self.late_acks += 1
            self._acked += 1
            if self._on_result is not None:
                try:
                    self._on_result(
                        PublishResult(
                            entry.subject, entry.msg_id, PublishOutcome.ACKED, entry.attempts, late=True
                        )
                    )
                except Exception:
                    log.exception("publisher %s: result callback failed", self.name)
        else:
            self._drop(entry, entry.reason or "no acknowledgement")
        entry.sent_in = []
        self._released()

    def _expire_lingering(self, now: float) -> None:
        for batch, until in list(self._lingering.items()):
            if now >= until:
                del self._lingering[batch]
                self._spawn(self._unsubscribe(batch))
        for entry, until in list(self._given_up.items()):
            if now >= until:
                self._settle_given_up(entry, stored=False)
