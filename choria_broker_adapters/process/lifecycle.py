"""Process lifecycle helpers shared by everything that starts child processes."""

from __future__ import annotations

import contextlib
import signal
import sys


def stop_with_parent() -> None:
    """Use as `preexec_fn`: Linux sends the child SIGTERM when its parent dies, even by SIGKILL.

    A nats-server started by the demo or a runtime child process must not outlive its owner.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
