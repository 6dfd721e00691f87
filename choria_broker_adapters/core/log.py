"""Loggers with context, and rate-limited warnings: used by every layer, configured by
`process.logs`.

Every adapter line carries the adapter name, the side (`ingest` or `stream`) and the worker
instance, so an operator can tell which worker said what. Repetitive warnings (a full queue,
a flood of bad input) are rate limited with a count of what was suppressed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

CONTEXT_FIELDS = ("component", "adapter", "side", "instance", "subject", "reason")
ROOT_LOGGER = "choria_broker_adapters"


class ContextLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger that adds fixed context fields and merges per-call `extra` (3.11 would drop it)."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        kwargs["extra"] = {**(self.extra or {}), **kwargs.get("extra", {})}
        return msg, kwargs


def adapter_logger(adapter: str, side: str | None = None, instance: int | None = None) -> ContextLogger:
    extra: dict[str, Any] = {"component": "streams_adapter", "adapter": adapter}
    if side is not None:
        extra["side"] = side
    if instance is not None:
        extra["instance"] = instance
    return ContextLogger(logging.getLogger(f"{ROOT_LOGGER}.adapter.{adapter}"), extra)


class _KindState:
    __slots__ = ("example", "last", "suppressed")

    def __init__(self) -> None:
        self.last: float | None = None
        self.suppressed = 0
        self.example = ""


class RateLimitedWarning:
    """The first warning of each kind of event at once, then at most one line per interval,
    which also says how many were suppressed and shows the latest of them as an example.

    `kind` must come from a small set fixed by the code ("decode", "queue_full",
    "publish:stream_full", ...), never from message content: a sender who could choose the key
    would make every message a kind of its own, and every one a line. Past `max_kinds` kinds,
    further ones share one bucket, so lines and memory stay bounded whatever callers pass.
    """

    OVERFLOW_KIND = "other"
    EXAMPLE_LIMIT = 300

    def __init__(
        self,
        log: ContextLogger,
        interval: float = 10.0,
        *,
        max_kinds: int = 64,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = log
        self.interval = interval
        self.max_kinds = max_kinds
        self._clock = clock
        self._kinds: dict[str, _KindState] = {}

    @property
    def kinds(self) -> int:
        """How many kinds are tracked (bounded by max_kinds + 1)."""
        return len(self._kinds)

    def warn(self, kind: str, message: str, extra: Mapping[str, Any] | None = None) -> None:
        now = self._clock()
        state = self._kinds.get(kind)
        if state is None:
            if len(self._kinds) >= self.max_kinds:
                kind = self.OVERFLOW_KIND
                state = self._kinds.get(kind)
            if state is None:
                state = self._kinds[kind] = _KindState()
        last = state.last
        if last is not None and now - last < self.interval:
            state.suppressed += 1
            state.example = message
            return
        if state.suppressed:
            message = f"{message} ({self._summary(state, now - last)})"  # type: ignore[operator]
        state.last = now
        self.log.warning(message, extra=dict(extra or {}))

    def flush(self, *, due_only: bool = False) -> int:
        """Log what is still suppressed, so a burst that stopped is reported without waiting for
        a later warning of its kind: at shutdown everything, and periodically (`due_only`) the
        kinds whose last line is an interval old. Returns how many lines were written."""
        now = self._clock()
        written = 0
        for kind, state in self._kinds.items():
            if due_only and state.last is not None and now - state.last < self.interval:
                continue
            if state.suppressed and state.last is not None:
                written += 1
                self.log.warning(
                    f"{state.suppressed} more {kind} warning(s) in the last {now - state.last:.0f}s; "
                    f"the latest: {_cut(state.example, self.EXAMPLE_LIMIT)}",
                    extra={"reason": kind},
                )
                state.suppressed = 0
                state.example = ""
                state.last = now
        return written

    def _summary(self, state: _KindState, elapsed: float) -> str:
        text = (
            f"{state.suppressed} more like this in the last {elapsed:.0f}s; "
            f"the latest: {_cut(state.example, self.EXAMPLE_LIMIT)}"
        )
        state.suppressed = 0
        state.example = ""
        return text


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
