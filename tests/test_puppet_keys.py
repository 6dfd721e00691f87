"""The Puppet types, the renderer and the render data sets know every adapter key the runtime has.

The runtime's key table (`settings.ADAPTER_KEYS`) is the source: a key added there and not to
puppet/types/adapter*.pp fails here, naming the key, as does a key Puppet would write that the
runtime does not read. Pure: reads the .pp files as text, runs nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from choria_broker_adapters.config import render
from choria_broker_adapters.config.settings import ADAPTER_KEYS, KNOWN_SUFFIXES

REPO = Path(__file__).resolve().parents[1]
TYPES = REPO / "puppet" / "types"
DATA = Path(__file__).parent / "data" / "render"

# A Struct member line: `'topic' => ...` or `Optional['topic'] => ...`.
_STRUCT_KEY = re.compile(r"^\s*(?:Optional\[)?'([a-z_]+)'\]?\s*=>", re.MULTILINE)
# The runtime reads `type` (and tolerates `stream.type`) outside the key table.
TYPE_KEYS = {"type", "stream.type"}


def struct_keys(path: Path) -> list[str]:
    return _STRUCT_KEY.findall(path.read_text(encoding="utf-8"))


def puppet_suffixes() -> set[str]:
    """Every `plugin.choria.adapter.NAME.<suffix>` the Puppet types let a site set."""
    top = {key for key in struct_keys(TYPES / "adapter.pp") if key not in {"ingest", "stream"}}
    ingest = {f"ingest.{key}" for key in struct_keys(TYPES / "adapter" / "ingest.pp")}
    stream = {f"stream.{key}" for key in struct_keys(TYPES / "adapter" / "stream.pp")}
    return top | ingest | stream


def render_suffixes() -> set[str]:
    top = {key for key in render.ADAPTER_FIELDS if key not in {"ingest", "stream"}}
    return (
        top
        | {f"ingest.{key}" for key in render.INGEST_FIELDS}
        | {f"stream.{key}" for key in render.STREAM_FIELDS}
    )


def data_suffixes(adapters: Mapping[str, Mapping[str, Any]]) -> set[str]:
    found: set[str] = set()
    for adapter in adapters.values():
        for key, value in adapter.items():
            if key in {"ingest", "stream"}:
                found |= {f"{key}.{inner}" for inner in value}
            else:
                found.add(key)
    return found


def missing(runtime: Iterable[str], known: set[str]) -> list[str]:
    return sorted(set(runtime) - known)


RUNTIME = [key.suffix for key in ADAPTER_KEYS]


def test_the_struct_reader_finds_the_keys_it_should() -> None:
    assert struct_keys(TYPES / "adapter" / "ingest.pp")[:2] == ["topic", "protocol"]
    # The check itself: a key only the runtime has is reported by name.
    assert missing([*RUNTIME, "ingest.not_in_puppet"], puppet_suffixes()) == ["ingest.not_in_puppet"]


def test_puppet_types_know_every_runtime_adapter_key() -> None:
    assert missing(RUNTIME, puppet_suffixes()) == [], "add these keys to puppet/types/adapter*.pp"


def test_render_knows_every_runtime_adapter_key() -> None:
    assert missing(RUNTIME, render_suffixes()) == [], "add these keys to config/render.py"


def test_puppet_and_render_set_nothing_the_runtime_does_not_read() -> None:
    assert puppet_suffixes() <= set(KNOWN_SUFFIXES)
    assert render_suffixes() == puppet_suffixes()
    assert puppet_suffixes() >= TYPE_KEYS


def test_the_all_keys_data_set_sets_every_runtime_key() -> None:
    """tests/data/render/all_optional_keys.yaml goes through real puppet apply and render
    (test_puppet_render.py) and back through the runtime (test_render_roundtrip.py)."""
    data = yaml.safe_load((DATA / "all_optional_keys.yaml").read_text(encoding="utf-8"))
    assert missing(RUNTIME, data_suffixes(data["choria::broker::adapters"])) == []
