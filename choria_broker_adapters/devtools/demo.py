"""The `demo` command's work: the whole flow on a nats-server it starts and removes itself.

One nats-server with JetStream in a temporary directory plays both parts: the Choria network
(where the simulated fleet publishes registrations with core NATS) and JetStream (where the
adapter stores them). One server keeps the demo small; the runtime does not care, because
`stream.servers` falls back to the middleware hosts exactly as in production configurations
that use one NATS cluster for both.

The runtime runs in this process (an asyncio task around `Runtime.run`) so the summary reads
the adapter's own counters instead of scraping metrics. Its stream is created with the
`streams setup` code from the same broker.conf, with the defaults an operator gets
(unlimited messages per subject): every registration is kept, so `stored == sent` is the
test of "nothing lost, nothing doubled" and `distinct subjects == nodes` shows one subject per
node. (`stream.max_msgs_per_subject = 1` would keep only each node's latest registration.)

Signals: Ctrl-C or SIGTERM at any point stops the runtime (draining what it holds), then the
nats-server, then removes the temporary directory. The nats-server runs in its own session so
a Ctrl-C typed at the terminal reaches the demo only and the server outlives the runtime's
drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from choria_broker_adapters.config.render import render_broker_config
from choria_broker_adapters.core.exits import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK
from choria_broker_adapters.devtools.demo_report import (
    ADAPTER_NAME,
    STREAM_TOPIC,
    Counts,
    DemoOptions,
    DemoReport,
    Progress,
    Sample,
    inspect_text,
    progress_text,
    summary_text,
)
from choria_broker_adapters.devtools.fleet import REGISTRATION_SUBJECT, fleet, node_name
from choria_broker_adapters.devtools.natsserver import NatsServer, free_port
from choria_broker_adapters.process.lifecycle import event_loop_runner

# The fleet publishes in batches and stays at most this far ahead of what the adapter took in:
# core NATS has no backpressure, and a real fleet is spread over minutes, not one burst.
PUBLISH_BATCH = 200
PUBLISH_WINDOW = 2_000
QUEUE_LEN = 10_000
# Nothing changed for this long while nothing is queued or in flight: what is missing is lost.
SETTLE_SECONDS = 3.0
SUBSCRIBE_TIMEOUT = 20.0


class DemoError(Exception):
    """The demo could not run; the message says what failed."""


def demo_broker_conf(*, server_url: str, logfile: str, stats_port: int, queue_len: int = QUEUE_LEN) -> str:
    """The broker.conf the demo runs: one `node_data` adapter, everything else at its default,
    written by the same renderer as `render` and Puppet's template."""
    prefix = "choria::broker::"
    body = render_broker_config(
        {
            f"{prefix}identity": "choria-broker-adapters-demo",
            f"{prefix}log_file": logfile,
            f"{prefix}log_level": "info",
            f"{prefix}middleware_hosts": [server_url],
            f"{prefix}stats_address": "127.0.0.1",
            f"{prefix}stats_port": stats_port,
            f"{prefix}adapters": {
                ADAPTER_NAME: {
                    "type": "jetstream",
                    "queue_len": queue_len,
                    "ingest": {"topic": REGISTRATION_SUBJECT, "protocol": "request"},
                    "stream": {"topic": STREAM_TOPIC},
                }
            },
        }
    )
    return (
        "# Written by `choria-broker-adapters demo`; removed when the demo ends.\n"
        "# One local nats-server is both the Choria network and JetStream, without TLS:\n"
        "# add --disable-tls to `run`, `streams setup` and `streams status` with this file.\n" + body
    )


def _fetch_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=2) as response:
        return dict(json.load(response))


# --------------------------------------------------------------------------- the run


