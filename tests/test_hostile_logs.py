"""Warnings are rate limited per kind of event, never per sender-chosen text (issue 12, point 4)."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from choria_broker_adapters.core.log import ContextLogger, RateLimitedWarning
from choria_broker_adapters.devtools.natsserver import NatsServer
from tests.reliability_support import (
    Runtime,
    adapter_keys,
    add_stream,
    publish,
    small_registration,
    start_runtime,
)
from tests.runtime_support import wait_until

FLOOD = 20_000


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def captured() -> Iterator[tuple[Lines, ContextLogger]]:
    logger = logging.getLogger("tests.hostile.ratelimit")
    logger.propagate = False
    lines = Lines()
    logger.addHandler(lines)
    logger.setLevel(logging.INFO)
    yield lines, ContextLogger(logger, {})
    logger.removeHandler(lines)


def test_one_kind_gives_one_line_per_interval_with_the_count_and_an_example(
    captured: tuple[Lines, ContextLogger],
) -> None:
    lines, log = captured
    clock = Clock()
    limiter = RateLimitedWarning(log, interval=10.0, clock=clock)
    for index in range(FLOOD):
        clock.now = 1000.0 + index / 1000  # 20,000 over 20 s
        limiter.warn("decode", f"Could not process message, discarding: bad protocol 'p{index}'")
    assert len(lines.messages) == 2
    assert lines.messages[0] == "Could not process message, discarding: bad protocol 'p0'"
    # The second line, 10 s later, reports the 9,999 suppressed in between and the latest one.
    assert lines.messages[1] == (
        "Could not process message, discarding: bad protocol 'p10000' "
        "(9999 more like this in the last 10s; the latest: "
        "Could not process message, discarding: bad protocol 'p9999')"
    )
    limiter.flush()
    assert lines.messages[2] == (
        "9999 more decode warning(s) in the last 10s; the latest: "
        "Could not process message, discarding: bad protocol 'p19999'"
    )
    limiter.flush()
    assert len(lines.messages) == 3  # nothing left to report


def test_kinds_are_bounded_whatever_callers_pass(captured: tuple[Lines, ContextLogger]) -> None:
    lines, log = captured
    limiter = RateLimitedWarning(log, interval=10.0, max_kinds=8, clock=Clock())
    for index in range(FLOOD):
        limiter.warn(f"decode:{index}", f"message {index}")
    assert limiter.kinds == 9  # 8 kinds, then one shared bucket
    assert lines.messages == [f"message {index}" for index in range(9)]


def test_a_long_example_is_cut(captured: tuple[Lines, ContextLogger]) -> None:
    lines, log = captured
    clock = Clock()
    limiter = RateLimitedWarning(log, interval=10.0, clock=clock)
    limiter.warn("decode", "first")
    limiter.warn("decode", "x" * 5000)
    limiter.flush()
    assert lines.messages[1] == "1 more decode warning(s) in the last 0s; the latest: " + "x" * 300 + "..."


@pytest.fixture
def runtimes() -> Iterator[list[Runtime]]:
    started: list[Runtime] = []
    yield started
    for runtime in started:
        runtime.process.close()
    for runtime in started:
        assert "Traceback" not in runtime.process.log_text(), runtime.process.log_path


async def test_twenty_thousand_distinct_bad_protocols_give_a_bounded_number_of_lines(
    nats_server_factory: Callable[..., NatsServer], tmp_path: Path, runtimes: list[Runtime]
) -> None:
    choria = nats_server_factory(jetstream=False)
    jetstream = nats_server_factory(jetstream=True)
    await add_stream(jetstream.url, "CHORIA_NODE_DATA")
    runtime = start_runtime(
        tmp_path, "logs", middleware=choria.address, adapter=adapter_keys(jetstream.address)
    )
    runtimes.append(runtime)
    await runtime.wait_subscribed(4)
    base = small_registration("flood.example.net", "0" * 32).payload
    assert base.count(b"choria:transport:1") == 1
    flood = [base.replace(b"choria:transport:1", f"evil:{index:05d}".encode()) for index in range(FLOOD)]
    await publish(choria.url, flood)

    async def counted() -> bool:
        counts = await runtime.counts()
        return (
            counts["dropped_decode"] + counts["dropped_queue_full"] + counts["dropped_slow_consumer"] >= FLOOD
        )

    await wait_until(counted, 30, "every bad message counted")
    counts = await runtime.counts()
    assert counts["dropped_decode"] == FLOOD
    assert counts["received"] == counts["stored"] == 0
    log = runtime.process.log_text()
    decode_lines = [line for line in log.splitlines() if 'msg="Could not process message' in line]
    # The first at once, then at most one per 10 s while the flood lasts (it lasts seconds).
    assert 1 <= len(decode_lines) <= 3, decode_lines
    assert "unknown transport protocol 'evil:" in decode_lines[0]
    assert runtime.process.terminate() == 0
    log = runtime.process.log_text()
    lines = [line for line in log.splitlines() if 'msg="Could not process message' in line]
    summarised = sum(int(n) for n in re.findall(r"(\d+) more (?:decode warning\(s\)|like this)", log))
    # Every bad message is a line of its own or in a summary's count: none vanishes unlogged.
    assert len(lines) + summarised == FLOOD
    print(f"\n{FLOOD} distinct bad protocols: {len(lines)} warning line(s) + summaries of {summarised}")
