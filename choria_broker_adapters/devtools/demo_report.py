"""What the demo shows: its counts, the progress line, the summary and the `--keep-running`
inspection text. Pure formatting of what the demo measured."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

from choria_broker_adapters.devtools.fleet import REGISTRATION_SUBJECT, node_name

ADAPTER_NAME = "node_data"
STREAM_TOPIC = "choria.node_metadata.%s"
# Ingest-side outcomes: a registration the adapter received is queued or dropped for one of these.
INGEST_DROPS = ("dropped_decode", "dropped_queue_full", "dropped_slow_consumer")


@dataclass(frozen=True)
class DemoOptions:
    nodes: int = 1000
    rounds: int = 1
    keep_running: bool = False
    json_output: bool = False
    timeout: float = 0.0  # seconds to wait for every acknowledgement; 0: derived from the size

    @property
    def expected(self) -> int:
        return self.nodes * self.rounds

    @property
    def wait_timeout(self) -> float:
        return self.timeout or 30.0 + self.expected / 2_000


# --------------------------------------------------------------------------- pure parts


@dataclass(frozen=True)
class Counts:
    """One look at the fleet's and the adapter's counters."""

    sent: int = 0
    received: int = 0
    stored: int = 0  # acknowledged by JetStream (duplicates included)
    duplicates: int = 0
    retries: int = 0
    queued: int = 0
    in_flight: int = 0
    drops: Mapping[str, int] = field(default_factory=dict)  # reason → count, only non-zero

    @classmethod
    def from_state(cls, sent: int, state: Any) -> Counts:
        counts = state.counts
        drops = {
            key.removeprefix("dropped_"): value
            for key, value in counts.items()
            if key.startswith("dropped_") and value
        }
        return cls(
            sent=sent,
            received=counts.get("received", 0),
            stored=counts.get("stored", 0),
            duplicates=counts.get("duplicates", 0),
            retries=counts.get("retries", 0),
            queued=state.queued,
            in_flight=state.in_flight,
            drops=drops,
        )

    @property
    def ingest_outcomes(self) -> int:
        """Registrations the adapter has taken in: queued for publishing or dropped on arrival."""
        return self.received + sum(self.drops.get(key.removeprefix("dropped_"), 0) for key in INGEST_DROPS)

    @property
    def dropped(self) -> int:
        return sum(self.drops.values())

    @property
    def published(self) -> int:
        """Handed to JetStream: acknowledged, waiting for an ack, or given up after retries."""
        return self.stored + self.in_flight + self.drops.get("publish", 0)

    @property
    def resolved(self) -> int:
        """Registrations with a final outcome: stored or dropped (for a named reason)."""
        return self.stored + self.dropped

    @property
    def idle(self) -> bool:
        return self.queued == 0 and self.in_flight == 0


def progress_text(counts: Counts, expected: int, elapsed: float) -> str:
    rate = counts.stored / elapsed if elapsed > 0 else 0.0
    text = (
        f"sent {counts.sent}/{expected} · received {counts.received} · "
        f"acknowledged {counts.stored} · {rate:,.0f} msgs/s"
    )
    if counts.dropped:
        text += f" · dropped {counts.dropped}"
    return text


def rate(messages: int, seconds: float) -> float:
    return messages / seconds if seconds > 0 else 0.0


@dataclass
class Sample:
    """One stored message, as JetStream returns it."""

    subject: str
    sequence: int
    message_id: str
    body: bytes

    def document(self) -> dict[str, Any]:
        return dict(json.loads(self.body))

    def decoded_data(self) -> Any:
        """The registration inside `data` (a JSON string in the output document), decoded."""
        data = self.document().get("data")
        if not isinstance(data, str):
            return data
        try:
            return json.loads(data)
        except ValueError:
            return data


@dataclass
class DemoReport:
    options: DemoOptions
    counts: Counts
    stream: str = ""
    stream_subjects: tuple[str, ...] = ()
    stored_in_stream: int = 0
    distinct_subjects: int = 0
    seconds: float = 0.0  # first publish → last acknowledgement
    publish_seconds: float = 0.0
    sample: Sample | None = None
    node_count: int = 0
    node_sample: tuple[str, ...] = ()  # `nodes` header and first rows
    interrupted: bool = False
    timed_out: bool = False
    server_url: str = ""
    monitor_url: str = ""
    stats_url: str = ""
    nats_server_pid: int | None = None
    workdir: str = ""
    config_file: str = ""
    log_file: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems()

    def problems(self) -> list[str]:
        """Why the demo failed, one sentence each; empty when every registration was stored once."""
        counts, expected = self.counts, self.options.expected
        problems = []
        if self.interrupted:
            problems.append(f"interrupted after sending {counts.sent} of {expected} registrations")
        missing = counts.sent - counts.ingest_outcomes
        if missing > 0:
            problems.append(
                f"{missing} registration(s) never reached the adapter (core NATS delivers at most "
                "once; the subscription or connection lost them)"
            )
        for reason, count in sorted(counts.drops.items()):
            problems.append(f"{count} registration(s) dropped by the adapter, reason {reason!r}")
        if counts.idle is False:
            problems.append(
                f"{counts.queued} registration(s) still queued and {counts.in_flight} waiting for "
                "JetStream acknowledgements"
            )
        if self.timed_out:
            problems.append(f"not everything was acknowledged within {self.options.wait_timeout:g}s")
        if self.stored_in_stream != counts.sent:
            problems.append(
                f"the stream {self.stream or '(none)'} holds {self.stored_in_stream} message(s), "
                f"{counts.sent} were sent"
            )
        if counts.sent and self.distinct_subjects != min(counts.sent, self.options.nodes):
            problems.append(
                f"{self.distinct_subjects} distinct node subject(s) in the stream, "
                f"expected {min(counts.sent, self.options.nodes)}"
            )
        return problems

    def document(self) -> dict[str, Any]:
        """The --json output."""
        counts = self.counts
        sample = None
        if self.sample is not None:
            sample = {
                "subject": self.sample.subject,
                "sequence": self.sample.sequence,
                "message_id": self.sample.message_id,
                "document": self.sample.document(),
                "data": self.sample.decoded_data(),
            }
        return {
            "ok": self.ok,
            "problems": self.problems(),
            "nodes": self.options.nodes,
            "rounds": self.options.rounds,
            "adapter": ADAPTER_NAME,
            "sent": counts.sent,
            "received": counts.received,
            "published": counts.published,
            "acknowledged": counts.stored,
            "duplicates": counts.duplicates,
            "retries": counts.retries,
            "dropped": dict(counts.drops),
            "stream": self.stream,
            "stream_subjects": list(self.stream_subjects),
            "stored": self.stored_in_stream,
            "distinct_subjects": self.distinct_subjects,
            "seconds": round(self.seconds, 4),
            "msgs_per_second": round(rate(counts.stored, self.seconds), 1),
            "publish_msgs_per_second": round(rate(counts.sent, self.publish_seconds), 1),
            "sample": sample,
            "node_count": self.node_count,
            "node_sample": list(self.node_sample),
            "interrupted": self.interrupted,
            "server_url": self.server_url,
            "monitor_url": self.monitor_url,
            "stats_url": self.stats_url,
            "nats_server_pid": self.nats_server_pid,
            "workdir": self.workdir,
            "config_file": self.config_file,
            "log_file": self.log_file,
        }


def summary_text(report: DemoReport) -> str:
    counts, options = report.counts, report.options
    subjects = ", ".join(report.stream_subjects)
    drops = ", ".join(f"{reason} {count}" for reason, count in sorted(counts.drops.items())) or "none"
    stream_label = f"stored in {report.stream or 'the stream'}"
    rows = [
        ("sent by the fleet", counts.sent, f"core NATS on {REGISTRATION_SUBJECT}"),
        ("received by the adapter", counts.received, f"adapter {ADAPTER_NAME}, type jetstream"),
        ("published to JetStream", counts.published, ""),
        (
            "acknowledged by JetStream",
            counts.stored,
            f"{counts.duplicates} duplicate(s), {counts.retries} retry(ies)",
        ),
        (stream_label, report.stored_in_stream, ""),
        ("distinct node subjects", report.distinct_subjects, subjects),
    ]
    width = max(len(label) for label, _, _ in rows)
    each = f"{options.rounds} v1 inventory registration{'s' if options.rounds != 1 else ''}"
    lines = [f"choria-broker-adapters demo: {options.nodes} simulated node(s), each publishing {each}", ""]
    for label, value, note in rows:
        lines.append(f"  {label:<{width}}  {value:>8}" + (f"  ({note})" if note else ""))
    lines.append(f"  {'dropped':<{width}}  {drops:>8}")
    lines.append(
        f"  {'throughput':<{width}}  {rate(counts.stored, report.seconds):>8,.0f}  msgs/s end to end "
        f"({counts.stored} acknowledged in {report.seconds:.2f}s, fleet and adapter in this one process)"
    )
    if report.sample is not None:
        sample = report.sample
        lines += [
            "",
            f"one stored document: {sample.subject} (stream sequence {sample.sequence}, "
            f"Nats-Msg-Id {sample.message_id})",
            pretty_json(_document_for_display(sample.document())),
            "its data, decoded:",
            pretty_json(sample.decoded_data()),
        ]
    lines.append("")
    problems = report.problems()
    if problems:
        lines.append("FAILED: not every registration sent was stored exactly once:")
        lines += [f"  - {problem}" for problem in problems]
    else:
        lines.append(
            f"OK: all {counts.sent} registrations sent were stored exactly once, one subject per node."
        )
    lines += ["", f"nodes in the stream: {report.node_count} (choria-broker-adapters nodes --config FILE)"]
    lines += [f"  {line}" for line in report.node_sample]
    return "\n".join(lines)


def pretty_json(value: Any, width: int = 100, indent: int = 2, _level: int = 0) -> str:
    """JSON indented like `json.dumps(indent=2)`, but any object or list that fits in `width`
    columns stays on one line: an inventory reads in a screenful instead of three."""
    compact = json.dumps(value, separators=(", ", ": "), ensure_ascii=False)
    if not isinstance(value, dict | list) or not value or _level * indent + len(compact) <= width:
        return compact
    inner = " " * ((_level + 1) * indent)
    closing = " " * (_level * indent)
    if isinstance(value, dict):
        items = [
            f"{inner}{json.dumps(key, ensure_ascii=False)}: {pretty_json(item, width, indent, _level + 1)}"
            for key, item in value.items()
        ]
        return "{\n" + ",\n".join(items) + f"\n{closing}}}"
    items = [f"{inner}{pretty_json(item, width, indent, _level + 1)}" for item in value]
    return "[\n" + ",\n".join(items) + f"\n{closing}]"


def _document_for_display(document: dict[str, Any]) -> dict[str, Any]:
    data = document.get("data")
    if isinstance(data, str):
        return {**document, "data": f"<{len(data):,} characters of JSON, decoded below>"}
    return document


def inspect_text(report: DemoReport, command: str = "choria-broker-adapters") -> str:
    """How to look at what --keep-running leaves up."""
    server, stream = report.server_url, report.stream
    node_subject = STREAM_TOPIC.replace("%s", node_name(0))
    config = report.config_file
    return f"""\
