"""The pieces a Choria Streams adapter is made of: the bounded queue between its ingest and
publish sides, each worker's state, and what `/choria/` reports."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from nats.aio.client import Client
from nats.aio.subscription import Subscription

from choria_broker_adapters.adapters.counters import WorkerMetrics
from choria_broker_adapters.codec.protocol import Envelope
from choria_broker_adapters.codec.verify import OFF, VERIFIED_HEADER
from choria_broker_adapters.jetstream.publisher import Publisher
from choria_broker_adapters.transport.connect import (
    GuardedClient,
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
class StreamWorker:
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
class IngestWorker:
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


def healthy(nc: Client | None) -> bool:
    """Connected and reading."""
    if nc is None or not nc.is_connected:
        return False
    return nc.reading if isinstance(nc, GuardedClient) else True


DUPLICATES_ACKED = "publishes JetStream acknowledged as duplicates of a stored Nats-Msg-Id"
DUPLICATES_BATCHED = (
    "only publishes acknowledged one by one (acked publishers); in batches JetStream skips duplicates "
    "without reporting them, so they count as stored"
)
