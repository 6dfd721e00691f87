"""Rate-limited warnings report what they suppressed even when no later warning comes.

The README promises a counter and a rate-limited log line per drop reason; a burst of drops
that stops must still be reported with its count, without waiting for a later warning of the
same kind and without waiting for the adapter to stop.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from choria_broker_adapters.adapters.choria_streams import StreamsAdapter
from choria_broker_adapters.config.settings import load_settings
from choria_broker_adapters.core.log import RateLimitedWarning, adapter_logger
from choria_broker_adapters.process.stats import Metrics
from tests.reliability_support import ADAPTER, adapter_keys
from tests.runtime_support import broker_conf, wait_until


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records]


def test_due_flush_reports_the_suppressed_count_an_interval_after_the_last_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    warn = RateLimitedWarning(adapter_logger("a"), interval=10, clock=clock)
    caplog.set_level(logging.WARNING, logger="choria_broker_adapters")
    for number in range(5):
        clock.now += 0.2
        warn.warn("queue_full", f"full {number}")
    assert messages(caplog) == ["full 0"]
    clock.now += 5
    assert warn.flush(due_only=True) == 0, "not an interval since the last line yet"
    clock.now += 5
    assert warn.flush(due_only=True) == 1
    assert messages(caplog)[1] == "4 more queue_full warning(s) in the last 11s; the latest: full 4"
    assert warn.flush(due_only=True) == 0 and warn.flush() == 0, "nothing left to report"
    clock.now += 20
    warn.warn("queue_full", "full again")
    assert messages(caplog)[2] == "full again", "after the flush nothing is pending: logged at once"


def test_flush_at_stop_reports_everything_left_at_once(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    warn = RateLimitedWarning(adapter_logger("a"), interval=10, clock=clock)
    caplog.set_level(logging.WARNING, logger="choria_broker_adapters")
    for number in range(3):
        warn.warn("publish", f"gave up {number}")
    assert warn.flush(due_only=True) == 0
    assert warn.flush() == 1
    assert messages(caplog) == [
        "gave up 0",
        "2 more publish warning(s) in the last 0s; the latest: gave up 2",
    ]


async def test_a_running_adapter_flushes_suppressed_warnings_on_its_own(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No later warning and no stop: the adapter's own timer reports the suppressed count."""
    config = tmp_path / "broker.conf"
    # Nothing listens on these ports: the workers keep retrying, which this test does not need.
    config.write_text(
        broker_conf(middleware="nats://127.0.0.1:1", adapters={ADAPTER: adapter_keys("127.0.0.1:1")})
    )
    settings = load_settings(config, environ={})
    adapter = StreamsAdapter(
        settings.adapters[ADAPTER], settings, Metrics(settings.identity), disable_tls=True
    )
    adapter._warn_input.interval = 0.3
    caplog.set_level(logging.WARNING, logger="choria_broker_adapters")
    await adapter.start()
    try:
        for number in range(4):
            adapter._warn_input.warn("queue_full", f"Work queue is full {number}")

        summary = re.compile(
            r"3 more queue_full warning\(s\) in the last \d+s; the latest: Work queue is full 3"
        )

        async def flushed() -> bool:
            return any(summary.fullmatch(message) for message in messages(caplog))

        await wait_until(flushed, 5, "the periodic flush")
        queue_lines = [m for m in messages(caplog) if "queue" in m]
        assert len(queue_lines) == 2 and queue_lines[0] == "Work queue is full 0"
        assert summary.fullmatch(queue_lines[1])
    finally:
        await adapter.stop(grace=0.5)
