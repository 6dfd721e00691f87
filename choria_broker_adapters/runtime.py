"""Run every configured adapter in one asyncio process until SIGTERM or SIGINT.

settings → registry → one adapter object per `plugin.choria.adapters` entry, each started
independently (an adapter that cannot connect retries on its own and never holds up the
others), an optional statistics server, then a graceful stop within each adapter's grace
period.
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

from choria_broker_adapters.adapters.registry import adapter_type
from choria_broker_adapters.settings import Settings
from choria_broker_adapters.stats import Metrics, StatsServer

log = logging.getLogger("choria_broker_adapters.runtime")


class Runtime:
    def __init__(
        self, settings: Settings, *, disable_tls: bool = False, metrics: Metrics | None = None
    ) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics(settings.identity)
        self.adapters = [
            adapter_type(adapter.type).load()(adapter, settings, self.metrics, disable_tls=disable_tls)
            for adapter in settings.adapters.values()
        ]
        self.stats_server: StatsServer | None = None
        self.stop_requested = asyncio.Event()

    def status(self) -> dict[str, Any]:
        return {
            "identity": self.settings.identity,
            "config_file": self.settings.config_file,
            "adapters": [asdict(adapter.state()) for adapter in self.adapters],
        }

    def request_stop(self, reason: str = "") -> None:
        if not self.stop_requested.is_set():
            log.info("Stopping: %s", reason or "requested")
            self.stop_requested.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, f"received {sig.name}")
        try:
            if self.settings.stats_port > 0:
                self.stats_server = StatsServer(
                    self.metrics, self.settings.stats_address, self.settings.stats_port, self.status
                )
                await self.stats_server.start()
            else:
                log.info("Statistics gathering disabled, set plugin.choria.stats_port")
            for adapter in self.adapters:
                await adapter.start()
            log.info("Running %d adapter(s) as %s", len(self.adapters), self.settings.identity)
            await self.stop_requested.wait()
            await asyncio.gather(*(adapter.stop() for adapter in self.adapters))
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            if self.stats_server:
                await self.stats_server.close()
        log.info("All adapters stopped")


def write_pid_file(path: str) -> None:
    Path(path).write_text(f"{os.getpid()}\n")


def remove_pid_file(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        Path(path).unlink()
