"""Run every configured adapter in one asyncio process until SIGTERM or SIGINT.

Other signals an operator may send never kill the process uncounted: SIGHUP reopens the log
file (for logrotate; passed on to child processes), SIGUSR1 and SIGUSR2 log each adapter's
counts. Neither stops anything.

settings → registry → one adapter object per `plugin.choria.adapters` entry, each started
independently (an adapter that cannot connect retries on its own and never holds up the
others), an optional statistics server, then a graceful stop within each adapter's grace
period. With `run --processes N` the parent's Runtime also supervises N-1 child processes
(`multiprocess.ChildSupervisor`), and each child's Runtime reports to it
(`multiprocess.SnapshotReporter`) instead of serving statistics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from dataclasses import asdict
from pathlib import Path
from typing import Any

from choria_broker_adapters.adapters.counters import Snapshot
from choria_broker_adapters.config.settings import Settings
from choria_broker_adapters.core.adapter_types import adapter_type
from choria_broker_adapters.process import logs
from choria_broker_adapters.process.lifecycle import stop_signals
from choria_broker_adapters.process.multiprocess import ChildSupervisor, SnapshotReporter, sum_adapter_states
from choria_broker_adapters.process.stats import Metrics, StatsServer

log = logging.getLogger("choria_broker_adapters.process.runtime")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
STATUS_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)


class Runtime:
    def __init__(
        self,
        settings: Settings,
        *,
        disable_tls: bool = False,
        metrics: Metrics | None = None,
        children: ChildSupervisor | None = None,
        reporter: SnapshotReporter | None = None,
    ) -> None:
        """`children`: the parent of a multi-process run; `reporter`: a child (no stats server)."""
        self.settings = settings
        self.metrics = metrics or Metrics(settings.identity)
        self.adapters = [
            adapter_type(adapter.type).load()(adapter, settings, self.metrics, disable_tls=disable_tls)
            for adapter in settings.adapters.values()
        ]
        self.stats_server: StatsServer | None = None
        self.stop_requested = asyncio.Event()
        self.children = children
        self.reporter = reporter

    def adapter_states(self) -> list[dict[str, Any]]:
        return [asdict(adapter.state()) for adapter in self.adapters]

    def status(self) -> dict[str, Any]:
        own = self.adapter_states()
        document: dict[str, Any] = {
            "identity": self.settings.identity,
            "config_file": self.settings.config_file,
            "adapters": own,
        }
        if self.children is not None:
            children = self.children.status()
            # Top-level adapters: summed over every process; per-process detail under "processes".
            document["adapters"] = sum_adapter_states([own, *(child["adapters"] for child in children)])
            document["processes"] = [
                {
                    "index": 0,
                    "pid": os.getpid(),
                    "running": True,
                    "restarts": 0,
                    "last_exit": None,
                    "adapters": own,
                },
                *children,
            ]
        return document

    def _report(self) -> tuple[Snapshot, list[dict[str, Any]]]:
        return self.metrics.snapshot(), self.adapter_states()

    def request_stop(self, reason: str = "") -> None:
        if not self.stop_requested.is_set():
            log.info("Stopping: %s", reason or "requested")
            self.stop_requested.set()

    def reopen_logs(self) -> None:
        """SIGHUP: reopen the log file here and in every child process."""
        reopened = logs.reopen_log_files()
        if self.children is not None:
            self.children.signal_children(signal.SIGHUP)
        log.info(
            "Received SIGHUP: %s", f"reopened {', '.join(reopened)}" if reopened else "no log file to reopen"
        )

    def log_status(self, sig: signal.Signals) -> None:
        """SIGUSR1/SIGUSR2: one line per adapter with its counts (summed over child processes)."""
        for adapter in self.status()["adapters"]:
            counts = " ".join(f"{key}={value}" for key, value in adapter["counts"].items())
            log.info(
                "Received %s: adapter %s queued=%s in_flight=%s %s",
                sig.name,
                adapter["name"],
                adapter.get("queued", 0),
                adapter.get("in_flight", 0),
                counts,
            )

    async def run(self) -> bool:
        """Run until asked to stop; True when every process (this one and any children) stopped cleanly."""
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, self.request_stop, f"received {sig.name}")
        loop.add_signal_handler(signal.SIGHUP, self.reopen_logs)
        for sig in STATUS_SIGNALS:
            loop.add_signal_handler(sig, self.log_status, sig)
        if stop_signals.received:
            self.request_stop(f"received {stop_signals.received} while starting")
        children_clean = True
        try:
            # A child (with a reporter) serves no statistics: the parent serves every process's.
            if self.settings.stats_port > 0 and self.reporter is None:
                stats_server = StatsServer(
                    self.metrics, self.settings.stats_address, self.settings.stats_port, self.status
                )
                try:
                    await stats_server.start()
                except OSError as error:
                    raise StartupError(
                        f"cannot serve statistics on {self.settings.stats_address}:"
                        f"{self.settings.stats_port} (plugin.choria.stats_address/stats_port): "
                        f"{error.strerror or error}"
                    ) from None
                self.stats_server = stats_server
            elif self.reporter is None:
                log.info("Statistics gathering disabled, set plugin.choria.stats_port")
            if self.children is not None:
                self.children.start()
            for adapter in self.adapters:
                await adapter.start()
            if self.reporter is not None:
                self.reporter.start(self._report, self.request_stop)
            log.info("Running %d adapter(s) as %s", len(self.adapters), self.settings.identity)
            memory_task = asyncio.create_task(self._release_memory_after_bursts(), name="memory release")
            await self.stop_requested.wait()
            memory_task.cancel()
            stopping = [adapter.stop() for adapter in self.adapters]
            if self.children is not None:
                # The children drain at the same time as this process.
                *_, children_clean = await asyncio.gather(*stopping, self.children.stop())
            else:
                await asyncio.gather(*stopping)
            if self.reporter is not None:
                await self.reporter.finish()
        finally:
            for sig in (*STOP_SIGNALS, signal.SIGHUP, *STATUS_SIGNALS):
                loop.remove_signal_handler(sig)
            # The loop put the default actions back: a further SIGTERM while this process
            # finishes stopping would kill it, so it is only recorded from here on.
            stop_signals.install()
            if self.stats_server:
                await self.stats_server.close()
        log.info("All adapters stopped")
        return children_clean

    async def _release_memory_after_bursts(self) -> None:
        """Give the memory of a drained burst back to the system.

        A burst fills the queues with ~1 KiB messages; once they are published, glibc keeps the
        freed pages in its heap and the resident size stays at the burst's peak. malloc_trim
        returns whole free pages (a few milliseconds, only after traffic and with empty queues).
        """
        trim = _malloc_trim()
        if trim is None:
            return
        handled = -1
        while True:
            await asyncio.sleep(MEMORY_RELEASE_INTERVAL_S)
            received = sum(counters.received for counters in self.metrics.workers.values())
            if received != handled and not any(len(adapter.queue) for adapter in self.adapters):
                handled = received
                trim(0)


# How often the runtime checks whether a burst has drained and its memory can be released.
MEMORY_RELEASE_INTERVAL_S = 5.0


def _malloc_trim() -> Any:
    """glibc's malloc_trim, or None elsewhere (musl, macOS)."""
    try:
        import ctypes

        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None


