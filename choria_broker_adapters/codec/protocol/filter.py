"""The request `filter` object, identical in v1 and v2: the embedded-schema constraints
(exact keys) and the Go field decode (case-insensitive keys) that follows them."""

from __future__ import annotations

from typing import Any

from choria_broker_adapters.codec.protocol.gotypes import (
    go_list,
    go_object,
    go_string,
    go_string_list,
    struct_fields,
)
from choria_broker_adapters.codec.protocol.model import DecodeError

FACT_OPERATORS = frozenset({">=", "<=", "<", ">", "!=", "==", "=~"})
FILTER_FIELDS = frozenset({"fact", "cf_class", "agent", "identity", "compound"})
FACT_FIELDS = frozenset({"fact", "operator", "value"})
_REQUIRED = ("fact", "cf_class", "identity", "compound")
# What registration and most clients send; both checks below pass it without looking further.
_EMPTY_FILTERS = (
    {"fact": [], "cf_class": [], "agent": [], "identity": [], "compound": []},
    {"fact": [], "cf_class": [], "identity": [], "compound": []},
)


def is_empty_filter(value: Any) -> bool:
    return isinstance(value, dict) and (value == _EMPTY_FILTERS[0] or value == _EMPTY_FILTERS[1])


def _fail(where: str, problem: str) -> DecodeError:
    return DecodeError(f"{where} {problem}")


def check_filter_schema(value: Any, where: str) -> None:
    """The schema rules for a present `filter` value (`where` names it, e.g. "request: /filter")."""
    if is_empty_filter(value):
        return
    if not isinstance(value, dict):
        raise _fail(where, "is not an object")
    missing = [key for key in _REQUIRED if key not in value]
    if missing:
        raise _fail(where, "is missing " + ", ".join(f"'{key}'" for key in missing))
    for key in ("identity", "agent", "cf_class"):
        if key in value:
            items = value[key]
            if type(items) is not list or any(type(item) is not str for item in items):
                raise _fail(f"{where}/{key}", "is not an array of strings")
    compound = value["compound"]
    if type(compound) is not list or any(
        type(group) is not list or any(not isinstance(item, dict) for item in group) for group in compound
    ):
        raise _fail(f"{where}/compound", "is not an array of arrays of objects")
    facts = value["fact"]
    if type(facts) is not list:
        raise _fail(f"{where}/fact", "is not an array")
    for index, fact in enumerate(facts):
        at = f"{where}/fact/{index}"
        if not isinstance(fact, dict):
            raise _fail(at, "is not an object")
        missing = [key for key in ("fact", "operator", "value") if key not in fact]
        if missing:
            raise _fail(at, "is missing " + ", ".join(f"'{key}'" for key in missing))
        for key in ("fact", "value"):
            if type(fact[key]) is not str or not fact[key]:
                raise _fail(f"{at}/{key}", "is not a non-empty string")
        if type(fact["operator"]) is not str or fact["operator"] not in FACT_OPERATORS:
            raise _fail(f"{at}/operator", "is not one of " + " ".join(sorted(FACT_OPERATORS)))


def decode_filter(value: Any, where: str) -> None:
    """Go's decode of the filter into its struct: only types matter, nothing is kept."""
    if is_empty_filter(value):
        return
    obj = go_object(value, where)
    if obj is None:
        return
    fields = struct_fields(obj, FILTER_FIELDS)
    for item in go_list(fields.get("fact"), f"{where}.fact"):
        fact = go_object(item, f"{where}.fact item")
        if fact is not None:
            for name, member in struct_fields(fact, FACT_FIELDS).items():
                go_string(member, f"{where}.fact item {name}")
    for name in ("cf_class", "agent", "identity"):
        go_string_list(fields.get(name), f"{where}.{name}")
    # Go type: list of lists of string maps, stricter than the schema's "object".
    for group in go_list(fields.get("compound"), f"{where}.compound"):
        for item in go_list(group, f"{where}.compound item"):
            clause = go_object(item, f"{where}.compound item")
            if clause is not None:
                for member in clause.values():
                    go_string(member, f"{where}.compound value")
