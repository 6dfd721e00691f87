"""Read the latest stored message of every node subject in a stream (docs/inventory.md).

A registration stream keeps several messages per node; only the newest of each subject
matters for an inventory. Reading them must not replay the stream's history, so:

1. the stream's subjects matching the node filter are listed with `STREAM.INFO` and
   `subjects_filter` (paged by `offset`), which also gives the sequence the snapshot ends at;
2. the last message of those subjects is fetched with JetStream's batched direct get
   (`$JS.API.DIRECT.GET.<stream>` with `multi_last`), which needs `allow_direct` on the stream.
   nats-server answers one `multi_last` request with at most `MULTI_LAST_LIMIT` subjects (more is
   refused as "too many results"), so subjects go in chunks of that size, a few chunks in
   flight at once; a chunk the server cut short (its byte limit) is resumed after the last
   sequence received. `up_to_seq` pins every chunk to the sequence of step 1, so a node that
   registers again meanwhile is read as it was at that sequence.
3. Without `allow_direct` every subject is fetched with `STREAM.MSG.GET` `last_by_subj`, many
   requests in flight: correct, slower; `method` tells the caller which path was taken.

Takes a connected nats-py client; never opens connections itself.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg

from choria_broker_adapters.codec import nodelist
from choria_broker_adapters.codec.nodelist import NodeRow
from choria_broker_adapters.codec.registration import KIND_INVENTORY, Inventory, decode_stored
from choria_broker_adapters.jetstream.admin import (
    API_PREFIX,
    STREAM_NOT_FOUND,
    JetStreamAdminError,
    jetstream_request,
)

# nats-server refuses a multi_last request that matches more subjects than this.
MULTI_LAST_LIMIT = 1024
CHUNKS_IN_FLIGHT = 4
SINGLE_GETS_IN_FLIGHT = 256
REPLY_TIMEOUT = 10.0
# How far before a node's latest message `complete_inventories` looks for an inventory, widening
# (None: from the subject's first message). Registrations come every few minutes by default.
HISTORY_WINDOWS = (datetime.timedelta(minutes=30), datetime.timedelta(hours=6), None)
HISTORY_IN_FLIGHT = 16
NO_MESSAGE_FOUND = 10037  # JetStream err_code of STREAM.MSG.GET for "no message found"
METHOD_DIRECT = "direct get (multi_last)"
METHOD_SINGLE = "message get per subject (allow_direct is off)"

_STATUS = "Status"
_STATUS_END_OF_BATCH = "204"
_STATUS_NOT_FOUND = "404"


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One message as stored: its subject, stream sequence, storage time and body."""

    subject: str
    sequence: int
    stored_at: datetime.datetime | None
    data: bytes


@dataclass(frozen=True)
class SubjectListing:
    """The stream's node subjects (subject → stored messages) as of `last_sequence`."""

    stream: str
    subjects: dict[str, int]
    last_sequence: int
    allow_direct: bool


