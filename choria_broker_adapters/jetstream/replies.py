"""What JetStream's reply to a publish means, and whether a message fits the server: pure rules
shared by both publishers (per-message acks and fast-ingest batches), tested with tables."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from choria_broker_adapters.codec.jsonfast import loads_trusted as _json_loads

MSG_ID_HEADER = "Nats-Msg-Id"
STATUS_HEADER = "Status"
DESCRIPTION_HEADER = "Description"
NO_RESPONDERS_STATUS = "503"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How both publishers wait and retry: the window, the acknowledgement timeout, the retry
    budget and the backoff between attempts (each checked once, here)."""

    max_pending: int
    ack_timeout: float
    retry_budget: float
    backoff_initial: float
    backoff_max: float

    def __post_init__(self) -> None:
        if self.max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, got {self.max_pending}")
        if (
            self.ack_timeout <= 0
            or self.retry_budget < 0
            or self.backoff_initial <= 0
            or self.backoff_max < self.backoff_initial
        ):
            raise ValueError(
                "need ack_timeout > 0, retry_budget >= 0, 0 < backoff_initial <= backoff_max; got "
                f"{self.ack_timeout=}, {self.retry_budget=}, {self.backoff_initial=}, {self.backoff_max=}"
            )


class PublishOutcome(enum.Enum):
    ACKED = "acked"
    DUPLICATE = "duplicate"  # JetStream already held this Nats-Msg-Id: the message is stored
    DROPPED = "dropped"


@dataclass(slots=True, frozen=True)
class PublishResult:
    subject: str
    msg_id: str
    outcome: PublishOutcome
    attempts: int
    reason: str | None = None
    seq: int | None = None
    late: bool = False  # acknowledged after the retry budget was spent
    uncertain: bool = False  # DROPPED, but an unanswered attempt may have been stored
    # For a message dropped at once because no retry could store it: the drop reason
    # (`rejected`, `stream_full`, `encode`); None for a drop after the retry budget.
    refusal: str | None = None

    @property
    def stored(self) -> bool:
        return self.outcome is not PublishOutcome.DROPPED


@dataclass(slots=True, frozen=True)
class AckVerdict:
    """What one reply on the acknowledgement inbox means."""

    stored: bool
    duplicate: bool = False
    seq: int | None = None
    reason: str | None = None
    refusal: str | None = None  # set: a permanent refusal, dropped under this reason at once


def no_stream_reason(subject: str) -> str:
    return f"no JetStream stream captures {subject}; create one with `choria-broker-adapters streams setup`"


def interpret_ack(data: bytes, headers: Mapping[str, str] | None, subject: str) -> AckVerdict:
    """Classify a reply to a JetStream publish; pure, so it is tested with a table of replies.

    Success is `{"stream": .., "seq": ..}` (plus `"duplicate": true` when the Nats-Msg-Id was
    already stored). A status header (503: nobody listens on the subject, i.e. no stream
    captures it or JetStream is unavailable) or an `"error"` object is a failure to retry.
    """
    if headers:
        status = headers.get(STATUS_HEADER)
        if status == NO_RESPONDERS_STATUS:
            return AckVerdict(False, reason=f"{no_stream_reason(subject)} (503 no responders)")
        if status:
            description = headers.get(DESCRIPTION_HEADER, "")
            return AckVerdict(False, reason=f"status {status} {description}".strip())
    if not data:
        return AckVerdict(False, reason="empty reply to a JetStream publish")
    try:
        document = _json_loads(data)
    except ValueError:
        return AckVerdict(False, reason=f"unparseable JetStream acknowledgement: {data[:200]!r}")
    if not isinstance(document, dict):
        return AckVerdict(False, reason=f"unexpected JetStream acknowledgement: {data[:200]!r}")
    error = document.get("error")
    if error is not None:
        refusal = permanent_refusal(error)
        reason = describe_api_error(error, subject)
        if refusal is not None:
            reason = f"{reason} ({PERMANENT_HINTS[refusal]})"
        return AckVerdict(False, reason=reason, refusal=refusal)
    if "stream" not in document:
        return AckVerdict(False, reason=f"acknowledgement names no stream: {data[:200]!r}")
    seq = document.get("seq")
    return AckVerdict(
        True, duplicate=document.get("duplicate") is True, seq=seq if isinstance(seq, int) else None
    )


