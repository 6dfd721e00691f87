"""The fast-ingest batch protocol's pieces that need no connection: which publisher an adapter
uses, the flow interval it asks for, the reply-subject operations, and the state of one batch
and of each message it holds (docs/fast-ingest.md)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

from choria_broker_adapters.jetstream.plan import FAST_INGEST_API_LEVEL
from choria_broker_adapters.jetstream.replies import (
    MSG_ID_HEADER,
    header_block_size,
)

# The largest flow interval nats-server grants.
SERVER_MAX_FLOW = 500


# Flow windows kept outstanding: the requested interval is max_pending / WINDOWS, so the
# publisher keeps sending while JetStream confirms the earlier windows.
WINDOWS = 4


# err_code values of the fast-ingest API.
BATCH_DISABLED = 10205


UNKNOWN_BATCH = 10208


# The header block of a message whose only header is its Nats-Msg-Id, less the id itself.
MSG_ID_ONLY_HEADER_BLOCK = header_block_size({MSG_ID_HEADER: ""})


# The operations a reply subject names: start, append, commit with or without this message, ping.
OP_START, OP_APPEND, OP_COMMIT, OP_END, OP_PING = 0, 1, 2, 3, 4


class PublishMode(enum.StrEnum):
    AUTO = "auto"
    BATCHED = "batched"
    ACKED = "acked"


def choose_publish_mode(
    setting: str, *, stream_allows_batches: bool | None, server_api_level: int | None
) -> tuple[PublishMode, str]:
    """The publisher an adapter uses, and why (for the start-up log line). Pure.

    `stream_allows_batches` / `server_api_level` are None when they could not be learnt.
    """
    if setting == PublishMode.ACKED:
        return PublishMode.ACKED, "stream.publish = acked"
    if setting == PublishMode.BATCHED:
        return PublishMode.BATCHED, (
            "stream.publish = batched (falls back to per-message acks if JetStream does not batch)"
        )
    if server_api_level is None or stream_allows_batches is None:
        return PublishMode.ACKED, "auto: could not learn whether the server and stream allow batches"
    if server_api_level < FAST_INGEST_API_LEVEL:
        return PublishMode.ACKED, (
            f"auto: the server's JetStream API level {server_api_level} predates fast-ingest batches "
            f"(level {FAST_INGEST_API_LEVEL}, nats-server 2.14)"
        )
    if not stream_allows_batches:
        return PublishMode.ACKED, (
            "auto: the stream does not allow batched publishing (allow_batched; `streams setup` turns it on)"
        )
    return PublishMode.BATCHED, "auto: the server and the stream allow fast-ingest batches"


def requested_flow(max_pending: int) -> int:
    """The flow interval to ask for: a few windows fit in `max_pending`, within the server's cap."""
    return max(1, min(SERVER_MAX_FLOW, max_pending // WINDOWS))


class HeldMessage:
    """One message from `publish` until a flow ack or final ack covers it, or it is dropped."""

    __slots__ = (
        "attempts",
        "body",
        "first_sent",
        "headers",
        "headers_size",
        "maybe_stored",
        "msg_id",
        "reason",
        "sent_in",
        "subject",
    )

    def __init__(
        self, subject: str, body: bytes, msg_id: str, now: float, extra: Mapping[str, str] | None = None
    ) -> None:
        self.subject = subject
        self.body = body
        self.msg_id = msg_id
        if extra is None:
            self.headers = {MSG_ID_HEADER: msg_id}
            self.headers_size = MSG_ID_ONLY_HEADER_BLOCK + len(msg_id.encode())
        else:
            self.headers = {**extra, MSG_ID_HEADER: msg_id}
            self.headers_size = header_block_size(self.headers)
        self.first_sent = now
        self.attempts = 0
        self.reason: str | None = None
        # Sent in a batch that ended without saying: JetStream may hold it. Dropped, it is
        # reported uncertain (counted unconfirmed, not publish).
        self.maybe_stored = False
        self.sent_in: list[tuple[Batch, int]] = []  # (batch, sequence) of each attempt


class BatchState(enum.Enum):
    OPENING = "opening"  # the first message is sent; waiting for the first reply
    OPEN = "open"
    ENDING = "ending"  # the end-of-batch commit is sent; waiting for the final ack


class Batch:
    __slots__ = (
        "base",
        "inbox",
        "interval",
        "last_seq",
        "late_commit",
        "pinged",
        "quiet_since",
        "reconnects",
        "reply_prefix",
        "sent",
        "state",
        "subject",
        "subscription",
    )

    def __init__(self, inbox: str, flow: int, reconnects: int, now: float) -> None:
        self.inbox = inbox
        self.reply_prefix = f"{inbox}.{flow}.fail."
        self.base = 0  # batch sequence of the last covered message; held[0] is base + 1
        self.sent = 0  # held messages sent in this batch, counted from held[0]
        self.interval = 1  # the flow interval the server announced last
        self.state = BatchState.OPENING
        self.subscription: Any = None
        self.reconnects = reconnects
        self.quiet_since = now  # since when a reply is awaited without one arriving
        self.pinged = False
        self.last_seq = 0  # highest sequence of a message sent in this batch
        self.subject = ""  # of its first message: control messages go there
        self.late_commit = False  # ended by us after it was given up (see _on_late_reply)