class Demo:
    """Start everything, run the fleet through the adapter, report, and remove everything."""

    def __init__(self, options: DemoOptions, *, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.options = options
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.workdir: Path | None = None
        self.server: NatsServer | None = None
        self.report: DemoReport | None = None

    def run(self) -> int:
        """The exit status: 0 all stored, 1 not (explained), 130 interrupted before the end."""
        previous_term = signal.signal(signal.SIGTERM, _interrupt)
        try:
            return self._run()
        except KeyboardInterrupt:
            self._say("interrupted: stopping and removing everything the demo started")
            return EXIT_INTERRUPTED
        except DemoError as error:
            self._say(f"demo failed: {error}")
            if self.report is not None:  # the log goes with the temporary directory: show it now
                for line in _log_problems(Path(self.report.log_file)):
                    self._say(f"adapter log: {line}")
            return EXIT_FAILURE
        finally:
            # Cleaning up must not be cut short by an impatient second Ctrl-C.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            try:
                self.cleanup()
            finally:
                signal.signal(signal.SIGINT, signal.default_int_handler)
                signal.signal(signal.SIGTERM, previous_term)

    def _run(self) -> int:
        from choria_broker_adapters.config.settings import ConfigError, load_settings
        from choria_broker_adapters.devtools.natsserver import NatsServerError
        from choria_broker_adapters.process import logs

        self.workdir = Path(tempfile.mkdtemp(prefix="cba-demo-"))
        monitor_port = free_port()
        (self.workdir / "nats").mkdir()
        try:
            self.server = NatsServer(
                detached=True,
                jetstream=True,
                name="choria-broker-adapters-demo",
                workdir=self.workdir / "nats",
                extra_config=f'http: "127.0.0.1:{monitor_port}"',
            )
            self.server.start()
        except NatsServerError as error:
            raise DemoError(str(error)) from None
        config = self.workdir / "broker.conf"
        log_file = self.workdir / "adapters.log"
        stats_port = free_port()
        config.write_text(
            demo_broker_conf(server_url=self.server.url, logfile=str(log_file), stats_port=stats_port)
        )
        try:
            settings = load_settings(str(config))
        except ConfigError as error:  # the demo wrote it: a bug, but say what is wrong
            raise DemoError(f"the demo's own configuration is invalid: {error}") from None
        logs.configure(settings.logfile, settings.loglevel)
        self.report = DemoReport(
            options=self.options,
            counts=Counts(),
            server_url=self.server.url,
            monitor_url=f"http://127.0.0.1:{monitor_port}",
            stats_url=f"http://127.0.0.1:{stats_port}",
            nats_server_pid=self.server.pid,
            workdir=str(self.workdir),
            config_file=str(config),
            log_file=str(log_file),
        )
        try:
            event_loop_runner()(self._run_async(settings, self.report))
        finally:
            logs.configure("discard", "error")  # close the log file before its directory goes
        return self._finish(self.report)

    def _finish(self, report: DemoReport) -> int:
        if report.interrupted and report.counts.sent < self.options.expected:
            self._say(
                f"interrupted after sending {report.counts.sent} of {self.options.expected} "
                "registrations; everything the demo started is stopped and removed"
            )
            return EXIT_INTERRUPTED
        return EXIT_OK if report.ok else EXIT_FAILURE

    async def _run_async(self, settings: Any, report: DemoReport) -> None:
        import nats

        from choria_broker_adapters.process.runtime import Runtime

        loop = asyncio.get_running_loop()
        interrupted = asyncio.Event()

        def watch_signals() -> None:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, interrupted.set)

        watch_signals()
        runtime = Runtime(settings, disable_tls=True)

        def stopping() -> bool:
            return interrupted.is_set() or runtime.stop_requested.is_set()

        nc = await nats.connect(report.server_url, name="choria-broker-adapters demo fleet")
        runtime_task: asyncio.Task[None] | None = None
        try:
            report.stream, report.stream_subjects = await _setup_stream(nc, settings)
            runtime_task = asyncio.create_task(runtime.run(), name="runtime")
            # Runtime.run installs its own SIGINT/SIGTERM handlers (request_stop) on its first
            # step; `stopping()` watches both, so either way a signal ends the demo.
            await asyncio.sleep(0)
            adapter = runtime.adapters[0]
            await self._wait_for_subscriptions(adapter, report, stopping, runtime_task)
            if not stopping():
                await self._publish_and_wait(nc, adapter, report, stopping)
            report.interrupted = stopping()
            if report.counts.sent or not report.interrupted:  # else there is nothing to sum up
                await _read_stream(nc, report)
                self._print_report(report)
            if self.options.keep_running and not stopping():
                self._print_inspect(report)
                while not stopping() and not runtime_task.done():
                    await asyncio.sleep(0.1)
                self._say("stopping: the runtime, then the nats-server; removing " + report.workdir)
        finally:
            runtime.request_stop("demo ending")
            outcome: BaseException | None = None
            if runtime_task is not None:
                (outcome,) = await asyncio.gather(runtime_task, return_exceptions=True)
            watch_signals()  # Runtime.run removed the handlers when it ended
            with contextlib.suppress(Exception):
                await nc.close()
        # Reached only when nothing else is on its way out: a runtime failure is the error then.
        if isinstance(outcome, Exception):
            raise DemoError(f"the runtime failed: {outcome}") from outcome

    async def _wait_for_subscriptions(
        self, adapter: Any, report: DemoReport, stopping: Callable[[], bool], runtime_task: asyncio.Task[None]
    ) -> None:
        """Until the server has every ingest worker's queue subscription: core NATS drops earlier messages."""
        workers = adapter.adapter.ingest_workers
        queue_group = f"nats_ingest_{adapter.name}"
        url = f"{report.monitor_url}/subsz?subs=1&test={REGISTRATION_SUBJECT}"
        deadline = time.monotonic() + SUBSCRIBE_TIMEOUT
        while not stopping():
            if runtime_task.done():
                error = runtime_task.exception()
                raise DemoError(f"the runtime stopped before it subscribed: {error or 'no error given'}")
            listing = await asyncio.to_thread(_fetch_json, url)
            members = [
                sub for sub in listing.get("subscriptions_list") or () if sub.get("qgroup") == queue_group
            ]
            if len(members) >= workers:
                return
            if time.monotonic() > deadline:
                raise DemoError(
                    f"only {len(members)} of {workers} ingest subscription(s) on {REGISTRATION_SUBJECT} "
                    f"after {SUBSCRIBE_TIMEOUT:g}s"
                )
            await asyncio.sleep(0.05)

    async def _publish_and_wait(
        self, nc: Any, adapter: Any, report: DemoReport, stopping: Callable[[], bool]
    ) -> None:
        options = self.options
        progress = Progress(self.err)
        sent = 0

        def look() -> Counts:
            return Counts.from_state(sent, adapter.state())

        started = time.monotonic()
        last_shown = 0.0

        def show(force: bool = False) -> None:
            nonlocal last_shown
            now = time.monotonic()
            if force or now - last_shown >= progress.interval:
                last_shown = now
                progress.show(progress_text(look(), options.expected, now - started))

        for registration in fleet(options.nodes, rounds=options.rounds):
            await nc.publish(REGISTRATION_SUBJECT, registration.payload)
            sent += 1
            if sent % PUBLISH_BATCH == 0:
                await _pace(look, stopping, show)
                if stopping():
                    break
        await nc.flush()
        report.publish_seconds = time.monotonic() - started

        deadline = started + options.wait_timeout
        settled_since: float | None = None
        previous = look()
        while not stopping():
            counts = look()
            now = time.monotonic()
            if counts.resolved >= counts.sent and counts.idle:
                break
            # Nothing moves and nothing is pending: the rest never arrived (core NATS loss).
            if counts.idle and counts == previous and counts.resolved == counts.ingest_outcomes:
                settled_since = settled_since or now
                if now - settled_since >= SETTLE_SECONDS:
                    break
            else:
                settled_since = None
            if now > deadline:
                report.timed_out = True
                break
            previous = counts
            show()
            await asyncio.sleep(0.005)
        report.seconds = time.monotonic() - started
        report.counts = look()
        progress.finish(progress_text(report.counts, options.expected, report.seconds))

    def _print_report(self, report: DemoReport) -> None:
        if self.options.json_output:
            print(json.dumps(report.document(), indent=2), file=self.out, flush=True)
        else:
            print(summary_text(report), file=self.out, flush=True)
        if not report.ok and not report.interrupted:
            for line in _log_problems(Path(report.log_file)):
                self._say(f"adapter log: {line}")

    def _print_inspect(self, report: DemoReport) -> None:
        # In --json mode stdout holds just the document; the instructions go to stderr.
        target = self.err if self.options.json_output else self.out
        print(inspect_text(report), file=target, flush=True)

    def _say(self, text: str) -> None:
        print(text, file=self.err, flush=True)

    def cleanup(self) -> None:
        """Stop the nats-server and remove the temporary directory (idempotent)."""
        if self.server is not None:
            self.server.stop()
            self.server = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None


