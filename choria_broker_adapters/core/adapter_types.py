"""Adapter type name → what it writes and which class implements it: the one place a new type
is added (one entry here plus the implementing module).

Implementations are named by import path so that reading and validating a configuration
(`check`, `render`) never imports network code.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class AdapterType:
    name: str
    implementation: str  # "package.module:ClassName"
    output_protocol: str  # the `protocol` field of every document the type publishes

    def load(self) -> Any:
        module_name, _, attribute = self.implementation.partition(":")
        return getattr(importlib.import_module(module_name), attribute)


_CHORIA_STREAMS = "choria_broker_adapters.adapters.choria_streams:StreamsAdapter"

ADAPTER_TYPES: dict[str, AdapterType] = {
    adapter_type.name: adapter_type
    for adapter_type in (
        AdapterType("choria_streams", _CHORIA_STREAMS, "choria:adapters:choria_streams:output:1"),
        # The name the Choria JetStream documentation uses, with its documented protocol string.
        AdapterType("jetstream", _CHORIA_STREAMS, "choria:adapters:jetstream:output:1"),
    )
}

# Types the Go broker once had; naming one is an error that says what to use instead.
RETIRED_TYPES: dict[str, str] = {
    "nats_stream": (
        "the NATS Streaming Server adapter has been deprecated and removed (go-choria#1543); "
        "use type choria_streams (or its alias jetstream) to publish to NATS JetStream"
    ),
}


def type_names() -> list[str]:
    return sorted(ADAPTER_TYPES)


def adapter_type(name: str) -> AdapterType:
    """The registered type; KeyError for unknown names."""
    return ADAPTER_TYPES[name]


def output_protocol(name: str) -> str:
    """The output document's `protocol` value for an adapter type (ValueError if unknown)."""
    try:
        return ADAPTER_TYPES[name].output_protocol
    except KeyError:
        raise ValueError(f"unknown adapter type {name!r}, expected one of {type_names()}") from None
