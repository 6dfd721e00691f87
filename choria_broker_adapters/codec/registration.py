"""Stored adapter documents → what a node registered (docs/inventory.md).

    decode_stored(document) -> StoredRegistration     never raises; `problem` says what is unreadable

A stored message is the adapter output document (`protocol`, `data`, `sender`, `time`,
`requestid`); its `data` string is the Choria registration payload the node published:

* `choria:registration:inventorycontent:1` with the inventory either as an embedded object
  (`content`) or base64 of its gzip (`zcontent`, Choria's default);
* `choria:registration:filecontent:1`, an arbitrary file from the node (`content` base64 of
  it, or `zcontent` base64 of its gzip) with its path and mtime;
* anything else is reported under its own protocol string without a body.

Pure: bytes in, values out. Every malformed layer becomes a `problem` sentence instead of an
exception, because one corrupt message must not hide the rest of the fleet.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import gzip
import json
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from choria_broker_adapters.codec import jsonfast

INVENTORY_PROTOCOL = "choria:registration:inventorycontent:1"
FILE_CONTENT_PROTOCOL = "choria:registration:filecontent:1"
OUTPUT_PROTOCOL_PREFIX = "choria:adapters:"
OUTPUT_PROTOCOL_SUFFIX = ":output:1"

# Short names shown in the `nodes` listing; the registration protocol's distinctive token.
KIND_INVENTORY = "inventorycontent"
KIND_FILE_CONTENT = "filecontent"
KIND_UNREADABLE = "unreadable"

# A gzip bomb in one registration must not exhaust the reader's memory.
MAX_INFLATED_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Inventory:
    """The parts of an inventory registration discovery and listings use."""

    agents: tuple[str, ...]
    classes: tuple[str, ...]
    facts: Mapping[str, Any]
    collectives: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FileContent:
    """A file-content registration: which file, when it changed, how big it was."""

    path: str
    mtime: int | None
    size: int


@dataclass(frozen=True, slots=True)
class StoredRegistration:
    """One stored adapter document, decoded as far as it could be.

    `kind` is `inventorycontent`, `filecontent`, `unreadable`, or the last meaningful token of
    an unknown registration protocol. `problem` is None exactly when the document was read.
    """

    kind: str
    protocol: str = ""
    sender: str = ""
    time: datetime.datetime | None = None
    request_id: str = ""
    inventory: Inventory | None = None
    file: FileContent | None = None
    problem: str | None = None


class _Unreadable(Exception):
    """One layer of a stored document could not be read; the message is the reason."""


def _loads(data: bytes | str) -> Any:
    if jsonfast.orjson is not None:
        try:
            return jsonfast.orjson.loads(data)
        except jsonfast.orjson.JSONDecodeError:
            pass  # the standard library may still read it (e.g. lone surrogates); else it raises
    return json.loads(data)


def parse_time(text: Any) -> datetime.datetime | None:
    """An RFC 3339 timestamp (nanoseconds allowed, read to microseconds) in UTC, else None."""
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return moment.astimezone(datetime.UTC)


def _from_base64(text: str) -> bytes:
    # strict_mode refuses what b64decode(validate=True) refuses, without its extra regex pass.
    return binascii.a2b_base64(text.encode("ascii"), strict_mode=True)


def _inflate(encoded: Any, what: str) -> bytes:
    if not isinstance(encoded, str):
        raise _Unreadable(f"{what} is not a string")
    try:
        compressed = _from_base64(encoded)
    except (binascii.Error, ValueError):
        raise _Unreadable(f"{what} is not valid base64") from None
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip framing only
    try:
        inflated = inflater.decompress(compressed, MAX_INFLATED_BYTES)
    except zlib.error:
        raise _Unreadable(f"{what} is not gzip data") from None
    if inflater.unconsumed_tail:
        raise _Unreadable(f"{what} inflates to more than {MAX_INFLATED_BYTES} bytes")
    if not inflater.eof:
        raise _Unreadable(f"{what} is truncated gzip data")
    return inflated


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _Unreadable(f"inventory {what} is not a list of strings")
    return tuple(value)


def _agent_names(value: Any) -> tuple[str, ...]:
    """Agent names from inventory agents: objects with `name` (current) or plain names (old)."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _Unreadable("inventory agents is not a list")
    names = []
    for agent in value:
        if isinstance(agent, str):
            names.append(agent)
        elif isinstance(agent, dict) and isinstance(agent.get("name"), str):
            names.append(agent["name"])
        else:
            raise _Unreadable("inventory agents has an entry without a name")
    return tuple(names)