class StartupError(RuntimeError):
    """The runtime cannot start (statistics port taken, pid file unusable): exit 78, no traceback."""


def write_pid_file(path: str) -> None:
    """Claim the pid file, refusing when it names another live adapter process."""
    target = Path(path)
    if not target.parent.is_dir():
        raise StartupError(f"cannot write the pid file {path}: directory {target.parent} does not exist")
    other = _pid_in(target)
    if other is not None and other != os.getpid() and _is_live_adapter(other):
        raise StartupError(
            f"the pid file {path} names process {other}, which is still running: another instance "
            f"is using it (stop that one first, or remove the file if process {other} is not an adapter)"
        )
    temporary = target.with_name(f".{target.name}.{os.getpid()}")
    try:
        temporary.write_text(f"{os.getpid()}\n")
        temporary.replace(target)  # whole or not at all: a reader never sees a partial pid
    except OSError as error:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise StartupError(f"cannot write the pid file {path}: {error.strerror or error}") from None


def remove_pid_file(path: str) -> None:
    """Remove the pid file, unless another process has claimed it since."""
    target = Path(path)
    if _pid_in(target) not in (None, os.getpid()):
        return
    with contextlib.suppress(FileNotFoundError):
        target.unlink()


def _pid_in(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except (FileNotFoundError, IsADirectoryError, PermissionError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


def _is_live_adapter(pid: int) -> bool:
    """Whether `pid` runs, and (where /proc tells) is this program rather than a reused pid."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
    return b"choria_broker_adapters" in command or b"choria-broker-adapters" in command
