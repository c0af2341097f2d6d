"""A ``callguard audit sink`` process and what it stored, for the audit store's tests
(``tests/auditstore/test_auditstore.py``) and the report's (``tests/system/test_report_e2e.py``)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg


@dataclass
class Sink:
    """A ``callguard audit sink`` process."""

    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    starts: list[float] = field(default_factory=list)

    def start(self) -> Sink:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "callguard", "audit", "sink"], env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        self.starts.append(time.monotonic())
        return self

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


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
