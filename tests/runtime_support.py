"""Helpers for end-to-end tests that run the real runtime through its CLI."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from nats.js import JetStreamContext

EXAMPLES = Path(__file__).parent / "data" / "protocol" / "examples"


def broker_conf(
    *,
    middleware: str,
    adapters: Mapping[str, Mapping[str, Any]],
    identity: str = "adapter1.example.net",
    extra: str = "",
) -> str:
    """A broker.conf with one block per adapter; values are written verbatim."""
    lines = [
        f"identity = {identity}",
        "loglevel = info",
        f"plugin.choria.middleware_hosts = {middleware}",
        f"plugin.choria.adapters = {','.join(adapters)}",
    ]
    for name, keys in adapters.items():
        lines += [f"plugin.choria.adapter.{name}.{key} = {value}" for key, value in keys.items()]
    return "\n".join(lines) + "\n" + extra


class RuntimeProcess:
    """`choria-broker-adapters run` in a subprocess with its output in a file."""

    def __init__(self, config: Path, *, log_path: Path, args: tuple[str, ...] = ("--disable-tls",)) -> None:
        self.log_path = log_path
        self._log = log_path.open("ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "choria_broker_adapters", "run", "--config", str(config), *args],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> int:
        if self.process.poll() is None:
            self.process.kill()
        return self.wait(10)

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        finally:
            self._log.close()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._log.close()


def logged(runtime: RuntimeProcess, text: str) -> Callable[[], Awaitable[bool]]:
    """A wait_until condition: the runtime's log contains `text`."""

    async def contains() -> bool:
        return text in runtime.log_text()

    return contains


async def wait_until(
    condition: Callable[[], Awaitable[bool]], timeout: float, what: str, interval: float = 0.1
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await condition():
            return
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def stream_count(js: JetStreamContext, stream: str) -> int:
    try:
        return (await js.stream_info(stream)).state.messages
    except Exception:
        return -1


async def stored_messages(js: JetStreamContext, stream: str) -> list[tuple[str, bytes]]:
    """(subject, body) of every message in the stream, in sequence order."""
    info = await js.stream_info(stream)
    messages = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        stored = await js.get_msg(stream, seq)
        messages.append((stored.subject, stored.data))
    return messages


def example(name: str) -> tuple[bytes, dict[str, Any], bytes]:
    """(wire payload, layers description, expected output bytes) of a shared example."""
    folder = EXAMPLES / name
    wire = (folder / "wire.transport.json").read_bytes()
    layers = json.loads((folder / "layers.json").read_text())
    expected = (folder / "expected_output.json").read_bytes()
    return wire, layers, expected


async def publish_paced(url: str, subject: str, payloads: list[bytes], rate: float | None = None) -> None:
    """Publish on core NATS, optionally paced at `rate` messages a second, then flush."""
    import nats

    nc = await nats.connect(url)
    started = time.monotonic()
    for index, payload in enumerate(payloads):
        await nc.publish(subject, payload)
        if rate:
            ahead = started + (index + 1) / rate - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)
    await nc.flush()
    await nc.close()


async def stored_request_ids(js: JetStreamContext, stream: str) -> list[tuple[str, str]]:
    """(sender, requestid) of every stored output document, duplicates kept."""
    return [
        (document["sender"], document["requestid"])
        for document in (json.loads(body) for _, body in await stored_messages(js, stream))
    ]
