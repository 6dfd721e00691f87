"""Run the runtime in several processes (`run --processes N`) to use more than one core.

One asyncio process handles roughly 30,000 messages a second on one core. The parent (process
0) runs a full runtime plus the statistics server and starts N-1 children by re-invoking the
same command with a hidden `--child INDEX:FD`. Every child runs every adapter with the same
queue groups, so the NATS server spreads the messages over all processes. A child has no
statistics server and no pid file: about once a second, and when it stops, it writes one JSON
line (its counters, gauges and adapter states) to the pipe FD, and the parent adds the latest
line of every child to its metrics and to `/choria/`.

The parent forwards SIGTERM to the children on stop and waits for each to drain, restarts a
child that dies unexpectedly (with backoff), and Linux sends each child SIGTERM if the parent
dies, even by SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from choria_broker_adapters.adapters.counters import Snapshot
from choria_broker_adapters.core.backoff import backoff_delay
from choria_broker_adapters.process.lifecycle import stop_with_parent
from choria_broker_adapters.process.stats import Metrics

log = logging.getLogger("choria_broker_adapters.process.runtime")

SNAPSHOT_INTERVAL_S = 1.0
RESTART_BACKOFF_INITIAL_S = 1.0
RESTART_BACKOFF_MAX_S = 30.0
# A child that ran this long before dying is restarted after the shortest delay again.
STABLE_AFTER_S = 60.0
POLL_INTERVAL_S = 0.2


def parse_processes(value: str) -> int:
    """`--processes`: a count of processes, or `auto` / `0` for one per CPU core."""
    text = value.strip().lower()
    if text in {"auto", "0"}:
        return max(1, os.cpu_count() or 1)
    try:
        count = int(text)
    except ValueError:
        raise ValueError(f"expected a number of processes or 'auto', got {value!r}") from None
    if count < 0:
        raise ValueError(f"expected a number of processes or 'auto', got {value!r}")
    return count


def parse_child(value: str) -> tuple[int, int]:
    """The hidden `--child INDEX:FD` of a child process."""
    index, _, fd = value.partition(":")
    if not index.isdigit() or not fd.isdigit() or int(index) < 1:
        raise ValueError(f"expected INDEX:FD with INDEX >= 1, got {value!r}")
    return int(index), int(fd)


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


def restart_delay(consecutive_failures: int) -> float:
    return backoff_delay(
        consecutive_failures + 1, RESTART_BACKOFF_INITIAL_S, RESTART_BACKOFF_MAX_S, jitter=False
    )


def encode_report(index: int, snapshot: Snapshot, adapters: list[dict[str, Any]], *, final: bool) -> bytes:
    document = {
        "index": index,
        "pid": os.getpid(),
        "final": final,
        "states": adapters,
        **snapshot.to_json(),
    }
    return json.dumps(document, separators=(",", ":")).encode() + b"\n"


class LineReader:
    """Splits what arrives on a pipe into complete lines."""

    def __init__(self) -> None:
        self._partial = b""

    def feed(self, data: bytes) -> list[bytes]:
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        return [line for line in lines if line]


# ---------------------------------------------------------------- child side


class SnapshotReporter:
    """In a child: send the parent this process's counters and adapter states every second."""

    def __init__(self, index: int, fd: int) -> None:
        self.index = index
        self.fd = fd
        self._pending = b""
        self._task: asyncio.Task[None] | None = None
        self._collect: Callable[[], tuple[Snapshot, list[dict[str, Any]]]] | None = None
        self._on_parent_gone: Callable[[str], None] | None = None
        os.set_blocking(fd, False)

    def start(
        self,
        collect: Callable[[], tuple[Snapshot, list[dict[str, Any]]]],
        on_parent_gone: Callable[[str], None],
    ) -> None:
        self._collect = collect
        self._on_parent_gone = on_parent_gone
        self._task = asyncio.create_task(self._report_periodically(), name="snapshot reporter")

    async def _report_periodically(self) -> None:
        while True:
            await asyncio.sleep(SNAPSHOT_INTERVAL_S)
            self._send(final=False)

    async def finish(self) -> None:
        """Stop reporting and send the final counts (blocking briefly: the parent is reading)."""
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._collect is None:
            return
        with contextlib.suppress(OSError):
            os.set_blocking(self.fd, True)
            snapshot, adapters = self._collect()
            os.write(self.fd, self._pending + encode_report(self.index, snapshot, adapters, final=True))
        with contextlib.suppress(OSError):
            os.close(self.fd)

    def _send(self, *, final: bool) -> None:
        assert self._collect is not None
        if not self._pending:  # a report still half-written is finished before a new one starts
            snapshot, adapters = self._collect()
            self._pending = encode_report(self.index, snapshot, adapters, final=final)
        try:
            written = os.write(self.fd, self._pending)
        except BlockingIOError:
            return  # the parent is busy; the rest goes with the next tick
        except OSError as error:  # EPIPE: the parent is gone
            if self._on_parent_gone:
                self._on_parent_gone(f"parent process gone ({error.strerror})")
            return
        self._pending = self._pending[written:]


