"""The one backoff rule: capped exponential delays, jittered so that clients failing together
(a server restart) do not retry in lockstep."""

from __future__ import annotations

import random


def backoff_delay(
    attempt: int,
    initial: float,
    maximum: float,
    rng: random.Random | None = None,
    *,
    jitter: bool = True,
) -> float:
    """Delay before retry number `attempt` (1-based): `initial` doubling up to `maximum`,
    scaled to 50-100% at random when `jitter` is on."""
    capped = min(maximum, initial * (2 ** min(max(attempt, 1) - 1, 32)))
    if not jitter:
        return capped
    return capped * (0.5 + 0.5 * (rng or random).random())
