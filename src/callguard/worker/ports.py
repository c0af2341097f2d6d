"""What the guard needs from storage, as a protocol.

:class:`callguard.worker.guard.Guard` depends on this, not on a Redis class:
:class:`callguard.storage.stores.Stores` and the cluster's stores satisfy it
by their shape (checked by mypy below), and the guard's unit tests run it
against an in-memory fake.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, tzinfo
from typing import TYPE_CHECKING, Protocol

from callguard.core.facts import Consent, Facts, OptOut, PastCall
from callguard.core.schema import OutcomeReport
from callguard.storage.stores import Allowed, Query


class GuardStores(Protocol):
    """The reads and writes of one batch; each may raise (Redis down, a timeout),
    and the guard decides what a failure means (deny, or retry)."""

    async def lookup(self, queries: Sequence[Query], outcome_days: Sequence[date], /) -> Sequence[Facts]:
        """The facts of each query, in order, in one round trip."""
        ...

    async def record_allowed(
        self, allowed: Sequence[Allowed], now: datetime, /
    ) -> Sequence[tuple[PastCall, ...] | None]:
        """Count allows against the caps; per allow None when recorded, or the
        callee's calls when a cap filled up meanwhile."""
        ...

    async def add_optouts(self, rows: Sequence[tuple[str, OptOut]], /) -> int:
        """Add opt-outs (the latest per callee and client is kept)."""
        ...

    async def upsert_consents(self, rows: Sequence[tuple[str, Consent]], /) -> None:
        """Upsert consents (the last per callee, client and basis wins)."""
        ...

    async def apply_outcomes(
        self, outcomes: Sequence[tuple[OutcomeReport, bool]], tz: tzinfo, /
    ) -> Sequence[str | int]:
        """Apply (outcome, silent) pairs; per outcome its campaign when applied,
        0 when its intent is unknown, -1 when reported before."""
        ...


if TYPE_CHECKING:  # mypy: both Redis stores have the shape the guard needs
    from callguard.storage.cluster import ClusterStores
    from callguard.storage.stores import Stores

    def _satisfied(single: Stores, cluster: ClusterStores) -> tuple[GuardStores, GuardStores]:
        return single, cluster