# ---------------------------------------------------------------- parent side


@dataclass
class Child:
    index: int
    process: subprocess.Popen[bytes] | None = None
    read_fd: int | None = None
    reader: LineReader = field(default_factory=LineReader)
    started_at: float = 0.0
    restarts: int = 0
    consecutive_failures: int = 0
    restart_at: float | None = None
    last_exit: str | None = None
    adapters: list[dict[str, Any]] = field(default_factory=list)


class ChildSupervisor:
    """In the parent: start, watch, restart and stop processes 1..count-1."""

    def __init__(
        self, count: int, child_arguments: Sequence[str], metrics: Metrics, stop_grace: float
    ) -> None:
        self.children = [Child(index) for index in range(1, count)]
        self.child_arguments = list(child_arguments)
        self.metrics = metrics
        self.stop_grace = stop_grace
        self._stopping = False
        self._watch_task: asyncio.Task[None] | None = None

    @property
    def count(self) -> int:
        return len(self.children) + 1

    def signal_children(self, signum: int) -> None:
        """Pass a signal on to every running child (SIGHUP: each reopens its log file)."""
        for child in self.children:
            if child.process is not None and child.process.poll() is None:
                child.process.send_signal(signum)

    def start(self) -> None:
        for child in self.children:
            self._spawn(child)
        self._watch_task = asyncio.create_task(self._watch(), name="child supervisor")

    def _spawn(self, child: Child) -> None:
        read_fd, write_fd = os.pipe()
        command = [
            sys.executable,
            "-m",
            "choria_broker_adapters",
            "run",
            *self.child_arguments,
            "--child",
            f"{child.index}:{write_fd}",
        ]
        try:
            child.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, pass_fds=(write_fd,), preexec_fn=stop_with_parent
            )
        finally:
            os.close(write_fd)
        os.set_blocking(read_fd, False)
        child.read_fd, child.reader, child.started_at, child.restart_at = (
            read_fd,
            LineReader(),
            time.monotonic(),
            None,
        )
        asyncio.get_running_loop().add_reader(read_fd, self._read, child)
        log.info("Started process %d (pid %d)", child.index, child.process.pid)

    def _read(self, child: Child) -> bool:
        """Read one chunk of reports; False when nothing more is there now or the pipe closed."""
        if child.read_fd is None:
            return False
        try:
            data = os.read(child.read_fd, 65536)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if not data:
            self._close_pipe(child)
            return False
        for line in child.reader.feed(data):
            self._accept(child, line)
        return True

    def _accept(self, child: Child, line: bytes) -> None:
        try:
            document = json.loads(line)
            snapshot = Snapshot.from_json(document)
        except (ValueError, KeyError, TypeError) as error:
            log.warning("Process %d sent an unreadable report: %s", child.index, error)
            return
        self.metrics.peers[child.index] = snapshot
        child.adapters = list(document.get("states", []))

    def _close_pipe(self, child: Child) -> None:
        if child.read_fd is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(child.read_fd)
            with contextlib.suppress(OSError):
                os.close(child.read_fd)
            child.read_fd = None

    def _drain_pipe(self, child: Child) -> None:
        """Read what an exited child left in its pipe (its final report)."""
        while self._read(child):
            pass

    async def _watch(self) -> None:
        while not self._stopping:
            now = time.monotonic()
            for child in self.children:
                if child.process is not None and child.process.poll() is not None:
                    self._on_unexpected_exit(child, now)
                elif child.process is None and child.restart_at is not None and now >= child.restart_at:
                    child.restarts += 1
                    try:
                        self._spawn(child)
                    except OSError as error:  # e.g. out of processes or memory: try again later
                        child.consecutive_failures += 1
                        child.restart_at = now + restart_delay(child.consecutive_failures)
                        log.error("Could not restart process %d: %s", child.index, error)
            await asyncio.sleep(POLL_INTERVAL_S)

    def _on_unexpected_exit(self, child: Child, now: float) -> None:
        assert child.process is not None
        returncode = child.process.returncode
        self._drain_pipe(child)
        self._close_pipe(child)
        if now - child.started_at >= STABLE_AFTER_S:
            child.consecutive_failures = 0
        delay = restart_delay(child.consecutive_failures)
        child.consecutive_failures += 1
        child.last_exit = describe_exit(returncode)
        log.error(
            "Process %d (pid %d) ended unexpectedly (%s); restarting it in %.0fs",
            child.index,
            child.process.pid,
            child.last_exit,
            delay,
        )
        self.metrics.retire_peer(child.index)
        child.adapters = []
        child.process = None
        child.restart_at = now + delay

    async def stop(self) -> bool:
        """SIGTERM every child, wait for each to drain; True when all exited 0."""
        self._stopping = True
        if self._watch_task:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch_task
        running = [child for child in self.children if child.process is not None]
        for child in running:
            assert child.process is not None
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_grace
        all_clean = True
        for child in running:
            assert child.process is not None
            while child.process.poll() is None and time.monotonic() < deadline:
                self._drain_pipe(child)
                await asyncio.sleep(0.05)
            if child.process.poll() is None:
                log.error("Process %d did not stop within %.0fs, killing it", child.index, self.stop_grace)
                child.process.kill()
                await asyncio.to_thread(child.process.wait)
            self._drain_pipe(child)
            self._close_pipe(child)
            child.last_exit = describe_exit(child.process.returncode)
            # -SIGTERM: the signal arrived before the child had installed its handlers, so it
            # had not started any adapter and nothing was lost.
            if child.process.returncode not in (0, -signal.SIGTERM):
                all_clean = False
                log.error("Process %d stopped with %s", child.index, child.last_exit)
            self.metrics.retire_peer(child.index)
        return all_clean

    def status(self) -> list[dict[str, Any]]:
        return [
            {
                "index": child.index,
                "pid": child.process.pid if child.process else None,
                "running": child.process is not None and child.process.poll() is None,
                "restarts": child.restarts,
                "last_exit": child.last_exit,
                "adapters": child.adapters,
            }
            for child in self.children
        ]


def sum_adapter_states(per_process: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Adapter states of several processes added up per adapter name (numbers and counts summed)."""
    totals: dict[str, dict[str, Any]] = {}
    for states in per_process:
        for state in states:
            total = totals.setdefault(
                state["name"], {"name": state["name"], "type": state["type"], "counts": {}}
            )
            for key, value in state.items():
                if key == "counts":
                    for count, number in value.items():
                        total["counts"][count] = total["counts"].get(count, 0) + number
                elif isinstance(value, int | float) and not isinstance(value, bool):
                    total[key] = total.get(key, 0) + value
                elif isinstance(value, str) and key not in ("name", "type"):
                    # Settings and choices: shown when every process agrees.
                    total[key] = value if total.get(key, value) == value else "mixed"
    return list(totals.values())
