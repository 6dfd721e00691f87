"""Adapter type name → adapter implementation: the one place a new adapter type is added.

Entries name their implementation by import path so that reading and validating a
configuration (`check`, `render`) never imports network code.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class AdapterType:
    name: str
    implementation: str  # "package.module:ClassName"
    summary: str

    def load(self) -> Any:
        module_name, _, attribute = self.implementation.partition(":")
        return getattr(importlib.import_module(module_name), attribute)


_STREAMS = "choria_broker_adapters.adapters.choria_streams:StreamsAdapter"

ADAPTER_TYPES: dict[str, AdapterType] = {
    adapter_type.name: adapter_type
    for adapter_type in (
        AdapterType("choria_streams", _STREAMS, "Choria messages into NATS JetStream (Choria Streams)"),
        AdapterType("jetstream", _STREAMS, "alias of choria_streams, the documented JetStream adapter name"),
    )
}

# Types the Go broker once had; naming one is an error that says what to use instead.
RETIRED_TYPES: dict[str, str] = {
    "nats_stream": (
        "the NATS Streaming Server adapter has been deprecated and removed (go-choria#1543); "
        "use type choria_streams (or its alias jetstream) to publish to NATS JetStream"
    ),
}


def known_type_names() -> list[str]:
    return sorted(ADAPTER_TYPES)


def adapter_type(name: str) -> AdapterType:
    """The registered type; KeyError for unknown names."""
    return ADAPTER_TYPES[name]