def _stored_at(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    try:
        return datetime.datetime.fromisoformat(text).astimezone(datetime.UTC)
    except ValueError:
        return None


async def list_subjects(client: Client, stream: str, subject_filter: str) -> SubjectListing | None:
    """Every subject of `stream` matching `subject_filter` with its message count; None if no stream."""
    subjects: dict[str, int] = {}
    last_sequence = 0
    allow_direct = False
    while True:
        try:
            info = await jetstream_request(
                client,
                f"{API_PREFIX}.STREAM.INFO.{stream}",
                {"subjects_filter": subject_filter, "offset": len(subjects)},
                timeout=REPLY_TIMEOUT,
            )
        except JetStreamAdminError as error:
            if len(error.args) > 1 and error.args[1] == STREAM_NOT_FOUND:
                return None
            raise
        state = info.get("state") or {}
        if not subjects:
            last_sequence = int(state.get("last_seq", 0))
            allow_direct = bool((info.get("config") or {}).get("allow_direct"))
        page = state.get("subjects") or {}
        before = len(subjects)
        subjects.update({subject: int(count) for subject, count in page.items()})
        total = int(info.get("total", 0))
        if len(subjects) >= total or len(subjects) == before:
            return SubjectListing(stream, subjects, last_sequence, allow_direct)


def _message(msg: Msg) -> StoredMessage:
    headers = msg.headers or {}
    return StoredMessage(
        subject=headers.get("Nats-Subject", ""),
        sequence=int(headers.get("Nats-Sequence", 0)),
        stored_at=_stored_at(headers.get("Nats-Time-Stamp")),
        data=msg.data,
    )


async def _direct_batch(client: Client, stream: str, body: dict[str, Any]) -> list[StoredMessage]:
    """One batched direct get: the messages until the end-of-batch marker, resumed when cut short."""
    received: list[StoredMessage] = []
    while True:
        end = await _direct_request(client, stream, body, received)
        headers = end.headers or {}
        status = headers.get(_STATUS)
        if status == _STATUS_END_OF_BATCH:
            pending = int(headers.get("Nats-Num-Pending", 0))
        elif status == _STATUS_NOT_FOUND:
            pending = 0
        else:
            description = headers.get("Description", "")
            raise JetStreamAdminError(f"direct get from {stream} refused: {status} {description}".strip())
        if pending == 0 or not received:
            return received
        body = {**body, "seq": received[-1].sequence + 1}


async def _direct_request(
    client: Client, stream: str, body: dict[str, Any], received: list[StoredMessage]
) -> Msg:
    """Send one direct get, append its messages to `received`; the status message that ends it.

    Messages are taken by a subscription callback rather than `next_msg`, whose per-message
    timeout costs more than decoding the message; the timeout applies to silence instead: the
    request fails only when nothing arrived for REPLY_TIMEOUT.
    """
    finished: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()

    async def take(msg: Msg) -> None:
        headers = msg.headers
        if headers is None or _STATUS not in headers:
            received.append(_message(msg))
        elif not finished.done():
            finished.set_result(msg)

    subscription = await client.subscribe(client.new_inbox(), cb=take)
    try:
        await client.publish(
            f"{API_PREFIX}.DIRECT.GET.{stream}", json.dumps(body).encode(), reply=subscription.subject
        )
        seen = -1
        while not finished.done():
            if len(received) == seen:
                raise JetStreamAdminError(
                    f"no answer from the JetStream direct get API of {stream} within {REPLY_TIMEOUT:g}s"
                )
            seen = len(received)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(finished), REPLY_TIMEOUT)
        return finished.result()
    finally:
        await subscription.unsubscribe()


async def _last_by_subject(client: Client, stream: str, subject: str) -> StoredMessage | None:
    try:
        response = await jetstream_request(
            client, f"{API_PREFIX}.STREAM.MSG.GET.{stream}", {"last_by_subj": subject}, timeout=REPLY_TIMEOUT
        )
    except JetStreamAdminError as error:
        if len(error.args) > 1 and error.args[1] == NO_MESSAGE_FOUND:
            return None
        raise
    return _api_message(response["message"], subject)


def _api_message(message: dict[str, Any], subject: str) -> StoredMessage:
    """A message from a `STREAM.MSG.GET` response (its body is base64 there)."""
    return StoredMessage(
        subject=message.get("subject", subject),
        sequence=int(message.get("seq", 0)),
        stored_at=_stored_at(message.get("time")),
        data=base64.b64decode(message.get("data") or ""),
    )


async def iter_latest(
    client: Client, listing: SubjectListing, *, chunk_size: int | None = None
) -> AsyncIterator[list[StoredMessage]]:
    """The last message of every listed subject, a chunk at a time, in no particular order."""
    chunk_size = chunk_size or MULTI_LAST_LIMIT
    subjects = sorted(listing.subjects)
    if not subjects:
        return
    chunks = [subjects[start : start + chunk_size] for start in range(0, len(subjects), chunk_size)]
    if listing.allow_direct:
        limit = asyncio.Semaphore(CHUNKS_IN_FLIGHT)

        async def fetch(chunk: list[str]) -> list[StoredMessage]:
            async with limit:
                body = {"multi_last": chunk, "batch": len(chunk), "up_to_seq": listing.last_sequence}
                return await _direct_batch(client, listing.stream, body)

    else:
        limit = asyncio.Semaphore(SINGLE_GETS_IN_FLIGHT)

        async def fetch_one(subject: str) -> StoredMessage | None:
            async with limit:
                return await _last_by_subject(client, listing.stream, subject)

        async def fetch(chunk: list[str]) -> list[StoredMessage]:
            found = await asyncio.gather(*(fetch_one(subject) for subject in chunk))
            return [message for message in found if message is not None]

    tasks = [asyncio.ensure_future(fetch(chunk)) for chunk in chunks]
    try:
        for finished in asyncio.as_completed(tasks):
            yield await finished
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def subject_history(
    client: Client,
    listing: SubjectListing,
    subject: str,
    *,
    before_sequence: int | None = None,
    since: datetime.datetime | None = None,
) -> list[StoredMessage]:
    """Stored messages of one subject, oldest first, up to the listing's sequence.

    `before_sequence` leaves out that message and later ones; `since` starts at that storage
    time instead of the subject's first message (direct get only; the fallback reads from the start).
    """
    count = listing.subjects.get(subject, 0)
    last = (
        listing.last_sequence if before_sequence is None else min(listing.last_sequence, before_sequence - 1)
    )
    if count == 0 or last < 1:
        return []
    if listing.allow_direct:
        body: dict[str, Any] = {"next_by_subj": subject, "batch": count}
        if since is not None:
            body["start_time"] = since.astimezone(datetime.UTC).isoformat().replace("+00:00", "Z")
        messages = await _direct_batch(client, listing.stream, body)
        return [message for message in messages if message.sequence <= last]
    history: list[StoredMessage] = []
    sequence = 1
    while len(history) < count:
        try:
            response = await jetstream_request(
                client,
                f"{API_PREFIX}.STREAM.MSG.GET.{listing.stream}",
                {"next_by_subj": subject, "seq": sequence},
                timeout=REPLY_TIMEOUT,
            )
        except JetStreamAdminError as error:
            if len(error.args) > 1 and error.args[1] == NO_MESSAGE_FOUND:
                break
            raise
        stored = _api_message(response["message"], subject)
        if stored.sequence > last:
            break
        history.append(stored)
        sequence = stored.sequence + 1
    return history


