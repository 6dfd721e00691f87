"""Prometheus metrics with the Go broker's names, and the `/choria/` HTTP endpoint.

Series and labels follow go-choria broker/adapter/stats (docs/metrics.md, Series):
`choria_adapter_{received_msgs,errors,bytes,time}{name="NAME.<i>",role,identity}`,
`choria_adapter_queue_{length,capacity}{name="NAME",identity}`. Unlike the Go broker,
`choria_adapter_published_msgs` counts JetStream acknowledgements, and what could not be
stored is counted by reason in `choria_adapter_dropped_msgs`.

Counters are exposed under their bare names (`# TYPE choria_adapter_received_msgs counter`,
no `_total`), as the Go client library writes the text format: prometheus-client's own text
writer appends `_total` to every counter, so `text_exposition` writes the format itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import resource
from collections.abc import Callable, Iterator
from typing import Any

import h11
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from choria_broker_adapters import __version__
from choria_broker_adapters.adapters.counters import Counters

log = logging.getLogger("choria_broker_adapters.process.stats")


class _AdapterCollector(Collector):
    """Exports the plain counters with the Go broker's names, types and labels."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        identity = self.metrics.identity
        families = {
            "received": Metric("choria_adapter_received_msgs", "Messages received by the adapter", "counter"),
            "published": Metric(
                "choria_adapter_published_msgs", "Messages published and acknowledged by JetStream", "counter"
            ),
            "errors": Metric("choria_adapter_errors", "Errors encountered by the adapter", "counter"),
            "bytes": Metric("choria_adapter_bytes", "Bytes received or published by the adapter", "counter"),
        }
        time = Metric("choria_adapter_time", "Time taken to handle a message", "summary")
        for (worker, role), counters in self.metrics.all_workers().items():
            labels = {"name": worker, "role": role, "identity": identity}
            for attribute, family in families.items():
                family.add_sample(family.name, labels, getattr(counters, attribute))
            time.add_sample("choria_adapter_time_sum", labels, counters.time_sum)
            time.add_sample("choria_adapter_time_count", labels, counters.time_count)
        yield from families.values()
        yield time

        retries = Metric("choria_adapter_retries", "JetStream publish attempts that were retried", "counter")
        duplicates = Metric(
            "choria_adapter_duplicate_msgs",
            "Publishes JetStream reported as duplicates of a stored message (a retry after a lost ack)",
            "counter",
        )
        dropped = Metric(
            "choria_adapter_dropped_msgs", "Messages received but not stored, by reason", "counter"
        )
        restarts = Metric(
            "choria_adapter_worker_restarts",
            "Workers restarted after an unexpected error or a connection that stopped reading, by side",
            "counter",
        )
        reconnects = Metric(
            "choria_adapter_reconnects", "NATS connections of workers re-established, by side", "counter"
        )
        late_acks = Metric(
            "choria_adapter_late_acks",
            "Messages given up after the retry budget that JetStream acknowledged later (counted stored)",
            "counter",
        )
        verified = Metric(
            "choria_adapter_verified_msgs", "Messages whose signature verified (ingest.verify)", "counter"
        )
        unverified = Metric(
            "choria_adapter_unverified_msgs",
            "Messages that failed verification (ingest.verify), by reason",
            "counter",
        )
        for adapter, counters in self.metrics.all_adapters().items():
            labels = {"name": adapter, "identity": identity}
            late_acks.add_sample(late_acks.name, labels, counters.late_acks)
            verified.add_sample(verified.name, labels, counters.verified)
            for reason, count in counters.unverified.items():
                unverified.add_sample(
                    unverified.name, {"name": adapter, "reason": reason, "identity": identity}, count
                )
            retries.add_sample(retries.name, labels, counters.retries)
            duplicates.add_sample(duplicates.name, labels, counters.duplicates)
            for reason, count in counters.dropped.items():
                dropped.add_sample(
                    dropped.name, {"name": adapter, "reason": reason, "identity": identity}, count
                )
            for side, count in counters.restarts.items():
                restarts.add_sample(
                    restarts.name, {"name": adapter, "side": side, "identity": identity}, count
                )
            for side, count in counters.reconnects.items():
                reconnects.add_sample(
                    reconnects.name, {"name": adapter, "side": side, "identity": identity}, count
                )
        yield from (retries, duplicates, dropped, restarts, reconnects, late_acks, verified, unverified)

        for gauge in self.metrics.gauges():
            family = GaugeMetricFamily(gauge.name, gauge.documentation, labels=["name", "identity"])
            for adapter, value in self.metrics.gauge_totals(gauge).items():
                family.add_metric([adapter, identity], value)
            yield family


def _escape_label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def text_exposition(registry: CollectorRegistry) -> bytes:
    """The Prometheus text format (0.0.4) as the Go client writes it: family names as given,
    counters without a `_total` suffix, labels sorted."""
    lines: list[str] = []
    for family in registry.collect():
        kind = "untyped" if family.type == "unknown" else family.type
        documentation = family.documentation.replace("\\", r"\\").replace("\n", r"\n")
        lines.append(f"# HELP {family.name} {documentation}")
        lines.append(f"# TYPE {family.name} {kind}")
        for sample in family.samples:
            labels = ",".join(
                f'{key}="{_escape_label_value(value)}"' for key, value in sorted(sample.labels.items())
            )
            series = f"{sample.name}{{{labels}}}" if labels else sample.name
            lines.append(f"{series} {floatToGoString(sample.value)}")
    return ("\n".join(lines) + "\n").encode()