The demo keeps running; press Ctrl-C to stop it and remove everything it started.
  NATS server      {server}  (pid {report.nats_server_pid}; Choria network and JetStream)
  server monitor   {report.monitor_url}/jsz?streams=true
  stream           {stream}  ({", ".join(report.stream_subjects)})
  adapter config   {config}
  adapter log      {report.log_file}
  adapter metrics  {report.stats_url}/choria/prometheus
  temp directory   {report.workdir}  (removed on exit)
try:
  nats --server {server} stream info {stream}
  nats --server {server} stream subjects {stream}
  nats --server {server} stream get {stream} --last-for {node_subject}
  {command} streams status --config {config} --disable-tls
  curl -s {report.stats_url}/choria/
ready: press Ctrl-C to stop"""


# --------------------------------------------------------------------------- progress line


class Progress:
    """A live progress line on a terminal (rewritten in place), plain lines elsewhere."""

    def __init__(self, stream: TextIO, *, interactive: bool | None = None) -> None:
        self.stream = stream
        self.interactive = stream.isatty() if interactive is None else interactive
        self.interval = 0.1 if self.interactive else 1.0
        self._last_length = 0

    def show(self, text: str) -> None:
        if self.interactive:
            padding = " " * max(0, self._last_length - len(text))
            self.stream.write(f"\r{text}{padding}")
            self._last_length = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def finish(self, text: str) -> None:
        self.show(text)
        if self.interactive:
            self.stream.write("\n")
            self.stream.flush()
        self._last_length = 0


# --------------------------------------------------------------------------- the server
