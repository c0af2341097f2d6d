"""What the guard's data looks like to an operator: register ages, operators, readiness.

One place computes it so that ``/ready``, ``/metrics`` and ``callguard status``
never disagree. Reads are a few small Redis commands (no scans): the register
census (``cg:register:census``, kept by the loaders) says, per scope, how many
numbers hold a current result of each as-of day, so the oldest day still
present is the oldest check still in use.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from redis.exceptions import RedisError

from callguard.storage.keys import CENSUS_KEY, LOADS_KEY, META_KEY, OPERATORS_KEY
from callguard.storage.stores import Stores, parse_census

ROME = ZoneInfo("Europe/Rome")
DAY = 86_400.0


def day_start(day: date) -> datetime:
    """Midnight of ``day`` in Italy, where the policy counts register days."""
    return datetime.combine(day, time(0), ROME)


@dataclass(frozen=True, slots=True)
class ScopeState:
    """The register results of one scope (a client id, or ``*`` for every client)."""

    scope: str
    numbers: int
    oldest: date  # as-of day of the oldest result still in use
    newest: date  # as-of day of the most recent result
    estimated: bool = False  # from load records only (data loaded before the census existed)

    def ages(self, now: datetime) -> tuple[float, float]:
        """Seconds since the start of the oldest and of the newest as-of day."""
        return (now - day_start(self.oldest)).total_seconds(), (now - day_start(self.newest)).total_seconds()

    def to_json(self, now: datetime, max_age_days: int) -> dict[str, Any]:
        today = now.astimezone(ROME).date()
        return {
            "numbers": self.numbers,
            "oldest_as_of": self.oldest.isoformat(),
            "oldest_age_days": (today - self.oldest).days,
            "newest_as_of": self.newest.isoformat(),
            "newest_age_days": (today - self.newest).days,
            "stale_numbers_possible": (today - self.oldest).days >= max_age_days,
            "estimated": self.estimated,
        }


@dataclass(frozen=True, slots=True)
class DataState:
    """Everything ``status`` and ``/ready`` say about the data in Redis."""

    operators: int
    operators_version: str | None
    scopes: tuple[ScopeState, ...]
    loads: tuple[dict[str, Any], ...]  # the last register loads, newest first
    counters: dict[str, int]  # consents, contracts, optouts (kept by the loaders and the worker)


async def read_data(stores: Stores, loads: int = 10) -> DataState:
    """One pipelined round trip; raises RedisError/OSError when Redis does not answer."""
    async with stores.redis.pipeline(transaction=False) as pipe:
        pipe.hlen(OPERATORS_KEY)
        pipe.hgetall(META_KEY)
        pipe.lrange(LOADS_KEY, 0, max(loads, 100) - 1)
        pipe.hgetall(CENSUS_KEY)
        operators, meta, raw_loads, raw_census = await pipe.execute()
    census = parse_census(raw_census)
    records = [orjson.loads(x) for x in raw_loads]
    scopes = [
        ScopeState(scope, sum(days.values()), min(days), max(days)) for scope, days in sorted(census.items()) if days
    ]
    if not scopes and records:  # loaded before the census existed: estimate from the load records
        by_scope: dict[str, list[date]] = {}
        for entry in records:
            if entry.get("applied", 1):
                by_scope.setdefault(entry["client_id"], []).append(date.fromisoformat(entry["as_of"]))
        scopes = [ScopeState(s, 0, min(d), max(d), estimated=True) for s, d in sorted(by_scope.items())]
    counters = {name: int(meta.get(name, 0)) for name in ("consents", "contracts", "requests", "optouts")}
    return DataState(int(operators), meta.get("operators_version"), tuple(scopes), tuple(records[:loads]), counters)


def data_checks(data: DataState | None, max_age_days: int, now: datetime) -> tuple[dict[str, Any], list[str]]:
    """The ``register`` and ``policy`` checks of ``/ready``, and the problems found
    (``data`` is None when Redis did not answer)."""
    problems: list[str] = []
    if data is None:
        unknown = {"ok": False, "error": "redis did not answer"}
        return {"register": unknown, "policy": unknown}, ["redis: not answering, data unknown"]
    today = now.astimezone(ROME).date()
    register: dict[str, Any] = {
        "ok": True,
        "max_age_days": max_age_days,
        "scopes": {s.scope: s.to_json(now, max_age_days) for s in data.scopes},
    }
    if not data.scopes:
        register["ok"] = False
        problems.append("register: no results loaded (every marketing and survey intent is denied not_checked)")
    else:
        newest = max(s.newest for s in data.scopes)
        if (today - newest).days >= max_age_days:
            register["ok"] = False
            problems.append(
                f"register: the newest result is {(today - newest).days} days old, past its "
                f"{max_age_days}-day validity (marketing and survey intents are denied register_stale)"
            )
    policy: dict[str, Any] = {
        "ok": data.operators > 0,
        "operators": data.operators,
        "operators_version": data.operators_version,
    }
    if not data.operators:
        problems.append("policy: no operators loaded (every intent is denied operator_unknown)")
    return {"register": register, "policy": policy}, problems


async def safe_read_data(stores: Stores) -> DataState | None:
    try:
        return await read_data(stores)
    except (RedisError, OSError, TimeoutError, ValueError):  # ValueError: a hand-edited key
        return None


def utcnow() -> datetime:
    return datetime.now(UTC)