# JetStream API error codes that no retry can cure, by the drop reason they are counted under.
# Everything else (timeouts, no responders, JetStream or a stream leader temporarily
# unavailable, a missing stream that may be created, storage a limit may free) is retried.
ERR_MESSAGE_TOO_LARGE = 10054  # larger than the stream's max_msg_size
ERR_STREAM_STORE_FAILED = 10077  # with discard new: maximum messages/bytes (per subject) exceeded
ERR_STREAM_NAME_MISMATCH = 10056
ERR_EXPECTED_STREAM_MISMATCH = 10060  # the subject is captured by another stream than expected
ERR_EXPECTED_SEQUENCE_MISMATCH = 10063
ERR_WRONG_LAST_MSG_ID = 10070
ERR_WRONG_LAST_SEQUENCE = 10071
ERR_STREAM_SEALED = 10109
_REJECTED_CODES = frozenset(
    {
        ERR_MESSAGE_TOO_LARGE,
        ERR_STREAM_NAME_MISMATCH,
        ERR_EXPECTED_STREAM_MISMATCH,
        ERR_EXPECTED_SEQUENCE_MISMATCH,
        ERR_WRONG_LAST_MSG_ID,
        ERR_WRONG_LAST_SEQUENCE,
        ERR_STREAM_SEALED,
    }
)


PERMANENT_HINTS = {
    "rejected": "the stream refuses this message permanently; not retried",
    "stream_full": "the stream is full and discards new messages; not retried",
}


def permanent_refusal(error: Any) -> str | None:
    """The drop reason for a JetStream API error no retry can cure, or None (retry it).

    Pure, tested with a table. Decided by `err_code`: the HTTP-like `code` does not separate
    them (a full stream answers 503, like a temporarily unavailable JetStream)."""
    if not isinstance(error, dict):
        return None
    code = error.get("err_code")
    if code in _REJECTED_CODES:
        return "rejected"
    if code == ERR_STREAM_STORE_FAILED:
        # The same code reports other store failures (a disk error) that may pass.
        return "stream_full" if "exceeded" in str(error.get("description", "")).lower() else None
    return None


def describe_api_error(error: Any, subject: str) -> str:
    if not isinstance(error, dict):
        return f"JetStream error: {error}"
    description = str(error.get("description", "")).strip()
    if "no stream matches subject" in description.lower():
        return no_stream_reason(subject)
    codes = "/".join(str(error[key]) for key in ("code", "err_code") if key in error)
    return f"JetStream error {codes}: {description}" if codes else f"JetStream error: {description}"


def header_block_size(headers: Mapping[str, str]) -> int:
    """Bytes of the header block nats-py writes for `headers`: `NATS/1.0` CRLF, one
    `Name: value` CRLF per header, then CRLF. The server counts them against max_payload."""
    return (
        len(b"NATS/1.0\r\n")
        + sum(len(name.encode()) + len(value.encode()) + 4 for name, value in headers.items())
        + 2
    )


def message_oversize(
    body: bytes, msg_id: str, headers: Mapping[str, str] | None, max_payload: int
) -> str | None:
    """`oversize_reason` for a message published with its Nats-Msg-Id and `headers`."""
    if headers is None:
        # The common case, per message on the hot path: no header dict to build and measure.
        size = _MSG_ID_ONLY_BLOCK + len(msg_id.encode())
        return None if len(body) + size <= max_payload else oversize_reason(len(body), size, max_payload)
    block = {**headers, MSG_ID_HEADER: msg_id}
    return oversize_reason(len(body), header_block_size(block), max_payload)


_MSG_ID_ONLY_BLOCK = header_block_size({MSG_ID_HEADER: ""})


def oversize_reason(body_size: int, headers_size: int, max_payload: int) -> str | None:
    """Why a message cannot be published to a server announcing `max_payload`, or None.

    The server closes a connection that publishes more than max_payload of headers and payload
    together; nats-py compares only the payload, so this is checked before publishing."""
    total = body_size + headers_size
    if total <= max_payload:
        return None
    return (
        f"output of {body_size} bytes plus {headers_size} bytes of headers is {total} bytes, "
        f"over the JetStream server's max_payload of {max_payload} bytes"
    )