class Metrics(Counters):
    """The adapters' counters on one explicit Prometheus registry (tests create a fresh one each)."""

    def __init__(self, identity: str, registry: CollectorRegistry | None = None) -> None:
        super().__init__(identity)
        self.registry = registry or CollectorRegistry()
        self.registry.register(_AdapterCollector(self))
        self.build_info = Gauge(
            "choria_build_info", "Build information", ("version", "identity"), registry=self.registry
        )
        self.build_info.labels(__version__, identity).set(1)

    def exposition(self) -> bytes:
        return text_exposition(self.registry)


def process_summary() -> dict[str, Any]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "rss_kb": usage.ru_maxrss,
        "cpu_user_s": usage.ru_utime,
        "cpu_system_s": usage.ru_stime,
        "cpu_cores": os.cpu_count(),
        "pid": os.getpid(),
    }


class StatsServer:
    """A small asyncio HTTP server for /choria/, /choria/prometheus and /choria/metrics."""

    def __init__(
        self, metrics: Metrics, address: str, port: int, status: Callable[[], dict[str, Any]]
    ) -> None:
        self.metrics = metrics
        self.address = address
        self.port = port
        self.status = status
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.address, self.port)
        sockets = self._server.sockets or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        log.info("Statistics available on http://%s:%d/choria/", self.address, self.port)

    async def close(self) -> None:
        if self._server:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One request per connection, parsed by h11 (a strict HTTP/1.1 implementation); a client
        that is malformed, too slow or too large gets an error status or is cut off, never a hang."""
        connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_HEAD)
        try:
            async with asyncio.timeout(REQUEST_DEADLINE):
                request = await _read_request(connection, reader)
                if request is None:
                    return
                method = request.method.decode("ascii", "replace")
                target = request.target.decode("ascii", "replace").split("?", 1)[0]
                status, content_type, body, extra = self._route(method, target)
                await _respond(
                    connection, writer, status, content_type, body, extra, head_only=method == "HEAD"
                )
        except h11.RemoteProtocolError as error:
            with contextlib.suppress(Exception):
                code = error.error_status_hint
                reason = "Request Header Fields Too Large" if code == 431 else "Bad Request"
                await _respond(
                    connection, writer, f"{code} {reason}", "text/plain", f"{error}\n".encode(), {}
                )
        except (TimeoutError, ConnectionError, h11.LocalProtocolError):
            pass
        finally:
            writer.close()

    def _route(self, method: str, path: str) -> tuple[str, str, bytes, dict[str, str]]:
        if method not in {"GET", "HEAD"}:
            return "405 Method Not Allowed", "text/plain", b"method not allowed\n", {"Allow": "GET, HEAD"}
        if path in {"/choria/prometheus", "/choria/metrics"}:
            return "200 OK", CONTENT_TYPE_LATEST, self.metrics.exposition(), {}
        if path == "/choria":
            return "301 Moved Permanently", "text/plain", b"", {"Location": "/choria/"}
        if path.startswith("/choria/"):
            document = {"version": __version__, "system": process_summary(), **self.status()}
            return "200 OK", "application/json", json.dumps(document, indent=2).encode() + b"\n", {}
        return "404 Not Found", "text/plain", b"not found; try /choria/ or /choria/prometheus\n", {}


# The longest request head (request line and headers) and the longest time a client may take
# to send it: a scraper sends a few hundred bytes at once; anything else is not one.
MAX_REQUEST_HEAD = 16 * 1024
REQUEST_DEADLINE = 5.0
# A GET carries no body; this much is read and ignored before a request with one is refused.
MAX_REQUEST_BODY = 0


async def _read_request(connection: h11.Connection, reader: asyncio.StreamReader) -> h11.Request | None:
    """The request, or None when the client went away before sending one."""
    received = 0
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            data = await reader.read(4096)
            received += len(data)
            if received > MAX_REQUEST_HEAD:
                raise h11.RemoteProtocolError("request head too large", error_status_hint=431)
            connection.receive_data(data)  # b"" tells h11 the peer closed
            continue
        if isinstance(event, h11.Request):
            length = dict(event.headers).get(b"content-length")
            chunked = dict(event.headers).get(b"transfer-encoding")
            if chunked or (length is not None and int(length) > MAX_REQUEST_BODY):
                raise h11.RemoteProtocolError("a request body is not accepted here", error_status_hint=413)
            return event
        if isinstance(event, h11.ConnectionClosed):
            return None


async def _respond(
    connection: h11.Connection,
    writer: asyncio.StreamWriter,
    status: str,
    content_type: str,
    body: bytes,
    extra: dict[str, str],
    *,
    head_only: bool = False,
) -> None:
    code, _, reason = status.partition(" ")
    headers = [
        ("Content-Type", content_type),
        ("Content-Length", str(len(body))),
        ("Connection", "close"),
        *extra.items(),
    ]
    writer.write(connection.send(h11.Response(status_code=int(code), reason=reason, headers=headers)))
    if not head_only:
        writer.write(connection.send(h11.Data(data=body)))
    writer.write(connection.send(h11.EndOfMessage()))
    await writer.drain()
