"""Names: adapters (`plugin.choria.adapters`) and JetStream streams."""

from __future__ import annotations

import re

ADAPTER_NAME = re.compile(r"[A-Za-z0-9_-]+")
ADAPTER_NAME_EXPECTED = "letters, digits, '_' and '-' only"
# nats-server uses a stream's name in file paths and API subjects.
_STREAM_NAME_FORBIDDEN = re.compile(r"[\s.*>/\\]")
MAX_STREAM_NAME = 255


def stream_name_problem(name: str) -> str | None:
    """Why `name` cannot name a JetStream stream, or None."""
    if not name:
        return "it is empty"
    if _STREAM_NAME_FORBIDDEN.search(name):
        return "it contains whitespace, '.', '*', '>', '/' or '\\'"
    if len(name) > MAX_STREAM_NAME:
        return f"it is longer than {MAX_STREAM_NAME} characters"
    return None


def derive_stream_name(adapter_name: str) -> str:
    """The default stream of an adapter: `CHORIA_<NAME>`, upper case, `-` as `_`."""
    return "CHORIA_" + adapter_name.upper().replace("-", "_")
