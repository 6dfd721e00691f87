"""Simulated Choria nodes: the registration messages a fleet publishes.

Used by the `demo` command, the benchmarks and the tests. A message is what a Choria server
with `plugin.choria.registration.inventory_content` publishes on
`mcollective.broadcast.agent.registration`: a v1 transport whose secure request carries an
"insecure" signature (the adapters do not verify signatures) and a request whose message is
the inventory document. Pure: builds bytes, no I/O.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass

REGISTRATION_SUBJECT = "mcollective.broadcast.agent.registration"
AGENTS = (
    ("choria_util", "Choria Utilities"),
    ("discovery", "Discovery Agent"),
    ("rpcutil", "Choria MCollective RPC Compatible Utilities"),
    ("package", "Manage Operating System Packages"),
    ("service", "Manage Operating System Services"),
)
ROLES = ("web", "db", "cache", "queue", "build")


def node_name(index: int, domain: str = "fleet.example.net") -> str:
    return f"node{index:05d}.{domain}"


def request_id(node: int, sequence: int) -> str:
    """32 hex-like characters, unique per node and sequence, as the v1 schema requires."""
    return f"{node:016x}{sequence:016x}"


def inventory(sender: str, index: int, now: int) -> dict[str, object]:
    role = ROLES[index % len(ROLES)]
    return {
        "protocol": "choria:registration:inventorycontent:1",
        "content": {
            "agents": [
                {
                    "license": "Apache-2.0",
                    "author": "R.I.Pienaar <rip@devco.net>",
                    "timeout": 2,
                    "name": name,
                    "version": "0.31.0",
                    "url": "https://choria.io",
                    "description": description,
                }
                for name, description in AGENTS
            ],
            "classes": [f"role::{role}", "profile::base", "choria"],
            "facts": {
                "os": {"family": "RedHat", "release": {"major": "9"}},
                "networking": {
                    "fqdn": sender,
                    "ip": f"10.{index // 65536 % 256}.{index // 256 % 256}.{index % 256}",
                },
                "role": role,
            },
            "status": {
                "identity": sender,
                "uptime": 86400 + index,
                "connected_server": "nats://broker.example.net:4222",
                "last_message": now - 10,
                "provisioning_mode": False,
            },
            "collectives": ["mcollective"],
            "data": {},
            "version": "0.29.4",
        },
    }


def _compact(document: object) -> str:
    return json.dumps(document, separators=(",", ":"))


def registration_message(sender: str, requestid: str, *, sent_at: int, payload: str) -> bytes:
    """The v1 transport bytes a node publishes for one registration."""
    request = {
        "protocol": "choria:request:1",
        "message": payload,
        "envelope": {
            "requestid": requestid,
            "senderid": sender,
            "callerid": f"choria={sender}",
            "collective": "mcollective",
            "agent": "registration",
            "ttl": 60,
            "time": sent_at,
            "filter": {"fact": [], "cf_class": [], "agent": [], "identity": [], "compound": []},
        },
    }
    secure = {
        "protocol": "choria:secure:request:1",
        "message": _compact(request),
        "signature": base64.b64encode(b"insecure registration").decode(),
        "pubcert": "insecure registration",
    }
    transport = {
        "protocol": "choria:transport:1",
        "data": base64.b64encode(_compact(secure).encode()).decode(),
        "headers": {"reply-to": "dev.null", "mc_sender": sender},
    }
    return _compact(transport).encode()


@dataclass(frozen=True, slots=True)
class Registration:
    sender: str
    request_id: str
    payload: bytes  # what goes on the wire


def fleet(
    nodes: int, *, rounds: int = 1, now: int | None = None, domain: str = "fleet.example.net"
) -> Iterator[Registration]:
    """`rounds` registrations from each of `nodes` nodes, round-robin, each with its own request id."""
    sent_at = int(time.time()) if now is None else now
    for sequence in range(rounds):
        for index in range(nodes):
            sender = node_name(index, domain)
            rid = request_id(index, sequence)
            payload = _compact(inventory(sender, index, sent_at))
            yield Registration(
                sender, rid, registration_message(sender, rid, sent_at=sent_at, payload=payload)
            )
