"""The open-files limit against the NATS connections a configuration needs.

Every ingest and stream worker holds one NATS connection, so a configuration with many
adapters and workers can need more file descriptors than a default `ulimit -n` of 1024 allows;
past it the process fails with "Too many open files" while running, and `/choria/` stops
answering. `run` therefore compares the need with the limit before connecting: it raises the
soft limit up to the hard limit when that is enough (as Go programs do by themselves) and
refuses to start otherwise. `check` reports the same comparison for the shell it runs in.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass
from typing import Any

# Descriptors besides the workers' connections: standard streams, the log file, the event
# loop, the statistics listener and its clients, child process pipes, an occasional JetStream
# admin connection (stream checks, `streams` commands) and what libraries open.
RESERVED_DESCRIPTORS = 64


@dataclass(frozen=True)
class DescriptorNeed:
    per_adapter: dict[str, int]  # NATS connections: ingest + stream workers

    @property
    def connections(self) -> int:
        return sum(self.per_adapter.values())

    @property
    def total(self) -> int:
        return self.connections + RESERVED_DESCRIPTORS

    def describe(self) -> str:
        adapters = ", ".join(f"{name} {count}" for name, count in self.per_adapter.items())
        return (
            f"{self.connections} NATS connection(s) ({adapters or 'no adapters'}) "
            f"plus {RESERVED_DESCRIPTORS} descriptors in reserve: {self.total} open files"
        )


def descriptor_need(settings: Any) -> DescriptorNeed:
    """What the adapters of `settings` need (each process of `run --processes N` needs all of it)."""
    return DescriptorNeed(
        {name: adapter.ingest_workers + adapter.stream_workers for name, adapter in settings.adapters.items()}
    )


@dataclass(frozen=True)
class LimitVerdict:
    fits: bool  # the need fits the soft limit as it is
    can_raise: bool  # it does not, but fits the hard limit
    message: str


def limit_verdict(need: DescriptorNeed, soft: int, hard: int) -> LimitVerdict:
    """Compare the need with an open-files limit (RLIM_INFINITY for no limit); pure."""
    unlimited = resource.RLIM_INFINITY
    shown_hard = "unlimited" if hard == unlimited else str(hard)
    if soft == unlimited or need.total <= soft:
        return LimitVerdict(True, False, f"needs {need.describe()}; the open-files limit is {soft}")
    if hard == unlimited or need.total <= hard:
        return LimitVerdict(
            False,
            True,
            f"needs {need.describe()}, more than the open-files soft limit of {soft}; "
            f"run raises it up to the hard limit ({shown_hard})",
        )
    return LimitVerdict(
        False,
        False,
        f"needs {need.describe()}, more than the open-files limit of {soft} (hard limit "
        f"{shown_hard}): raise it (LimitNOFILE= in the systemd unit, ulimit -n in a shell) or "
        "configure fewer workers",
    )


def current_limit() -> tuple[int, int]:
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def raise_soft_limit() -> int:
    """Raise the soft open-files limit to the hard limit; returns the new soft limit."""
    _soft, hard = current_limit()
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard
