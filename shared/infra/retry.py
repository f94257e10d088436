"""The worker's one backoff: capped exponential delays with full jitter.

Every "try again later" of the worker uses it: a task whose balance locks are busy or whose
database went away, and the wait for a busy lock itself. Full jitter spreads contenders out
instead of waking them together.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    first_s: float
    cap_s: float

    def delay_s(self, attempt: int) -> float:
        """A random delay in [0, min(cap, first x 2^attempt)]; `attempt` counts from 0."""
        return random.uniform(0, min(self.cap_s, self.first_s * 2**attempt))
