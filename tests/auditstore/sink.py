"""A ``callguard audit sink`` process and what it stored, for the audit store's tests
(``tests/auditstore/test_auditstore.py``) and the report's (``tests/system/test_report_e2e.py``)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import asyncpg

from tests.conftest import CallguardProcess


@dataclass
class Sink(CallguardProcess):
    """A ``callguard audit sink`` process."""

    starts: list[float] = field(default_factory=list)

    def start(self) -> Sink:
        self.spawn("audit", "sink")
        self.starts.append(time.monotonic())
        return self


async def stored_ids(dsn: str, prefix: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return [
            r[0]
            for r in await conn.fetch("SELECT intent_id FROM callguard_audit WHERE intent_id LIKE $1", prefix + "%")
        ]
    except asyncpg.UndefinedTableError:
        return []
    finally:
        await conn.close()


async def wait_stored(dsn: str, prefix: str, count: int, sink: Sink, timeout: float = 60) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ids = await stored_ids(dsn, prefix)
        if len(ids) >= count:
            return ids
        assert sink.process is not None and sink.process.poll() is None, sink.log_tail()
        await asyncio.sleep(0.2)
    raise AssertionError(f"{len(ids)} of {count} {prefix}* stored within {timeout}s\n{sink.log_tail()}")
