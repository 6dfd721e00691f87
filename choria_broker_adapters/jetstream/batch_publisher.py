"""Fast-ingest batch publishing into JetStream (nats-server 2.14+, streams with `allow_batched`).

`BatchPublisher` keeps the promise of `AckedPublisher` (every message ends ACKED, DUPLICATE or
DROPPED, retried with the same Nats-Msg-Id within the same budget) while JetStream confirms
many messages with one flow acknowledgement instead of one reply each. docs/fast-ingest.md
describes the protocol as this module relies on it; in short:

* Every message goes to its own subject with the reply subject
  `<inbox>.<flow>.fail.<seq>.<op>.$FI`; the inbox's last token names the batch, `seq` counts
  from 1, `op` says start / append / end-of-batch / ping. JetStream answers on the inbox.
* `gap=fail`: a flow ack `{"type":"ack","seq":S}` means messages 1..S are stored. Messages are
  held until an ack covers them; anything else (a gap, an error, an unknown batch, silence,
  a disconnect) ends the batch, and the publisher opens a new one and resends every held
  message with its Nats-Msg-Id: the stream's duplicate window skips those already stored.
* A batch opens with one message and waits for the first reply: a flow ack proves the
  server batches; a plain acknowledgement (a server before 2.14) or "batch publish is
  disabled" switches this publisher to per-message acks for good (`AckedPublisher`).
* When input pauses the batch is ended (end-of-batch commit), so JetStream confirms what is
  held and never forgets an idle batch (it drops one after 10 s without traffic).
* A batch given up while JetStream was silent (the connection up) may still store what it
  carried: its inbox is kept for a while, and messages that ran out of budget meanwhile are
  counted stored if it answers (late), else dropped as uncertain, as `AckedPublisher` does.

JetStream skips duplicates inside a batch without telling: messages are reported ACKED (stored),
and `duplicates` only counts what a per-message acknowledgement reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import nats.errors
from nats.aio.client import Client

from choria_broker_adapters.core.backoff import backoff_delay
from choria_broker_adapters.jetstream.batch_replies import BatchReplies
from choria_broker_adapters.jetstream.batching import (
    OP_APPEND,
    OP_END,
    OP_PING,
    OP_START,
    WINDOWS,
    Batch,
    BatchState,
    HeldMessage,
    PublishMode,
    requested_flow,
)
from choria_broker_adapters.jetstream.publisher import AckedPublisher, describe_exception
from choria_broker_adapters.jetstream.replies import (
    MSG_ID_HEADER,
    PublishOutcome,
    PublishResult,
    RetryPolicy,
    message_oversize,
    oversize_reason,
)

log = logging.getLogger(__name__)


class BatchPublisher(BatchReplies):
    """Publish through fast-ingest batches; the interface and accounting of `AckedPublisher`.

    `publish` returns once the message is handed to the client (or held for sending) and waits
    only while `max_pending` messages are unconfirmed. Outcomes go to `on_acked` (stored at the
    first attempt) or `on_result`, on the event loop. One batch is open at a time.
    """

    def __init__(
        self,
        nc: Client,
        *,
        max_pending: int = 512,
        ack_timeout: float = 5.0,
        retry_budget: float = 60.0,
        backoff_initial: float = 0.05,
        backoff_max: float = 2.0,
        on_result: Callable[[PublishResult], None] | None = None,
        on_acked: Callable[[], None] | None = None,
        name: str = "",
        pause: float = 0.1,
    ) -> None:
        self._policy = RetryPolicy(max_pending, ack_timeout, retry_budget, backoff_initial, backoff_max)
        self._nc = nc
        self._max_pending = max_pending
        self._on_result = on_result
        self._on_acked = on_acked
        self.name = name
        # Input quiet for this long ends the batch, so JetStream confirms what is held; keep it
        # well below ack_timeout, or held messages time out before the batch is ended.
        self._pause = pause
        self._flow = requested_flow(max_pending)
        self._tick = max(0.005, min(0.05, backoff_initial, self._pause / 2))
        self._held: deque[HeldMessage] = deque()
        self._batch: Batch | None = None
        self._failures = 0  # consecutive failed batches, for the backoff
        self._retry_at = 0.0
        self._last_publish = 0.0
        self._flushing = False
        self._fallback: AckedPublisher | None = None
        self._timer: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        # Given up while JetStream was silent, the connection up: the batch may still store what
        # it carried, so its inbox stays subscribed until then (batch -> when to stop).
        self._late_ack_linger = 2 * max(retry_budget, ack_timeout)
        self._lingering: dict[Batch, float] = {}
        # Dropped by the budget but possibly stored by a lingering batch: entry -> deadline.
        self._given_up: dict[HeldMessage, float] = {}
        self.late_acks = 0
        self._has_room = asyncio.Event()
        self._has_room.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._started = False
        self._closed = False
        self.accepted = 0  # messages taken by publish(), including those passed to the fallback
        self.batches = 0  # batches opened
        self.batch_failures = 0  # batches ended by a gap, an error, silence or a disconnect
        self.fallback_reason: str | None = None
        self.last_failure: str | None = None  # why the last batch ended without confirming
        self._acked = 0
        self._retries = 0
        self._dropped = 0
        self._abandoned = 0

    # -- the interface shared with AckedPublisher ----------------------------------------------

    @property
    def mode(self) -> PublishMode:
        return PublishMode.ACKED if self._fallback is not None else PublishMode.BATCHED

    @property
    def in_flight(self) -> int:
        """Messages not yet confirmed or dropped (held for a batch, or in the fallback's window)."""
        fallback = self._fallback
        return len(self._held) + (fallback.in_flight if fallback is not None else 0)

    @property
    def unconfirmed(self) -> int:
        """Given-up messages still listened for: neither known stored nor known lost yet."""
        return len(self._given_up) + (self._fallback.unconfirmed if self._fallback is not None else 0)

    @property
    def max_pending(self) -> int:
        return self._max_pending

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def acked(self) -> int:
        return self._acked + (self._fallback.acked if self._fallback else 0)

    @property
    def duplicates(self) -> int:
        return self._fallback.duplicates if self._fallback else 0

    @property
    def retries(self) -> int:
        return self._retries + (self._fallback.retries if self._fallback else 0)

    @property
    def dropped(self) -> int:
        return self._dropped + (self._fallback.dropped if self._fallback else 0)

    @property
    def abandoned(self) -> int:
        return self._abandoned + (self._fallback.abandoned if self._fallback else 0)

    async def start(self) -> None:
        if self._started:
            return
        self._timer = asyncio.create_task(self._timer_loop(), name=f"batch-publisher-timer-{self.name}")
        self._started = True

    def too_large(self, body: bytes, msg_id: str) -> str | None:
        """Why `body` with its Nats-Msg-Id exceeds the connected server's max_payload, or None."""
        return message_oversize(body, msg_id, None, self._nc.max_payload)

    async def publish(
        self, subject: str, body: bytes, msg_id: str, headers: Mapping[str, str] | None = None
    ) -> None:
        """Hold and send one message (with `headers` besides the Nats-Msg-Id); waits only while
        `max_pending` messages are unconfirmed."""
        if self._fallback is not None:
            await self._fallback.publish(subject, body, msg_id, headers)
            self.accepted += 1
            return
        held = self._held
        while len(held) >= self._max_pending and not self._closed and self._fallback is None:
            self._has_room.clear()
            await self._has_room.wait()
        if self._closed or not self._started:
            raise RuntimeError(f"publisher {self.name!r} is {'closed' if self._closed else 'not started'}")
        if self._fallback is not None:
            await self._fallback.publish(subject, body, msg_id, headers)
            self.accepted += 1
            return
        now = time.monotonic()
        self._last_publish = now
        held.append(HeldMessage(subject, body, msg_id, now, headers))
        self.accepted += 1
        self._idle.clear()
        batch = self._batch
        if batch is None:
            if now >= self._retry_at:
                await self._open_batch()
        elif (
            batch.state is BatchState.OPEN
            and batch.sent == len(held) - 1
            and batch.sent < WINDOWS * batch.interval
        ):
            await self._send_next(batch)

    async def flush(self, timeout: float) -> int:
        """End the batch at once and wait until everything is confirmed or dropped; return the rest."""
        self._flushing = True
        try:
            deadline = time.monotonic() + timeout
            if self._held or self._given_up:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._idle.wait(), timeout)
            remaining = len(self._held)
            if self._fallback is not None:
                remaining += await self._fallback.flush(max(0.0, deadline - time.monotonic()))
            return remaining
        finally:
            self._flushing = False

    async def close(self) -> None:
        """Stop the timer and the batch inbox; anything unconfirmed is abandoned (see `abandoned`)."""
        if self._closed:
            return
        self._closed = True
        self._abandoned += len(self._held)
        self._held.clear()
        for entry in list(self._given_up):
            self._settle_given_up(entry, stored=False)
        self._idle.set()
        self._has_room.set()
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
        if self._batch is not None:
            await self._unsubscribe(self._batch)
            self._batch = None
        for lingering in list(self._lingering):
            await self._unsubscribe(lingering)
        self._lingering.clear()
        for task in list(self._background):
            with contextlib.suppress(Exception):
                await task
        if self._fallback is not None:
            await self._fallback.close()

    # -- sending ---------------------------------------------------------------------------------

    async def _open_batch(self) -> None:
        """Start a new batch with the oldest held message; the rest follow after the first reply."""
        nc = self._nc
        if self._batch is not None or not self._held or self.fallback_reason is not None or self._closed:
            return
        if not nc.is_connected:
            return
        now = time.monotonic()
        batch = Batch(nc.new_inbox(), self._flow, nc.stats["reconnects"], now)
        self._batch = batch
        self.batches += 1
        try:
            batch.subscription = await nc.subscribe(f"{batch.inbox}.>", cb=self._reply_handler(batch))
        except Exception as exc:
            self._fail(batch, f"cannot subscribe to the batch inbox: {describe_exception(exc)}")
            return
        if self._batch is batch:
            await self._send_next(batch)
        else:
            await self._unsubscribe(batch)  # given up while subscribing

    async def _send_next(self, batch: Batch) -> None:
        """Send held[batch.sent]; the sequence is taken before the await so sends stay in order."""
        held = self._held
        nc = self._nc
        while batch.sent < len(held):
            entry = held[batch.sent]
            # Checked at every attempt: a reconnection may reach a server with a smaller limit,
            # which would close the connection. Unsent, so taking it out keeps the numbering.
            if len(entry.body) + entry.headers_size <= nc.max_payload:
                break
            oversize = oversize_reason(len(entry.body), entry.headers_size, nc.max_payload)
            del held[batch.sent]
            self._drop(entry, f"cannot publish: {oversize}")
            self._released()
        else:
            return
        batch.sent += 1
        seq = batch.base + batch.sent
        batch.last_seq = seq
        batch.subject = batch.subject or entry.subject
        entry.sent_in.append((batch, seq))
        if batch.sent == 1 and batch.base == 0:
            op = OP_START
            batch.quiet_since = time.monotonic()
        else:
            op = OP_APPEND
            if batch.sent == 1:
                batch.quiet_since = time.monotonic()
        entry.attempts += 1
        if entry.attempts > 1:
            self._retries += 1
        if not nc.is_connected:
            self._fail(batch, "not connected to NATS", refused=batch.sent == 1)
            return
        try:
            await nc.publish(
                entry.subject, entry.body, reply=f"{batch.reply_prefix}{seq}.{op}.$FI", headers=entry.headers
            )
        except (nats.errors.MaxPayloadError, nats.errors.BadSubjectError) as exc:
            # No retry cures these; only this message is dropped, the batch is resent without it.
            if self._batch is batch:
                self._fail(batch, f"cannot publish: {describe_exception(exc)}", drop=entry)
        except Exception as exc:
            if self._batch is batch:
                self._fail(batch, f"publish failed: {describe_exception(exc)}")

    async def _pump(self, batch: Batch) -> None:
        """Send held messages while the batch is open and the server's flow windows allow."""
        held = self._held
        while (
            self._batch is batch
            and batch.state is BatchState.OPEN
            and batch.sent < len(held)
            and batch.sent < WINDOWS * batch.interval
        ):
            await self._send_next(batch)

    async def _end_batch(self, batch: Batch) -> None:
        """Commit without a message (end of batch): JetStream answers with the final ack."""
        batch.state = BatchState.ENDING
        batch.quiet_since = time.monotonic()
        batch.pinged = False
        await self._control(batch, OP_END, batch.base + batch.sent + 1)

    async def _control(self, batch: Batch, op: int, seq: int) -> None:
        if not self._nc.is_connected:
            self._fail(batch, "not connected to NATS")
            return
        # A batch belongs to one stream: control messages go where its messages went.
        subject = batch.subject
        if not subject:
            return
        try:
            await self._nc.publish(subject, b"", reply=f"{batch.reply_prefix}{seq}.{op}.$FI")
        except Exception as exc:
            if self._batch is batch:
                self._fail(batch, f"publish failed: {describe_exception(exc)}")

    # -- replies ---------------------------------------------------------------------------------

    def _cover(self, batch: Batch, count: int, *, duplicate: bool = False) -> None:
        """The next `count` held messages of the batch are stored: report and release them."""
        if count <= 0:
            return
        count = min(count, batch.sent)
        held = self._held
        on_acked = self._on_acked
        on_result = self._on_result
        self._failures = 0
        try:
            for _ in range(count):
                entry = held.popleft()
                if entry.attempts == 1 and on_acked is not None and not duplicate:
                    self._acked += 1
                    on_acked()
                else:
                    outcome = PublishOutcome.DUPLICATE if duplicate else PublishOutcome.ACKED
                    if not duplicate:
                        self._acked += 1
                    if on_result is not None:
                        on_result(PublishResult(entry.subject, entry.msg_id, outcome, entry.attempts))
        except Exception:
            log.exception("publisher %s: result callback failed", self.name)
        batch.base += count
        batch.sent -= count
        self._released()

    def _released(self) -> None:
        self._has_room.set()
        if not self._held and not self._given_up:
            self._idle.set()

    # -- failures ----------------------------------------------------------------------------------

    def _fail(
        self,
        batch: Batch,
        reason: str,
        *,
        drop: HeldMessage | None = None,
        refused: bool = False,
        refusal: str | None = None,
    ) -> None:
        """The batch is over without confirming the held messages: schedule a new one, or drop.

        `refused`: JetStream turned down the batch's only message, so it is known not stored.
        `refusal`: `drop` was refused for good (the drop reason): it is not stored (JetStream
        checks the Nats-Msg-Id first, so a stored earlier copy would have been a duplicate),
        and the resend goes out at once, since no wait cures what JetStream refused.
        """
        if self._batch is not batch:
            return
        self._batch = None
        if not refused:
            for index in range(min(batch.sent, len(self._held))):
                self._held[index].maybe_stored = True
        self.batch_failures += 1
        self.last_failure = reason
        nc = self._nc
        if (
            not refused
            and batch.last_seq > 0
            and self._late_ack_linger > 0
            and nc.is_connected
            and nc.stats["reconnects"] == batch.reconnects
        ):
            # JetStream was silent, not gone: it may still store what this batch carried.
            self._lingering[batch] = time.monotonic() + self._late_ack_linger
        else:
            self._spawn(self._unsubscribe(batch))
        log.debug("publisher %s: batch %s ended: %s", self.name, batch.inbox, reason)
        now = time.monotonic()
        if drop is not None and drop in self._held:
            self._held.remove(drop)
            if refusal is not None:
                drop.maybe_stored = False
            self._drop(drop, reason, refusal=refusal)
        for entry in self._held:
            entry.reason = reason
        if refusal is not None:
            self._retry_at = now
        else:
            self._failures += 1
            self._retry_at = now + backoff_delay(
                self._failures, self._policy.backoff_initial, self._policy.backoff_max
            )
        self._expire(self._retry_at)

    def _expire(self, resend_at: float) -> None:
        """Drop the held messages a resend at `resend_at` would take beyond the retry budget.

        Only while no batch is open: an open batch numbers its messages from held[0].
        """
        if self._batch is not None:
            return
        held = self._held
        budget = self._policy.retry_budget
        while held and resend_at - held[0].first_sent > budget:
            entry = held.popleft()
            if entry.maybe_stored and any(sent in self._lingering for sent, _ in entry.sent_in):
                entry.body = b""  # never resent
                self._given_up[entry] = time.monotonic() + self._late_ack_linger
            else:
                self._drop(entry, entry.reason or "not connected to NATS")
        self._released()

    def _drop(self, entry: HeldMessage, reason: str, *, refusal: str | None = None) -> None:
        self._dropped += 1
        log.debug(
            "publisher %s: dropped %s after %d attempts: %s", self.name, entry.subject, entry.attempts, reason
        )
        if self._on_result is not None:
            try:
                self._on_result(
                    PublishResult(
                        entry.subject,
                        entry.msg_id,
                        PublishOutcome.DROPPED,
                        entry.attempts,
                        reason,
                        uncertain=entry.maybe_stored,
                        refusal=refusal,
                    )
                )
            except Exception:
                log.exception("publisher %s: result callback failed", self.name)

    async def _fall_back(self, batch: Batch, reason: str) -> None:
        """Switch to per-message acks for good; held messages go to the acked publisher."""
        if self._batch is batch:
            self._batch = None
        await self._unsubscribe(batch)
        if self.fallback_reason is not None:
            return
        self.fallback_reason = reason  # from here on no batch is opened
        log.warning(
            "publisher %s: %s; publishing with per-message acknowledgements from now on", self.name, reason
        )
        fallback = AckedPublisher(
            self._nc,
            max_pending=self._max_pending,
            ack_timeout=self._policy.ack_timeout,
            retry_budget=self._policy.retry_budget,
            backoff_initial=self._policy.backoff_initial,
            backoff_max=self._policy.backoff_max,
            on_result=self._on_result,
            on_acked=self._on_acked,
            name=self.name,
        )
        await fallback.start()
        self._fallback = fallback
        held = list(self._held)
        self._held.clear()
        self._released()
        for entry in held:
            extra = {name: value for name, value in entry.headers.items() if name != MSG_ID_HEADER}
            await fallback.publish(entry.subject, entry.body, entry.msg_id, extra or None)

    async def _unsubscribe(self, batch: Batch) -> None:
        subscription, batch.subscription = batch.subscription, None
        if subscription is None or self._nc.is_closed:
            return
        try:
            await subscription.unsubscribe()
        except (nats.errors.Error, asyncio.CancelledError) as exc:
            log.debug("publisher %s: unsubscribing the batch inbox failed: %r", self.name, exc)

    def _spawn(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- the timer ---------------------------------------------------------------------------------

    async def _timer_loop(self) -> None:
        """Ends paused batches, pings and times out silent ones, reopens after failures."""
        while self._fallback is None:
            await asyncio.sleep(self._tick)
            try:
                await self._check(time.monotonic())
            except Exception:
                log.exception("publisher %s: batch timer failed", self.name)

    async def _check(self, now: float) -> None:
        if self._lingering or self._given_up:
            self._expire_lingering(now)
        nc = self._nc
        batch = self._batch
        if batch is None:
            if not self._held:
                return
            self._expire(now)
            if self._held and now >= self._retry_at and nc.is_connected:
                await self._open_batch()
            return
        if not nc.is_connected or nc.stats["reconnects"] != batch.reconnects:
            # Whatever the old connection carried is unknown; nats-py may also replay buffered
            # publishes of this batch, which JetStream answers on the inbox we give up here.
            self._fail(batch, "not connected to NATS" if not nc.is_connected else "reconnected to NATS")
            return
        waiting = batch.state is not BatchState.OPEN or batch.sent > 0
        quiet = now - batch.quiet_since
        if waiting and quiet > self._policy.ack_timeout:
            self._fail(batch, f"no acknowledgement within {self._policy.ack_timeout:g}s")
            return
        if (
            waiting
            and quiet > self._policy.ack_timeout / 2
            and not batch.pinged
            and batch.state is BatchState.OPEN
        ):
            # Asks JetStream to repeat its last flow ack; an unknown batch answers with an error.
            batch.pinged = True
            await self._control(batch, OP_PING, batch.base + batch.sent)
            return
        if (
            batch.state is BatchState.OPEN
            and batch.sent == len(self._held)
            and (self._flushing or now - self._last_publish >= self._pause)
        ):
            await self._end_batch(batch)