async def _pace(look: Callable[[], Counts], stopping: Callable[[], bool], show: Callable[[], None]) -> None:
    """Wait while the fleet is more than PUBLISH_WINDOW ahead of the adapter's intake.

    Gives up waiting when the intake stops moving for SETTLE_SECONDS (lost messages must not
    stall the fleet; the summary counts them).
    """
    show()
    last_change = time.monotonic()
    previous = look().ingest_outcomes
    while not stopping():
        counts = look()
        if counts.sent - counts.ingest_outcomes <= PUBLISH_WINDOW:
            return
        now = time.monotonic()
        if counts.ingest_outcomes != previous:
            previous, last_change = counts.ingest_outcomes, now
        elif now - last_change > SETTLE_SECONDS:
            return
        show()
        await asyncio.sleep(0.002)


async def _setup_stream(nc: Any, settings: Any) -> tuple[str, tuple[str, ...]]:
    """Create the adapter's stream with the `streams setup` code; (name, subjects)."""
    from choria_broker_adapters.jetstream.admin import JetStreamAdminError, apply_stream
    from choria_broker_adapters.jetstream.plan import plan_streams

    plan = plan_streams(settings.adapters.values())
    if plan.problems:
        raise DemoError("; ".join(plan.problems))
    (stream,) = plan.streams
    try:
        outcome = await apply_stream(nc, stream)
    except JetStreamAdminError as error:
        raise DemoError(f"cannot create stream {stream.name}: {error.args[0]}") from None
    if not outcome.ok:
        raise DemoError(outcome.describe())
    return stream.name, tuple(stream.subjects)


