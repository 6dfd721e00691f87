"""A live runtime's /choria/prometheus exposes exactly the Go broker's series names and labels.

The Go client library writes counters under their bare names (`# TYPE x counter`, samples
`x{...}`, no `_total`); dashboards and alerts built for a Go broker query those names. The
scrape is parsed with prometheus-client's text parser (so the exposition stays valid) and
its raw series names are compared to a hard-coded list.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import nats
import pytest
from prometheus_client.parser import text_string_to_metric_families

from choria_broker_adapters import __version__
from choria_broker_adapters.devtools.natsserver import NatsServer
from tests.reliability_support import (
    ADAPTER,
    Runtime,
    adapter_keys,
    add_stream,
    payloads,
    publish,
    small_fleet,
    start_runtime,
)
from tests.runtime_support import stored_messages

IDENTITY = "adapter1.example.net"
DROP_REASONS = (
    "decode",
    "subject",
    "encode",
    "queue_full",
    "publish",
    "unconfirmed",
    "shutdown_timeout",
    "slow_consumer",
    "internal",
    "malformed_frame",
    "unverified",
    "rejected",
    "stream_full",
)
VERIFY_FAILURES = (
    "unsigned",
    "malformed",
    "untrusted",
    "expired",
    "name",
    "purpose",
    "signature",
    "hash",
    "no_trust",
    "internal",
)
WORKER = ("name", "role", "identity")
ADAPTER_LABELS = ("name", "identity")

# (family name, type, label names): the Go broker's adapter series, then this runtime's own.
GO_FAMILIES = {
    ("choria_adapter_received_msgs", "counter", WORKER),
    ("choria_adapter_published_msgs", "counter", WORKER),
    ("choria_adapter_errors", "counter", WORKER),
    ("choria_adapter_bytes", "counter", WORKER),
    ("choria_adapter_time", "summary", WORKER),
    ("choria_adapter_queue_length", "gauge", ADAPTER_LABELS),
    ("choria_adapter_queue_capacity", "gauge", ADAPTER_LABELS),
}
OWN_FAMILIES = {
    ("choria_adapter_in_flight_msgs", "gauge", ADAPTER_LABELS),
    ("choria_adapter_retries", "counter", ADAPTER_LABELS),
    ("choria_adapter_duplicate_msgs", "counter", ADAPTER_LABELS),
    ("choria_adapter_dropped_msgs", "counter", ("name", "reason", "identity")),
    ("choria_adapter_worker_restarts", "counter", ("name", "side", "identity")),
    ("choria_adapter_reconnects", "counter", ("name", "side", "identity")),
    ("choria_adapter_unconfirmed_msgs", "gauge", ADAPTER_LABELS),
    ("choria_adapter_late_acks", "counter", ADAPTER_LABELS),
    ("choria_adapter_verified_msgs", "counter", ADAPTER_LABELS),
    ("choria_adapter_unverified_msgs", "counter", ("name", "reason", "identity")),
    ("choria_build_info", "gauge", ("version", "identity")),
}
# Every raw series name a scrape may contain: no `_total`, `_created` or `_info` anywhere.
SERIES_NAMES = {
    name
    for name, kind, _ in GO_FAMILIES | OWN_FAMILIES
    for name in ((f"{name}_sum", f"{name}_count") if kind == "summary" else (name,))
}


def series(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Raw sample lines of a scrape: (name, sorted labels) -> value."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            # The parser reports counters as name_total; the raw line is checked below.
            name = sample.name.removesuffix("_total") if family.type == "counter" else sample.name
            out[(name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


@pytest.fixture
def servers(nats_server_factory: Callable[..., NatsServer]) -> tuple[NatsServer, NatsServer]:
    return nats_server_factory(jetstream=False), nats_server_factory(jetstream=True)


async def test_live_scrape_has_exactly_the_go_series_names_and_labels(
    servers: tuple[NatsServer, NatsServer], tmp_path: Path
) -> None:
    choria, jetstream = servers
    await add_stream(jetstream.url, "NAMES")
    runtime: Runtime = start_runtime(
        tmp_path,
        "runtime",
        middleware=choria.address,
        adapter=adapter_keys(jetstream.address, ingest__workers=2, stream__workers=2),
    )
    try:
        await runtime.wait_subscribed(2)
        messages = small_fleet(5, tag="names")
        await publish(choria.url, payloads(messages))
        await runtime.wait_settled(30)
        text = await runtime.prometheus()
    finally:
        runtime.process.close()
    nc = await nats.connect(jetstream.url)
    try:
        stored = await stored_messages(nc.jetstream(), "NAMES")
    finally:
        await nc.close()

    families = {
        (family.name, family.type, tuple(sorted({k for s in family.samples for k in s.labels})))
        for family in text_string_to_metric_families(text)
    }
    assert families == {
        (name, kind, tuple(sorted(labels))) for name, kind, labels in GO_FAMILIES | OWN_FAMILIES
    }
    raw_names = {line.split("{", 1)[0] for line in text.splitlines() if line and not line.startswith("#")}
    assert raw_names == SERIES_NAMES
    type_lines = {line for line in text.splitlines() if line.startswith("# TYPE")}
    assert "# TYPE choria_adapter_received_msgs counter" in type_lines
    assert not [line for line in text.splitlines() if "_total" in line]

    values = series(text)
    workers = [f"{ADAPTER}.{index}" for index in range(2)]
    expected_labels = (
        {
            (family, (("identity", IDENTITY), ("name", worker), ("role", role)))
            for family in (
                "choria_adapter_received_msgs",
                "choria_adapter_published_msgs",
                "choria_adapter_errors",
                "choria_adapter_bytes",
                "choria_adapter_time_sum",
                "choria_adapter_time_count",
            )
            for worker in workers
            for role in ("input", "output")
        }
        | {
            (family, (("identity", IDENTITY), ("name", ADAPTER)))
            for family in (
                "choria_adapter_queue_length",
                "choria_adapter_queue_capacity",
                "choria_adapter_in_flight_msgs",
                "choria_adapter_unconfirmed_msgs",
                "choria_adapter_late_acks",
                "choria_adapter_retries",
                "choria_adapter_duplicate_msgs",
                "choria_adapter_verified_msgs",
            )
        }
        | {
            (
                "choria_adapter_unverified_msgs",
                (("identity", IDENTITY), ("name", ADAPTER), ("reason", reason)),
            )
            for reason in VERIFY_FAILURES
        }
        | {
            ("choria_adapter_dropped_msgs", (("identity", IDENTITY), ("name", ADAPTER), ("reason", reason)))
            for reason in DROP_REASONS
        }
        | {
            (family, (("identity", IDENTITY), ("name", ADAPTER), ("side", side)))
            for family in ("choria_adapter_worker_restarts", "choria_adapter_reconnects")
            for side in ("ingest", "stream")
        }
        | {("choria_build_info", (("identity", IDENTITY), ("version", __version__)))}
    )
    assert set(values) == expected_labels

    def total(family: str, role: str) -> float:
        return sum(v for (name, labels), v in values.items() if name == family and ("role", role) in labels)

    assert total("choria_adapter_received_msgs", "input") == len(messages)
    assert total("choria_adapter_received_msgs", "output") == len(messages)
    assert total("choria_adapter_published_msgs", "output") == len(messages)
    assert total("choria_adapter_errors", "input") == total("choria_adapter_errors", "output") == 0
    assert total("choria_adapter_bytes", "input") == sum(len(m.payload) for m in messages)
    assert total("choria_adapter_bytes", "output") == sum(len(body) for _, body in stored)
    assert total("choria_adapter_time_count", "input") == len(messages)
    assert total("choria_adapter_time_count", "output") == len(messages)
    assert total("choria_adapter_time_sum", "input") > 0
    adapter = (("identity", IDENTITY), ("name", ADAPTER))
    assert values[("choria_adapter_in_flight_msgs", adapter)] == 0
    assert values[("choria_adapter_retries", adapter)] == 0
    assert values[("choria_adapter_duplicate_msgs", adapter)] == 0
    assert values[("choria_adapter_queue_capacity", adapter)] == 1000
    assert not [v for (name, _), v in values.items() if name == "choria_adapter_dropped_msgs" and v]
