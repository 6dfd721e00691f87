"""Apply and inspect the adapters' JetStream streams on a connected NATS client.

Decisions come from `provision` (pure); this module only talks to the JetStream API.

It sends the `$JS.API.STREAM.*` requests itself on the nats-py connection instead of going
through `JetStreamManager`, for two reasons found in nats-py 2.16: its `StreamState` drops
`first_ts`, `last_ts` and `num_subjects`, which `status` shows; and its `update_stream` sends a
config rebuilt from its own dataclass, which drops fields it does not model and would reset
settings made by hand. Raw requests let an update start from the server's own stored config.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import nats.errors
from nats.aio.client import Client

from choria_broker_adapters.jetstream.plan import (
    Action,
    DesiredStream,
    StreamChange,
    batching_note,
    for_server,
    plan_change,
    updated_config,
)

API_PREFIX = "$JS.API"
STREAM_NOT_FOUND = 10059  # JetStream err_code for "stream not found"
# nats-server reports "never" as Go's zero time.
ZERO_TIME_PREFIX = "0001-01-01"


class JetStreamAdminError(Exception):
    """JetStream refused a request or is not available; the message is for operators."""


async def jetstream_request(
    client: Client, subject: str, body: Mapping[str, Any] | None = None, timeout: float = 5.0
) -> dict[str, Any]:
    """One JetStream API request; the decoded response, or JetStreamAdminError on an API error."""
    payload = json.dumps(body).encode() if body is not None else b""
    try:
        reply = await client.request(subject, payload, timeout=timeout)
    except nats.errors.NoRespondersError:
        raise JetStreamAdminError(
            "JetStream is not enabled on this server or account (no responder for the JetStream API)"
        ) from None
    except nats.errors.TimeoutError:
        raise JetStreamAdminError(f"no answer from the JetStream API within {timeout:g}s") from None
    response: dict[str, Any] = json.loads(reply.data)
    error = response.get("error")
    if error:
        raise JetStreamAdminError(
            error.get("description", "unknown error"), error.get("err_code"), error.get("code")
        )
    return response


def _is_not_found(error: JetStreamAdminError) -> bool:
    return len(error.args) > 1 and error.args[1] == STREAM_NOT_FOUND


async def stream_info(client: Client, name: str) -> dict[str, Any] | None:
    """The server's raw stream info (`config`, `state`, ...), or None when the stream is missing."""
    try:
        return await jetstream_request(client, f"{API_PREFIX}.STREAM.INFO.{name}")
    except JetStreamAdminError as error:
        if _is_not_found(error):
            return None
        raise


async def jetstream_api_level(client: Client) -> int | None:
    """The JetStream API level of the connected server ($JS.API.INFO), None when it names none."""
    response = await jetstream_request(client, f"{API_PREFIX}.INFO")
    level = (response.get("api") or {}).get("level")
    return level if isinstance(level, int) else None


@dataclass(frozen=True)
class SetupOutcome:
    """What setup did to one stream; `error` set when JetStream refused the create/update."""

    change: StreamChange
    error: str | None = None
    note: str = ""  # whether the stream takes fast-ingest batches on this server

    @property
    def ok(self) -> bool:
        return self.error is None and self.change.action is not Action.REFUSE

    def describe(self, dry_run: bool = False) -> str:
        if self.error is None:
            return self.change.describe(dry_run)
        verb = "create" if self.change.action is Action.CREATE else "update"
        return f"failed to {verb} {self.change.stream.name}: JetStream said: {self.error}"


async def apply_stream(client: Client, stream: DesiredStream, *, dry_run: bool = False) -> SetupOutcome:
    """Create or update `stream` to match the configuration, unless refused or dry_run.

    On servers with fast-ingest batches (JetStream API level 4+) the stream allows them.
    """
    api_level = await jetstream_api_level(client)
    stream = for_server(stream, api_level)
    note = batching_note(stream, api_level)
    info = await stream_info(client, stream.name)
    existing = None if info is None else info["config"]
    change = plan_change(stream, existing)
    if dry_run or change.action in (Action.UP_TO_DATE, Action.REFUSE):
        return SetupOutcome(change, note=note)
    try:
        if change.action is Action.CREATE:
            await jetstream_request(
                client, f"{API_PREFIX}.STREAM.CREATE.{stream.name}", stream.create_config()
            )
        else:
            assert existing is not None
            await jetstream_request(
                client, f"{API_PREFIX}.STREAM.UPDATE.{stream.name}", updated_config(stream, existing)
            )
    except JetStreamAdminError as error:
        return SetupOutcome(change, str(error.args[0]), note=note)
    return SetupOutcome(change, note=note)


@dataclass(frozen=True)
class StreamStatus:
    """A stream's contents as `streams status` reports them."""

    name: str
    subjects: tuple[str, ...]
    messages: int
    bytes: int
    first_time: datetime.datetime | None
    last_time: datetime.datetime | None
    distinct_subjects: int


def _timestamp(text: str | None) -> datetime.datetime | None:
    if not text or text.startswith(ZERO_TIME_PREFIX):
        return None
    # nats-server writes nanoseconds; Python 3.11 reads up to microseconds and drops the rest.
    return datetime.datetime.fromisoformat(text)


async def stream_status(client: Client, name: str) -> StreamStatus | None:
    """The stream's message count, size, time range and distinct subjects; None when missing."""
    info = await stream_info(client, name)
    if info is None:
        return None
    state = info.get("state", {})
    return StreamStatus(
        name=name,
        subjects=tuple(info.get("config", {}).get("subjects") or ()),
        messages=int(state.get("messages", 0)),
        bytes=int(state.get("bytes", 0)),
        first_time=_timestamp(state.get("first_ts")),
        last_time=_timestamp(state.get("last_ts")),
        distinct_subjects=int(state.get("num_subjects", 0)),
    )
