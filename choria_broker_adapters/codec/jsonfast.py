"""JSON parsing with Go `encoding/json` semantics, fast when orjson is installed.

Two parsers produce the same values for every document both accept:

* the **fast** parser is `orjson.loads` (optional extra `fast`). It refuses everything where
  Go's behaviour needs care (invalid UTF-8, lone surrogate escapes, numbers that overflow a
  float, nesting deeper than 1024); the caller then re-decodes the whole message with the
  precise parser (`NeedPrecise`).
* the **precise** parser is the standard library's `json` with hooks. It reproduces Go's rules
  (docs/protocol.md, JSON text): each invalid UTF-8 byte and each lone surrogate in a string becomes
  U+FFFD, `NaN`/`Infinity` literals are refused, numbers that overflow a 64-bit float are
  refused in schema-checked documents (`strict_numbers=True`), objects keep their key/value
  pairs in document order (`GoObject.pairs`) so case-insensitive "last key wins" can be
  resolved exactly.

Without orjson the precise parser is used for every message, so both installations publish
identical bytes. Set `CHORIA_BROKER_ADAPTERS_JSON=stdlib` to force the standard library.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

try:  # optional speed-up, see the `fast` extra in pyproject.toml
    import orjson as _orjson
except ImportError:  # pragma: no cover - exercised by forcing the stdlib in tests
    _orjson = None

if os.environ.get("CHORIA_BROKER_ADAPTERS_JSON", "").lower() == "stdlib":
    _orjson = None

# The module attribute the protocol and output code consult on every call; tests replace it
# with None to exercise the standard-library path.
orjson: Any = _orjson


# For JSON from a trusted peer (JetStream's API replies): the fastest parser, no Go semantics.
loads_trusted: Any = _orjson.loads if _orjson is not None else json.loads


def backend() -> str:
    """Which JSON implementation is in use: "orjson" or "stdlib"."""
    return "orjson" if orjson is not None else "stdlib"


class NeedPrecise(Exception):
    """The fast path met something only the precise parser decides the way Go does."""


class JSONInvalid(ValueError):
    """The text is not one JSON value (as Go's encoding/json would reject it)."""


class GoObject(dict):
    """A JSON object from the precise parser: a dict (last duplicate wins, what a generic Go
    decode into a map sees) that also remembers every key/value pair in document order."""

    __slots__ = ("pairs",)
    pairs: list[tuple[str, Any]]


SURROGATES = re.compile("[\ud800-\udfff]")


def _clean(text: str) -> str:
    # Lone surrogates come from invalid UTF-8 bytes (surrogateescape) or `\udXXX` escapes;
    # Go turns each into U+FFFD. ASCII text cannot contain them.
    if text.isascii():
        return text
    return SURROGATES.sub("\ufffd", text)


def _pairs_hook(pairs: list[tuple[str, Any]]) -> GoObject:
    # Every string the decoder ever uses is a key or a direct member value of some object,
    # so cleaning here is enough (strings inside arrays are only ever type-checked).
    # Almost every key and string value is ASCII (which cannot hold a lone surrogate): keep the
    # decoder's own fresh list then, rebuilding it only when some string needs cleaning.
    for key, value in pairs:
        if not key.isascii() or (type(value) is str and not value.isascii()):
            pairs = [(_clean(key), _clean(value) if type(value) is str else value) for key, value in pairs]
            break
    obj = GoObject(pairs)
    obj.pairs = pairs
    return obj


def _reject_constant(name: str) -> Any:
    raise JSONInvalid(f"invalid literal {name}")


class _NumberOverflow(ValueError):
    pass


def _strict_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise _NumberOverflow(f"number {text[:20]}... overflows a 64-bit float")
    return value


def _strict_int(text: str) -> int:
    # No JSON integer literal below 310 characters overflows a float64 (no leading zeros).
    if len(text) > 300:
        _strict_float(text)
    return int(text)


def _lenient_int(text: str) -> int | float:
    # Beyond int64 no Go integer field accepts the value; a float keeps it out of every
    # integer check without paying for (or tripping the digit limit of) int().
    if len(text) > 25:
        return float(text)
    return int(text)


def _plain_pairs_hook(pairs: list[tuple[str, Any]]) -> GoObject:
    # For text that cannot produce a non-ASCII string (see loads_precise): nothing to clean.
    obj = GoObject(pairs)
    obj.pairs = pairs
    return obj


def _decoder(strict_numbers: bool, cleaning: bool) -> json.JSONDecoder:
    return json.JSONDecoder(
        object_pairs_hook=_pairs_hook if cleaning else _plain_pairs_hook,
        parse_float=_strict_float if strict_numbers else float,
        parse_int=_strict_int if strict_numbers else _lenient_int,
        parse_constant=_reject_constant,
    )


# (strict_numbers, text may hold non-ASCII strings) -> decoder
_DECODERS = {
    (strict, cleaning): _decoder(strict, cleaning) for strict in (True, False) for cleaning in (True, False)
}


def loads_precise(data: bytes | str, *, strict_numbers: bool) -> Any:
    """Parse one JSON value exactly as Go would, raising JSONInvalid otherwise.

    strict_numbers: refuse any number literal that overflows a float64, as Go's schema
    validation step does for the documents it checks."""
    # surrogateescape keeps one code point per invalid byte (Go: one U+FFFD per byte);
    # outside strings such code points are syntax errors, as in Go.
    text = data.decode("utf-8", "surrogateescape") if isinstance(data, bytes) else data
    # Only non-ASCII text or a \u escape can put a lone surrogate (or any non-ASCII
    # character) into a string; most documents have neither and skip the cleaning hook.
    cleaning = not text.isascii() or "\\u" in text
    decoder = _DECODERS[strict_numbers, cleaning]
    try:
        value = decoder.decode(text)
    except RecursionError as exc:
        raise JSONInvalid("nesting too deep") from exc
    except _NumberOverflow as exc:
        raise JSONInvalid(str(exc)) from exc
    except ValueError as exc:  # JSONDecodeError, int() digit limit, rejected constants
        raise JSONInvalid(str(exc).split(":", 1)[0]) from exc
    if type(value) is str:
        value = _clean(value)
    return value
