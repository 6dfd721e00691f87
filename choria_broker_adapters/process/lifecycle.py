"""Process lifecycle helpers shared by everything that starts child processes."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable
from typing import Any


def stop_with_parent() -> None:
    """Use as `preexec_fn`: Linux sends the child SIGTERM when its parent dies, even by SIGKILL.

    A nats-server started by the demo or a runtime child process must not outlive its owner.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class StopSignals:
    """SIGTERM and SIGINT recorded instead of killing the process or raising KeyboardInterrupt.

    Installed first thing by the command line and again when the runtime's event loop gives
    its own handlers back: a signal while Python is still importing or loading settings, or a
    second one while the process finishes stopping, then never ends it with a traceback or
    death by the signal. The runtime checks `received` when it starts and stops at once.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received: str | None = None

    def install(self) -> None:
        for sig in self.SIGNALS:
            with contextlib.suppress(ValueError):  # not the main thread: nothing to install
                signal.signal(sig, self._record)

    def restore_defaults(self) -> None:
        """Give commands other than `run` the ordinary behaviour (Ctrl-C interrupts them)."""
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)

    def ignore(self) -> None:
        """Ignore them for the rest of the process (it is exiting): Python resets its own
        handlers to the default actions while it finalises, which a late SIGTERM would kill."""
        for sig in self.SIGNALS:
            with contextlib.suppress(ValueError):
                signal.signal(sig, signal.SIG_IGN)

    def _record(self, signum: int, _frame: object) -> None:
        if self.received is None:
            self.received = signal.Signals(signum).name


# One per process: the command line installs it, the runtime reads and reinstalls it.
stop_signals = StopSignals()


def event_loop_runner() -> Callable[[Any], Any]:
    """uvloop's `run` when installed (the `fast` extra), else `asyncio.run`."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run  # type: ignore[no-any-return]
