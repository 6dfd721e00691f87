"""voluptuous validators for broker.conf values, built on the rules in `core`.

Each turns the raw string into a typed value or raises `vol.Invalid` with a message saying
what was expected (never repeating a secret); each also accepts an already-typed default.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from typing import Any

import voluptuous as vol

from choria_broker_adapters.core import durations, names, servers, subjects

Validator = Callable[[Any], Any]


def did_you_mean(word: str, choices: Iterable[str], *, prefix: str = "") -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {prefix}{close[0]}?)" if close else ""


def integer(minimum: int, maximum: int, *, allow: tuple[int, ...] = ()) -> Validator:
    special = f" or {' or '.join(str(a) for a in allow)}" if allow else ""
    expected = f"a whole number from {minimum} to {maximum}{special}"

    def validate(value: Any) -> int:
        if isinstance(value, int):
            number = value
        else:
            try:
                number = durations.parse_integer(str(value))
            except ValueError:
                raise vol.Invalid(f"{value!r} is not a whole number; expected {expected}") from None
        if number in allow or minimum <= number <= maximum:
            return number
        raise vol.Invalid(f"{number} is out of range; expected {expected}")

    return validate


class Duration:
    """A duration in seconds within [minimum, maximum]; a class so the key table can tell
    duration keys apart (check shows them as durations)."""

    def __init__(self, minimum: float, maximum: float | None = None) -> None:
        self.minimum = minimum
        self.maximum = maximum

    def __call__(self, value: Any) -> float:
        if isinstance(value, int | float):
            seconds = float(value)
        else:
            try:
                seconds = durations.parse_duration(str(value))
            except ValueError:
                raise vol.Invalid(f"{value!r} is not a duration; expected {durations.EXPECTED}") from None
        if seconds < self.minimum or (self.maximum is not None and seconds > self.maximum):
            upper = (
                f" and at most {durations.format_duration(self.maximum)}" if self.maximum is not None else ""
            )
            raise vol.Invalid(
                f"{value} is out of range; expected at least {durations.format_duration(self.minimum)}{upper}"
            )
        return seconds


def one_of(*choices: str, refused: dict[str, str] | None = None) -> Validator:
    """One of `choices`; a value in `refused` is an error with its own explanation."""

    def validate(value: Any) -> str:
        if value in choices:
            return str(value)
        if refused and value in refused:
            raise vol.Invalid(f"{value!r} {refused[value]}; expected one of {', '.join(choices)}")
        hint = did_you_mean(str(value), choices)
        raise vol.Invalid(f"{value!r} is not allowed; expected one of {', '.join(choices)}{hint}")

    return validate


def boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "yes", "true", "y", "t"}:
        return True
    if text in {"0", "no", "false", "n", "f"}:
        return False
    raise vol.Invalid(f"{value!r} is not a boolean; expected true or false")


def text(value: Any) -> str:
    return str(value)


def server_list(value: Any) -> servers.ServerList:
    if isinstance(value, servers.ServerList):
        return value
    try:
        return servers.parse_servers(value if isinstance(value, str) else list(value))
    except ValueError as error:
        raise vol.Invalid(str(error)) from None


def subscribe_subject(value: Any) -> str:
    problem = subjects.pattern_problem(str(value))
    if problem:
        raise vol.Invalid(f"{value!r} is not a valid NATS subject: {problem}")
    return str(value)


def topic_template(value: Any) -> str:
    """The output topic: a publish subject once every `%s` is replaced by a sender identity."""
    problem = subjects.topic_problem(str(value))
    if problem:
        raise vol.Invalid(f"{value!r} is not a valid publish subject template: {problem}")
    return str(value)


def subject_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, tuple):
        return value
    return tuple(subscribe_subject(item.strip()) for item in str(value).split(","))


def stream_name(value: Any) -> str:
    problem = names.stream_name_problem(str(value))
    if problem:
        raise vol.Invalid(
            f"{value!r} is not a valid JetStream stream name ({problem}); expected letters, digits, - and _"
        )
    return str(value)


def not_zero(value: int) -> int:
    if value == 0:
        raise vol.Invalid("0 is not allowed; expected -1 (unlimited) or a positive number")
    return value


def validate_each(
    schema: dict[str, Validator], texts: dict[str, Any]
) -> tuple[dict[str, Any], list[vol.Invalid]]:
    """Run one voluptuous schema over `texts`: every value that passes, and every error.

    voluptuous returns nothing when any key fails, so the keys that failed are validated
    again without the others to keep the values that passed (for further checks)."""
    compiled = vol.Schema(
        {vol.Optional(key): validate for key, validate in schema.items()}, extra=vol.ALLOW_EXTRA
    )
    try:
        return compiled(texts), []
    except vol.MultipleInvalid as invalid:
        failed = {str(error.path[0]) for error in invalid.errors if error.path}
        passed = compiled({key: value for key, value in texts.items() if key not in failed})
        return passed, list(invalid.errors)