async def _read_stream(nc: Any, report: DemoReport) -> None:
    """Fill the stream's message and subject counts and one stored sample into the report."""
    from choria_broker_adapters.codec.output import output_subject
    from choria_broker_adapters.jetstream.admin import stream_status
    from choria_broker_adapters.jetstream.inventory import glimpse

    status = await stream_status(nc, report.stream)
    if status is None:
        return
    report.stored_in_stream = status.messages
    report.distinct_subjects = status.distinct_subjects
    if status.messages == 0:
        return
    report.node_count, sample_lines = await glimpse(
        nc, report.stream, report.stream_subjects[0], subject_prefix=STREAM_TOPIC.replace("%s", "")
    )
    report.node_sample = tuple(sample_lines)
    subject = output_subject(STREAM_TOPIC, node_name(0))
    try:
        stored = await nc.jetstream().get_last_msg(report.stream, subject)
    except Exception:  # node 0 may be what was lost; the first message will do
        stored = await nc.jetstream().get_msg(report.stream, seq=1, next=True)
    headers = stored.headers or {}
    report.sample = Sample(
        subject=stored.subject or subject,
        sequence=int(stored.seq or 0),
        message_id=str(headers.get("Nats-Msg-Id", "")),
        body=bytes(stored.data or b""),
    )


def _log_problems(path: Path, limit: int = 10) -> list[str]:
    """The adapter log's last warnings and errors (the log goes with the temporary directory)."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    problems = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if str(entry.get("level", "")).lower() in {"warning", "warn", "error", "critical"}:
            problems.append(str(entry.get("msg", line)))
    return problems[-limit:]


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt
