"""Go `encoding/json` struct decoding rules, applied to already parsed JSON values.

docs/protocol.md, Field rules: object keys match struct fields case-insensitively (simple Unicode case
folding, so U+017F LONG S matches `s` and the Kelvin sign matches `k`), the last matching key in
document order wins, unknown keys are ignored; strings accept a string or null; integers
accept only an integer literal within int64 (or null); []byte fields accept standard padded
base64 (CR/LF ignored) or null.

Deliberate simplification: when a field is given several times (exact or case-variant
duplicates) only the winning value is type-checked. Go type-checks every occurrence, so it
discards a few such messages that we accept; anything Go publishes we publish identically.
"""

from __future__ import annotations

import binascii
from typing import Any

from choria_broker_adapters.codec.jsonfast import GoObject, NeedPrecise
from choria_broker_adapters.codec.protocol.model import DecodeError, HeaderLayout

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

# Non-ASCII characters whose simple case folding reaches an ASCII letter.
_FOLD_TO_ASCII = str.maketrans({"\u017f": "s", "\u212a": "k"})


def fold_key(key: str) -> str:
    """A key's spelling for case-insensitive comparison with (ASCII) Go field names."""
    if key.isascii():
        return key.lower()
    key = key.translate(_FOLD_TO_ASCII)
    # Still non-ASCII: it cannot equal any ASCII field name, return it unchanged.
    return key.lower() if key.isascii() else key


def struct_fields(obj: dict[str, Any], names: frozenset[str]) -> dict[str, Any]:
    """Map each Go field name to the JSON value Go would decode into it."""
    if obj.keys() <= names:
        # Every key is an exact field name: the dict's own last-wins is Go's answer.
        return obj
    found: dict[str, Any] = {}
    if type(obj) is GoObject:
        for key, value in obj.pairs:
            name = key if key in names else fold_key(key)
            if name in names:
                found[name] = value
        return found
    # A plain dict from the fast parser: exact duplicates are already resolved last-wins, but
    # when two spellings of one field are present their document order has been lost.
    for key, value in obj.items():
        if key in names:
            name = key
        else:
            name = fold_key(key)
            if name not in names:
                continue
        if name in found:
            raise NeedPrecise
        found[name] = value
    return found


def go_string(value: Any, where: str) -> str:
    if type(value) is str:
        return value
    if value is None:
        return ""
    raise DecodeError(f"{where} is not a string")


def go_int64(value: Any, where: str) -> int:
    if type(value) is int:
        if INT64_MIN <= value <= INT64_MAX:
            return value
        raise DecodeError(f"{where} is outside the 64-bit integer range")
    if value is None:
        return 0
    raise DecodeError(f"{where} is not an integer")


def b64decode(text: str, where: str) -> bytes:
    """Go's base64.StdEncoding as encoding/json uses it: padding required, CR/LF skipped."""
    if "\r" in text or "\n" in text:
        text = text.replace("\r", "").replace("\n", "")
    try:
        return binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):
        raise DecodeError(f"{where} is not base64") from None


def go_bytes(value: Any, where: str) -> bytes:
    if type(value) is str:
        return b64decode(value, where) if value else b""
    if value is None:
        return b""
    raise DecodeError(f"{where} is not a base64 string")


def go_object(value: Any, where: str) -> dict[str, Any] | None:
    """A pointer-to-struct or map field: an object, or None for JSON null."""
    if isinstance(value, dict) or value is None:
        return value
    raise DecodeError(f"{where} is not an object")


def go_list(value: Any, where: str) -> list[Any]:
    """A slice field: a JSON array, null is an empty slice."""
    if type(value) is list:
        return value
    if value is None:
        return []
    raise DecodeError(f"{where} is not an array")


def go_string_list(value: Any, where: str) -> None:
    for item in go_list(value, where):
        go_string(item, f"{where} item")


def go_string_tuples(value: Any, where: str, size: int) -> None:
    """A slice of fixed-size string arrays ([][3]string): extra items are skipped unchecked."""
    for item in go_list(value, where):
        for element in go_list(item, f"{where} item")[:size]:
            go_string(element, f"{where} item")


def missing_keys(doc: dict[str, Any], keys: tuple[str, ...]) -> str:
    """The `keys` absent from `doc`, quoted and comma separated, for a schema error."""
    return ", ".join(f"'{key}'" for key in keys if key not in doc)


def schema_integer(value: Any) -> bool:
    """What a JSON-schema validator counts as an integer (the strict Go decode comes after)."""
    return type(value) is int or (type(value) is float and value.is_integer())


def check_headers(headers: dict[str, Any], layout: HeaderLayout) -> None:
    """Decode a transport's headers as Go does, each protocol version under its own names."""
    fields = struct_fields(headers, layout.fields)
    for name in layout.strings:
        go_string(fields.get(name), f"transport: headers.{name}")
    go_string_tuples(fields.get(layout.trail), f"transport: headers.{layout.trail}", 3)
    federation = go_object(fields.get("federation"), "transport: headers.federation")
    if federation is not None:
        federation_fields = struct_fields(federation, layout.federation_fields)
        for name in layout.federation_strings:
            go_string(federation_fields.get(name), f"transport: headers.federation.{name}")
        targets = layout.federation_targets
        go_string_list(federation_fields.get(targets), f"transport: headers.federation.{targets}")