def method(listing: SubjectListing) -> str:
    """How `iter_latest` reads this stream, for operators wondering why it is slow."""
    return METHOD_DIRECT if listing.allow_direct else METHOD_SINGLE


@dataclass
class Fleet:
    """The node rows read from one stream, with how they were read."""

    stream: str
    method: str
    listing: SubjectListing
    rows: list[NodeRow]


async def read_fleet(
    client: Client,
    stream: str,
    subject_filter: str,
    *,
    subject_prefix: str = "",
    keep_inventory: bool = False,
) -> Fleet | None:
    """Every node's row from its latest message, sorted by identity; None when there is no stream.

    Messages are decoded chunk by chunk as they arrive, so only rows (and inventories when
    `keep_inventory`) are held, never the whole set of raw messages.
    """
    listing = await list_subjects(client, stream, subject_filter)
    if listing is None:
        return None
    rows: list[NodeRow] = []
    async for chunk in iter_latest(client, listing):
        rows.extend(
            nodelist.node_row(
                message.subject,
                message.sequence,
                message.stored_at,
                message.data,
                subject_prefix=subject_prefix,
                stored_messages=listing.subjects.get(message.subject, 1),
                keep_inventory=keep_inventory,
            )
            for message in chunk
        )
    rows.sort(key=lambda row: (row.identity, row.subject))
    return Fleet(stream, method(listing), listing, rows)


async def complete_inventories(client: Client, fleet: Fleet) -> None:
    """Give nodes whose latest message is not an inventory their latest older inventory, if any.

    A node with both registration plugins alternates inventory and file-content messages on
    one subject; an inventory export still wants its inventory. Only those subjects are read,
    and only back to HISTORY_WINDOWS before their latest message, widening until an inventory
    or the subject's first message is found, so a week of registrations is not replayed.
    """
    limit = asyncio.Semaphore(HISTORY_IN_FLIGHT)

    async def complete(index: int, row: NodeRow) -> None:
        async with limit:
            found = await _latest_inventory(client, fleet.listing, row)
        if found is not None:
            fleet.rows[index] = replace(row, inventory=found)

    await asyncio.gather(
        *(
            complete(index, row)
            for index, row in enumerate(fleet.rows)
            if row.kind != KIND_INVENTORY and row.stored_messages > 1
        )
    )


async def _latest_inventory(client: Client, listing: SubjectListing, row: NodeRow) -> Inventory | None:
    for window in HISTORY_WINDOWS:
        since = None if window is None or row.time is None else row.time - window
        history = await subject_history(
            client, listing, row.subject, before_sequence=row.sequence, since=since
        )
        for message in reversed(history):
            inventory = decode_stored(message.data).inventory
            if inventory is not None:
                return inventory
        if since is None or len(history) >= row.stored_messages - 1:
            return None  # that was the whole earlier history
    return None


async def glimpse(
    client: Client, stream: str, subject_filter: str, *, subject_prefix: str = "", rows: int = 2
) -> tuple[int, list[str]]:
    """(number of nodes, the `nodes` table header and its first `rows` rows), for the demo."""
    fleet = await read_fleet(client, stream, subject_filter, subject_prefix=subject_prefix)
    if fleet is None:
        return 0, []
    now = datetime.datetime.now(datetime.UTC)
    return len(fleet.rows), nodelist.table_lines(fleet.rows[:rows], now)