def decode_inventory(content: Any) -> Inventory:
    """The inventory object of an inventorycontent registration (raises _Unreadable)."""
    if not isinstance(content, dict):
        raise _Unreadable("inventory content is not a JSON object")
    facts = content.get("facts")
    if facts is None:
        facts = {}
    if not isinstance(facts, dict):
        raise _Unreadable("inventory facts is not a JSON object")
    return Inventory(
        agents=_agent_names(content.get("agents")),
        classes=_strings(content.get("classes"), "classes"),
        facts=facts,
        collectives=_strings(content.get("collectives"), "collectives"),
    )


def _payload_kind(protocol: str) -> str:
    if protocol == INVENTORY_PROTOCOL:
        return KIND_INVENTORY
    if protocol == FILE_CONTENT_PROTOCOL:
        return KIND_FILE_CONTENT
    # `choria:registration:<kind>:<version>` → <kind>; other shapes are shown whole.
    tokens = protocol.split(":")
    if len(tokens) == 4 and tokens[0] == "choria" and tokens[1] == "registration" and tokens[2]:
        return tokens[2]
    return protocol


def _decode_payload(data: Any) -> tuple[str, str, Inventory | None, FileContent | None]:
    """(kind, protocol, inventory, file) of a registration payload (raises _Unreadable)."""
    if not isinstance(data, str):
        raise _Unreadable("data is not a string")
    try:
        payload = _loads(data)
    except (ValueError, UnicodeError):
        raise _Unreadable("data is not JSON") from None
    if not isinstance(payload, dict):
        raise _Unreadable("data is not a JSON object")
    protocol = payload.get("protocol")
    if not isinstance(protocol, str) or not protocol:
        raise _Unreadable("data has no registration protocol")
    kind = _payload_kind(protocol)
    if kind == KIND_INVENTORY:
        if "zcontent" in payload:
            try:
                content = _loads(_inflate(payload["zcontent"], "zcontent"))
            except (ValueError, UnicodeError):
                raise _Unreadable("zcontent does not inflate to JSON") from None
        elif "content" in payload:
            content = payload["content"]
        else:
            raise _Unreadable("inventory registration has neither content nor zcontent")
        return kind, protocol, decode_inventory(content), None
    if kind == KIND_FILE_CONTENT:
        if "zcontent" in payload:
            body = _inflate(payload["zcontent"], "zcontent")
        else:
            encoded = payload.get("content", "")
            if not isinstance(encoded, str):
                raise _Unreadable("file content is not a string")
            try:
                body = _from_base64(encoded)
            except (binascii.Error, ValueError):
                raise _Unreadable("file content is not valid base64") from None
        path = payload.get("file")
        mtime = payload.get("mtime")
        return (
            kind,
            protocol,
            None,
            FileContent(
                path=path if isinstance(path, str) else "",
                mtime=mtime if isinstance(mtime, int) and not isinstance(mtime, bool) else None,
                size=len(body),
            ),
        )
    return kind, protocol, None, None


def decode_stored(document: bytes | str) -> StoredRegistration:
    """One stored message's body decoded; unreadable layers give kind `unreadable` and a problem."""
    try:
        outer = _loads(document)
    except (ValueError, UnicodeError):
        return StoredRegistration(KIND_UNREADABLE, problem="the stored message is not JSON")
    if not isinstance(outer, dict):
        return StoredRegistration(KIND_UNREADABLE, problem="the stored message is not a JSON object")
    output_protocol = outer.get("protocol")
    sender = outer.get("sender")
    request_id = outer.get("requestid")
    common: dict[str, Any] = {
        "sender": sender if isinstance(sender, str) else "",
        "time": parse_time(outer.get("time")),
        "request_id": request_id if isinstance(request_id, str) else "",
    }
    if not (
        isinstance(output_protocol, str)
        and output_protocol.startswith(OUTPUT_PROTOCOL_PREFIX)
        and output_protocol.endswith(OUTPUT_PROTOCOL_SUFFIX)
    ):
        return StoredRegistration(
            KIND_UNREADABLE, problem="the stored message is not an adapter output document", **common
        )
    try:
        kind, protocol, inventory, file = _decode_payload(outer.get("data"))
    except _Unreadable as error:
        return StoredRegistration(KIND_UNREADABLE, problem=str(error), **common)
    return StoredRegistration(kind, protocol, inventory=inventory, file=file, **common)


def gzip_base64(data: bytes) -> str:
    """base64 of gzip of `data`: how nodes encode `zcontent` (used to build test and demo data)."""
    return base64.b64encode(gzip.compress(data)).decode()
