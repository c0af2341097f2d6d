"""In-process counters of the worker (the operations issue exports them to Prometheus)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from callguard.policy import Decision


@dataclass
class Stats:
    allowed: int = 0
    denied: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    deadletters: int = 0
    lookup_errors: int = 0
    batches: int = 0
    optouts: int = 0

    def count(self, decision: Decision) -> None:
        if decision.allow:
            self.allowed += 1
        else:
            self.denied += 1
        self.reasons.update(decision.reasons)
